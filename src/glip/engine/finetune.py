"""``glip finetune``: fine-tune a model on one labelled set in one command.

The front door to the trainer: it reads the set (COCO, VOC or YOLO, :mod:`glip.data.formats`),
holds back a validation part when none is given, builds a :class:`~glip.engine.config.TrainConfig`
from a few arguments and runs the :class:`~glip.engine.trainer.Trainer` with defaults chosen per
mode and device:

* the starting model is the package's embedded model unless ``model`` names another;
* ``full`` trains everything but the text encoder at lr 1e-4; ``prompt`` trains only the prompt
  offset (official ``language_prompt_v2``: lr 0.05, weight decay 0.25, the class order fixed);
  ``linear`` trains the output layers (official ``linear_prob``) at lr 1e-3;
* every mode trains on the evaluation prompt (every class in id order, as the official ODinW
  fine-tuning), batches of 4 at the model's input size (short side ±64 px, multi-scale) with flips,
  AdamW, cosine schedule;
* on a CPU: a thread count that does not thrash (:mod:`glip.engine.threads`), one loader worker,
  bf16 autocast where the CPU computes bf16 natively (AVX512-BF16 / AMX), 10 epochs; on a GPU: bf16
  (fp16 without bf16 support), 8 loader workers, 30 epochs;
* the validation AP before training, 8 times during it (``evals``) and at the end, the best model kept in
  ``<out>/best_model`` (the last one in ``<out>/model``), and a report (``report.md`` / ``.json``).

The recipe it ran is written to ``<out>/config.yaml``: ``glip train <out>/config.yaml`` runs it
again, with every field open to ``--set``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from glip.config import GLIPConfig
from glip.data.formats import LabelledSet, has_val_split, load_labelled_set, split_off
from glip.devices import resolve_device
from glip.engine.config import EMBEDDED_INIT, DataSpec, ModelSpec, OptimSpec, RunSpec, SourceSpec, TrainConfig
from glip.engine.metrics_log import read_metrics
from glip.engine.modes import resolve_init
from glip.engine.trainer import BEST_MODEL, Trainer, format_duration
from glip.errors import ConfigError
from glip.evaluation.prompts import dataset_prompt
from glip.fileio import atomic_write_text

logger = logging.getLogger(__name__)

MODES = {"full": "full", "prompt": "prompt", "linear": "linear_probe", "linear_probe": "linear_probe"}
# lr of the parameters that train (prompt: optim.prompt_lr, the offset's own; see glip.engine.optim)
DEFAULT_LR = {"full": 1e-4, "prompt": 0.05, "linear_probe": 1e-3}
DEFAULT_EPOCHS = {"cpu": 10.0, "cuda": 30.0}
MIN_ITERS = 20
NUM_EVALS = 8


@dataclass
class FinetuneOptions:
    """What ``glip finetune`` was asked for; None picks the default (see the module docstring)."""

    train: str
    val: str | None = None
    images: str | None = None
    val_images: str | None = None
    model: str | None = None
    mode: str = "full"
    epochs: float | None = None
    iters: int | None = None
    out: str = "runs/finetune"
    batch_size: int = 4
    lr: float | None = None
    val_fraction: float = 0.2
    shots: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: str | None = None
    threads: int = 0
    workers: int | None = None
    prompt_template: str | None = None
    evals: int = NUM_EVALS


@dataclass
class FinetuneResult:
    """What a fine-tuning run did and reached (validation COCO AP in [0, 1])."""

    out_dir: str
    mode: str
    model: str
    device: str
    iterations: int
    batch_size: int
    epochs: float
    seconds: float
    train: str
    val: str | None
    ap_before: float | None = None
    ap50_before: float | None = None
    best_ap: float | None = None
    best_step: int | None = None
    last_ap: float | None = None
    last_ap50: float | None = None
    best_model: str | None = None
    last_model: str = ""
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def markdown(self) -> str:
        """The final report."""

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.1f}"

        lines = [
            f"## glip finetune ({self.mode})",
            "",
            f"- model: {self.model}; {self.iterations} iterations of {self.batch_size} images "
            f"({self.epochs:.1f} epochs) on {self.device}, {format_duration(self.seconds)}",
            f"- train: {self.train}",
            f"- val: {self.val or 'none'}",
            "",
        ]
        if self.val:
            lines += [
                "| validation | AP | AP50 |",
                "|---|---|---|",
                f"| before (the starting model) | {pct(self.ap_before)} | {pct(self.ap50_before)} |",
                f"| last (iteration {self.iterations}) | {pct(self.last_ap)} | {pct(self.last_ap50)} |",
                f"| best (iteration {self.best_step}) | {pct(self.best_ap)} | |",
                "",
                f"best model: {self.best_model}; last model: {self.last_model}",
            ]
        else:
            lines.append(f"model: {self.last_model}")
        return "\n".join(lines) + "\n"


def prepare_data(opts: FinetuneOptions, work_dir: Path) -> tuple[LabelledSet, LabelledSet | None]:
    """The training set and the validation set (given, named by a YOLO data.yaml, or held back).

    Raises:
        DataError: unreadable or unrecognised sets, or a validation set with other classes.
    """
    train = load_labelled_set(opts.train, work_dir, "train", opts.images)
    val: LabelledSet | None = None
    if opts.val is not None:
        val = load_labelled_set(opts.val, work_dir, "val", opts.val_images, list(train.class_names))
    elif has_val_split(opts.train):
        val = load_labelled_set(opts.train, work_dir, "val", None, list(train.class_names))
    elif opts.val_fraction > 0:
        train, val = split_off(train, opts.val_fraction, work_dir)
    if val is not None and val.class_names != train.class_names:
        raise ConfigError(
            f"the validation set's classes {list(val.class_names)[:8]} are not the training set's "
            f"{list(train.class_names)[:8]}: give both sets the same categories in the same order"
        )
    return train, val


def _input_sizes(model: str) -> tuple[list[int], int]:
    """Multi-scale short sides (the model's ±64 px in steps of 32) and the long-side cap."""
    config_file = Path(resolve_init(model)) / "config.json"
    config = GLIPConfig.from_json(config_file) if config_file.is_file() else GLIPConfig()
    base = config.input.min_size
    return [max(32, base + d) for d in (-64, -32, 0, 32, 64)], config.input.max_size


def _cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX; Linux flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_amp(device: torch.device) -> str:
    """bf16 where it pays: a GPU with bf16 (else fp16), a CPU with native bf16; else none."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and _cpu_has_bf16() else "none"


def build_recipe(
    opts: FinetuneOptions, train: LabelledSet, val: LabelledSet | None, device: torch.device
) -> TrainConfig:
    """The training recipe of a ``glip finetune`` run (see the module docstring for the defaults).

    Raises:
        ConfigError: an unknown mode or a value out of range.
    """
    if opts.mode not in MODES:
        raise ConfigError(f"--mode {opts.mode!r}: use full, prompt or linear")
    mode = MODES[opts.mode]
    model = opts.model or EMBEDDED_INIT
    kind = "cuda" if device.type == "cuda" else "cpu"
    images = training_images(train, opts.shots, opts.seed)
    batch_size = max(1, min(opts.batch_size, images))  # a 1-shot set of one class has one image
    if batch_size < opts.batch_size:
        logger.info("batches of %d: the training set has %d image(s)", batch_size, images)
    batches = max(1, images // batch_size)
    if opts.iters is not None:
        iters = opts.iters
    else:
        iters = max(MIN_ITERS, math.ceil((opts.epochs or DEFAULT_EPOCHS[kind]) * batches))
    lr = opts.lr if opts.lr is not None else DEFAULT_LR[mode]
    captions = None
    if opts.prompt_template is not None:
        captions = [
            dict(c) for c in dataset_prompt(train.class_names, None, opts.prompt_template).caption_prompts or ()
        ]

    def source(s: LabelledSet, name: str, shots: int | None = None) -> SourceSpec:
        return SourceSpec(
            name=name, annotations=str(s.annotation_file), images=str(s.image_root), few_shot=shots,
            few_shot_seed=opts.seed, masks=False, caption_prompts=captions,
        )  # fmt: skip

    # validations during the run (the one before and the one at the end come on top)
    eval_every = max(1, math.ceil(iters / (opts.evals + 1))) if val is not None and opts.evals > 0 else 0
    workers = opts.workers if opts.workers is not None else (8 if kind == "cuda" else 1)
    data = DataSpec(train=[source(train, "train", opts.shots)], val=[source(val, "val")] if val else [])
    data.batch_size, data.num_workers, data.class_prompt = batch_size, workers, "fixed"
    data.min_sizes, data.max_size = _input_sizes(model)
    optim = OptimSpec(weight_decay=0.05, schedule="cosine", warmup_iters=min(50, iters // 10), clip_grad_norm=1.0)
    if mode == "prompt":
        optim.prompt_lr = lr  # the offset's own lr; optim.prompt_weight_decay stays the official 0.25
    else:
        optim.lr = lr
    run = RunSpec(output_dir=opts.out, max_iters=iters, seed=opts.seed, mode=mode, freeze=["text"])
    run.amp, run.device, run.threads = opts.amp or default_amp(device), str(device), opts.threads
    run.log_every, run.eval_every, run.checkpoint_every = max(1, min(20, iters // 20)), eval_every, 0
    run.eval_at_start = run.keep_best = val is not None
    run.export_exclude = ["text"] if _text_from_package(model) else []
    return TrainConfig(model=ModelSpec(init=model), data=data, optim=optim, run=run)


def training_images(train: LabelledSet, shots: int | None, seed: int) -> int:
    """Images an epoch has: those with a box (the loader drops the others), or the few-shot choice."""
    from collections import defaultdict

    from glip.data.coco import CocoDataset
    from glip.data.mixing import few_shot_image_ids

    dataset = CocoDataset.load(train.annotation_file, train.image_root, check_files=False)
    cats: dict[Any, set[int]] = defaultdict(set)
    for ann in dataset.data.get("annotations", []):
        cats[ann["image_id"]].add(int(ann["category_id"]))
    with_boxes = [im["id"] for im in dataset.images if dataset.annotations.get(im["id"])]
    if not shots:
        return len(with_boxes)
    return len(few_shot_image_ids(with_boxes, cats, shots, dataset.category_ids, seed))


def _text_from_package(model: str) -> bool:
    """Whether the model's text encoder comes from an installed package (then it is not saved again)."""
    config_file = Path(resolve_init(model)) / "config.json"
    return config_file.is_file() and GLIPConfig.from_json(config_file).text.weights is not None


def finetune(opts: FinetuneOptions) -> FinetuneResult:
    """Prepare the data, build the recipe, train, and write the report (see the module docstring).

    Raises:
        GLIPError: for unreadable data, a bad option or model, or a disk problem (one-line messages).
    """
    out = Path(opts.out)
    device = resolve_device(opts.device)
    train_set, val_set = prepare_data(opts, out / "data")
    logger.info("train: %s (%s)", opts.train, train_set.describe())
    if val_set is not None:
        held = " (held back from the training set)" if opts.val is None and not has_val_split(opts.train) else ""
        logger.info("val: %s%s", val_set.describe(), held)
    config = build_recipe(opts, train_set, val_set, device)
    t0 = time.perf_counter()
    trainer = Trainer(config)
    images = len(trainer.data.loader.dataset)  # type: ignore[arg-type]
    epochs = config.run.max_iters * config.data.batch_size / max(1, images)
    logger.info(
        "fine-tuning (%s) %s: %d iterations of %d images (%.1f epochs of %d images), %s",
        config.run.mode, config.model.init, config.run.max_iters, config.data.batch_size, epochs, images,
        f"amp {config.run.amp}" if config.run.amp != "none" else "fp32",
    )  # fmt: skip
    trainer.train()
    result = _result(opts, config, train_set, val_set, epochs, time.perf_counter() - t0)
    atomic_write_text(out / "report.md", result.markdown())
    atomic_write_text(out / "report.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _result(
    opts: FinetuneOptions, config: TrainConfig, train: LabelledSet, val: LabelledSet | None, epochs: float,
    seconds: float,
) -> FinetuneResult:  # fmt: skip
    out = Path(config.run.output_dir)
    history = [
        {"step": r["step"], "AP": r["val/val/AP"], "AP50": r.get("val/val/AP50", math.nan)}
        for r in read_metrics(out / "metrics.jsonl")
        if "val/val/AP" in r
    ]
    result = FinetuneResult(
        out_dir=str(out), mode=config.run.mode, model=opts.model or "the embedded model", device=config.run.device,
        iterations=config.run.max_iters, batch_size=config.data.batch_size, epochs=epochs, seconds=seconds,
        train=f"{opts.train}: {train.describe()}", val=f"{opts.val or opts.train}: {val.describe()}" if val else None,
        last_model=str(out / "model"), history=history,
    )  # fmt: skip
    if history:
        first, last = history[0], history[-1]
        best = max(history, key=lambda h: h["AP"])
        result.ap_before, result.ap50_before = (first["AP"], first["AP50"]) if first["step"] == 0 else (None, None)
        result.last_ap, result.last_ap50 = last["AP"], last["AP50"]
        result.best_ap, result.best_step = best["AP"], int(best["step"])
        result.best_model = str(out / BEST_MODEL)
    return result
