"""Training logs: one JSON object per line (``metrics.jsonl``) and TensorBoard scalars.

Each record is appended whole or not at all: a write that fails (full or read-only disk) is cut
back to the previous line and raises :class:`~glip.errors.OutputError` naming the file. A resumed
run first drops the records past its checkpoint (they belong to the steps the interruption lost
and are written again), so the log reads as one uninterrupted run; TensorBoard hides them through
``purge_step``.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from glip.fileio import atomic_write_text, disk_errors

logger = logging.getLogger(__name__)


class MetricLogger:
    """Appends records to ``<out>/metrics.jsonl`` and mirrors numeric fields to TensorBoard.

    Args:
        out_dir: the run folder.
        enabled: False on every rank but 0 (nothing is written).
        resume_step: when resuming, the checkpoint's step: records after it are removed from
            ``metrics.jsonl`` and hidden in TensorBoard.

    Raises:
        OutputError: if the run folder or the logs cannot be written.
    """

    def __init__(self, out_dir: Path, enabled: bool = True, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.tb_dir = out_dir / "tensorboard"
        self.tb = None
        if not enabled:
            return
        with disk_errors(out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.truncate_after(resume_step)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
            logger.warning("tensorboard is not importable: only metrics.jsonl is written")
            return
        purge = resume_step + 1 if resume_step else None
        with disk_errors(self.tb_dir):
            self.tb = SummaryWriter(str(self.tb_dir), purge_step=purge)

    def truncate_after(self, step: int) -> None:
        """Keep only the records of steps ``<= step`` (and drop a torn last line)."""
        if not self.path.is_file():
            return
        records = read_metrics(self.path)
        kept = [r for r in records if int(r.get("step", 0)) <= step]
        if len(kept) != len(records) or not _ends_cleanly(self.path):
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (must contain ``step``).

        Raises:
            OutputError: on a disk problem; the file is left as it was before the call.
        """
        if not self.enabled:
            return
        data = memoryview((json.dumps(record) + "\n").encode())
        # unbuffered: a failure shows here, not at close
        with disk_errors(self.path), open(self.path, "ab", buffering=0) as f:
            start = f.tell()
            try:
                while data:
                    written = f.write(data)
                    if not written:
                        raise OSError(errno.ENOSPC, "no byte could be written")
                    data = data[written:]
            except OSError:
                _cut(f, start)
                raise
        if self.tb is not None:
            with disk_errors(self.tb_dir):
                for key, value in record.items():
                    if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                        self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        """Flush and close TensorBoard (idempotent).

        Raises:
            OutputError: if the last TensorBoard events cannot be written.
        """
        tb, self.tb = self.tb, None
        if tb is not None:
            with disk_errors(self.tb_dir):
                tb.close()


def _cut(f: Any, size: int) -> None:
    """Best effort: truncate an open file back to ``size`` bytes after a failed append."""
    try:
        f.truncate(size)
    except OSError:
        try:
            os.truncate(f.name, size)
        except OSError as e:
            logger.warning("could not remove a partial record from %s: %s", f.name, e)


def _ends_cleanly(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file.

    A last line cut short (a run killed in the middle of a write) is skipped with a warning.
    """
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
            logger.warning("%s: the last line is incomplete (an interrupted write) and is skipped", path)
    return records


class _TqdmHandler(logging.Handler):
    """Writes records above the progress bars (``tqdm.write``), so bars and lines do not mix."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # a broken stderr must not stop training
            self.handleError(record)


@contextmanager
def console_logging(name: str = "glip.engine", level: int = logging.INFO) -> Iterator[None]:
    """Show the trainer's log lines (threads, ETA, validation results) on the console during a run.

    Attaches a handler that prints above the progress bars to the ``name`` logger for the duration
    of the block (the command line's own logging shows warnings only).
    """
    target = logging.getLogger(name)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    old_level, old_propagate = target.level, target.propagate
    target.addHandler(handler)
    target.setLevel(min(level, target.getEffectiveLevel()))
    target.propagate = False  # the root handler would print the same records again
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)
        target.propagate = old_propagate
