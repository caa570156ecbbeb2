"""COCO box AP and mask AP of a list of detections, with faster-coco-eval (default) or pycocotools.

Both backends run the standard COCO protocol (IoU 0.50:0.95, area ranges, 100 detections per
image) and give identical numbers on our outputs (checked in the tests and in
``benchmarks/eval_speed.py``); faster-coco-eval is the default because it is several times faster,
pycocotools is kept as the test oracle.

Detections are COCO result records ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
(box AP, ``iou_type="bbox"``) or ``{"image_id", "category_id", "segmentation": RLE, "score"}``
(mask AP, ``iou_type="segm"``). glip exports boxes the way the official GLIP COCO export does:
``w = x2 - x1 + 1`` (the +1 Detectron convention, see :func:`glip.structures.xyxy_to_xywh`).

Mask AP: a result's ``bbox`` is dropped before evaluation, because both COCO APIs take a result's
area from its box when it has one, which would put masks in the wrong small/medium/large range
(detectron2 drops it for the same reason). Ground-truth annotations need a ``segmentation``
(polygons, or RLE for crowd regions); one without ``area`` gets its mask area.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from glip.errors import ConfigError, DataError
from glip.validation import Fields, is_number

logger = logging.getLogger(__name__)

BACKENDS = ("faster", "pycocotools")
IOU_TYPES = ("bbox", "segm")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class DetectionMetrics:
    """COCO box or mask metrics (in [0, 1]; -1 where undefined, e.g. no ground truth in an area range).

    Attributes:
        stats: the 12 standard COCO numbers, named as in :data:`STAT_NAMES`.
        per_class: AP (IoU 0.50:0.95, all areas, 100 dets) per category name; None without ground truth.
        num_images, num_detections: what was evaluated.
        backend: ``"faster"`` or ``"pycocotools"``.
        iou_type: ``"bbox"`` (box AP) or ``"segm"`` (mask AP).
    """

    stats: dict[str, float]
    per_class: dict[str, float | None] = field(default_factory=dict)
    num_images: int = 0
    num_detections: int = 0
    backend: str = "faster"
    iou_type: str = "bbox"

    @property
    def ap(self) -> float:
        """AP at IoU 0.50:0.95."""
        return self.stats["AP"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def check_iou_type(iou_type: object) -> str:
    """``iou_type`` if it is one of :data:`IOU_TYPES`.

    Raises:
        ConfigError: otherwise.
    """
    if iou_type not in IOU_TYPES:
        raise ConfigError(f"iou_type {iou_type!r}: use 'bbox' (box AP) or 'segm' (mask AP)")
    return str(iou_type)


def check_gt_segmentations(gt: dict[str, Any], source: str = "") -> None:
    """Fail unless every annotation of ``gt`` carries a mask (what mask AP needs).

    Only the structure is checked (polygons: a list of lists of numbers; RLE: an object with
    ``size`` and ``counts``); the evaluators rasterise them.

    Raises:
        DataError: naming the first annotation without a usable ``segmentation``.
    """
    fields = Fields(source)
    for i, ann in enumerate(gt.get("annotations", [])):
        where = f"annotations[{i}].segmentation"
        if not isinstance(ann, dict) or "segmentation" not in ann:
            fields.fail(where, "missing: mask AP (iou_type 'segm') needs a mask (polygons or RLE) on every annotation")
        seg = ann["segmentation"]
        if isinstance(seg, list):
            for j, poly in enumerate(seg):
                if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0):
                    fields.fail(f"{where}[{j}]", "expected a polygon [x1, y1, x2, y2, x3, y3, ...] (>= 3 points)")
                if not all(is_number(v) for v in poly):  # fast path first: COCO has millions of coordinates
                    for k, v in enumerate(poly):
                        fields.number(v, f"{where}[{j}][{k}]")
        elif isinstance(seg, dict):
            fields.require(seg, ("size", "counts"), where, "RLE mask")
            if not isinstance(seg["counts"], (str, list)):
                fields.fail(f"{where}.counts", "expected an RLE string or a list of run lengths")
        else:
            fields.fail(where, "expected polygons ([[x1, y1, ...], ...]) or an RLE mask ({size, counts})")


def _gt_dict(gt: dict[str, Any], iou_type: str = "bbox") -> dict[str, Any]:
    # evaluators add fields to records: copy the records (one level), never the caller's dicts
    data = {
        **gt,
        "annotations": [dict(a) for a in gt.get("annotations", [])],
        "images": [dict(i) for i in gt["images"]],
    }
    data["categories"] = [dict(c) for c in data["categories"]]
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in data["images"]}
    for ann in data["annotations"]:  # both evaluators read these; COCO-format files may omit them
        ann.setdefault("iscrowd", 0)
        if "area" not in ann and iou_type == "segm" and ann.get("image_id") in sizes:
            from glip.masks import segmentation_to_mask

            ann["area"] = float(segmentation_to_mask(ann["segmentation"], *sizes[ann["image_id"]]).sum())
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
    iou_type: str = "bbox",
) -> DetectionMetrics:
    """COCO box AP (``iou_type="bbox"``) or mask AP (``iou_type="segm"``).

    Args:
        gt: a COCO-format ground-truth dict (the parsed annotation file); for mask AP every
            annotation needs a ``segmentation``.
        detections: COCO result records; for mask AP each carries ``"segmentation"`` (COCO RLE,
            ``{"size": [H, W], "counts": str}``) and any ``"bbox"`` is ignored.
        backend: ``"faster"`` (faster-coco-eval) or ``"pycocotools"``.
        image_ids: evaluate only these images (default: all images of ``gt``).
        iou_type: ``"bbox"`` or ``"segm"``.

    Returns:
        The metrics; with no detections at all every defined AP is 0.

    Raises:
        ConfigError: for an unknown ``iou_type``; DataError: (mask AP) for an annotation or a
            result without a mask.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: use one of {BACKENDS}")
    check_iou_type(iou_type)
    if iou_type == "segm":
        check_gt_segmentations(gt)
    data = _gt_dict(gt, iou_type)
    names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    ids = image_ids if image_ids is not None else [int(im["id"]) for im in data["images"]]
    keep = set(ids)
    dets = [_result_record(d, i, iou_type) for i, d in enumerate(detections) if d["image_id"] in keep]
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt = COCO(data)
        coco_dt = coco_gt.loadRes(dets) if dets else COCO()
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=logger.debug)
    else:
        from pycocotools.coco import COCO as PyCOCO  # noqa: N811
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = PyCOCO()
            coco_gt.dataset = data
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(dets) if dets else PyCOCO()
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    if not dets:
        return _empty_metrics(data, ids, backend, iou_type)
    evaluator.params.imgIds = ids
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(x) for x in evaluator.stats[: len(STAT_NAMES)]]
    per_class = _per_class(np.asarray(evaluator.eval["precision"]), list(evaluator.params.catIds), names)
    return DetectionMetrics(
        dict(zip(STAT_NAMES, stats, strict=True)), per_class, len(ids), len(dets), backend, iou_type
    )


