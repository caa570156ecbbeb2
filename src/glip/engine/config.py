"""Training recipes: typed dataclasses that map 1:1 onto the YAML files in ``configs/``.

A recipe names the model (a preset or a pretrained folder, plus config overrides), the data
(weighted mixtures of detection, grounding and image-text sources; validation splits), the
optimiser and schedule, and the run (iterations, precision, EMA, checkpoints, logging).
``glip train configs/X.yaml --set optim.lr=2e-4 --set run.max_iters=500`` overrides single fields.
The resolved recipe is saved beside the checkpoints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glip.errors import ConfigError

MODES = ("full", "prompt", "linear_probe")
KINDS = ("detection", "grounding", "image_text")


@dataclass
class ModelSpec:
    """Which model to train.

    Attributes:
        preset: a :data:`glip.config.PRESETS` name, used when ``init`` is None.
        init: a saved model folder or an official ``.pth`` to start from.
        overrides: dotted GLIPConfig fields to change, e.g. ``{"loss.contrastive": true}``.
    """

    preset: str = "effnet_minilm"
    init: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceSpec:
    """One dataset of a mixture.

    Attributes:
        name: label used in logs, reports and prompt overrides.
        kind: ``detection`` (COCO-format boxes + class names), ``grounding`` (MDETR format) or
            ``image_text`` (captions with pseudo boxes).
        annotations: the annotation file.
        images: the images folder (default: derived from the annotation file's location).
        weight: sampling weight in the mixture.
        prompt_overrides: class name → prompt words (detection sources).
        few_shot: keep k images per category (official ODinW greedy selection); None keeps all.
        few_shot_seed: shuffle seed of the few-shot selection.
        min_score: pseudo-box score threshold (image_text sources).
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


@dataclass
class RunSpec:
    """How long, how precise, and where the outputs go."""

    output_dir: str = "runs/default"
    max_iters: int = 1000
    seed: int = 42
    # Fine-tuning mode: full, prompt (official language_prompt_v2) or linear_probe (official linear_prob).
    mode: str = "full"
    # Parts kept frozen in a full run: any of body, fpn, text, tower, head.
    freeze: list[str] = field(default_factory=list)
    # Freeze the first n Swin stages / CNN blocks (official FREEZE_CONV_BODY_AT); 0 trains all.
    freeze_body_stages: int = 0
    amp: str = "bf16"
    ema_decay: float | None = None
    gradient_checkpointing: bool = False
    log_every: int = 20
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    device: str = "auto"
    # Evaluate the validation sources before the first step as well (the "before training" numbers).
    eval_at_start: bool = False
    # The exported model folder: parts left out because installed packages provide them ("text",
    # "body"; only for parts that stayed frozen) and the storage precision ("float32" / "float16").
    export_exclude: list[str] = field(default_factory=list)
    export_dtype: str = "float32"


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
        """Reject values that cannot work.

        Raises:
            ConfigError: naming the field and what is accepted.
        """
        r, o, d = self.run, self.optim, self.data
        if r.mode not in MODES:
            raise ConfigError(f"run.mode={r.mode!r}: use one of {MODES}")
        if r.amp not in ("bf16", "fp16", "none"):
            raise ConfigError(f"run.amp={r.amp!r}: use bf16, fp16 or none")
        if o.schedule not in ("step", "cosine"):
            raise ConfigError(f"optim.schedule={o.schedule!r}: use step or cosine")
        if r.max_iters < 1 or d.batch_size < 1:
            raise ConfigError("run.max_iters and data.batch_size must be at least 1")
        if r.export_dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"run.export_dtype={r.export_dtype!r}: use float32, float16 or bfloat16")
        if r.ema_decay is not None and not 0.0 < r.ema_decay < 1.0:
            raise ConfigError(f"run.ema_decay={r.ema_decay} must be in (0, 1)")
        for s in [*d.train, *d.val]:
            if s.kind not in KINDS:
                raise ConfigError(f"data source {s.name!r}: kind={s.kind!r}, use one of {KINDS}")
            if s.weight <= 0:
                raise ConfigError(f"data source {s.name!r}: weight must be positive")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        """Write the resolved recipe."""
        Path(path).write_text(yaml.safe_dump(_lists(self.to_dict()), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are an error.

        Raises:
            ConfigError: on unknown keys or wrong kinds of values.
        """
        return _build(cls, data, "recipe")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Read a recipe and apply ``key=value`` overrides (values parsed as YAML).

        Raises:
            ConfigError: if the file is missing, not YAML, or an override names no field.
        """
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"training recipe {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"training recipe {p} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"training recipe {p} must be a mapping")
        for item in overrides or []:
            apply_override(data, item)
        return cls.from_dict(data)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place (``model.overrides.*`` may create keys).

    Raises:
        ConfigError: if the override is malformed or names no field.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: use key=value, e.g. --set optim.lr=2e-4")
    key, raw = item.split("=", 1)
    key, value = key.strip(), yaml.safe_load(raw)
    if key.startswith("model.overrides."):  # the rest is a dotted GLIPConfig field
        data.setdefault("model", {}).setdefault("overrides", {})[key.removeprefix("model.overrides.")] = value
        return
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where}; known: {sorted(fields)}")
    kwargs = {}
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    sub = {"model": ModelSpec, "data": DataSpec, "optim": OptimSpec, "run": RunSpec}
    for name, value in data.items():
        if cls is TrainConfig and name in sub:
            kwargs[name] = _build(sub[name], value, f"{where}.{name}")
        elif cls is DataSpec and name in ("train", "val"):
            if not isinstance(value, list):
                raise ConfigError(f"{where}.{name} must be a list of data sources")
            kwargs[name] = [_build(SourceSpec, v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        elif "tuple" in str(hints[name]) and isinstance(value, list):
            kwargs[name] = tuple(value)
        elif "float" in str(hints[name]) and isinstance(value, str):
            # YAML 1.1 reads "2e-4" (no dot) as a string
            try:
                kwargs[name] = float(value)
            except ValueError as e:
                raise ConfigError(f"{where}.{name} must be a number, got {value!r}") from e
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e
