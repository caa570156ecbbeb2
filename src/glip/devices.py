"""Device names from users (``--device``, ``device=``) → :class:`torch.device`, with clear errors."""

from __future__ import annotations

import re

import torch

from glip.errors import GLIPError

_FORM = re.compile(r"^(auto|cpu|cuda|mps)(?::(\d+))?$")
HELP = "auto (CUDA when available), cpu, cuda or cuda:N"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None → CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` otherwise.

    Case and surrounding spaces are ignored (``"CPU"`` is ``cpu``).

    Raises:
        GLIPError: for a malformed name (``""``, ``"0"``, ``"cpu,cuda"``, ``"cuda:-1"``), an unknown
            kind (``"xla"``), or a device this machine does not have, saying what is available.
    """
    if isinstance(device, torch.device):
        return _check_available(device, str(device))
    text = "auto" if device is None else str(device).strip().lower()
    match = _FORM.match(text)
    if match is None:
        raise GLIPError(f"device {str(device)!r} is not a device name: use {HELP}")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if index is not None:
            raise GLIPError(f"device {str(device)!r}: 'auto' takes no index; use {HELP}")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu" and index not in (None, "0"):
        raise GLIPError(f"device {str(device)!r}: there is one CPU device; use cpu")
    dev = torch.device(kind if index is None or kind == "cpu" else f"{kind}:{index}")
    return _check_available(dev, str(device))


def _check_available(dev: torch.device, given: str) -> torch.device:
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise GLIPError(f"device {given!r} was asked for but no CUDA GPU is available; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise GLIPError(f"device {given!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return dev
    if dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise GLIPError(f"device {given!r}: Apple MPS is not available here; use cpu")
        return dev
    raise GLIPError(f"device {given!r} is not supported: use {HELP}")


__all__ = ["HELP", "resolve_device"]