def _result_record(det: dict[str, Any], index: int, iou_type: str) -> dict[str, Any]:
    """A copy of one result record for the evaluators (mask AP: with its mask, without its box)."""
    record = dict(det)  # the evaluators add fields: never touch the caller's dicts
    if iou_type == "segm":
        seg = record.get("segmentation")
        if not (isinstance(seg, dict) and "size" in seg and "counts" in seg):
            raise DataError(
                f"detections[{index}]: mask AP needs a 'segmentation' (COCO RLE {{size, counts}}) on every result"
            )
        if isinstance(seg["counts"], list):  # uncompressed: the result loaders read compressed counts only
            from glip.masks import decode_rle, encode_rle

            seg = encode_rle(decode_rle(seg))
        record["segmentation"] = dict(seg)
        record.pop("bbox", None)  # else both COCO APIs take the result's area from its box
    return record


def _empty_metrics(data: dict[str, Any], ids: list[int], backend: str, iou_type: str = "bbox") -> DetectionMetrics:
    """No detections: AP 0 where ground truth exists, -1 where it does not."""
    keep = set(ids)
    with_gt = {a["category_id"] for a in data["annotations"] if a["image_id"] in keep and not a.get("iscrowd", 0)}
    per_class = {str(c["name"]): (0.0 if c["id"] in with_gt else None) for c in data["categories"]}
    value = 0.0 if with_gt else -1.0
    return DetectionMetrics({name: value for name in STAT_NAMES}, per_class, len(ids), 0, backend, iou_type)


def format_metrics(m: DetectionMetrics) -> str:
    """One line: ``AP 41.2 | AP50 60.1 | ...`` in percent."""
    return " | ".join(f"{k} {_pct(v)}" for k, v in m.stats.items() if k in STAT_NAMES[:6])


def _pct(v: float | None) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
        return "  - "
    return f"{100 * v:4.1f}"
