"""ODinW-style transfer: zero-shot, or fine-tune per dataset (full / prompt / linear probe, few-shot) then test.

For every dataset of a folder (see :func:`glip.data.coco.find_coco_splits`) that has a training split
(``train``, ``train2017``, ``training`` ...; :func:`glip.data.coco.split_role`) and a test split (or
else a validation split: ``valid``, ``val``, ``val2017`` ...):

* ``zero-shot`` – evaluate the model as it is;
* ``full``, ``prompt``, ``linear_probe`` – for each seed, fine-tune a copy of the model on the training
  split (all images, or ``shots`` images per category chosen by the official greedy few-shot rule with
  that seed) with the base recipe, then evaluate the tuned model on the test split.

The tuned model trains on the evaluation prompt (the class names in id order, with the dataset's
prompt override: renames, caption prompts or template), as the official ODinW fine-tuning does;
prompt tuning depends on it (see :mod:`glip.engine.modes`). The starting model defaults to the
package's embedded model.

The result is one row per dataset (AP per seed and their mean) and the average over datasets, as
the ODinW tables report it.
"""

from __future__ import annotations

import copy
import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glip.data.coco import CocoDataset, SplitFile, find_coco_splits, split_role
from glip.engine.config import EMBEDDED_INIT, SourceSpec, TrainConfig
from glip.engine.modes import resolve_init
from glip.engine.trainer import Trainer
from glip.errors import ConfigError, DataError
from glip.evaluation.detection import evaluate_coco_dataset
from glip.evaluation.prompts import dataset_prompt
from glip.predictor import GLIPPredictor

logger = logging.getLogger(__name__)

MODES = ("zero-shot", "full", "prompt", "linear_probe")
# Preferred names first; any other name split_role recognises comes after them (sorted).
TRAIN_SPLITS = ("train", "train2017")
TEST_SPLITS = ("test", "valid", "val", "minival")


@dataclass
class TransferRow:
    """One dataset's result."""

    dataset: str
    test_split: str
    ap_per_seed: dict[int, float]
    mean_ap: float
    num_train_images: dict[int, int] = field(default_factory=dict)


@dataclass
class TransferResult:
    """All datasets and the average."""

    mode: str
    shots: int | None
    rows: list[TransferRow]
    average_ap: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "mode": self.mode,
            "shots": self.shots,
            "average_AP": self.average_ap,
            "rows": [vars(r) for r in self.rows],
        }

    def markdown(self) -> str:
        """The table of the result."""
        seeds = sorted({s for r in self.rows for s in r.ap_per_seed})
        head = "| dataset | test split | " + " | ".join(f"seed {s}" for s in seeds) + " | mean AP |"
        lines = [head, "|---|---|" + "---|" * (len(seeds) + 1)]
        for r in self.rows:
            cells = [f"{100 * r.ap_per_seed[s]:.1f}" if s in r.ap_per_seed else "-" for s in seeds]
            lines.append(f"| {r.dataset} | {r.test_split} | " + " | ".join(cells) + f" | {100 * r.mean_ap:.1f} |")
        shots = f"{self.shots}-shot" if self.shots else "all training images"
        lines.append(f"\n{self.mode} ({shots if self.mode != 'zero-shot' else 'no training'}): average AP "
                     f"**{100 * self.average_ap:.1f}** over {len(self.rows)} datasets")  # fmt: skip
        return "\n".join(lines) + "\n"


def _pairs(root: str | Path, datasets: Sequence[str] | None) -> list[tuple[SplitFile | None, SplitFile]]:
    found = find_coco_splits(root)
    by_name: dict[str, dict[str, SplitFile]] = {}
    for s in found:
        by_name.setdefault(s.dataset, {})[s.split] = s
    pairs = []
    for name, splits in sorted(by_name.items()):
        if datasets is not None and name not in datasets:
            continue
        test = _pick(splits, TEST_SPLITS, ("test", "val"))
        train = _pick(splits, TRAIN_SPLITS, ("train",))
        if test is None:
            logger.warning("%s has no test or validation split (found %s): skipped", name, sorted(splits))
            continue
        pairs.append((train, test))
    if not pairs:
        raise DataError(
            f"no dataset under {root} has a test or validation split (test, valid, val, val2017 ...); "
            "see glip.data.coco.find_coco_splits for the layouts"
        )
    return pairs


def _pick(splits: Mapping[str, SplitFile], preferred: Sequence[str], roles: Sequence[str]) -> SplitFile | None:
    """The first of ``preferred`` present, else the first split (by name) of the first role that has one."""
    for name in preferred:
        if name in splits:
            return splits[name]
    for role in roles:
        names = sorted(n for n in splits if split_role(n) == role)
        if names:
            return splits[names[0]]
    return None


