"""The training loop: one process or DDP under torchrun, AMP, EMA, exact resume.

Contract (the bar is ``detectron2``'s ``train_loop``):

* ``Trainer(config, resume=True)`` builds everything from the recipe. With ``resume`` it restores
  the newest checkpoint of ``run.output_dir`` (model, optimiser, scheduler, scaler, EMA, RNG states,
  step and data position); the run then produces the same losses it would have produced without
  the interruption.
* ``Trainer.train()`` runs until ``run.max_iters`` optimiser steps. Every step: forward under
  autocast, losses in fp32, backward (scaled for fp16), gradient clipping over all parameters,
  optimiser and scheduler step, EMA update. Every ``log_every`` steps a JSONL record (and
  TensorBoard scalars); every ``eval_every`` COCO AP on the validation sources; every
  ``checkpoint_every`` an atomic checkpoint. At the end the (EMA) model is saved as a model folder.
* Only rank 0 writes files and evaluates; the others wait at a barrier.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from glip.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from glip.engine.config import TrainConfig
from glip.engine.data import TrainData, build_train_data
from glip.engine.distributed import all_reduce_mean, barrier, init_distributed
from glip.engine.ema import ModelEMA
from glip.engine.metrics_log import MetricLogger
from glip.engine.modes import apply_mode, build_model, set_train_mode
from glip.engine.optim import build_optimizer, build_scheduler
from glip.errors import ConfigError
from glip.modeling.criterion import GLIPCriterion
from glip.modeling.glip import GLIPModel
from glip.structures import TrainBatch

logger = logging.getLogger(__name__)


class Trainer:
    """Trains a :class:`GLIPModel` from a :class:`TrainConfig` (see the module docstring)."""

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        self.config = config
        self.dist = init_distributed(config.run.device)
        self.device = self.dist.device
        run = config.run
        self.out = Path(run.output_dir)
        random.seed(run.seed)
        torch.manual_seed(run.seed)
        self.model: GLIPModel = build_model(config.model, run.mode).to(self.device)
        self.frozen = apply_mode(self.model, run.mode, run.freeze, run.freeze_body_stages)
        self.model.tower.gradient_checkpointing = run.gradient_checkpointing
        self.criterion = GLIPCriterion.from_config(self.model.config, self.model.box_coder)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, run.max_iters)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=run.amp == "fp16")
        self.ema = ModelEMA(self.model, run.ema_decay) if run.ema_decay else None
        self.data: TrainData = build_train_data(config, self.model.config, self.dist)
        self.step = 0
        if resume:
            self._resume()
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.dist.world_size > 1
            else None
        )
        self.log = MetricLogger(self.out, enabled=self.dist.is_main)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            config.to_yaml(self.out / "config.yaml")
            self.model.config.to_json(self.out / "model_config.json")

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds besides RNG states and the step."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "data": self.data.state_dict(self.step),
            "config": json.dumps(self.config.to_dict()),
        }

    def _resume(self) -> None:
        path = latest_checkpoint(self.out / "checkpoints")
        if path is None:
            logger.info("no checkpoint in %s: starting from scratch", self.out)
            return
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.data.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        logger.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        amp = self.config.run.amp
        if amp == "none":
            return nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """One optimiser step on ``batch``; returns the (rank-local) loss values."""
        net = self.ddp or self.model
        set_train_mode(self.model, self.frozen)
        batch = batch.to(self.device, non_blocking=True)
        with self._autocast():
            out = net(batch.pixel_values, batch.input_ids, batch.attention_mask, batch.pixel_mask)
        out = _to_float(out)
        losses = self.criterion(out, batch.targets, batch.attention_mask, batch.mlm_labels)
        total = sum(v for k, v in losses.items() if k.startswith("loss_"))
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"non-finite loss at step {self.step}: { {k: float(v) for k, v in losses.items()} }"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        clip = self.config.optim.clip_grad_norm
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model)
        values = {k: float(v.detach()) for k, v in losses.items()}
        values["loss"] = float(total.detach())
        return values

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run to ``run.max_iters``; returns the final validation metrics (rank 0) and timings."""
        run = self.config.run
        if run.eval_at_start and self.step == 0:
            self.evaluate()
        batches = self.data.batches(self.step)
        bar = tqdm(total=run.max_iters, initial=self.step, desc="train", unit="it", disable=not self.dist.is_main)
        window_t, window_imgs = time.perf_counter(), 0
        last_eval: dict[str, Any] = {}
        while self.step < run.max_iters:
            batch = next(batches)
            values = self.train_step(batch)
            self.step += 1
            window_imgs += batch.pixel_values.shape[0] * self.dist.world_size
            bar.update(1)
            if self.step % run.log_every == 0 or self.step == run.max_iters:
                values = all_reduce_mean(values, self.device)
                elapsed = time.perf_counter() - window_t
                rate = window_imgs / elapsed if elapsed > 0 else math.nan
                record = {"step": self.step, "lr": self.scheduler.get_last_lr()[0], "img_per_s": rate, **values}
                if self.device.type == "cuda":
                    record["max_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
                self.log.write(record)
                bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{record['lr']:.2e}", img_s=f"{rate:.1f}")
                window_t, window_imgs = time.perf_counter(), 0
            if run.eval_every and self.step % run.eval_every == 0 and self.step < run.max_iters:
                last_eval = self.evaluate()
                window_t, window_imgs = time.perf_counter(), 0  # throughput counts training time only
            if run.checkpoint_every and self.step % run.checkpoint_every == 0:
                self.checkpoint()
                window_t, window_imgs = time.perf_counter(), 0
        bar.close()
        last_eval = self.evaluate()
        self.checkpoint()
        if self.dist.is_main:
            self.export(self.out / "model")
            (self.out / "final_metrics.json").write_text(json.dumps(last_eval, indent=2) + "\n")
        barrier()
        self.log.close()
        return last_eval

    def checkpoint(self) -> None:
        """Write a training checkpoint (rank 0); every rank waits for it."""
        if self.dist.is_main:
            save_checkpoint(self.out / "checkpoints", self.step, self.state(), self.config.run.keep_checkpoints)
        barrier()

    def eval_model(self) -> GLIPModel:
        """The weights validation and export use: the EMA average when enabled."""
        return self.ema.module if self.ema else self.model

    def evaluate(self) -> dict[str, Any]:
        """COCO AP of every validation source (rank 0); logged and returned."""
        results: dict[str, Any] = {}
        if self.dist.is_main and self.data.val:
            results = self.data.evaluate(self.eval_model(), self.device)
            self.log.write({"step": self.step, **{f"val/{k}": v for k, v in results.items()}})
            logger.info("step %d validation: %s", self.step, results)
        barrier()
        return results

    def export(self, folder: Path) -> None:
        """Save the (EMA) model as a model folder usable by ``glip predict`` (see ``run.export_*``)."""
        run = self.config.run
        frozen = {"text": "text_encoder.", "body": "backbone.body."}
        trained = [
            p
            for p in run.export_exclude
            if any(q.requires_grad for n, q in self.model.named_parameters() if n.startswith(frozen.get(p, p)))
        ]
        if trained:
            raise ConfigError(f"run.export_exclude lists {trained}, which were trained: they must be saved")
        dtype = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}[run.export_dtype]
        self.eval_model().save_pretrained(folder, exclude=tuple(run.export_exclude), dtype=dtype)


def _to_float(out: Any) -> Any:
    """Cast the floating tensors of a model output to fp32 so that losses are computed in fp32."""
    for name, value in vars(out).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
            setattr(out, name, value.float())
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            setattr(out, name, [v.float() if v.is_floating_point() else v for v in value])
    return out


def train(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Build a :class:`Trainer` and run it."""
    return Trainer(config, resume=resume).train()
