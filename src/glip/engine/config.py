"""Training recipes: typed dataclasses that map 1:1 onto the YAML files in ``configs/``.

A recipe names the model (a preset or a pretrained folder, plus config overrides), the data
(weighted mixtures of detection, grounding and image-text sources; validation splits), the
optimiser and schedule, and the run (iterations, precision, EMA, checkpoints, logging).
``glip train configs/X.yaml --set optim.lr=2e-4 --set run.max_iters=500`` overrides single fields.
The resolved recipe is saved beside the checkpoints.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glip.config import PRESETS, GLIPConfig
from glip.errors import ConfigError
from glip.fileio import atomic_write_text
from glip.validation import Fields, build_dataclass, closest, coerce, join_path, parse_yaml, read_yaml, show

MODES = ("full", "prompt", "linear_probe", "mask")
# How a detection source's classes become its training prompts (DataSpec.class_prompt).
CLASS_PROMPTS = ("auto", "sampled", "fixed")
KINDS = ("detection", "grounding", "image_text", "refexp", "vqa", "caption")
# kinds whose boxes come from a COCO instances file of the same images (the ``instances`` field)
INSTANCE_KINDS = ("refexp", "vqa", "caption")
# Sources that can carry instance masks and whose images have integer COCO ids (held-out split).
MASK_KINDS = ("detection", "refexp")
# ``model.init`` value naming the package's embedded default model (glip.assets.default_model_path).
EMBEDDED_INIT = "embedded"
# Parts a model folder may leave out (glip.checkpoints.EXCLUDABLE).
EXPORT_EXCLUDABLE = ("text", "body")


@dataclass
class ModelSpec:
    """Which model to train.

    Attributes:
        preset: a :data:`glip.config.PRESETS` name, used when ``init`` is None.
        init: a saved model folder or an official ``.pth`` to start from, or ``embedded``: the
            package's embedded default model (:func:`glip.assets.default_model_path`).
        overrides: dotted GLIPConfig fields to change, e.g. ``{"loss.contrastive": true}`` or
            ``{"heads.mask": {"pooler_resolution": 14}}`` (adds a mask head to a model without one).
    """

    preset: str = "effnet_minilm"
    init: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceSpec:
    """One dataset of a mixture.

    Attributes:
        name: label used in logs, reports and prompt overrides.
        kind: ``detection`` (COCO-format boxes + class names), ``grounding`` (MDETR format),
            ``image_text`` (captions with pseudo boxes) or ``refexp`` (referring expressions in the
            ``coco_mt`` refexp format: each expression grounds the instances it names).
        annotations: the annotation file.
        images: the images folder (default: derived from the annotation file's location).
        weight: sampling weight in the mixture.
        prompt_overrides: class name → prompt words (detection sources).
        few_shot: keep k images per category (official ODinW greedy selection); None or 0 keeps all.
        few_shot_seed: shuffle seed of the few-shot selection.
        min_score: pseudo-box score threshold (image_text sources).
        instances: refexp sources: the COCO instances file whose annotation ids ``ann_ids`` name
            (boxes and masks come from it). Required for refexp, read by no other kind.
        masks: detection and refexp sources: instance masks for the GLIPv2 mask loss; null when
            every kept annotation has a segmentation, false never, true required.
        holdout_every: detection, refexp, vqa and caption sources: leave out the images whose id is a multiple of
            this (kept for evaluation: ``glip.data.coco.is_held_out``); 0 keeps every image.
        caption_prompts: detection sources: ODinW ``CAPTION_PROMPT`` entries, one ``{prefix, name,
            suffix}`` mapping per category in id order (a template ``"a photo of a {}"`` gives one
            per class); the prompt then reads ``prefix + name + suffix``. Needs fixed class prompts
            (``data.class_prompt: fixed``, or ``auto`` in a prompt-tuning run).
    """

    name: str
    annotations: str
    kind: str = "detection"
    images: str | None = None
    weight: float = 1.0
    prompt_overrides: dict[str, str] = field(default_factory=dict)
    few_shot: int | None = None
    few_shot_seed: int = 0
    min_score: float = 0.5
    instances: str | None = None
    masks: bool | None = None
    holdout_every: int = 0
    caption_prompts: list[dict[str, str]] | None = None


@dataclass
class DataSpec:
    """Training mixture, validation splits and the train transform."""

    train: list[SourceSpec] = field(default_factory=list)
    val: list[SourceSpec] = field(default_factory=list)
    batch_size: int = 4
    num_workers: int = 2
    # Multi-scale training: the short side is drawn from these sizes (official GLIP-T: 480..800).
    min_sizes: list[int] = field(default_factory=lambda: [480, 560, 640, 720, 800])
    max_size: int = 1333
    flip_prob: float = 0.5
    # Negative class names sampled into detection prompts (official RANDOM_SAMPLE_NEG).
    max_negatives: int = 85
    # Also sample negatives from the other detection sources' class names (not official: without it a
    # one-class dataset never sees a negative and its class swallows every other name).
    cross_dataset_negatives: bool = False
    # Training prompts of detection sources: "sampled" (pretraining: the image's classes plus sampled
    # negatives, shuffled anew for every image), "fixed" (every class in id order, the evaluation
    # prompt: official ODinW fine-tuning with DISABLE_SHUFFLE) or "auto" (fixed in a prompt-tuning
    # run, whose per-position offset can only learn a class when the class keeps its position).
    class_prompt: str = "auto"


@dataclass
class OptimSpec:
    """AdamW with the official parameter groups and a warmup + step or cosine schedule."""

    lr: float = 1e-4
    # Parameters of the text encoder (official LANG_LR).
    text_lr: float = 1e-5
    # Multiplier of lr for the image backbone body (official BACKBONE_BODY_LR_FACTOR).
    body_lr_factor: float = 1.0
    weight_decay: float = 1e-4
    # Biases: learning rate x2 and no weight decay (official BIAS_LR_FACTOR, WEIGHT_DECAY_BIAS).
    bias_lr_factor: float = 2.0
    bias_weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "step"
    warmup_iters: int = 500
    warmup_factor: float = 1e-3
    # Step schedule: multiply by gamma at these fractions of max_iters (official (0.67, 0.89)).
    steps: tuple[float, ...] = (0.67, 0.89)
    gamma: float = 0.1
    # Cosine schedule floor, as a fraction of lr.
    min_lr_factor: float = 0.01
    clip_grad_norm: float | None = 1.0
    # The prompt-tuning offset (run.mode prompt, official language_prompt_v2): its own learning rate
    # and weight decay, the official ODinW prompt-tuning values (SOLVER.BASE_LR 0.05,
    # SOLVER.WEIGHT_DECAY 0.25); lr and weight_decay above apply to every other parameter.
    prompt_lr: float = 0.05
    prompt_weight_decay: float = 0.25


@dataclass
class RunSpec:
    """How long, how precise, and where the outputs go."""

    output_dir: str = "runs/default"
    max_iters: int = 1000
    seed: int = 42
    # Fine-tuning mode: full, prompt (official language_prompt_v2), linear_probe (official linear_prob)
    # or mask (GLIPv2 second-stage mask pre-training: only the mask head trains).
    mode: str = "full"
    # Parts kept frozen in a full run: any of body, fpn, text, tower, head.
    freeze: list[str] = field(default_factory=list)
    # Freeze the first n Swin stages / CNN blocks (official FREEZE_CONV_BODY_AT); 0 trains all.
    freeze_body_stages: int = 0
    amp: str = "bf16"
    ema_decay: float | None = None
    # Steps over which the EMA decay ramps up, decay x (1 - exp(-step / ema_warmup)) as YOLOv5 does, so
    # that a short run's average is not mostly its starting weights; 0 keeps the decay constant.
    ema_warmup: int = 0
    gradient_checkpointing: bool = False
    log_every: int = 20
    eval_every: int = 500
    # Every this many steps a training checkpoint (and one at the end); 0 writes none at all.
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    device: str = "auto"
    # Evaluate the validation sources before the first step as well (the "before training" numbers).
    eval_at_start: bool = False
    # The exported model folder: parts left out because installed packages provide them ("text",
    # "body"; only for parts that stayed frozen) and the storage precision ("float32" / "float16").
    export_exclude: list[str] = field(default_factory=list)
    export_dtype: str = "float32"
    # CPU threads of the training process; 0 picks a count that does not thrash (the free cores, at
    # least 1: glip.engine.threads). An OMP_NUM_THREADS set by the user is kept.
    threads: int = 0
    # Keep the model of the best validation mean AP as <output_dir>/best_model (needs data.val).
    keep_best: bool = False


@dataclass
class TrainConfig:
    """A complete training recipe."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    run: RunSpec = field(default_factory=RunSpec)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Reject values that cannot work (wrong choices, NaN, negative sizes or rates...).

        Raises:
            ConfigError: naming the field (``optim.lr: must be positive, got -1.0``) and what is accepted.
        """
        m, r, o, d = self.model, self.run, self.optim, self.data
        _choice("model.preset", m.preset, PRESETS)
        for key, value in m.overrides.items():
            check_model_override(key, value, "model.overrides")
        _choice("run.mode", r.mode, MODES)
        _choice("data.class_prompt", d.class_prompt, CLASS_PROMPTS)
        _choice("run.amp", r.amp, ("bf16", "fp16", "none"))
        _choice("optim.schedule", o.schedule, ("step", "cosine"))
        _choice("run.export_dtype", r.export_dtype, ("float32", "float16", "bfloat16"))
        for i, part in enumerate(r.export_exclude):
            _choice(f"run.export_exclude[{i}]", part, EXPORT_EXCLUDABLE)
        _check(bool(r.output_dir.strip()), "run.output_dir", "must not be empty", r.output_dir)
        for name in ("max_iters", "log_every"):
            _at_least(f"run.{name}", getattr(r, name), 1)
        for name in ("freeze_body_stages", "eval_every", "checkpoint_every", "keep_checkpoints", "threads"):
            _at_least(f"run.{name}", getattr(r, name), 0)
        _check(r.ema_warmup >= 0, "run.ema_warmup", "must not be negative", r.ema_warmup)
        if r.ema_decay is not None:
            _check(0.0 < r.ema_decay < 1.0, "run.ema_decay", "must be in (0, 1) or null", r.ema_decay)
        _at_least("data.batch_size", d.batch_size, 1)
        _at_least("data.num_workers", d.num_workers, 0)
        _at_least("data.max_size", d.max_size, 1)
        _at_least("data.max_negatives", d.max_negatives, 0)
        _check(bool(d.min_sizes), "data.min_sizes", "must list at least one size", d.min_sizes)
        for i, size in enumerate(d.min_sizes):
            _at_least(f"data.min_sizes[{i}]", size, 1)
        _check(0.0 <= d.flip_prob <= 1.0, "data.flip_prob", "must be in [0, 1]", d.flip_prob)
        _check(o.lr > 0, "optim.lr", "must be positive", o.lr)
        _check(o.prompt_lr > 0, "optim.prompt_lr", "must be positive", o.prompt_lr)
        for name in (
            "text_lr",
            "body_lr_factor",
            "weight_decay",
            "bias_lr_factor",
            "bias_weight_decay",
            "prompt_weight_decay",
        ):
            _check(getattr(o, name) >= 0, f"optim.{name}", "must not be negative", getattr(o, name))
        for i, beta in enumerate(o.betas):
            _check(0.0 <= beta < 1.0, f"optim.betas[{i}]", "must be in [0, 1)", beta)
        _at_least("optim.warmup_iters", o.warmup_iters, 0)
        _check(0.0 <= o.warmup_factor <= 1.0, "optim.warmup_factor", "must be in [0, 1]", o.warmup_factor)
        for i, step in enumerate(o.steps):
            _check(0.0 <= step <= 1.0, f"optim.steps[{i}]", "must be a fraction of max_iters in [0, 1]", step)
        _check(o.gamma > 0, "optim.gamma", "must be positive", o.gamma)
        _check(0.0 <= o.min_lr_factor <= 1.0, "optim.min_lr_factor", "must be in [0, 1]", o.min_lr_factor)
        if o.clip_grad_norm is not None:
            _check(
                o.clip_grad_norm >= 0,
                "optim.clip_grad_norm",
                "must not be negative (null: no clipping)",
                o.clip_grad_norm,
            )
        for section, sources in (("train", d.train), ("val", d.val)):
            for i, s in enumerate(sources):
                _check_source(s, f"data.{section}[{i}]")
                if section == "train" and s.caption_prompts is not None and class_prompt(self) != "fixed":
                    raise ConfigError(
                        f"data.train[{i}].caption_prompts: caption prompts need a fixed class order: "
                        "set data.class_prompt: fixed"
                    )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        """Write the resolved recipe (atomically)."""
        atomic_write_text(path, yaml.safe_dump(_lists(self.to_dict()), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recipe") -> TrainConfig:
        """Build from a dict, checking every value against its field.

        Raises:
            ConfigError: one line naming ``source`` and the field: an unknown key (with the closest
                valid one), a value of the wrong kind (``optim.lr: expected a number, got "fast"``),
                a missing required key, or a value out of range.
        """
        fields = Fields(source, ConfigError)
        try:
            return build_dataclass(cls, data, fields)
        except ConfigError as e:
            if str(e).startswith(f"{source}: "):
                raise
            raise ConfigError(f"{source}: {e}") from e

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Read a recipe and apply ``key=value`` overrides (values parsed as YAML).

        Raises:
            ConfigError: if the file is missing, unreadable, not YAML or not a mapping, an override
                is malformed or names no field, or a value is wrong (see :meth:`from_dict`).
        """
        data = read_yaml(path, "training recipe", ConfigError, mapping=True)
        for item in overrides or []:
            apply_override(data, item)
        return cls.from_dict(data, str(path))


def class_prompt(config: TrainConfig) -> str:
    """The training prompt style of detection sources: ``data.class_prompt``, ``auto`` resolved
    (``fixed`` in a prompt-tuning run, ``sampled`` otherwise)."""
    if config.data.class_prompt != "auto":
        return config.data.class_prompt
    return "fixed" if config.run.mode == "prompt" else "sampled"


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place (``model.overrides.*`` may create keys).

    The key must name a field of the recipe (or of the model config after ``model.overrides.``);
    the value is parsed as YAML and checked against the field's type.

    Raises:
        ConfigError: if the override is malformed, names no field, or its value does not fit.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: use key=value, e.g. --set optim.lr=2e-4")
    key, raw = item.split("=", 1)
    key = key.strip()
    fields = Fields("--set", ConfigError)
    value = parse_yaml(raw, f"of --set {key}", "the value", ConfigError)
    if key.startswith("model.overrides."):  # the rest is a dotted GLIPConfig field
        name = key.removeprefix("model.overrides.")
        check_model_override(name, value, "model.overrides", fields)
        model = data.setdefault("model", {})
        if not isinstance(model, dict) or not isinstance(model.setdefault("overrides", {}), dict):
            fields.fail("model.overrides", "the recipe's model section or its overrides are not a mapping")
        model["overrides"][name] = value
        return
    parts = key.split(".")
    hint: Any = TrainConfig
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        if not (dataclasses.is_dataclass(hint) and isinstance(hint, type)):
            fields.fail(
                ".".join(parts[:depth]), "is a value, not a section: set the whole value, e.g. --set 'data.train=[...]'"
            )
        known = {f.name for f in dataclasses.fields(hint)}
        if part not in known:
            fields.fail(where, f"unknown key{closest(part, known)} (known keys: {', '.join(sorted(known))})")
        hint = typing.get_type_hints(hint)[part]
    coerce(value, hint, fields, key)
    node = data
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            fields.fail(".".join(parts[: depth + 1]), "is not a mapping in the recipe: fix the recipe file")
    node[parts[-1]] = value


def check_model_override(key: Any, value: Any, where: str, fields: Fields | None = None) -> None:
    """Check that ``key`` is a dotted :class:`~glip.config.GLIPConfig` field and ``value`` fits its type.

    Raises:
        ConfigError: naming the key (with the closest valid one) or the value.
    """
    fields = fields or Fields("", ConfigError)
    at = join_path(where, str(key))
    hint: Any = GLIPConfig
    parts = str(key).split(".")
    for depth, part in enumerate(parts):
        if not (dataclasses.is_dataclass(hint) and isinstance(hint, type)):
            fields.fail(at, f"{'.'.join(parts[:depth])} is not a section of the model config")
        known = {f.name for f in dataclasses.fields(hint)}
        if part not in known:
            options = [".".join([*parts[:depth], k]) for k in known]
            fields.fail(at, f"unknown model config field{closest('.'.join(parts[: depth + 1]), options)}")
        hint = typing.get_type_hints(hint)[part]
    coerce(value, hint, fields, at)


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x


def _check(ok: bool, where: str, problem: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{where}: {problem}, got {show(value)}")


def _at_least(where: str, value: int, minimum: int) -> None:
    _check(value >= minimum, where, f"must be at least {minimum}", value)


def _choice(where: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{where}: expected one of {', '.join(options)}, got {show(value)}{closest(value, options)}")


def _check_source(s: SourceSpec, where: str) -> None:
    _check(bool(s.name.strip()), f"{where}.name", "must not be empty", s.name)
    _check(bool(s.annotations.strip()), f"{where}.annotations", "must name the annotation file", s.annotations)
    _choice(f"{where}.kind", s.kind, KINDS)
    _check(s.weight > 0, f"{where}.weight", "must be positive", s.weight)
    if s.few_shot is not None:
        _at_least(f"{where}.few_shot", s.few_shot, 0)
    _check(0.0 <= s.min_score <= 1.0, f"{where}.min_score", "must be in [0, 1]", s.min_score)
    if s.kind in INSTANCE_KINDS:
        _check(
            bool((s.instances or "").strip()), f"{where}.instances",
            f"a {s.kind} source needs the COCO instances file its ann_ids point into", s.instances,
        )  # fmt: skip
    elif s.instances is not None:
        raise ConfigError(
            f"{where}.instances: only {', '.join(INSTANCE_KINDS)} sources read an instances file (this one is {s.kind})"
        )
    _at_least(f"{where}.holdout_every", s.holdout_every, 0)
    if s.caption_prompts is not None:
        _check(s.kind == "detection", f"{where}.caption_prompts", "applies to detection sources only", s.kind)
        for i, entry in enumerate(s.caption_prompts):
            unknown = sorted(set(entry) - {"prefix", "name", "suffix"})
            _check(not unknown, f"{where}.caption_prompts[{i}]", "keys are prefix, name and suffix", unknown)
            _check(bool(str(entry.get("name", "")).strip()), f"{where}.caption_prompts[{i}].name",
                   "must name the class", entry.get("name"))  # fmt: skip
    if s.kind not in (*MASK_KINDS, "vqa", "caption"):
        _check(
            not s.holdout_every,
            f"{where}.holdout_every",
            "applies to detection, refexp, vqa and caption sources only",
            s.holdout_every,
        )
    if s.kind not in MASK_KINDS:
        _check(not s.masks, f"{where}.masks", f"only {' and '.join(MASK_KINDS)} sources have masks", s.masks)
