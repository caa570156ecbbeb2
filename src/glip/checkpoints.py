"""Checkpoint IO: official GLIP ``.pth`` → our state dict (explicit key map), and our model folders.

Official checkpoints are ``{"model": {"module.<key>": tensor}, "optimizer": ..., "scheduler": ...,
"iteration": ..., ["model_ema": ...]}`` written by a DDP-wrapped model. Only ``"model"`` is read
(official evaluation uses the non-EMA weights). Every official key is renamed by the rules in
:func:`official_key_to_ours`; keys that GLIP inference never uses are skipped *by name*
(:data:`IGNORED_OFFICIAL_KEYS`), anything else that does not map is reported as unexpected.

Our saved models are folders: ``config.json`` + ``model.safetensors`` (+ tokenizer files).
Files are written to a temporary name and renamed, so an interrupted save never leaves a
half-written model behind.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from glip.config import GLIPConfig, SwinConfig, TextConfig, TowerConfig, VisionConfig
from glip.errors import CheckpointError, ConfigError, GLIPError
from glip.fileio import atomic_write
from glip.validation import one_line, read_json, show

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# Official keys that GLIP inference never reads, skipped by name (regular expressions on the key
# after the "module." prefix).
IGNORED_OFFICIAL_KEYS: tuple[tuple[str, str], ...] = (
    (r"rpn\.head\.cls_logits\.(weight|bias)", "unused closed-set classifier (its loss is multiplied by 0)"),
    (r"rpn\.anchor_generator\.cell_anchors\.\d+", "anchor buffers, recomputed from the config"),
    (r"language_backbone\.body\.model\.embeddings\.position_ids", "position-id buffer of old transformers"),
    (r"language_backbone\.body\.model\.pooler\.dense\.(weight|bias)", "BERT pooler, unused by GLIP"),
    (r"rpn\.head\.mlm_head\..*", "masked-language-model head of pre-training, unused at inference"),
    (r"rpn\.tunable_linear\.weight", "prompt-tuning offset, loaded only into a model built with text.prompt_offset"),
)
# Top-level entries of an official checkpoint file other than "model", skipped by name.
IGNORED_CONTAINER_ENTRIES = ("optimizer", "scheduler", "iteration", "model_ema")

_TEXT_LAYER = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}
_DYCONV = [
    (r"DyConv\.(\d)\.conv\.(weight|bias)", r"convs.\1.conv.\2"),
    (r"DyConv\.(\d)\.bn\.(weight|bias)", r"convs.\1.norm.\2"),
    (r"AttnConv\.1\.(weight|bias)", r"scale_attn.\1"),
    (r"relu\.fc\.0\.(weight|bias)", r"act.fc1.\1"),
    (r"relu\.fc\.2\.(weight|bias)", r"act.fc2.\1"),
    (r"offset\.(weight|bias)", r"offset.\1"),
]
_HEAD = {
    "bbox_pred.weight": "head.bbox_pred.weight",
    "bbox_pred.bias": "head.bbox_pred.bias",
    "centerness.weight": "head.centerness.weight",
    "centerness.bias": "head.centerness.bias",
    "dot_product_projection_text.weight": "head.text_proj.weight",
    "dot_product_projection_text.bias": "head.text_proj.bias",
    "log_scale": "head.log_scale",
    "bias_lang": "head.bias_lang",
    "bias0": "head.bias0",
}
# Official keys of optional parts (prompt tuning, MLM head) -> ours. When our model does not build the
# part, the converter reports them with the ignored keys (they match IGNORED_OFFICIAL_KEYS).
_OPTIONAL = {
    "rpn.tunable_linear.weight": "prompt_offset",
    "rpn.head.mlm_head.transform.dense.weight": "mlm_head.dense.weight",
    "rpn.head.mlm_head.transform.dense.bias": "mlm_head.dense.bias",
    "rpn.head.mlm_head.transform.LayerNorm.weight": "mlm_head.norm.weight",
    "rpn.head.mlm_head.transform.LayerNorm.bias": "mlm_head.norm.bias",
    "rpn.head.mlm_head.decoder.weight": "mlm_head.decoder.weight",
    "rpn.head.mlm_head.decoder.bias": "mlm_head.decoder.bias",
    "rpn.head.mlm_head.bias": "mlm_head.decoder.bias",  # the same tensor, registered twice officially
}
_FPN = {
    "fpn_inner2": "inner_blocks.0",
    "fpn_inner3": "inner_blocks.1",
    "fpn_inner4": "inner_blocks.2",
    "fpn_layer2": "layer_blocks.0",
    "fpn_layer3": "layer_blocks.1",
    "fpn_layer4": "layer_blocks.2",
    "top_blocks.p6": "p6",
    "top_blocks.p7": "p7",
}


def official_key_to_ours(key: str, early_fusion: bool) -> str | None:
    """Our parameter name for an official key (``module.`` already stripped), or None if it does not map.

    Args:
        key: official state-dict key.
        early_fusion: the official tower interleaves ``[VLFuse, BertEncoderLayer, DyConv]`` (GLIP-T/L);
            without fusion (GLIP-T(A)) every tower index is a DyConv.
    """
    if key in _OPTIONAL:  # heads that exist only in some checkpoints and some of our configs
        return _OPTIONAL[key]
    if is_ignored_official_key(key):
        return None
    if key.startswith("backbone.body."):
        return key
    if m := re.fullmatch(r"backbone\.fpn\.(fpn_inner\d|fpn_layer\d|top_blocks\.p[67])\.(weight|bias)", key):
        return f"backbone.fpn.{_FPN[m[1]]}.{m[2]}" if m[1] in _FPN else None
    if key.startswith("language_backbone.body.model."):
        return "text_encoder.bert." + key.removeprefix("language_backbone.body.model.")
    if m := re.fullmatch(r"rpn\.head\.scales\.(\d+)\.scale", key):
        return f"head.scales.{m[1]}.scale"
    if key.startswith("rpn.head.") and key.removeprefix("rpn.head.") in _HEAD:
        return _HEAD[key.removeprefix("rpn.head.")]
    if m := re.fullmatch(r"rpn\.head\.dyhead_tower\.(\d+)\.(.+)", key):
        index, rest = int(m[1]), m[2]
        block, kind = (index // 3, index % 3) if early_fusion else (index, 2)
        prefix = f"tower.blocks.{block}"
        if kind == 0 and rest.startswith("b_attn."):
            return f"{prefix}.fusion.{rest.removeprefix('b_attn.')}"
        if kind == 1:
            for theirs, ours in _TEXT_LAYER.items():
                if rest.startswith(theirs + "."):
                    return f"{prefix}.text_layer.{ours}.{rest.removeprefix(theirs + '.')}"
            return None
        if kind == 2:
            for pattern, repl in _DYCONV:
                if re.fullmatch(pattern, rest):
                    return f"{prefix}.dyconv." + re.sub(pattern, repl, rest)
        return None
    return None


def is_ignored_official_key(key: str) -> bool:
    """Whether ``key`` is one of the known harmless extras (see :data:`IGNORED_OFFICIAL_KEYS`)."""
    return any(re.fullmatch(pattern, key) for pattern, _ in IGNORED_OFFICIAL_KEYS)


@dataclass
class ConversionReport:
    """What happened when an official state dict was mapped onto our model."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for the log / CLI."""
        lines = [f"mapped {self.loaded} tensors; skipped {len(self.ignored)} known unused keys"]
        lines.append(f"missing (left at their initial values): {len(self.missing)} {self.missing[:10]}")
        lines.append(f"unexpected (not used): {len(self.unexpected)} {self.unexpected[:10]}")
        return "\n".join(lines)


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The ``"model"`` state dict of an official checkpoint file, ``module.`` prefix removed.

    Raises:
        CheckpointError: if the file is missing or cannot be read safely.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read {p} as a weights-only PyTorch checkpoint ({type(e).__name__}: {e}); "
            "glip never unpickles arbitrary objects"
        ) from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        extras = [k for k in obj if k != "model"]
        skipped = [k for k in extras if k in IGNORED_CONTAINER_ENTRIES]
        if skipped:
            logger.info("ignoring checkpoint entries %s (only 'model' is used)", skipped)
        other = [k for k in extras if k not in IGNORED_CONTAINER_ENTRIES]
        if other:
            logger.warning("ignoring unknown checkpoint entries %s", other)
        state = obj["model"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj
    else:
        raise CheckpointError(f"{p} is not a GLIP checkpoint: expected a dict with a 'model' state dict")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{p} is not a GLIP checkpoint: {len(bad)} entries of its state dict are not named tensors"
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def check_finite(state: dict[str, Tensor], source: str | Path) -> None:
    """Refuse weights holding NaN or infinite values (a corrupt file, or a training run that diverged).

    Raises:
        CheckpointError: naming the file and the first tensors affected.
    """
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} tensor(s) hold NaN or infinite values, e.g. {', '.join(bad[:5])}: the weights are "
            "corrupt (or the training run diverged); use another checkpoint"
        )


