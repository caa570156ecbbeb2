"""Writing files safely: atomic replacement and one-line errors for disk problems.

Every file glip writes (predictions, pictures, checkpoints, model folders, reports) goes through
:func:`atomic_write`: the content is written to a temporary file in the destination folder, flushed
to disk and renamed over the destination, so a crash or a full disk leaves either the old file or
the new one, never half a file. Disk problems (full disk, read-only file system, no permission)
become a :class:`~glip.errors.OutputError` naming the path and what to do.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from glip.errors import OutputError

_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or choose another folder",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another folder",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "permission denied: choose a folder you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "the path is a folder: give a file name",
    errno.ENAMETOOLONG: "the file name is too long: choose a shorter path",
}


def describe_os_error(path: str | Path, error: OSError, action: str = "write") -> str:
    """One line saying what went wrong with ``path`` and what to do."""
    advice = _ADVICE.get(error.errno or -1, error.strerror or str(error))
    return f"cannot {action} {path}: {advice}"


@contextmanager
def disk_errors(path: str | Path, action: str = "write") -> Iterator[None]:
    """Turn an :class:`OSError` raised inside the block into an :class:`OutputError` about ``path``."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(describe_os_error(path, e, action)) from e


def atomic_write(path: str | Path, write: Callable[[str], object], mode: int = 0o644) -> Path:
    """Create ``path`` atomically: ``write(tmp_path)`` fills a temporary file that replaces ``path``.

    The temporary file lies in the same folder (a rename never crosses file systems), is fsynced
    before the rename and gets permissions ``mode`` (``mkstemp`` creates 0600 files). On any failure,
    Ctrl-C included, the temporary file is removed and ``path`` is left as it was.

    Raises:
        OutputError: on a disk problem (full, read-only, no permission), naming ``path``.
    """
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """:func:`atomic_write` of raw bytes."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "describe_os_error", "disk_errors"]
