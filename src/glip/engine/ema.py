"""Exponential moving average of the model weights (official ``ModelEma``)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * model`` for every floating-point state entry.

    Integer buffers (counters, index tables) are copied. The EMA copy is in eval mode and never
    receives gradients; :attr:`module` is a full model usable for validation and export.

    Args:
        model: the model being trained (unwrapped, not DDP).
        decay: the smoothing factor (official 0.999).
        warmup: steps over which the decay ramps up: ``decay * (1 - exp(-step / warmup))`` at step
            ``step`` (YOLOv5's rule; the step comes from the trainer, so resuming needs no extra
            state); 0: constant decay.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        self.warmup = warmup
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, step: int | None) -> float:
        """The decay of the update after ``step`` optimiser steps (see ``warmup``)."""
        if not self.warmup or step is None:
            return self.decay
        return self.decay * (1.0 - math.exp(-step / self.warmup))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """Blend the current weights of ``model`` into the average (``step``: steps done, for the warmup)."""
        decay = self.decay_at(step)
        current = model.state_dict()
        for key, value in self.module.state_dict().items():
            src = current[key].detach()
            if value.dtype.is_floating_point:
                value.mul_(decay).add_(src.to(value.dtype), alpha=1.0 - decay)
            else:
                value.copy_(src)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged weights saved by :meth:`state_dict`."""
        self.module.load_state_dict(state)
