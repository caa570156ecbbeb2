"""Training checkpoints: everything needed to resume exactly, written atomically.

A checkpoint holds the model, optimiser, scheduler, AMP scaler, EMA weights, every RNG state
(Python, torch CPU, CUDA), the step, the data sampler position and the resolved recipe. It is
written to a temporary file in the same folder, flushed to disk and renamed, and only then does
``last_checkpoint`` (a one-line text file, also replaced atomically) point to it: a run killed at
any moment leaves either the previous complete checkpoint or the new one, never half a file.
Files are read back with ``torch.load(weights_only=True)``: only tensors and plain Python values.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import torch

from glip.errors import CheckpointError
from glip.fileio import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

POINTER = "last_checkpoint"


def rng_state() -> dict[str, Any]:
    """Python and torch (CPU and every CUDA device) random states, in weights-only-loadable form."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, rename over ``path``."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``ckpt_<step>.pt`` and point ``last_checkpoint`` to it; keep the newest ``keep`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt_{step:08d}.pt"
    atomic_save({**state, "step": step, "rng": rng_state()}, path)
    atomic_write_text(folder / POINTER, path.name + "\n")
    for old in sorted(folder.glob("ckpt_*.pt"))[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    logger.info("checkpoint %s", path)
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint ``last_checkpoint`` names, or None when there is none yet."""
    pointer = folder / POINTER
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    if not path.is_file():
        raise CheckpointError(f"{pointer} names {path.name}, which does not exist: the run folder was altered")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint (weights only; never unpickles code).

    Raises:
        CheckpointError: if the file is unreadable or not a glip training checkpoint.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read training checkpoint {path}: {e}") from e
    missing = {"model", "optimizer", "scheduler", "step", "rng"} - set(state)
    if missing:
        raise CheckpointError(f"{path} is not a glip training checkpoint (missing {sorted(missing)})")
    return state
