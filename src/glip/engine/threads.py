"""CPU threads for training: a count that does not thrash, and a line that says what was chosen.

PyTorch starts one compute thread per core. When other processes already keep cores busy, its
threads wait for each other at every parallel region: on a 2-core machine with one other busy
process, a training step of the embedded model took 21-28 s with 2 threads and 3.7-4.5 s with one.
The trainer therefore picks, on a CPU:

* ``run.threads`` when the recipe sets it (> 0);
* else the user's ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``), which torch already follows;
* else the *free* cores: the usable cores (CPU affinity and a cgroup CPU quota) minus the
  one-minute load average of the machine, at least 1.

The choice is the trainer's first log line (:func:`configure_threads` returns it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

USER_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 / v1 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_quota() -> int | None:
    """Whole cores granted by the cgroup CPU quota, or None when there is none (or it is unreadable)."""
    try:
        v2 = Path("/sys/fs/cgroup/cpu.max")
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else max(1, int(int(quota) / int(period)))
        v1q, v1p = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if v1q.is_file() and v1p.is_file():
            quota_us = int(v1q.read_text())
            return None if quota_us <= 0 else max(1, int(quota_us / int(v1p.read_text())))
    except (OSError, ValueError):
        return None
    return None


def load_average() -> float:
    """The machine's one-minute load average (0 where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """The free cores: ``cores - round(load)``, between 1 and ``cores``."""
    cores = usable_cores() if cores is None else cores
    load = load_average() if load is None else load
    return max(1, min(cores, cores - round(load)))


def configure_threads(requested: int, device: torch.device) -> str:
    """Set torch's CPU thread count for training on ``device`` and return the sentence saying so.

    Args:
        requested: ``run.threads``; 0 chooses (see the module docstring).
        device: the training device; on a GPU the count is left as it is.
    """
    if device.type != "cpu":
        return f"training on {device} (CPU threads: {torch.get_num_threads()}, unchanged)"
    cores = usable_cores()
    if requested > 0:
        torch.set_num_threads(requested)
        return f"CPU training with {requested} thread(s) (run.threads; {cores} usable cores)"
    user = next((v for v in USER_VARIABLES if os.environ.get(v, "").strip()), None)
    if user is not None:
        return (
            f"CPU training with {torch.get_num_threads()} thread(s) ({user}={os.environ[user]} kept; "
            f"{cores} usable cores)"
        )
    load = load_average()
    threads = auto_threads(cores, load)
    torch.set_num_threads(threads)
    return (
        f"CPU training with {threads} thread(s): {cores} usable cores, load average {load:.1f} from other work "
        "(more threads than free cores thrash; set run.threads or OMP_NUM_THREADS to choose)"
    )