def infer_config(state: dict[str, Tensor]) -> GLIPConfig:
    """Guess the official architecture (GLIP-T, GLIP-L, GLIP-T(A) and Swin/BERT sizes) from its keys and shapes.

    Raises:
        CheckpointError: if the keys are not those of an official GLIP model.
    """
    try:
        embed = state["backbone.body.patch_embed.proj.weight"].shape[0]
        depths = tuple(
            len({int(m[1]) for k in state if (m := re.match(rf"backbone\.body\.layers\.{s}\.blocks\.(\d+)\.", k))})
            for s in range(4)
        )
        heads = tuple(
            state[f"backbone.body.layers.{s}.blocks.0.attn.relative_position_bias_table"].shape[1] for s in range(4)
        )
        table = state["backbone.body.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
        window = (round(table**0.5) + 1) // 2
        word = state["language_backbone.body.model.embeddings.word_embeddings.weight"]
        n_text = len(
            {int(m[1]) for k in state if (m := re.match(r"language_backbone\.body\.model\.encoder\.layer\.(\d+)\.", k))}
        )
        inter = state["language_backbone.body.model.encoder.layer.0.intermediate.dense.weight"].shape[0]
        fpn_channels = state["backbone.fpn.fpn_inner2.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"not an official GLIP (Swin + BERT) checkpoint: key {e} is missing") from e
    except (IndexError, ValueError, TypeError) as e:  # tensors of the wrong rank
        raise CheckpointError(f"not an official GLIP (Swin + BERT) checkpoint: unexpected tensor shapes ({e})") from e
    tower_idx = {int(m[1]) for k in state if (m := re.match(r"rpn\.head\.dyhead_tower\.(\d+)\.", k))}
    early = any(".b_attn." in k for k in state)
    n_tower = len(tower_idx)
    num_blocks = (n_tower + 2) // 3 if early else n_tower
    fused = early and any(k.startswith(f"rpn.head.dyhead_tower.{3 * (num_blocks - 1) + 1}.") for k in state)
    hidden = word.shape[1]
    swin = SwinConfig(
        embed_dim=embed, depths=depths, num_heads=heads, window_size=window, drop_path_rate=0.4 if embed >= 192 else 0.2
    )
    text = TextConfig(
        hidden_size=hidden,
        num_hidden_layers=n_text,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=inter,
        vocab_size=word.shape[0],
    )
    fusion_key = "rpn.head.dyhead_tower.0.b_attn.attn.v_proj.weight"
    if early and (fusion_key not in state or state[fusion_key].ndim != 2):
        raise CheckpointError(f"not an official GLIP checkpoint: {fusion_key} is missing or not a matrix")
    fusion_dim = state[fusion_key].shape[0] if early else 2048
    # Head counts and GroupNorm groups leave no trace in the shapes: the official values are fixed.
    tower = TowerConfig(
        num_blocks=num_blocks,
        channels=fpn_channels,
        early_fusion=early,
        fused_text_for_logits=fused,
        fusion_embed_dim=fusion_dim,
    )
    if early and embed == 96 and num_blocks == 6:
        preset = "glip_t"
    elif early and embed == 192 and num_blocks == 8:
        preset = "glip_l"
    elif not early and embed == 96 and num_blocks == 6:
        preset = "glip_t_a"
    else:
        preset = "custom"
    try:
        vision = VisionConfig(swin=swin, fpn_channels=fpn_channels)
        return GLIPConfig(vision=vision, text=text, tower=tower, preset=preset)
    except ConfigError as e:
        raise CheckpointError(f"the checkpoint's architecture is not a valid GLIP config: {e}") from e


def convert_official_state(
    official: dict[str, Tensor], model_state: dict[str, Tensor], early_fusion: bool
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Rename an official state dict into ours and check it against our model's state dict.

    Raises:
        CheckpointError: if any mapped tensor's shape differs from ours (lists every mismatch).
    """
    report = ConversionReport()
    out: dict[str, Tensor] = {}
    mismatches = []
    for key, value in official.items():
        ours = official_key_to_ours(key, early_fusion)
        if ours is None or ours not in model_state:
            (report.ignored if is_ignored_official_key(key) else report.unexpected).append(key)
            continue
        if tuple(value.shape) != tuple(model_state[ours].shape):
            mismatches.append(f"{key} {tuple(value.shape)} -> {ours} {tuple(model_state[ours].shape)}")
            continue
        out[ours] = value
    if mismatches:
        raise CheckpointError(
            f"{len(mismatches)} checkpoint tensors do not fit the model (wrong preset or config?): "
            + "; ".join(mismatches[:8])
        )
    report.loaded = len(out)
    report.missing = sorted(k for k in model_state if k not in out)
    return out, report


def load_official(
    path: str | Path, model_cls: type, config: GLIPConfig | None = None
) -> tuple[Any, ConversionReport]:
    """Build a model from an official ``.pth`` (architecture inferred unless ``config`` is given).

    Args:
        path: the official checkpoint.
        model_cls: the model class (:class:`glip.modeling.glip.GLIPModel`); passed in so that this
            module does not depend on the modeling code.
        config: the architecture; None infers it from the checkpoint's keys.
    """
    official = read_official_checkpoint(path)
    config = config or infer_config(official)
    model = model_cls(config, load_pretrained_parts=False)
    state, report = convert_official_state(official, model.state_dict(), config.tower.early_fusion)
    check_finite(state, path)
    model.load_state_dict(state, strict=False)
    logger.info("%s", report.summary())
    return model, report


# Parts that a model folder may leave out because installed packages provide them: the model is then
# built with its pretrained parts loaded (text.weights / vision.pretrained) and the file fills the rest.
EXCLUDABLE = {
    "text": ("text_encoder.", "text.weights"),
    "body": ("backbone.body.", "vision.pretrained"),
}
MANIFEST_NAME = "weights.json"


def save_model(
    model: object,
    folder: str | Path,
    tokenizer: object | None = None,
    exclude: tuple[str, ...] = (),
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and tokenizer files into ``folder`` (atomically per file).

    Args:
        model: the model.
        folder: output folder.
        tokenizer: tokenizer to save (default: the config's).
        exclude: parts left out of the weight file because an installed package provides them
            (``"text"``: the config's ``text.weights``; ``"body"``: the CNN body with ``vision.pretrained``).
            They must not have changed in training; the loader rebuilds them from the packages.
        dtype: store floating-point tensors in this dtype (e.g. ``torch.float16`` to halve the file);
            the loader casts back to the model's dtype.

    Raises:
        CheckpointError: if an excluded part has no package to come from.
    """
    from glip.text import load_tokenizer

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    config: GLIPConfig = model.config  # type: ignore[attr-defined]
    prefixes = []
    for part in exclude:
        if part not in EXCLUDABLE:
            raise CheckpointError(f"cannot exclude {part!r}: use one of {sorted(EXCLUDABLE)}")
        prefix, field_name = EXCLUDABLE[part]
        if (part == "text" and config.text.weights is None) or (part == "body" and not config.vision.pretrained):
            raise CheckpointError(
                f"cannot leave out {part!r}: the config has no installed weights for it ({field_name})"
            )
        prefixes.append(prefix)
    state = {
        k: (
            v.detach().cpu().to(dtype) if dtype is not None and v.is_floating_point() else v.detach().cpu()
        ).contiguous()
        for k, v in model.state_dict().items()  # type: ignore[attr-defined]
        if not k.startswith(tuple(prefixes))
    }
    meta = {"format": "pt", "preset": config.preset}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata=meta))
    atomic_write(out / CONFIG_NAME, lambda tmp: config.to_json(tmp))
    manifest = {"excluded_prefixes": prefixes, "dtype": str(dtype).removeprefix("torch.") if dtype else "float32"}
    atomic_write(out / MANIFEST_NAME, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n"))
    tok = tokenizer if tokenizer is not None else load_tokenizer(config.text.tokenizer)
    tok.save_pretrained(str(out))  # type: ignore[attr-defined]
    return out


def load_model(path: str | Path, model_cls: type, map_location: str | torch.device = "cpu") -> Any:
    """Load one of our model folders, or an official ``.pth`` file, as a ``model_cls``
    (:class:`glip.modeling.glip.GLIPModel`; use ``GLIPModel.from_pretrained``).

    The folder's files are checked before the model is built: ``config.json`` field by field, the
    tensor names and shapes of ``model.safetensors`` against the architecture the config describes
    (computed without allocating it), and every weight for NaN or infinite values.

    Raises:
        CheckpointError: if the path is missing, incomplete, unreadable, its weights do not fit its
            config or hold NaN/infinite values.
        ConfigError: if ``config.json`` is not a valid config (naming the field).
    """
    p = Path(path)
    if p.is_file() and p.suffix in (".pth", ".pt", ".bin"):
        model, _ = load_official(p, model_cls)
        return model.to(map_location)  # type: ignore[attr-defined]
    if not p.exists():
        raise CheckpointError(
            f"model {p} does not exist: give a model folder (config.json + model.safetensors) or an official .pth"
        )
    if not (p / CONFIG_NAME).is_file() or not (p / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{p} is not a glip model folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    config = GLIPConfig.from_json(p / CONFIG_NAME)
    excluded = _excluded_prefixes(p / MANIFEST_NAME)
    with torch.device("meta"):  # shapes only: a corrupt config cannot make us allocate a huge model
        skeleton = _build(model_cls, config, p, load_pretrained_parts=False)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items() if not k.startswith(excluded)}
    _check_names_and_shapes(_header_shapes(p / WEIGHTS_NAME), expected, p)
    try:
        state = load_file(str(p / WEIGHTS_NAME))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(one_line(f"cannot read {p / WEIGHTS_NAME}: {e}")) from e
    check_finite(state, p / WEIGHTS_NAME)
    # parts left out of the file come from the installed packages named by the config
    parts = {name for name, (prefix, _) in EXCLUDABLE.items() if prefix in excluded}
    model = _build(model_cls, config, p, load_pretrained_parts=parts)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    return model.to(map_location)


def _build(model_cls: type, config: GLIPConfig, folder: Path, **kwargs: Any) -> Any:
    """``model_cls(config)``; a config that passes validation but cannot be built (or whose packaged or
    referenced parts cannot be read) becomes a one-line ConfigError."""
    try:
        return model_cls(config, **kwargs)
    except GLIPError:
        raise
    except (ValueError, RuntimeError, TypeError, KeyError, IndexError, OSError, SafetensorError) as e:
        raise ConfigError(one_line(f"{folder / CONFIG_NAME}: cannot build the model it describes: {e}")) from e


def _excluded_prefixes(manifest: Path) -> tuple[str, ...]:
    """The ``excluded_prefixes`` of a folder's ``weights.json`` (none when the file is absent)."""
    if not manifest.is_file():
        return ()
    data = read_json(manifest, "weight manifest", CheckpointError, mapping=True)
    prefixes = data.get("excluded_prefixes", [])
    allowed = [prefix for prefix, _ in EXCLUDABLE.values()]
    if not isinstance(prefixes, list) or not all(x in allowed for x in prefixes):
        raise CheckpointError(
            f"{manifest}: excluded_prefixes must be a list of {allowed}, got {show(prefixes)}: re-save the model"
        )
    return tuple(prefixes)


def _header_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors file, read from its header (no tensor is loaded)."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (a safetensors handle is not iterable)
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(one_line(f"cannot read {weights}: {e}: the file is not a safetensors file")) from e


def _check_names_and_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], p: Path) -> None:
    bad = [f"{k} {found[k]} vs {expected[k]}" for k in found if k in expected and found[k] != expected[k]]
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if bad or missing or unexpected:
        raise CheckpointError(
            f"weights in {p} do not match its config: {len(bad)} shape mismatches {bad[:3]}, "
            f"{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}; "
            f"was {CONFIG_NAME} edited or copied from another model?"
        )
