"""Resume is exact: a run stopped after any checkpoint and resumed ends with the same bits as one never stopped.

Each case trains a tiny model on CPU with everything random switched on (multi-scale resize and
flips, sampled negative class names, GLIPv2 MLM masking and contrastive region sampling, dropout,
EMA), stops it mid-epoch a few steps after a checkpoint (the steps after the checkpoint are lost,
as with a SIGKILL or Ctrl-C), resumes it, and compares every tensor of the final checkpoint —
model, optimiser, scheduler, scaler, EMA — with the uninterrupted run's. The uninterrupted run
loads its data in the main process; the resumed one also with two workers: the bits do not depend
on the number of workers either.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_mask_training import MASK_HEAD, with_masks
from test_trainer import _dataset

from glip.engine.checkpoint import POINTER, derive_seed, forked_rng
from glip.engine.config import TrainConfig
from glip.engine.metrics_log import read_metrics
from glip.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
MAX_ITERS, EVERY, KILL_AT = 4, 2, 3  # checkpoint at 2 (mid-epoch), killed in step 4; step 3 is lost


def _grounding(root: Path, n: int = 4) -> Path:
    """An MDETR-format grounding file over the first ``n`` images of :func:`_dataset` (same folder)."""
    caption = "a raccoon sitting on the road next to a tree"
    images, anns = [], []
    for i in range(n):
        width = 384 - 16 * (i % 3)
        images.append({"id": i, "file_name": f"images/{i}.jpg", "width": width, "height": 288, "caption": caption})
        anns.append({"id": 2 * i, "image_id": i, "bbox": [70, 30, 100, 150], "tokens_positive": [[2, 9]]})
        anns.append({"id": 2 * i + 1, "image_id": i, "bbox": [150, 135, 150, 115], "tokens_positive": [[27, 31]]})
    path = root / "grounding.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


def _recipe(
    det: Path, out: Path, grounding: Path | None = None, workers: int = 0, masks: bool = False, **run: Any
) -> TrainConfig:
    """The recipe of every case; ``masks``: instance masks in the detection source and a mask head."""
    train = [{"name": "det", "annotations": str(with_masks(det) if masks else det), "masks": masks or None}]
    if grounding is not None:
        train.append({"name": "grd", "kind": "grounding", "annotations": str(grounding), "images": str(det.parent)})
    return TrainConfig.from_dict(
        {
            "model": {"preset": "tiny",
                      "overrides": {"loss.mlm": True, "loss.contrastive": True, "text.pad_to_max": False,
                                    **(MASK_HEAD if masks else {})}},
            "data": {"train": train, "batch_size": 2, "num_workers": workers, "min_sizes": [48, 64],
                     "max_size": 80, "flip_prob": 0.5, "max_negatives": 2},
            "optim": {"lr": 2e-3, "warmup_iters": 2, "steps": [0.9]},
            "run": {"output_dir": str(out), "amp": "none", "log_every": 1, "eval_every": 0, "device": "cpu",
                    "checkpoint_every": EVERY, "keep_checkpoints": 5, "ema_decay": 0.9, "max_iters": MAX_ITERS,
                    **run},
        }
    )  # fmt: skip


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths of every tensor or value that differs between two nested checkpoint structures."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
        return [] if same and a.shape == b.shape and torch.equal(a, b) else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where} keys {sorted(set(a) ^ set(b), key=str)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{where}/{i}")]
    return [] if a == b else [where]


def _final(run: Path) -> dict[str, Any]:
    return torch.load(run / "checkpoints" / f"ckpt_{MAX_ITERS:08d}.pt", weights_only=True)


def _assert_same_training_state(full: Path, resumed: Path) -> None:
    a, b = _final(full), _final(resumed)
    for part in ("model", "optimizer", "scheduler", "scaler", "ema", "data", "step"):
        diff = _differences(a[part], b[part], part)
        assert not diff, f"{len(diff)} differences, first {diff[:5]}"
    losses = [{r["step"]: r["loss"] for r in read_metrics(p / "metrics.jsonl") if "loss" in r} for p in (full, resumed)]
    assert losses[0] == losses[1]  # the lost steps were dropped from the log and written again


def _kill_after_checkpoint(config: TrainConfig) -> None:
    """Train until the middle of step ``KILL_AT + 1``, then die (what ``kill -9`` would leave on disk)."""
    trainer = Trainer(config)
    original = trainer.train_step

    def dying_step(batch):
        if trainer.step == KILL_AT:
            raise KeyboardInterrupt
        return original(batch)

    trainer.train_step = dying_step  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        trainer.train()


@pytest.fixture(scope="module")
def data(tmp_path_factory, sample_image) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    det = _dataset(root, sample_image)
    return det, _grounding(root)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted runs (main-process loading), one per data mixture, made once."""
    runs: dict[tuple[bool, bool], Path] = {}

    def get(grounding: bool, masks: bool = False) -> Path:
        if (grounding, masks) not in runs:
            out = tmp_path_factory.mktemp("full") / "run"
            Trainer(_recipe(data[0], out, data[1] if grounding else None, masks=masks)).train()
            runs[grounding, masks] = out
        return runs[grounding, masks]

    return get


