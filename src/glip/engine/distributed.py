"""torch.distributed helpers: one process, or one per GPU under ``torchrun`` (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist

from glip.errors import GLIPError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and reports."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, or run alone.

    Args:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(local)
        dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        logger.info("rank %d/%d on %s", rank, world, dev)
        return DistInfo(rank, world, local, dev)
    return DistInfo(device=torch.device("cuda") if use_cuda else torch.device("cpu"))


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar values over all processes (for logging)."""
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    t /= world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def barrier() -> None:
    """Wait for every process (no-op when alone)."""
    if world_size() > 1:
        dist.barrier()


T = TypeVar("T")


def on_main(fn: Callable[[], T], info: DistInfo) -> T | None:
    """Run ``fn`` on rank 0 only; if it fails, every rank raises (none is left waiting at a collective).

    Rank 0 writes the files of a run (checkpoints, logs, the model); a full disk there must end
    the whole job with rank 0's one-line error, not leave the other ranks blocked in their next
    collective. Every rank must call this at the same point (it is a collective itself).

    Returns:
        ``fn()``'s result on rank 0, None elsewhere.

    Raises:
        Exception: on rank 0, whatever ``fn`` raised; :class:`GLIPError` on the other ranks.
    """
    error: Exception | None = None
    result: T | None = None
    if info.is_main:
        try:
            result = fn()
        except Exception as e:  # re-raised below, once every rank knows
            error = e
    failed = error is not None
    if world_size() > 1:
        flag = torch.tensor([int(failed)], device=info.device, dtype=torch.int32)
        dist.all_reduce(flag)
        failed = bool(flag.item())
    if error is not None:
        raise error
    if failed:
        raise GLIPError("rank 0 failed to write the run's files: its error message says why")
    return result


def cleanup() -> None:
    """Leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
