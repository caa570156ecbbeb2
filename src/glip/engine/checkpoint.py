"""Training checkpoints and the randomness of a run: everything needed to resume exactly.

A checkpoint holds the model, optimiser, scheduler, AMP scaler, EMA weights, every RNG state
(Python, NumPy, torch CPU, CUDA), the step, the data sampler position and the resolved recipe. It
is written to a temporary file in the same folder, flushed to disk and renamed, and only then does
``last_checkpoint`` (a one-line text file, also replaced atomically) point to it: a run killed at
any moment leaves either the previous complete checkpoint or the new one, never half a file.
Files are read back with ``torch.load(weights_only=True)``: only tensors and plain Python values.
A full or read-only disk raises :class:`~glip.errors.OutputError` naming the file (never a bare
``OSError`` or torch's ``RuntimeError``), and the previous checkpoint stays the one pointed to.

Randomness is not carried from step to step: the trainer reseeds the global generators at every
step from ``(seed, step, rank)`` (:func:`seed_everything`, :func:`derive_seed`) and data loading
runs each sample under a generator state derived from ``(seed, epoch, index)`` (:func:`forked_rng`),
so a resumed run draws exactly the numbers an uninterrupted one draws. The saved RNG states are
kept for inspection and for code that runs outside a step.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from glip.errors import CheckpointError
from glip.fileio import atomic_write, atomic_write_text, disk_errors

logger = logging.getLogger(__name__)

POINTER = "last_checkpoint"


# ---------------------------------------------------------------------- randomness
def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends only on the integers ``keys`` (NumPy ``SeedSequence`` mixing).

    ``derive_seed(seed, step, rank)`` differs for every step and rank, and is the same in every
    run with that seed, whatever happened before (an interruption, a resume, another world size).
    """
    words = [int(k) & 0xFFFFFFFF for k in keys] + [(int(k) >> 32) & 0xFFFFFFFF for k in keys]
    state = np.random.SeedSequence(words).generate_state(2)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    seed = int(seed) % 2**63  # torch takes 64-bit seeds; a recipe may give any integer
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


@contextmanager
def forked_rng(seed: int) -> Iterator[None]:
    """Run a block with Python, NumPy and torch-CPU global generators seeded by ``seed``, then restore them.

    Data loading runs every sample under this, so code that draws from the global generators
    (a user transform calling ``random.random()`` or ``torch.rand``) gives the same numbers in the
    main process and in any worker, in an interrupted run and in an uninterrupted one.
    """
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed = int(seed) % 2**63
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) random states, in weights-only-loadable form."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (checkpoints without a NumPy state are accepted)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------- writing
class _ErrorTrap:
    """A writable file wrapper that remembers the first ``OSError`` of a write.

    ``torch.save`` turns an exception of the stream it writes to into a ``RuntimeError`` ("unexpected
    pos ..."); the trap lets :func:`atomic_save` raise the real disk error (full, read-only) instead.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as e:
            self.error = self.error or e
            raise


def _torch_save(obj: Any, path: str) -> None:
    with open(path, "wb") as f:
        trap = _ErrorTrap(f)
        try:
            torch.save(obj, trap)  # type: ignore[arg-type]
        except RuntimeError:
            if trap.error is not None:
                raise trap.error from None
            raise


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, rename over ``path``.

    Raises:
        OutputError: on a disk problem, naming ``path``; ``path`` is left as it was.
    """
    atomic_write(path, lambda tmp: _torch_save(obj, tmp))


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``ckpt_<step>.pt`` and point ``last_checkpoint`` to it; keep the newest ``keep`` files.

    Raises:
        OutputError: on a disk problem; ``last_checkpoint`` then still names the previous checkpoint.
    """
    with disk_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt_{step:08d}.pt"
    atomic_save({**state, "step": step, "rng": rng_state()}, path)
    atomic_write_text(folder / POINTER, path.name + "\n")
    for old in sorted(folder.glob("ckpt_*.pt"))[:-keep] if keep > 0 else []:
        try:
            old.unlink(missing_ok=True)
        except OSError as e:  # the new checkpoint is safe; an old file left behind only costs space
            logger.warning("could not remove the old checkpoint %s: %s", old, e)
    logger.info("checkpoint %s", path)
    return path


# ---------------------------------------------------------------------- reading
def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint ``last_checkpoint`` names, or None when there is none yet.

    Raises:
        CheckpointError: if the pointer names a file that does not exist.
        OutputError: if the pointer cannot be read (permissions, I/O error).
    """
    pointer = folder / POINTER
    if not pointer.is_file():
        return None
    with disk_errors(pointer, "read"):
        name = pointer.read_text().strip()
    path = folder / name
    if not name or not path.is_file():
        raise CheckpointError(f"{pointer} names {name!r}, which does not exist: the run folder was altered")
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
