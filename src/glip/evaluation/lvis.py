"""LVIS box AP as GLIP and MDETR report it ("Fixed AP", Dave et al. 2021), and its data checks.

The protocol of the official ``LvisEvaluatorFixedAP`` (MDETR's, used by GLIP) on top of ``lvis.LVISEval``:

1. **Top-k per category, before evaluation.** All detections of the dataset are grouped by
   category and each category keeps its ``k = 10_000`` highest-scoring ones (a stable sort: among
   equal scores the earlier detection is kept). No per-image cap. The filter sees the raw
   detections, so detections that the federated rules later drop still use up a category's budget.
2. **LVIS federated evaluation** with no detection limit (``max_dets = -1``): a detection of
   category ``c`` in image ``i`` is evaluated only if ``c`` is annotated in ``i`` or is in the
   image's ``neg_category_ids`` (there it can only be a false positive); any other one is dropped.
   Unmatched detections of a category in ``not_exhaustive_category_ids`` are ignored, not false
   positives. Boxes whose area is not > 0 (ground truth ``area`` field; detections ``w * h``) are
   dropped, as ``LVIS.get_ann_ids`` does. IoU 0.50:0.95, 101 recall points, areas all / small /
   medium / large (bounds 0, 32², 96², 1e10), AP per frequency group r / c / f; means over the
   categories that have ground truth; -1 where nothing is defined.

``fixed_ap=False`` gives the standard LVIS protocol instead (300 detections per image).

Backend: faster-coco-eval's ``COCOeval_faster(lvis_style=True)``, with the zero-area filter above
applied by us and the per-(image, category) limit raised above the largest group. It reproduces
``lvis.LVISEval`` to ~1e-16 (the ``lvis`` package is the oracle in ``tests/evaluation/test_lvis.py``).
Detections are LVIS result records ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
in original-image pixels; see :func:`xyxy_to_lvis_xywh`.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from glip.errors import DataError
from glip.validation import read_json, show

logger = logging.getLogger(__name__)

FIXED_AP_TOPK = 10_000  # detections kept per category over the whole dataset (official default)
LVIS_MAX_DETS_PER_IMAGE = 300  # the standard (non-fixed) LVIS protocol
FREQUENCIES = ("r", "c", "f")
BoxesT = TypeVar("BoxesT", torch.Tensor, np.ndarray)


@dataclass(frozen=True)
class LvisGroundTruth:
    """Validated LVIS-format ground truth (the records are the input's own dicts, not copies).

    Attributes:
        images: records with ``id``, ``neg_category_ids``, ``not_exhaustive_category_ids``.
        categories: records with ``id``, ``name``, ``frequency`` (``"r" | "c" | "f"``), ``synonyms``.
        annotations: records with ``id``, ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``area``.
        source: the file it came from, or ``"<dict>"``.
    """

    images: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    source: str = "<dict>"

    @property
    def image_ids(self) -> list[int]:
        """Sorted image ids."""
        return sorted(img["id"] for img in self.images)

    @property
    def category_ids(self) -> list[int]:
        """Sorted category ids."""
        return sorted(c["id"] for c in self.categories)

    @property
    def frequency(self) -> dict[int, str]:
        """Frequency group (``"r" | "c" | "f"``) of each category id."""
        return {c["id"]: c["frequency"] for c in self.categories}


def _is_id(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def _unique_ids(records: list[Any], section: str, source: str) -> set[int]:
    seen: set[int] = set()
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{source}: {section}[{i}] is a {type(rec).__name__}, expected an object.")
        if not _is_id(rec.get("id")):
            raise DataError(f"{source}: {section}[{i}] has no integer 'id' (got {show(rec.get('id'))}).")
        if rec["id"] in seen:
            raise DataError(f"{source}: {section}[{i}] repeats id {rec['id']}; ids must be unique.")
        seen.add(rec["id"])
    return seen


def validate_lvis_ground_truth(data: Any, source: str = "<dict>") -> LvisGroundTruth:
    """Check that ``data`` is LVIS-format ground truth and wrap it.

    Beyond COCO's fields LVIS has, per image, ``neg_category_ids`` and ``not_exhaustive_category_ids``
    (lists of category ids of the file) and, per category, a ``frequency`` in ``r | c | f`` and a
    ``synonyms`` list. A set ``iscrowd`` or ``ignore`` flag is rejected: LVIS has neither, and the
    ``lvis`` package and faster-coco-eval would treat them differently.

    Raises:
        DataError: naming the file and the first malformed record.
    """
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object with images, categories and annotations.")
    for key in ("images", "categories", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{source}: missing or non-list {key!r}; this is not an LVIS annotation file.")
    cat_ids = _unique_ids(data["categories"], "categories", source)
    img_ids = _unique_ids(data["images"], "images", source)
    _unique_ids(data["annotations"], "annotations", source)
    for i, cat in enumerate(data["categories"]):
        where = f"{source}: categories[{i}] (id {cat['id']})"
        if cat.get("frequency") not in FREQUENCIES:
            raise DataError(f"{where}: 'frequency' must be one of r, c, f, got {show(cat.get('frequency'))}.")
        synonyms = cat.get("synonyms")
        if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
            raise DataError(f"{where}: 'synonyms' must be a list of strings, got {show(synonyms)}.")
        if not isinstance(cat.get("name"), str):
            raise DataError(f"{where}: 'name' must be a string, got {show(cat.get('name'))}.")
    for i, img in enumerate(data["images"]):
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            ids = img.get(key)
            if not isinstance(ids, list) or not all(_is_id(v) for v in ids) or not set(ids) <= cat_ids:
                raise DataError(
                    f"{source}: images[{i}] (id {img['id']}): {key!r} must be a list of category ids of the "
                    f"file (LVIS format), got {show(ids)}."
                )
    for i, ann in enumerate(data["annotations"]):
        where = f"{source}: annotations[{i}] (id {ann['id']})"
        if not _is_id(ann.get("image_id")) or ann["image_id"] not in img_ids:
            raise DataError(f"{where}: image_id {show(ann.get('image_id'))} is not an image of the file.")
        if not _is_id(ann.get("category_id")) or ann["category_id"] not in cat_ids:
            raise DataError(f"{where}: category_id {show(ann.get('category_id'))} is not a category of the file.")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox) or min(bbox[2:]) < 0:
            raise DataError(
                f"{where}: 'bbox' must be [x, y, w, h] with finite numbers and w, h >= 0, got {show(bbox)}."
            )
        if not _is_number(ann.get("area")):
            raise DataError(f"{where}: 'area' must be a finite number, got {show(ann.get('area'))}.")
        if ann.get("iscrowd") or ann.get("ignore"):
            raise DataError(f"{where}: LVIS has no crowd or ignored annotations; remove 'iscrowd'/'ignore'.")
    return LvisGroundTruth(data["images"], data["categories"], data["annotations"], source)


def _read_json(path: str, what: str) -> Any:
    return read_json(path, what, DataError)


def load_lvis_ground_truth(source: Mapping[str, Any] | str | os.PathLike[str]) -> LvisGroundTruth:
    """Read (a JSON path) or wrap (a dict) LVIS-format ground truth, validated.

    Raises:
        DataError: the file cannot be read, is not JSON or is not LVIS format (the message names
            the file and the offending record).
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return validate_lvis_ground_truth(_read_json(path, "LVIS annotation file"), path)
    return validate_lvis_ground_truth(dict(source))


def _check_result_records(results: Sequence[Any], source: str) -> None:
    """Slow per-record check that names the first malformed result record."""
    for i, r in enumerate(results):
        bbox = r.get("bbox") if isinstance(r, Mapping) else None
        if (
            not isinstance(r, Mapping)
            or not _is_id(r.get("image_id"))
            or not _is_id(r.get("category_id"))
            or not _is_number(r.get("score"))
            or not isinstance(bbox, (list, tuple))
            or len(bbox) != 4
            or not all(_is_number(v) for v in bbox)
        ):
            raise DataError(
                f"{source}[{i}] is not an LVIS box result (integer image_id and category_id, finite score, "
                f"bbox [x, y, w, h] of finite numbers): {show(r)}."
            )


def _result_columns(results: Sequence[Any], source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(image_ids (N,), category_ids (N,), scores (N,), boxes_xywh (N, 4))`` of result records."""
    n = len(results)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4))
    try:
        columns = [np.array([r[key] for r in results]) for key in ("image_id", "category_id", "score", "bbox")]
        ok = (
            all(c.dtype.kind in "iu" for c in columns[:2])
            and all(c.dtype.kind in "iuf" for c in columns[2:])
            and columns[3].shape == (n, 4)
            and bool(np.isfinite(columns[2]).all() and np.isfinite(columns[3]).all())
        )
    except (KeyError, TypeError, ValueError, IndexError):
        ok = False
    if not ok:
        _check_result_records(results, source)
        raise DataError(f"{source}: not a list of LVIS box result records.")
    return columns[0].astype(np.int64), columns[1].astype(np.int64), columns[2].astype(np.float64), columns[3] * 1.0


def xyxy_to_lvis_xywh(boxes_xyxy: BoxesT) -> BoxesT:
    """Convert boxes to the LVIS result format exactly as the official GLIP LVIS export does.

    The official LVIS path (``convert_to_xywh`` in ``lvis_eval.py``) writes ``w = x2 - x1`` and
    ``h = y2 - y1`` **without** the ``+ 1`` of its COCO export, so the two official numbers use
    different box conventions; we follow each one where it applies.

    Args:
        boxes_xyxy: ``(num_boxes, 4)`` tensor or array of ``[x1, y1, x2, y2]`` in pixels.

    Returns:
        ``(num_boxes, 4)`` ``[x1, y1, x2 - x1, y2 - y1]``, same type, dtype and device.
    """
    if boxes_xyxy.ndim != 2 or boxes_xyxy.shape[-1] != 4:
        raise ValueError(f"boxes_xyxy must have shape (num_boxes, 4), got {tuple(boxes_xyxy.shape)}")
    out = boxes_xyxy.clone() if isinstance(boxes_xyxy, torch.Tensor) else boxes_xyxy.copy()
    out[:, 2:] = boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]
    return out


def _group_topk_mask(groups: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask ``(N,)`` of the ``k`` best scores of each group (stable: ties keep input order), and group sizes."""
    keep = np.zeros(len(groups), dtype=bool)
    if len(groups) == 0:
        return keep, np.zeros(0, np.int64)
    order = np.lexsort((-scores, groups))  # lexsort is stable, like Python's sorted(reverse=True)
    starts = np.r_[0, np.flatnonzero(np.diff(groups[order])) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    keep[order[rank < k]] = True
    return keep, sizes


def fixed_ap_topk(results: Sequence[Mapping[str, Any]], k: int = FIXED_AP_TOPK) -> list[Mapping[str, Any]]:
    """Keep the ``k`` highest-scoring detections of each category over the whole dataset (Fixed AP).

    As the official evaluator: per category a stable descending sort by score, first ``k`` kept;
    among equal scores the detection that comes first in ``results`` wins. No per-image limit.
    The evaluation does not depend on the order of the returned list (it keeps the input order).

    Args:
        results: LVIS result records; ``"category_id"`` and ``"score"`` are read.
        k: detections kept per category (``>= 1``).

    Returns:
        The kept records (the same objects, not copies), in input order.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    cats = np.array([r["category_id"] for r in results], dtype=np.int64)
    keep, _ = _group_topk_mask(cats, np.array([r["score"] for r in results], dtype=np.float64), k)
    return [r for r, kept in zip(results, keep.tolist(), strict=True) if kept]


class LvisResultCollector:
    """Collects per-image detections for Fixed AP, memory-bounded: at most ``k`` kept per category.

    The streaming form of :func:`fixed_ap_topk` (the official evaluator also merges top-k lists
    batch by batch): the kept set equals the top-k of all detections in arrival order, ties
    included. Feed :meth:`results` to :func:`evaluate_lvis`.
    """

    def __init__(self, k: int = FIXED_AP_TOPK) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.num_seen = 0
        self._parts: list[np.ndarray] = []  # (n, 7) rows: image_id, category_id, score, x, y, w, h
        self._rows = 0
        self._prune_at = 1 << 20

    def update(self, image_id: int, boxes_xyxy: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one image's detections: ``boxes_xyxy (N, 4)`` in original pixels, ``scores (N,)``, ``labels (N,)``.

        ``labels`` are LVIS category ids. Boxes convert in their own dtype, as the official export does.
        """
        boxes = boxes_xyxy.detach().cpu()
        boxes = boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()
        xywh = xyxy_to_lvis_xywh(boxes).numpy().astype(np.float64)
        ids = np.full((len(xywh), 1), float(image_id))
        cols = [ids, *(t.detach().cpu().to(torch.float64).numpy()[:, None] for t in (labels, scores))]
        self._parts.append(np.concatenate([*cols, xywh], axis=1))
        self._rows += len(xywh)
        self.num_seen += len(xywh)
        if self._rows > self._prune_at:
            rows = self._rows_kept()
            self._parts, self._rows, self._prune_at = [rows], len(rows), max(2 * len(rows), 1 << 20)

    def _rows_kept(self) -> np.ndarray:
        rows = np.concatenate(self._parts) if self._parts else np.zeros((0, 7))
        return rows[_group_topk_mask(rows[:, 1].astype(np.int64), rows[:, 2], self.k)[0]]

    def results(self) -> list[dict[str, Any]]:
        """LVIS result records of the kept detections, in arrival order."""
        return [
            {"image_id": int(r[0]), "category_id": int(r[1]), "bbox": r[3:], "score": r[2]}
            for r in self._rows_kept().tolist()
        ]


@dataclass
class LvisMetrics:
    """LVIS box metrics in [0, 1]; ``-1.0`` where undefined (no ground truth in that group or range).

    Attributes:
        AP, AP50, AP75: AP at IoU 0.50:0.95, 0.50 and 0.75 (all areas, all categories).
        APs, APm, APl: AP on small / medium / large ground truth.
        APr, APc, APf: AP over rare / common / frequent categories.
        AR, ARs, ARm, ARl: recall with every evaluated detection (the official ``AR@-1`` in Fixed AP).
        per_category_ap: AP (IoU 0.50:0.95, all areas) per category id, for categories with ground truth.
        num_detections: detections given to the LVIS evaluation, after the top-k (or per-image) filter.
        num_input_detections: detections before that filter.
        fixed_ap: whether the Fixed-AP protocol was used.
    """

    AP: float
    AP50: float
    AP75: float
    APs: float
    APm: float
    APl: float
    APr: float
    APc: float
    APf: float
    AR: float
    ARs: float
    ARm: float
    ARl: float
    per_category_ap: dict[int, float] = field(default_factory=dict)
    num_detections: int = 0
    num_input_detections: int = 0
    fixed_ap: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``json`` writes the integer category ids as strings)."""
        return asdict(self)


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def summarize_lvis(
    precision: np.ndarray, recall: np.ndarray, iou_thrs: np.ndarray, frequencies: Sequence[str]
) -> dict[str, float]:
    """The LVIS summary numbers from accumulated arrays, as ``LVISEval.summarize`` computes them.

    Args:
        precision: ``(num_iou_thrs, num_recall_thrs, num_categories, 4 areas)``, -1 where undefined.
        recall: ``(num_iou_thrs, num_categories, 4 areas)``, -1 where undefined.
        iou_thrs: ``(num_iou_thrs,)``.
        frequencies: ``"r" | "c" | "f"`` of each category, in the order of the category axis.
    """
    at = {t: np.flatnonzero(np.abs(iou_thrs - t) < 1e-12) for t in (0.5, 0.75)}
    freq = np.asarray(frequencies)
    out = {"AP": _mean_valid(precision[..., 0]), "AP50": _mean_valid(precision[at[0.5]][..., 0])}
    out["AP75"] = _mean_valid(precision[at[0.75]][..., 0])
    for name, a in (("APs", 1), ("APm", 2), ("APl", 3)):
        out[name] = _mean_valid(precision[..., a])
    for f in FREQUENCIES:
        out[f"AP{f}"] = _mean_valid(precision[:, :, freq == f, 0])
    for name, a in (("AR", 0), ("ARs", 1), ("ARm", 2), ("ARl", 3)):
        out[name] = _mean_valid(recall[..., a])
    return out


def _faster_accumulate(
    gt: LvisGroundTruth, image_ids: np.ndarray, cat_ids: np.ndarray, scores: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Run faster-coco-eval's LVIS-style evaluation; ``(precision (T,R,K,A), recall (T,K,A), iou_thrs, cat_ids)``."""
    from faster_coco_eval import COCO, COCOeval_faster

    keys = ("id", "neg_category_ids", "not_exhaustive_category_ids")
    images = [
        {**{k: img[k] for k in keys}, "height": img.get("height", 0), "width": img.get("width", 0)} for img in gt.images
    ]
    categories = [{"id": c["id"], "name": c["name"], "frequency": c["frequency"]} for c in gt.categories]
    # LVIS.get_ann_ids keeps only boxes with 0 < area < inf, for ground truth and detections alike.
    gt_anns = [
        {**{k: a[k] for k in ("id", "image_id", "category_id", "bbox")}, "area": float(a["area"]), "iscrowd": 0}
        for a in gt.annotations
        if 0 < a["area"] < math.inf
    ]
    known = np.isin(image_ids, gt.image_ids) & np.isin(cat_ids, gt.category_ids)
    areas = boxes[:, 2] * boxes[:, 3]
    valid = known & (areas > 0)
    if (~known).any():
        logger.warning("%d detections have an image or category id absent from %s; ignored.", (~known).sum(), gt.source)
    logger.debug("%d detections with box area <= 0 dropped, as the lvis package does.", (known & ~valid).sum())
    dets = [
        {"id": i, "image_id": im, "category_id": c, "bbox": b, "score": s, "area": a, "iscrowd": 0}
        for i, (im, c, b, s, a) in enumerate(
            zip(*(x[valid].tolist() for x in (image_ids, cat_ids, boxes, scores, areas)), strict=True), start=1
        )
    ]
    gt_img_ids, gt_cat_ids = np.asarray(gt.image_ids), np.asarray(gt.category_ids)
    pairs = np.searchsorted(gt_img_ids, image_ids[valid]) * len(gt_cat_ids) + np.searchsorted(
        gt_cat_ids, cat_ids[valid]
    )
    max_per_pair = int(np.unique(pairs, return_counts=True)[1].max(initial=1))

    coco_gt = COCO({"images": images, "categories": categories, "annotations": gt_anns}, print_function=logger.debug)
    coco_dt = COCO({"images": images, "categories": categories, "annotations": dets}, print_function=logger.debug)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", lvis_style=True, print_function=logger.debug)
    evaluator.params.maxDets = [max_per_pair]  # a limit no (image, category) reaches: nothing is truncated
    evaluator.evaluate()
    evaluator.accumulate()
    precision = np.asarray(evaluator.eval["precision"])[..., -1]
    recall = np.asarray(evaluator.eval["recall"])[..., -1]
    return precision, recall, np.asarray(evaluator.params.iouThrs), [int(c) for c in evaluator.params.catIds]


def evaluate_lvis(
    gt: LvisGroundTruth | Mapping[str, Any] | str | os.PathLike[str],
    results: Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    fixed_ap: bool = True,
    topk_per_category: int = FIXED_AP_TOPK,
    max_dets_per_image: int = LVIS_MAX_DETS_PER_IMAGE,
) -> LvisMetrics:
    """Box AP of LVIS result records, with the Fixed-AP protocol of GLIP/MDETR by default.

    Args:
        gt: ground truth: an :class:`LvisGroundTruth`, an LVIS-format dict, or a JSON path.
        results: LVIS result records ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
            (boxes from :func:`xyxy_to_lvis_xywh`), or a JSON path holding such a list.
        fixed_ap: Fixed AP (top ``topk_per_category`` per category, no per-image cap); if False the
            standard LVIS protocol (top ``max_dets_per_image`` per image).
        topk_per_category: ``k`` of Fixed AP (official: 10,000).
        max_dets_per_image: per-image limit of the standard protocol (official: 300; -1: none).

    Returns:
        :class:`LvisMetrics`.

    Raises:
        DataError: the ground truth or a result record is malformed.
    """
    if topk_per_category < 1:
        raise ValueError(f"topk_per_category must be >= 1, got {topk_per_category}")
    tic = time.perf_counter()
    gt = gt if isinstance(gt, LvisGroundTruth) else load_lvis_ground_truth(gt)
    if isinstance(results, (str, os.PathLike)):
        source = os.fspath(results)
        results = _read_json(source, "LVIS results file")
        if not isinstance(results, list):
            raise DataError(f"{source}: expected a JSON list of LVIS result records.")
    else:
        source = "results"
    image_ids, cat_ids, scores, boxes = _result_columns(results, source)
    if fixed_ap:
        keep, sizes = _group_topk_mask(cat_ids, scores, topk_per_category)
        if (short := int((sizes < topk_per_category).sum())) > 0:
            msg = "%d of %d categories have fewer than %d detections; outputting %d per category raises Fixed AP."
            logger.info(msg, short, len(sizes), topk_per_category, topk_per_category)
    else:
        keep, _ = _group_topk_mask(image_ids, scores, max_dets_per_image if max_dets_per_image >= 0 else len(scores))
    precision, recall, iou_thrs, eval_cats = _faster_accumulate(
        gt, image_ids[keep], cat_ids[keep], scores[keep], boxes[keep]
    )
    frequency = gt.frequency
    stats = summarize_lvis(precision, recall, iou_thrs, [frequency[c] for c in eval_cats])
    per_category = {c: _mean_valid(precision[:, :, k, 0]) for k, c in enumerate(eval_cats)}
    logger.info(
        "LVIS %s AP %.4f (APr %.4f, APc %.4f, APf %.4f): %d images, %d detections, %.1fs",
        "Fixed" if fixed_ap else "standard",
        stats["AP"],
        stats["APr"],
        stats["APc"],
        stats["APf"],
        len(gt.images),
        int(keep.sum()),
        time.perf_counter() - tic,
    )
    return LvisMetrics(
        **stats,
        per_category_ap={c: ap for c, ap in per_category.items() if ap > -1},
        num_detections=int(keep.sum()),
        num_input_detections=len(scores),
        fixed_ap=fixed_ap,
    )
