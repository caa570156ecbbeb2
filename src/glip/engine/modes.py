"""Fine-tuning modes: which parameters train, and building the model a recipe asks for.

* ``full`` – everything trains (parts named in ``run.freeze`` excepted);
* ``prompt`` – official ``language_prompt_v2``: the model gets a zero-initialised per-position
  offset added to the text features before fusion, and *only* that offset trains (every other
  part in eval mode, as the official frozen RPN). The offset is per token *position*, so it can
  learn a class only if the class keeps its position: prompt runs train on the fixed evaluation
  prompt (``data.class_prompt: auto``) with the offset's own lr / weight decay (``optim.prompt_lr``
  0.05, ``optim.prompt_weight_decay`` 0.25, the official ODinW prompt-tuning values);
* ``linear_probe`` – official ``linear_prob``: only the output layers train (box regression,
  centerness, the text projection of the dot product, ``log_scale``, ``bias_lang``, ``bias0``);
* ``mask`` – GLIPv2's second stage (mask pre-training on a trained grounding model): only the
  mask head (``mask_head.*``) trains; every other part is frozen and kept in eval mode, so the
  boxes and the features the head reads stay exactly those of the starting model. A ``full`` run
  of a model with a mask head trains everything, the mask head included.

Frozen parts are also kept in eval mode (no dropout, frozen batch-norm statistics).

``model.init: embedded`` starts from the package's embedded default model; ``model.overrides``
may add heads it lacks (``{"heads.mask": {...}}``): the model is rebuilt with the new config and
every tensor that still fits is copied, so only the new head starts from its initial values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from torch import nn

from glip.config import GLIPConfig
from glip.engine.config import EMBEDDED_INIT, ModelSpec
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
MASK_HEAD = "mask_head."
PARTS = {"body": "backbone.body.", "fpn": "backbone.fpn.", "text": "text_encoder.", "tower": "tower.", "head": "head."}


def build_model(spec: ModelSpec, mode: str) -> GLIPModel:
    """The model to train: a preset (pretrained parts loaded) or an ``init`` checkpoint, plus overrides.

    A ``prompt`` run adds the prompt offset (``text.prompt_offset``) to the architecture.
    ``init: embedded`` names the package's embedded default model.

    Raises:
        CheckpointError: if ``init`` is not a loadable model (or the embedded model is missing).
        ConfigError: if an override does not fit the model config.
    """
    overrides = dict(spec.overrides)
    if mode == "prompt":
        overrides["text.prompt_offset"] = True
    if spec.init is None:
        return GLIPModel(GLIPConfig.from_preset(spec.preset).replace(**overrides))
    init = resolve_init(spec.init)
    base = GLIPModel.from_pretrained(init)
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
        logger.info("parts not in %s start from their initial values: %s", init, fresh[:10])
    return model


def resolve_init(init: str) -> str:
    """The model path ``model.init`` names: ``embedded`` is the package's default model folder."""
    if init == EMBEDDED_INIT:
        from glip.assets import default_model_path

        return str(default_model_path())
    return init


def apply_mode(model: GLIPModel, mode: str, freeze: Iterable[str] = (), freeze_body_stages: int = 0) -> list[str]:
    """Set ``requires_grad`` for a fine-tuning mode; returns the prefixes of the frozen parts.

    Raises:
        ConfigError: for an unknown mode or part name, a prompt run on a model without offset, or a
            mask run on a model without a mask head or without the mask loss.
    """
    if mode == "mask":
        if model.mask_head is None:
            raise ConfigError(
                "run.mode mask trains the mask head, and the model has none: add one with "
                "model.overrides: {heads.mask: {pooler_resolution: 14}}"
            )
        if model.config.loss.mask_weight <= 0:
            raise ConfigError("run.mode mask trains with the mask loss: set loss.mask_weight > 0")
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
        elif mode == "mask":
            train = name.startswith(MASK_HEAD)
        else:
            raise ConfigError(f"unknown fine-tuning mode {mode!r}: use full, prompt, linear_probe or mask")
        p.requires_grad_(train)
    if mode == "mask":
        # every part but the mask head, in eval mode too (the model's direct children)
        frozen_prefixes = [f"{name}." for name, _ in model.named_children() if f"{name}." != MASK_HEAD]
    elif mode == "prompt":
        # official language_prompt_v2 freezes the RPN (VL tower + head) and keeps it in eval mode:
        # no dropout in the fusion layers while only the offset learns
        frozen_prefixes = [f"{name}." for name, _ in model.named_children()]
    elif mode != "full":
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
