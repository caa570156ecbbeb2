"""Evaluate one model on a folder of COCO-format datasets (ODinW style) and tabulate the results.

Every ``<dataset>/annotations/<split>.json`` (or Roboflow ``<dataset>/<split>/_annotations.coco.json``)
whose split is selected is evaluated with COCO AP. The suite average follows the ODinW convention of
one number per dataset: the ``test`` split where the dataset has one, else ``valid`` / ``val``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glip.data.coco import CocoDataset, find_coco_splits
from glip.errors import DataError
from glip.evaluation.detection import EvalReport, evaluate_coco_dataset
from glip.evaluation.prompts import dataset_prompt
from glip.predictor import GLIPPredictor

logger = logging.getLogger(__name__)

DEFAULT_SPLITS = ("val", "valid", "test")
SPLIT_PREFERENCE = ("test", "valid", "val", "minival")


@dataclass
class SuiteResult:
    """Per-split reports and the suite average."""

    reports: list[EvalReport]
    average: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"reports": [r.to_dict() for r in self.reports], "average": self.average}


def suite_average(reports: Sequence[EvalReport]) -> dict[str, Any]:
    """Mean AP over datasets, one split per dataset (test, else valid, else val, else the first)."""
    chosen: dict[str, EvalReport] = {}
    for r in reports:
        current = chosen.get(r.dataset)
        rank = SPLIT_PREFERENCE.index(r.split) if r.split in SPLIT_PREFERENCE else len(SPLIT_PREFERENCE)
        if current is None or rank < (
            SPLIT_PREFERENCE.index(current.split) if current.split in SPLIT_PREFERENCE else len(SPLIT_PREFERENCE)
        ):
            chosen[r.dataset] = r
    aps = [r.metrics["stats"]["AP"] for r in chosen.values()]
    valid = [a for a in aps if a >= 0]
    return {
        "datasets": sorted(chosen),
        "splits": {k: v.split for k, v in sorted(chosen.items())},
        "rule": "test if present, else valid/val",
        "AP": sum(valid) / len(valid) if valid else math.nan,
    }


def evaluate_suite(
    predictor: GLIPPredictor,
    root: str | Path,
    splits: Sequence[str] = DEFAULT_SPLITS,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    template: str | None = None,
    batch_size: int = 1,
    backend: str = "faster",
    out_dir: str | Path | None = None,
    datasets: Sequence[str] | None = None,
    progress: bool = True,
) -> SuiteResult:
    """Evaluate every selected split below ``root``.

    Args:
        predictor: the model wrapper.
        root: folder of datasets.
        splits: split names to evaluate.
        overrides: per-dataset prompt overrides (see :mod:`glip.evaluation.prompts`).
        template: a ``"... {} ..."`` applied to every class name where no override says otherwise.
        batch_size, backend, out_dir, progress: as :func:`~glip.evaluation.detection.evaluate_coco_dataset`.
        datasets: only these dataset names.

    Raises:
        DataError: if nothing matches.
    """
    found = find_coco_splits(root, tuple(splits))
    if datasets is not None:
        found = [f for f in found if f.dataset in set(datasets)]
    if not found:
        raise DataError(f"no COCO-format splits {tuple(splits)} found under {root}")
    reports = []
    for item in found:
        dataset = CocoDataset.load(item.annotation_file, item.image_root)
        prompt = dataset_prompt(dataset.category_names, (overrides or {}).get(item.dataset), template)
        report, metrics = evaluate_coco_dataset(
            predictor, dataset, prompt, batch_size, backend, out_dir, item.dataset, item.split, progress
        )
        logger.info("%s/%s: AP %.3f", item.dataset, item.split, metrics.ap)
        reports.append(report)
    return SuiteResult(reports, suite_average(reports))
