"""The training loop: one process or DDP under torchrun, AMP, EMA, exact resume.

Contract (the bar is ``detectron2``'s ``train_loop``):

* ``Trainer(config, resume=True)`` builds everything from the recipe. With ``resume`` it restores
  the newest checkpoint of ``run.output_dir`` (model, optimiser, scheduler, scaler, EMA, RNG states,
  step and data position); the run then produces the same losses it would have produced without
  the interruption.
* ``Trainer.train()`` runs until ``run.max_iters`` optimiser steps. Every step: forward under
  autocast, losses in fp32, backward (scaled for fp16), gradient clipping over all parameters,
  optimiser and scheduler step, EMA update. Every ``log_every`` steps a JSONL record (and
  TensorBoard scalars: the losses, ``lr`` (the tower / head group) and ``lr/<group>`` of every
  parameter group); every ``eval_every`` COCO AP on the validation sources (with a progress bar and
  one log line per evaluation; with ``run.keep_best`` the best mean AP's model is kept as
  ``best_model``); every ``checkpoint_every`` an atomic checkpoint, and one at the end
  (``checkpoint_every: 0`` writes none). At the end the (EMA) model is saved as a model folder.
* On a CPU the first log line says how many threads train (:mod:`glip.engine.threads`).
* Only rank 0 writes files and evaluates; the others wait. A failure there (a full or read-only
  disk raises :class:`~glip.errors.OutputError` naming the file) ends every rank.

Exact resume (bit for bit on the CPU, for any step and any number of data workers) rests on one
rule: no random number depends on how long the process has been running. At every step the
global Python / NumPy / torch generators (dropout, drop-path) are reseeded from ``(seed, step,
rank)``, and the criterion's sampling (GLIPv2 contrastive regions) gets a generator from the same
key; the data stream is a function of the step (:mod:`glip.engine.data`). Everything else that
changes during training (weights, optimiser, scheduler, scaler, EMA) is in the checkpoint.

Files are never left half-written: checkpoints, ``config.yaml``, ``final_metrics.json`` and each
file of the model folder are written atomically, the model folder is built beside its destination
and renamed into place, and ``final_metrics.json`` (the sign of a finished run) comes last.
Ctrl-C stops at once with ``KeyboardInterrupt`` (the CLI exits 130) after closing the logs; the
newest checkpoint stays valid.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from glip.engine.checkpoint import (
    derive_seed,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from glip.engine.config import TrainConfig
from glip.engine.data import TrainData, build_train_data, fill_answer_vocabulary
from glip.engine.distributed import all_reduce_mean, barrier, init_distributed, on_main
from glip.engine.ema import ModelEMA
from glip.engine.metrics_log import MetricLogger
from glip.engine.modes import apply_mode, build_model, set_train_mode
from glip.engine.optim import build_optimizer, build_scheduler, group_lrs, main_lr
from glip.engine.threads import configure_threads
from glip.errors import ConfigError
from glip.fileio import atomic_write_text, disk_errors
from glip.modeling.criterion import GLIPCriterion
from glip.modeling.glip import GLIPModel
from glip.structures import TrainBatch

logger = logging.getLogger(__name__)

BEST_MODEL = "best_model"
"""Folder (in ``run.output_dir``) of the best validation model, with ``run.keep_best``."""
ETA_AFTER_STEPS = 5
"""The time per step and the time left are logged once, after this many steps."""


class Trainer:
    """Trains a :class:`GLIPModel` from a :class:`TrainConfig` (see the module docstring)."""

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        self.config = config
        self.dist = init_distributed(config.run.device)
        self.device = self.dist.device
        run = config.run
        logger.info(configure_threads(run.threads, self.device))
        self.out = Path(run.output_dir)
        seed_everything(run.seed)
        config = self.config = fill_answer_vocabulary(config)
        self.model: GLIPModel = build_model(config.model, run.mode).to(self.device)
        self.frozen = apply_mode(self.model, run.mode, run.freeze, run.freeze_body_stages)
        self.model.tower.gradient_checkpointing = run.gradient_checkpointing
        self.criterion = GLIPCriterion.from_config(self.model.config, self.model.box_coder)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, run.max_iters)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=run.amp == "fp16")
        self.ema = ModelEMA(self.model, run.ema_decay, run.ema_warmup) if run.ema_decay else None
        self.data: TrainData = build_train_data(config, self.model.config, self.dist)
        self.step = 0
        # best validation mean AP so far and its step (run.keep_best); in the checkpoint
        self.best: dict[str, Any] = {}
        if resume:
            self._resume()
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.dist.world_size > 1
            else None
        )
        # a resumed run drops the log records of the steps it does again (-1: all of them)
        resume_step = (self.step if self.step > 0 else -1) if resume else None
        self.log = MetricLogger(self.out, enabled=False)
        on_main(lambda: self._write_run_files(resume_step), self.dist)

    def _write_run_files(self, resume_step: int | None) -> None:
        """Rank 0: the run folder, the resolved recipe, the model config and the logs."""
        with disk_errors(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
        self.config.to_yaml(self.out / "config.yaml")  # both atomic (glip.fileio)
        self.model.config.to_json(self.out / "model_config.json")
        self.log = MetricLogger(self.out, enabled=True, resume_step=resume_step)

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
            "best": json.dumps(self.best),
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
        self.best = json.loads(state["best"]) if isinstance(state.get("best"), str) else {}
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
        """One optimiser step on ``batch``; returns the (rank-local) loss values.

        The random numbers of the step (dropout, contrastive sampling) come from generators seeded
        by ``(run.seed, step, rank)``, whatever ran before (see the module docstring).
        """
        net = self.ddp or self.model
        set_train_mode(self.model, self.frozen)
        seed, rank = self.config.run.seed, self.dist.rank
        seed_everything(derive_seed(seed, self.step, rank))
        generator = torch.Generator().manual_seed(derive_seed(seed, self.step, rank, 1))
        batch = batch.to(self.device, non_blocking=True)
        # the mask head runs on every batch (images without masks add no loss), so that DDP sees the
        # same parameters used at every step
        mask_boxes = [t.boxes_xyxy for t in batch.targets] if self.criterion.mask else None
        # a model with a caption head reads its caption rows causally (every step, so that DDP sees
        # the head used); others take the plain bidirectional path
        causal = batch.causal if self.model.caption_head is not None else False
        with self._autocast():
            out = net(
                batch.pixel_values, batch.input_ids, batch.attention_mask, batch.pixel_mask, mask_boxes, causal
            )
        out = _to_float(out)
        losses = self.criterion(
            out, batch.targets, batch.attention_mask, batch.mlm_labels, generator=generator, input_ids=batch.input_ids
        )
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
            self.ema.update(self.model, self.step + 1)
        values = {k: float(v.detach()) for k, v in losses.items()}
        values["loss"] = float(total.detach())
        return values

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run to ``run.max_iters``; returns the final validation metrics (rank 0) and timings.

        Raises:
            OutputError: if a checkpoint, a log or the model cannot be written (the newest
                checkpoint on disk stays valid: fix the disk and resume).
            KeyboardInterrupt: on Ctrl-C, after closing the logs.
        """
        try:
            return self._train()
        except BaseException:
            try:
                self.log.close()
            except Exception as e:  # the first error is the one to report
                logger.warning("could not close the logs of %s: %s", self.out, e)
            raise

    def _train(self) -> dict[str, Any]:
        run = self.config.run
        if run.eval_at_start and self.step == 0:
            self.evaluate()
        batches = self.data.batches(self.step)
        bar = tqdm(total=run.max_iters, initial=self.step, desc="train", unit="it", disable=not self.dist.is_main)
        try:
            self._loop(batches, bar)
        finally:
            bar.close()
            batches.close()  # stops the loader's workers now, not at interpreter exit
        last_eval = self.evaluate()
        if run.checkpoint_every and self.step % run.checkpoint_every != 0:  # else written in the loop (or never)
            self.checkpoint()
        on_main(lambda: self._finish(last_eval), self.dist)
        return last_eval

    def _loop(self, batches: Iterator[TrainBatch], bar: tqdm) -> None:
        run = self.config.run
        window_t, window_imgs = time.perf_counter(), 0
        start_t, start_step = time.perf_counter(), self.step
        timing_step = min(run.max_iters, start_step + ETA_AFTER_STEPS)
        while self.step < run.max_iters:
            batch = next(batches)
            values = self.train_step(batch)
            self.step += 1
            window_imgs += batch.pixel_values.shape[0] * self.dist.world_size
            bar.update(1)
            if self.step == timing_step:
                self._log_eta((time.perf_counter() - start_t) / (self.step - start_step))
            if self.step % run.log_every == 0 or self.step == run.max_iters:
                values = all_reduce_mean(values, self.device)
                elapsed = time.perf_counter() - window_t
                rate = window_imgs / elapsed if elapsed > 0 else math.nan
                lr = main_lr(self.optimizer)
                record = {"step": self.step, "lr": lr, **group_lrs(self.optimizer), "img_per_s": rate, **values}
                if self.device.type == "cuda":
                    record["max_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
                on_main(lambda record=record: self.log.write(record), self.dist)
                bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
                window_t, window_imgs = time.perf_counter(), 0
            if run.eval_every and self.step % run.eval_every == 0 and self.step < run.max_iters:
                self.evaluate()
                bar.unpause()  # the ETA counts training time only
                window_t, window_imgs = time.perf_counter(), 0  # throughput counts training time only
            if run.checkpoint_every and self.step % run.checkpoint_every == 0:
                self.checkpoint()
                bar.unpause()
                window_t, window_imgs = time.perf_counter(), 0

    def _log_eta(self, seconds_per_step: float) -> None:
        """One line after the first steps: the measured time per step and the time left."""
        run = self.config.run
        left = (run.max_iters - self.step) * seconds_per_step
        evals = (run.max_iters - self.step) // run.eval_every if run.eval_every and self.data.val else 0
        logger.info(
            "%.2f s per step over the first %d: about %s for the %d steps left%s",
            seconds_per_step, self.step, format_duration(left), run.max_iters - self.step,
            f" plus {evals} validation(s)" if evals else "",
        )  # fmt: skip

    def _finish(self, last_eval: dict[str, Any]) -> None:
        """Rank 0: export the model, then ``final_metrics.json`` (written last: the run is complete)."""
        self.export(self.out / "model")
        self.log.close()
        final = {**last_eval, **({"best": self.best} if self.best else {})}
        atomic_write_text(self.out / "final_metrics.json", json.dumps(final, indent=2) + "\n")

    def checkpoint(self) -> None:
        """Write a training checkpoint (rank 0); every rank waits for it and fails with it."""
        keep = self.config.run.keep_checkpoints
        on_main(lambda: save_checkpoint(self.out / "checkpoints", self.step, self.state(), keep), self.dist)

    def eval_model(self) -> GLIPModel:
        """The weights validation and export use: the EMA average when enabled."""
        return self.ema.module if self.ema else self.model

    def evaluate(self) -> dict[str, Any]:
        """COCO AP of every validation source (rank 0); logged and returned.

        With ``run.keep_best``, a mean AP above the best so far exports the model to
        ``<output_dir>/best_model`` and becomes the new best (``self.best``, kept in checkpoints).
        """

        def run() -> dict[str, Any]:
            logger.info("step %d: validating on %s", self.step, ", ".join(s.name for s in self.data.val))
            t0 = time.perf_counter()
            results = self.data.evaluate(self.eval_model(), self.device, progress=self.dist.is_main)
            self.log.write({"step": self.step, **{f"val/{k}": v for k, v in results.items()}})
            mean = results.get("mean_AP")
            improved = mean is not None and mean > self.best.get("mean_AP", -1.0)
            if improved and self.config.run.keep_best:
                self.export(self.out / BEST_MODEL)
            if improved:
                self.best = {"mean_AP": mean, "step": self.step}
            logger.info(
                "step %d validation (%.0f s): %s%s", self.step, time.perf_counter() - t0, describe_results(results),
                f"; best mean AP {100 * self.best['mean_AP']:.1f} at step {self.best['step']}" if self.best else "",
            )  # fmt: skip
            return results

        if not self.data.val:
            barrier()
            return {}
        return on_main(run, self.dist) or {}

    def export(self, folder: Path) -> None:
        """Save the (EMA) model as a model folder usable by ``glip predict`` (see ``run.export_*``).

        The folder is written beside ``folder`` under a temporary name and renamed into place, so
        ``folder`` is either the previous export or the complete new one.

        Raises:
            ConfigError: if ``run.export_exclude`` names parts that were trained.
            OutputError: on a disk problem, naming ``folder``.
        """
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
        partial, old = folder.with_name(f".{folder.name}.partial"), folder.with_name(f".{folder.name}.old")
        with disk_errors(folder):
            shutil.rmtree(partial, ignore_errors=True)
            try:
                self.eval_model().save_pretrained(partial, exclude=tuple(run.export_exclude), dtype=dtype)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            if folder.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(folder, old)
            os.replace(partial, folder)
            shutil.rmtree(old, ignore_errors=True)


def describe_results(results: dict[str, Any]) -> str:
    """``raccoon AP 45.1 (AP50 80.2); mean AP 45.1`` from :meth:`TrainData.evaluate` results."""
    parts = [
        f"{k[: -len('/AP')]} AP {100 * v:.1f} (AP50 {100 * results.get(k + '50', math.nan):.1f})"
        for k, v in results.items()
        if k.endswith("/AP")
    ]
    if "mean_AP" in results and len(parts) > 1:
        parts.append(f"mean AP {100 * results['mean_AP']:.1f}")
    return "; ".join(parts) or "no detection source to score"


def format_duration(seconds: float) -> str:
    """``42 s``, ``7.5 min`` or ``2.3 h``."""
    if not math.isfinite(seconds):
        return "unknown time"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


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
