"""Fine-tuning modes: which parameters train, and building the model a recipe asks for.

* ``full`` – everything trains (parts named in ``run.freeze`` excepted);
* ``prompt`` – official ``language_prompt_v2``: the model gets a zero-initialised per-position
  offset added to the text features before fusion, and *only* that offset trains;
* ``linear_probe`` – official ``linear_prob``: only the output layers train (box regression,
  centerness, the text projection of the dot product, ``log_scale``, ``bias_lang``, ``bias0``).

Frozen parts are also kept in eval mode (no dropout, frozen batch-norm statistics).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from torch import nn

from glip.config import GLIPConfig
from glip.engine.config import ModelSpec
from glip.errors import ConfigError
from glip.modeling.glip import GLIPModel

logger = logging.getLogger(__name__)

LINEAR_PROBE = (
    "head.bbox_pred.",
    "head.centerness.",
    "head.text_proj.",
    "head.log_scale",
    "head.bias_lang",
    "head.bias0",
)
PARTS = {"body": "backbone.body.", "fpn": "backbone.fpn.", "text": "text_encoder.", "tower": "tower.", "head": "head."}


def build_model(spec: ModelSpec, mode: str) -> GLIPModel:
    """The model to train: a preset (pretrained parts loaded) or an ``init`` checkpoint, plus overrides.

    A ``prompt`` run adds the prompt offset (``text.prompt_offset``) to the architecture.
    """
    overrides = dict(spec.overrides)
    if mode == "prompt":
        overrides["text.prompt_offset"] = True
    if spec.init is None:
        return GLIPModel(GLIPConfig.from_preset(spec.preset).replace(**overrides))
    base = GLIPModel.from_pretrained(spec.init)
    if not overrides:
        return base
    # Rebuild with the new config and copy every tensor that still fits (new heads start fresh).
    model = GLIPModel(base.config.replace(**overrides), load_pretrained_parts=False)
    state = base.state_dict()
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    fresh = sorted(set(own) - set(fitting))
    if fresh:
        logger.info("parts not in %s start from their initial values: %s", spec.init, fresh[:10])
    return model


def apply_mode(model: GLIPModel, mode: str, freeze: Iterable[str] = (), freeze_body_stages: int = 0) -> list[str]:
    """Set ``requires_grad`` for a fine-tuning mode; returns the prefixes of the frozen parts.

    Raises:
        ConfigError: for an unknown mode or part name, or a prompt run on a model without offset.
    """
    frozen_prefixes: list[str] = []
    for part in freeze:
        if part not in PARTS:
            raise ConfigError(f"run.freeze: unknown part {part!r}; use {sorted(PARTS)}")
        frozen_prefixes.append(PARTS[part])
    for name, p in model.named_parameters():
        if mode == "full":
            train = not any(name.startswith(f) for f in frozen_prefixes)
        elif mode == "prompt":
            if model.prompt_offset is None:
                raise ConfigError("prompt tuning needs a model built with text.prompt_offset=True")
            train = name == "prompt_offset"
        elif mode == "linear_probe":
            train = name.startswith(LINEAR_PROBE)
        else:
            raise ConfigError(f"unknown fine-tuning mode {mode!r}: use full, prompt or linear_probe")
        p.requires_grad_(train)
    if mode != "full":
        frozen_prefixes = [v for k, v in PARTS.items() if k in ("body", "fpn", "text")]
    if freeze_body_stages > 0:
        body = model.backbone.body
        if not hasattr(body, "freeze_stages"):
            raise ConfigError("run.freeze_body_stages needs a Swin body")
        body.freeze_stages(freeze_body_stages)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("mode %s: %.2fM trainable parameters", mode, trainable / 1e6)
    return frozen_prefixes


def set_train_mode(model: nn.Module, frozen_prefixes: list[str]) -> None:
    """``model.train()``, then put fully frozen sub-modules back in eval mode (dropout off, BN frozen)."""
    model.train()
    for name, module in model.named_modules():
        if name and any((name + ".").startswith(f) for f in frozen_prefixes):
            module.eval()