@pytest.mark.parametrize(
    ("grounding", "workers", "masks"),
    [(False, 0, False), (True, 0, False), (True, 2, False), (True, 2, True)],
    ids=["detection", "detection+grounding", "detection+grounding-2-workers", "masks+grounding-2-workers"],
)
def test_resume_mid_epoch_gives_the_bits_of_an_uninterrupted_run(data, reference, tmp_path, grounding, workers, masks):
    det, grd = data
    source = grd if grounding else None
    killed = tmp_path / "killed"
    _kill_after_checkpoint(_recipe(det, killed, source, workers, masks))
    assert (killed / "checkpoints" / POINTER).read_text().strip() == f"ckpt_{EVERY:08d}.pt"
    resumed = Trainer(_recipe(det, killed, source, workers, masks), resume=True)
    assert resumed.step == EVERY
    assert EVERY % resumed.data.batches_per_epoch != 0, "the checkpoint must fall mid-epoch for this test"
    assert resumed.criterion.mask == masks
    resumed.train()
    _assert_same_training_state(reference(grounding, masks), killed)


def test_resume_before_the_first_checkpoint_starts_over_identically(data, reference, tmp_path):
    det, _ = data
    killed = tmp_path / "killed"
    config = _recipe(det, killed)
    trainer = Trainer(config)
    original = trainer.train_step

    def dying_step(batch):
        if trainer.step == 1:
            raise KeyboardInterrupt
        return original(batch)

    trainer.train_step = dying_step  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert read_metrics(killed / "metrics.jsonl")  # the lost steps were logged ...
    Trainer(config, resume=True).train()
    _assert_same_training_state(reference(False), killed)  # ... and are dropped on resume


def test_loading_batches_leaves_the_global_generators_alone(data, tmp_path):
    det, grd = data
    trainer = Trainer(_recipe(det, tmp_path / "run", grd))
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    batches = trainer.data.batches(EVERY + 1)
    first = next(batches)
    batches.close()
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    # the same step gives the same batch, whatever the global generators hold
    torch.manual_seed(12345)
    random.seed(6789)
    again = next(trainer.data.batches(EVERY + 1))
    assert torch.equal(first.pixel_values, again.pixel_values)
    assert torch.equal(first.input_ids, again.input_ids)
    assert torch.equal(first.mlm_labels, again.mlm_labels)


def test_global_randomness_inside_data_loading_is_a_function_of_the_sample():
    with forked_rng(derive_seed(1, 2, 3)):
        a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    before = torch.get_rng_state()
    with forked_rng(derive_seed(1, 2, 3)):
        b = (random.random(), float(np.random.rand()), float(torch.rand(())))
    assert a == b
    assert torch.equal(torch.get_rng_state(), before)
    assert derive_seed(1, 2, 3) != derive_seed(1, 3, 2) and 0 <= derive_seed(7, 2**40) < 2**63


def test_resume_on_another_number_of_processes_is_refused(data, tmp_path):
    from glip.errors import ConfigError

    det, _ = data
    trainer = Trainer(_recipe(det, tmp_path / "run"))
    state = trainer.data.state_dict(EVERY)
    with pytest.raises(ConfigError, match="2 process"):
        trainer.data.load_state_dict({**state, "world_size": 2})


@pytest.mark.slow
def test_two_process_run_resumes_exactly_on_two_processes(tmp_path, sample_image):
    """torchrun, 2 CPU processes (gloo): a run completes, and its checkpoint of step 3 (mid-epoch) resumes exactly."""
    det = _dataset(tmp_path / "data", sample_image, n=10)  # 5 samples per rank: 2 batches per epoch
    full = tmp_path / "full"
    config = _recipe(det, full, max_iters=6, checkpoint_every=3, ema_decay=0.9)
    recipe = tmp_path / "recipe.yaml"
    config.to_yaml(recipe)

    def torchrun(out: Path, *extra: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
             "-m", "glip.cli", "train", str(recipe), "--output-dir", str(out), *extra],
            capture_output=True, text=True, env=env, timeout=400, cwd=REPO, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]

    torchrun(full)
    assert [r["step"] for r in read_metrics(full / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert (full / "model" / "model.safetensors").is_file() and (full / "final_metrics.json").is_file()
    # What a kill after the checkpoint of step 3 leaves: that checkpoint, the pointer to it, the logs.
    killed = tmp_path / "killed"
    shutil.copytree(full / "checkpoints", killed / "checkpoints")
    (killed / "checkpoints" / f"ckpt_{6:08d}.pt").unlink()
    (killed / "checkpoints" / POINTER).write_text(f"ckpt_{3:08d}.pt\n")
    torchrun(killed, "--resume")
    a, b = (torch.load(p / "checkpoints" / f"ckpt_{6:08d}.pt", weights_only=True) for p in (full, killed))
    for part in ("model", "optimizer", "scheduler", "ema"):
        assert not _differences(a[part], b[part], part), part
