"""Referring-expression segmentation: the metrics and the evaluation loop.

Metrics are computed the way PhraseCut computes them. Per expression, the predicted mask is the
union of every instance mask the model returns for the expression with a score at or above the
threshold, and of the best-scoring one in any case (``keep_best``: an expression always names at
least one object), and the ground truth is the union mask of the referred instances:

* **mean IoU** (``mean_iou``): the IoU of each expression, averaged over expressions;
* **cumulative IoU** (``cumulative_iou``): the sum of intersections over the sum of unions (pixels)
  of the whole set, so large objects weigh more;
* **Pr@0.5 / Pr@0.7 / Pr@0.9**: the fraction of expressions whose IoU is at least the threshold;

overall and per ``template`` when the records carry one. An expression whose two masks are both
empty scores IoU 1 (nothing to find, nothing found); an empty prediction of a non-empty mask scores 0.

The refexp files (the ``coco_mt`` refexp format, ``shared/data/README.md``) are read by
:func:`glip.data.refexp.load_refexp`, the reader training uses too (re-exported here). Files whose
``info.description`` says DERIVED (the ``coco_mt`` and ``coco128`` refexp files: templated language
generated from COCO instances) are labelled "coco_mt derived" in every report: their numbers are not
RefCOCO or PhraseCut numbers.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from glip.data.refexp import DERIVED_LABEL, RefExp, RefExpDataset, expression_prompt, load_refexp
from glip.errors import ConfigError, DataError, PromptError
from glip.evaluation.report import refseg_markdown, write_reports
from glip.fileio import atomic_write_text
from glip.images import load_image
from glip.masks import intersection_union, union
from glip.predictor import GLIPPredictor, check_threshold
from glip.structures import Detections

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
PR_THRESHOLDS = (0.5, 0.7, 0.9)


# ------------------------------------------------------------------------------------ metrics
@dataclass
class RefSegMetrics:
    """Referring segmentation metrics (all in [0, 1]).

    Attributes:
        num_expressions: how many expressions were scored.
        mean_iou: mean over expressions of the IoU of the predicted and ground-truth union masks.
        cumulative_iou: total intersection / total union (pixels) over the expressions.
        precision_at: ``{"Pr@0.5": ..., "Pr@0.7": ..., "Pr@0.9": ...}``: fraction with IoU >= threshold.
        per_template: the same numbers per ``template`` (empty when the records carry none).
    """

    num_expressions: int
    mean_iou: float
    cumulative_iou: float
    precision_at: dict[str, float]
    per_template: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def expression_iou(intersection: int, union_: int) -> float:
    """IoU from pixel counts; 1 when both masks are empty."""
    return intersection / union_ if union_ > 0 else 1.0


def compute_refseg_metrics(
    intersections: Sequence[int],
    unions: Sequence[int],
    templates: Sequence[str | None] | None = None,
    thresholds: Sequence[float] = PR_THRESHOLDS,
) -> RefSegMetrics:
    """mIoU, cIoU and Pr@thresholds from per-expression pixel counts.

    Args:
        intersections, unions: ``(N,)`` pixel counts of ``pred & gt`` and ``pred | gt`` per expression.
        templates: ``(N,)`` template per expression (None: not broken down).
        thresholds: IoU thresholds of the precisions.

    Returns:
        The metrics; with no expression every number is 0.
    """
    if len(intersections) != len(unions):
        raise ValueError(f"{len(intersections)} intersections but {len(unions)} unions")
    ious = [expression_iou(i, u) for i, u in zip(intersections, unions, strict=True)]
    n = len(ious)
    total_union = sum(unions)
    cum = (sum(intersections) / total_union if total_union > 0 else 1.0) if n else 0.0
    precision = {f"Pr@{t:g}": (sum(iou >= t for iou in ious) / n if n else 0.0) for t in thresholds}
    per_template: dict[str, dict[str, Any]] = {}
    if templates is not None:
        if len(templates) != n:
            raise ValueError(f"{len(templates)} templates for {n} expressions")
        for name in sorted({t for t in templates if t is not None}):
            idx = [k for k, t in enumerate(templates) if t == name]
            sub = compute_refseg_metrics([intersections[k] for k in idx], [unions[k] for k in idx], None, thresholds)
            per_template[name] = {k: v for k, v in sub.to_dict().items() if k != "per_template"}
    return RefSegMetrics(n, sum(ious) / n if n else 0.0, cum, precision, per_template)


# ------------------------------------------------------------------------------------ evaluation
@dataclass
class RefSegReport:
    """The outcome of a referring-segmentation evaluation.

    Attributes:
        dataset: the dataset's name (:attr:`RefExpDataset.name`, "(coco_mt derived)" included).
        annotation_file: the refexp file.
        description: its ``info.description``.
        derived: whether the file is DERIVED (templated): its numbers are "coco_mt derived" numbers.
        threshold: the score a returned mask needs to enter the prediction.
        keep_best: whether the best-scoring mask entered the prediction whatever its score.
        num_images, num_expressions: what was evaluated.
        metrics: :meth:`RefSegMetrics.to_dict`.
        prompt_errors: expressions the model could not take as a prompt (scored as empty predictions).
        seconds, expressions_per_second: timing.
        report_files: the markdown and JSON reports, when written.
        results_file: the per-expression results (IoU, pixel counts, masks kept), when written.
    """

    dataset: str
    annotation_file: str
    description: str
    derived: bool
    threshold: float
    keep_best: bool
    num_images: int
    num_expressions: int
    metrics: dict[str, Any]
    prompt_errors: int = 0
    seconds: float = 0.0
    expressions_per_second: float = 0.0
    report_files: list[str] = field(default_factory=list)
    results_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def union_above(
    det: Detections, threshold: float, size: tuple[int, ...], keep_best: bool = False
) -> tuple[Tensor, int]:
    """The union of a prediction's masks scoring at least ``threshold`` (and of the best-scoring one
    with ``keep_best``; detections are sorted by score), and how many there are.

    Returns:
        ``(H, W)`` bool mask (all False when nothing scores high enough) and the number of masks.

    Raises:
        ConfigError: if the detections carry no masks (the model has no mask head).
    """
    if det.masks is None:
        raise ConfigError(
            "the model has no mask head, so it cannot be evaluated for referring segmentation: "
            "use a model with a mask head"
        )
    chosen = det.scores >= threshold
    if keep_best and len(det):
        chosen[0] = True
    masks = det.masks[chosen.to(det.masks.device)]
    if masks.shape[0] == 0:
        return torch.zeros(*size, dtype=torch.bool), 0
    return union(masks.bool().cpu()), int(masks.shape[0])


def evaluate_refseg(
    predictor: GLIPPredictor,
    refexp_file: str | Path | RefExpDataset,
    images_root: str | Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    progress: bool = True,
    out_dir: str | Path | None = None,
    keep_best: bool = True,
) -> RefSegReport:
    """Predict a mask for every expression of a refexp file and score it (see the module docstring).

    Args:
        predictor: a model with a mask head (``predict_chunks(..., masks=True)`` returns masks).
        refexp_file: the refexp JSON file, or an already loaded :class:`RefExpDataset`.
        images_root: the images folder (see :func:`load_refexp`).
        threshold: the score a returned mask needs to be part of the predicted union.
        progress: show a progress bar.
        keep_best: the best-scoring mask is part of the prediction even below ``threshold``.
        out_dir: write ``<stem>_refseg_report.md`` / ``.json`` (via
            :func:`glip.evaluation.report.write_reports`) and ``<stem>_refseg_results.json`` there.

    Raises:
        ConfigError: for a model without a mask head; GLIPError: for a threshold outside [0, 1];
        DataError: for a malformed refexp file, or an image whose file is not the size its record gives.
    """
    threshold = check_threshold(threshold)
    ds = refexp_file if isinstance(refexp_file, RefExpDataset) else load_refexp(refexp_file, images_root)
    by_image: dict[int, list[RefExp]] = {}
    for ref in ds.refs:
        by_image.setdefault(ref.image_id, []).append(ref)
    results: list[dict[str, Any]] = []
    prompt_errors = 0
    t0 = time.perf_counter()
    with tqdm(total=len(ds), desc=f"refseg {ds.annotation_file.stem}", unit="expr", disable=not progress) as bar:
        for image_id, refs in by_image.items():
            image = load_image(ds.image_path(image_id))
            if (image.height, image.width) != ds.image_size(image_id):
                h, w = ds.image_size(image_id)
                raise DataError(
                    f"{ds.annotation_file}: image id {image_id} ({ds.images[image_id]['file_name']}) is "
                    f"{image.width}x{image.height} pixels but its record says {w}x{h}: fix width/height"
                )
            prompts: dict[int, Any] = {}
            for ref in refs:
                try:
                    prompts[ref.ref_id] = predictor.prompts_for(prompt=expression_prompt(ref.expression))[0]
                except PromptError as e:
                    logger.warning("ref_id %s: %s; scored as an empty prediction", ref.ref_id, e)
                    prompt_errors += 1
            # the image is encoded once for all its expressions
            dets = predictor.predict_prompts(
                [image], list(prompts.values()), masks=True, mask_min_score=threshold, mask_top_k=int(keep_best)
            )
            by_ref = dict(zip(prompts, dets[0], strict=True))
            for ref in refs:
                gt = ds.gt_mask(ref)
                det = by_ref.get(ref.ref_id)
                if det is None:
                    pred, kept = torch.zeros_like(gt), 0
                else:
                    pred, kept = union_above(det, threshold, gt.shape, keep_best)
                inter, uni = intersection_union(pred, gt)
                results.append(
                    {"ref_id": ref.ref_id, "image_id": image_id, "expression": ref.expression,
                     "template": ref.template, "iou": round(expression_iou(inter, uni), 6),
                     "intersection": inter, "union": uni, "masks_kept": kept}
                )  # fmt: skip
                bar.update(1)
    seconds = time.perf_counter() - t0
    metrics = compute_refseg_metrics(
        [r["intersection"] for r in results],
        [r["union"] for r in results],
        [r["template"] for r in results] if any(r["template"] is not None for r in results) else None,
    )
    report = RefSegReport(
        dataset=ds.name, annotation_file=str(ds.annotation_file), description=ds.description, derived=ds.derived,
        threshold=threshold, keep_best=keep_best, num_images=len(by_image), num_expressions=len(results),
        metrics=metrics.to_dict(),
        prompt_errors=prompt_errors, seconds=round(seconds, 2),
        expressions_per_second=round(len(results) / seconds, 3) if seconds > 0 else 0.0,
    )  # fmt: skip
    logger.info(
        "%s: mIoU %.3f, cIoU %.3f over %d expressions",
        ds.name, metrics.mean_iou, metrics.cumulative_iou, metrics.num_expressions,
    )  # fmt: skip
    if out_dir is not None:
        stem = _stem(ds)
        out = Path(out_dir)
        report.results_file = str(atomic_write_text(out / f"{stem}_refseg_results.json", json.dumps(results)))
        report.report_files = [str(out / f"{stem}_refseg_report.md"), str(out / f"{stem}_refseg_report.json")]
        write_reports(out, f"{stem}_refseg_report", refseg_markdown(report), report.to_dict())
    return report


def _stem(ds: RefExpDataset) -> str:
    """``<dataset folder>_<file stem>`` with only file-name-safe characters."""
    path = ds.annotation_file
    folder = path.parent.parent.name if path.parent.name == "annotations" else path.parent.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{folder}_{path.stem}" if folder else path.stem)


__all__ = [
    "DEFAULT_THRESHOLD",
    "DERIVED_LABEL",
    "PR_THRESHOLDS",
    "RefExp",
    "RefExpDataset",
    "RefSegMetrics",
    "RefSegReport",
    "compute_refseg_metrics",
    "evaluate_refseg",
    "expression_iou",
    "expression_prompt",
    "load_refexp",
    "union_above",
]
