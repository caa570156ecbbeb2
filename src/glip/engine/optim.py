"""The optimiser policy: official GLIP parameter groups, AdamW, warmup + step or cosine schedule.

Parameter groups (official ``make_optimizer``), decided by name for every trainable parameter:

* text-encoder parameters (``text_encoder.*``, official ``language_backbone``) use ``text_lr``;
  all others use ``lr`` (the tower's own BERT layers are *not* the text encoder), the image body
  ``lr * body_lr_factor``;
* any name containing ``bias`` (biases, and also ``head.bias_lang`` / ``head.bias0`` exactly as
  officially) gets its learning rate multiplied by ``bias_lr_factor`` (2) and weight decay
  ``bias_weight_decay`` (0);
* the prompt-tuning offset (``prompt_offset``, official ``tunable_linear``) uses ``prompt_lr`` and
  ``prompt_weight_decay`` (the official ODinW prompt-tuning values 0.05 and 0.25), so a prompt run
  gets them from its mode, whatever ``lr`` the recipe gives the rest.

Every group carries a ``name`` (``main``, ``main.bias``, ``body``, ``text``, ``prompt`` ... joined
with ``+`` when parts share a learning rate), which the trainer's log uses (``lr/<name>``).

Schedule (official ``WarmupMultiStepLR`` / cosine): linear warmup from ``warmup_factor`` over
``warmup_iters``, then ×``gamma`` at each step fraction of ``max_iters`` (or cosine decay to
``min_lr_factor``).
"""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from glip.engine.config import OptimSpec

PROMPT_OFFSET = "prompt_offset"
MAIN_GROUP = "main"
"""Name of the group of the parameters at ``lr`` (tower, head, FPN ...): the learning rate the log shows."""


def _part(name: str) -> str:
    if name == PROMPT_OFFSET:
        return "prompt"
    if name.startswith("text_encoder."):
        return "text"
    if name.startswith("backbone.body."):
        return "body"
    return MAIN_GROUP


def parameter_groups(model: nn.Module, spec: OptimSpec) -> list[dict]:
    """One group per distinct (lr, weight decay) of the trainable parameters, with their names.

    Each group has ``params``, ``names`` (parameter names), ``lr``, ``weight_decay`` and ``name``
    (the parts it holds, see the module docstring).
    """
    groups: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = _part(name)
        if part == "prompt":
            lr, wd = spec.prompt_lr, spec.prompt_weight_decay
        else:
            lr = spec.text_lr if part == "text" else spec.lr
            if part == "body":
                lr *= spec.body_lr_factor
            wd = spec.weight_decay
            if "bias" in name:
                lr *= spec.bias_lr_factor
                wd = spec.bias_weight_decay
                part += ".bias"
        group = groups.setdefault((lr, wd), {"params": [], "names": [], "lr": lr, "weight_decay": wd, "parts": []})
        group["params"].append(p)
        group["names"].append(name)
        if part not in group["parts"]:
            group["parts"].append(part)
    out = list(groups.values())
    for group in out:
        group["name"] = "+".join(group.pop("parts"))
    return out


def main_lr(optimizer: torch.optim.Optimizer) -> float:
    """The current learning rate of the ``main`` group (tower, head ...), else of the first group
    that has one of the ``main`` parts, else of the first group."""
    groups = optimizer.param_groups
    for wanted in (lambda n: n == MAIN_GROUP, lambda n: MAIN_GROUP in n.split("+")):
        for g in groups:
            if wanted(str(g.get("name", ""))):
                return float(g["lr"])
    return float(groups[0]["lr"])


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr/<group name>": current lr}`` of every group (``lr/group<i>`` for unnamed groups)."""
    return {f"lr/{g.get('name', f'group{i}')}": float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


def build_optimizer(model: nn.Module, spec: OptimSpec) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`.

    Raises:
        ValueError: if the model has no trainable parameter.
    """
    groups = parameter_groups(model, spec)
    if not groups:
        raise ValueError("the model has no trainable parameters (check the fine-tuning mode)")
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, lr=spec.lr, betas=tuple(spec.betas), weight_decay=spec.weight_decay)


def lr_factor(step: int, spec: OptimSpec, max_iters: int) -> float:
    """Multiplier of every group's base learning rate at ``step`` (0-based)."""
    warm = 1.0
    if step < spec.warmup_iters:
        alpha = step / max(1, spec.warmup_iters)
        warm = spec.warmup_factor * (1 - alpha) + alpha
    if spec.schedule == "step":
        milestones = sorted(round(f * max_iters) for f in spec.steps)
        return warm * spec.gamma ** bisect.bisect_right(milestones, step)
    progress = min(1.0, max(0.0, (step - spec.warmup_iters) / max(1, max_iters - spec.warmup_iters)))
    cosine = spec.min_lr_factor + (1 - spec.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return warm * cosine


def build_scheduler(optimizer: torch.optim.Optimizer, spec: OptimSpec, max_iters: int) -> LambdaLR:
    """Per-iteration schedule (call ``step()`` once per optimiser step)."""
    return LambdaLR(optimizer, lambda step: lr_factor(step, spec, max_iters))
