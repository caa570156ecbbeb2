"""COCO box AP of a list of detections, with faster-coco-eval (default) or pycocotools.

Both backends run the standard COCO protocol (IoU 0.50:0.95, area ranges, 100 detections per
image) and give identical numbers on our outputs (checked in the tests and in
``benchmarks/eval_speed.py``); faster-coco-eval is the default because it is several times faster,
pycocotools is kept as the test oracle.

Detections are COCO result records ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
glip exports boxes the way the official GLIP COCO export does: ``w = x2 - x1 + 1`` (the +1
Detectron convention, see :func:`glip.structures.xyxy_to_xywh`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("faster", "pycocotools")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class DetectionMetrics:
    """COCO box metrics (in [0, 1]; -1 where undefined, e.g. no ground truth in an area range).

    Attributes:
        stats: the 12 standard COCO numbers, named as in :data:`STAT_NAMES`.
        per_class: AP (IoU 0.50:0.95, all areas, 100 dets) per category name; None without ground truth.
        num_images, num_detections: what was evaluated.
        backend: ``"faster"`` or ``"pycocotools"``.
    """

    stats: dict[str, float]
    per_class: dict[str, float | None] = field(default_factory=dict)
    num_images: int = 0
    num_detections: int = 0
    backend: str = "faster"

    @property
    def ap(self) -> float:
        """AP at IoU 0.50:0.95."""
        return self.stats["AP"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _gt_dict(gt: dict[str, Any]) -> dict[str, Any]:
    # evaluators add fields to records: copy the records (one level), never the caller's dicts
    data = {
        **gt,
        "annotations": [dict(a) for a in gt.get("annotations", [])],
        "images": [dict(i) for i in gt["images"]],
    }
    data["categories"] = [dict(c) for c in data["categories"]]
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    for ann in data["annotations"]:  # both evaluators read these; COCO-format files may omit them
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    for i, ann in enumerate(data["annotations"], start=1):
        ann.setdefault("id", i)
    return data


def _per_class(precision: np.ndarray, cat_ids: list[int], names: dict[int, str]) -> dict[str, float | None]:
    """AP per category from the accumulated precision array ``(T, R, K, A, M)`` (area all, last maxDets)."""
    out: dict[str, float | None] = {}
    for k, cid in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        valid = p[p > -1]
        out[names[cid]] = float(valid.mean()) if valid.size else None
    return out


def evaluate_detections(
    gt: dict[str, Any],
    detections: list[dict[str, Any]],
    backend: str = "faster",
    image_ids: list[int] | None = None,
) -> DetectionMetrics:
    """COCO box AP.

    Args:
        gt: a COCO-format ground-truth dict (the parsed annotation file).
        detections: COCO result records.
        backend: ``"faster"`` (faster-coco-eval) or ``"pycocotools"``.
        image_ids: evaluate only these images (default: all images of ``gt``).

    Returns:
        The metrics; with no detections at all every defined AP is 0.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: use one of {BACKENDS}")
    data = _gt_dict(gt)
    names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    ids = image_ids if image_ids is not None else [int(im["id"]) for im in data["images"]]
    dets = [d for d in detections if d["image_id"] in set(ids)]
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt = COCO(data)
        coco_dt = coco_gt.loadRes([dict(d) for d in dets]) if dets else COCO()
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=logger.debug)
    else:
        from pycocotools.coco import COCO as PyCOCO  # noqa: N811
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = PyCOCO()
            coco_gt.dataset = data
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes([dict(d) for d in dets]) if dets else PyCOCO()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    if not dets:
        return _empty_metrics(data, ids, backend)
    evaluator.params.imgIds = ids
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(x) for x in evaluator.stats[: len(STAT_NAMES)]]
    per_class = _per_class(np.asarray(evaluator.eval["precision"]), list(evaluator.params.catIds), names)
    return DetectionMetrics(dict(zip(STAT_NAMES, stats, strict=True)), per_class, len(ids), len(dets), backend)


def _empty_metrics(data: dict[str, Any], ids: list[int], backend: str) -> DetectionMetrics:
    """No detections: AP 0 where ground truth exists, -1 where it does not."""
    keep = set(ids)
    with_gt = {a["category_id"] for a in data["annotations"] if a["image_id"] in keep and not a.get("iscrowd", 0)}
    per_class = {str(c["name"]): (0.0 if c["id"] in with_gt else None) for c in data["categories"]}
    value = 0.0 if with_gt else -1.0
    return DetectionMetrics({name: value for name in STAT_NAMES}, per_class, len(ids), 0, backend)


def format_metrics(m: DetectionMetrics) -> str:
    """One line: ``AP 41.2 | AP50 60.1 | ...`` in percent."""
    return " | ".join(f"{k} {_pct(v)}" for k, v in m.stats.items() if k in STAT_NAMES[:6])


def _pct(v: float | None) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
        return "  - "
    return f"{100 * v:4.1f}"