def run_transfer(
    root: str | Path,
    model: str | Path | None = None,
    mode: str = "zero-shot",
    recipe: TrainConfig | None = None,
    shots: int | None = None,
    seeds: Sequence[int] = (0,),
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    out_dir: str | Path = "outputs/transfer",
    datasets: Sequence[str] | None = None,
    device: str = "auto",
    progress: bool = True,
    dtype: str = "fp32",
) -> TransferResult:
    """Run the protocol (see the module docstring) and return the table.

    Args:
        root: folder of datasets.
        model: the starting model (a model folder or an official ``.pth``); None or ``embedded``:
            the package's embedded default model.
        mode: one of :data:`MODES`.
        recipe: the base training recipe for the tuning modes (its data sections are replaced).
        shots: images per category for few-shot tuning; None uses every training image.
        seeds: one tuning run per seed (few-shot selection and training seed).
        overrides: per-dataset prompt overrides (see :mod:`glip.evaluation.prompts`).
        out_dir: where runs and reports go.
        datasets: only these dataset names.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: show progress bars.
        dtype: inference precision of the evaluations (see :class:`~glip.predictor.GLIPPredictor`).

    Raises:
        ConfigError: for an unknown mode, or a tuning mode without a recipe.
    """
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: use one of {MODES}")
    if mode != "zero-shot" and recipe is None:
        raise ConfigError(f"mode {mode!r} trains: give a base recipe (e.g. configs/odinw_transfer.yaml)")
    overrides = overrides or {}
    model = EMBEDDED_INIT if model is None else model
    rows = []
    for train, test in _pairs(root, datasets):
        name = test.dataset
        override = overrides.get(name)
        aps: dict[int, float] = {}
        sizes: dict[int, int] = {}
        for seed in seeds if mode != "zero-shot" else (0,):
            tuned = Path(resolve_init(str(model)))
            if mode != "zero-shot":
                if train is None:
                    logger.warning("%s has no training split: skipped for %s", name, mode)
                    break
                cfg = _recipe_for(recipe, train, test, name, override, mode, shots, seed, model, Path(out_dir))  # type: ignore[arg-type]
                trainer = Trainer(cfg)
                sizes[seed] = len(trainer.data.loader.dataset)  # type: ignore[arg-type]
                trainer.train()
                tuned = Path(cfg.run.output_dir) / "model"
            predictor = GLIPPredictor.from_pretrained(tuned, device=device, dtype=dtype)
            dataset = CocoDataset.load(test.annotation_file, test.image_root)
            prompt = dataset_prompt(dataset.category_names, override)
            _, metrics = evaluate_coco_dataset(
                predictor, dataset, prompt, progress=progress, name=name, split=test.split
            )
            aps[seed] = metrics.ap
            logger.info("%s %s seed %d: AP %.3f", name, mode, seed, metrics.ap)
        if aps:
            rows.append(TransferRow(name, test.split, aps, statistics.mean(aps.values()), sizes))
    average = statistics.mean(r.mean_ap for r in rows) if rows else float("nan")
    return TransferResult(mode, shots, rows, average)


def _recipe_for(
    base: TrainConfig, train: SplitFile, test: SplitFile, name: str, override: Mapping[str, Any] | None, mode: str,
    shots: int | None, seed: int, model: str | Path, out: Path,
) -> TrainConfig:  # fmt: skip
    cfg = copy.deepcopy(base)
    renames = dict((override or {}).get("categories") or {})
    names = CocoDataset.load(train.annotation_file, train.image_root, check_files=False).category_names
    captions = dataset_prompt(names, override).caption_prompts  # caption prompts or a template
    cfg.data.train = [
        SourceSpec(name=name, annotations=str(train.annotation_file), images=str(train.image_root),
                   prompt_overrides=renames, few_shot=shots, few_shot_seed=seed, masks=False,
                   caption_prompts=[dict(c) for c in captions] if captions is not None else None)
    ]  # fmt: skip
    if cfg.data.class_prompt == "auto":  # the evaluation prompt, in class order (official ODinW: DISABLE_SHUFFLE)
        cfg.data.class_prompt = "fixed"
    cfg.data.val = []  # detection transfer: box losses only (masks=False above), tested on the test split
    cfg.model.init = str(model)
    cfg.run.mode = mode
    cfg.run.seed = seed
    cfg.run.eval_every = 0
    cfg.run.eval_at_start = False
    cfg.run.output_dir = str(out / name / f"{mode}_{shots or 'all'}shot_seed{seed}")
    cfg.validate()
    return cfg
