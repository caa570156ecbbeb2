"""Run a predictor over a COCO-format dataset and score it (COCO box or mask AP, or LVIS Fixed AP).

The prompt is the dataset's category names (see :mod:`glip.evaluation.prompts`), chunked when it
does not fit in 256 tokens, with global category ids kept through the chunks. Detections are
exported as COCO result records with the official box conventions: ``w = x2 - x1 + 1`` for COCO,
``w = x2 - x1`` for LVIS (an inconsistency of the official evaluation that we reproduce). For mask
AP (``iou_type="segm"``) the predictor is asked for masks and every record also carries its mask as
COCO RLE (``"segmentation"``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from glip.data.coco import CocoDataset
from glip.errors import ConfigError, DataError
from glip.evaluation.coco_eval import (
    DetectionMetrics,
    check_gt_segmentations,
    check_iou_type,
    evaluate_detections,
)
from glip.evaluation.prompts import DatasetPrompt, dataset_prompt, prompt_chunks
from glip.fileio import atomic_write_text
from glip.masks import encode_rle
from glip.predictor import GLIPPredictor
from glip.processing import load_image
from glip.structures import Detections, xyxy_to_xywh

logger = logging.getLogger(__name__)


def _prefetch(paths: list[Path], workers: int = 4, ahead: int = 16) -> Iterator[Image.Image]:
    """Decode images in background threads, in order, at most ``ahead`` images in advance."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for path in paths:
            pending.append(pool.submit(load_image, path))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def iter_dataset_detections(
    predictor: GLIPPredictor,
    dataset: CocoDataset,
    prompt: DatasetPrompt | None = None,
    batch_size: int = 1,
    progress: bool = True,
    masks: bool = False,
) -> Iterator[tuple[dict[str, Any], Detections]]:
    """Yield ``(image record, detections)`` for every image of ``dataset``, in id order.

    Detections carry the dataset's category ids as labels, boxes in original pixels (xyxy), and
    with ``masks`` the ``(K, H, W)`` bool masks the predictor returns (None from a model without a
    mask head: see :func:`predict_dataset`).
    """
    prompt = prompt or dataset_prompt(dataset.category_names)
    chunks = prompt_chunks(predictor, prompt, dataset.category_ids)  # templated classes are chunked too
    logger.info("%s: %d categories in %d prompt chunk(s)", dataset.annotation_file, len(prompt.names), len(chunks))
    images = dataset.images
    stream = _prefetch([dataset.image_path(im) for im in images])
    with tqdm(total=len(images), desc=f"eval {dataset.annotation_file.stem}", unit="img", disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            records = images[start : start + batch_size]
            pil = [next(stream) for _ in records]
            # the keyword only when asked, so predictors without mask support keep working for box AP
            dets = predictor.predict_chunks(pil, chunks, masks=True) if masks else predictor.predict_chunks(pil, chunks)
            yield from zip(records, dets, strict=True)
            bar.update(len(records))


def predict_dataset(
    predictor: GLIPPredictor,
    dataset: CocoDataset,
    prompt: DatasetPrompt | None = None,
    batch_size: int = 1,
    plus_one: bool = True,
    progress: bool = True,
    masks: bool = False,
) -> list[dict[str, Any]]:
    """Detections of every image of ``dataset`` as COCO result records.

    Args:
        predictor: the model wrapper (its ``max_detections`` / chunking settings apply).
        dataset: the images and categories.
        prompt: names / caption prompts per category (default: the category names).
        batch_size: images per forward pass.
        plus_one: export ``w = x2 - x1 + 1`` (COCO, official) or ``w = x2 - x1`` (LVIS, official).
        progress: show a progress bar.
        masks: ask the predictor for masks and add each one as ``"segmentation"`` (COCO RLE at the
            size the annotation file gives the image).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`` (+ ``"segmentation"``).

    Raises:
        ConfigError: with ``masks``, if the model returns no masks (it has no mask head).
        DataError: with ``masks``, if an image's file is not the size its record gives (its masks
            could not be compared with the ground truth).
    """
    results: list[dict[str, Any]] = []
    for record, det in iter_dataset_detections(predictor, dataset, prompt, batch_size, progress, masks=masks):
        boxes = xyxy_to_xywh(det.boxes_xyxy.float().cpu(), legacy_plus_one=plus_one).tolist()
        rles = _mask_rles(det, record, dataset) if masks else None
        for k, (box, score, label) in enumerate(
            zip(boxes, det.scores.cpu().tolist(), det.labels.cpu().tolist(), strict=True)
        ):
            result = {"image_id": record["id"], "category_id": int(label), "bbox": [round(v, 3) for v in box],
                      "score": round(float(score), 5)}  # fmt: skip
            if rles is not None:
                result["segmentation"] = rles[k]
            results.append(result)
    return results


def _mask_rles(det: Detections, record: dict[str, Any], dataset: CocoDataset) -> list[dict[str, Any]]:
    """The masks of one image's detections as COCO RLE; see :func:`predict_dataset` for the errors."""
    if det.masks is None:
        raise ConfigError(
            "the model has no mask head, so it cannot be evaluated for mask AP (iou_type 'segm'): "
            "use a model with a mask head, or evaluate box AP (iou_type 'bbox')"
        )
    size = (round(float(record["height"])), round(float(record["width"])))
    if tuple(det.masks.shape[-2:]) != size:
        raise DataError(
            f"{dataset.annotation_file}: image id {record['id']} ({record['file_name']}) is "
            f"{det.masks.shape[-1]}x{det.masks.shape[-2]} pixels but its record says {size[1]}x{size[0]}: "
            "masks are compared at the recorded size; fix width/height in the annotation file"
        )
    return [encode_rle(m) for m in det.masks.cpu()]


@dataclass
class EvalReport:
    """The outcome of evaluating one dataset split."""

    dataset: str
    split: str
    annotation_file: str
    num_images: int
    prompt: str
    metrics: dict[str, Any]
    seconds: float
    images_per_second: float
    detections_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def evaluate_coco_dataset(
    predictor: GLIPPredictor,
    dataset: CocoDataset,
    prompt: DatasetPrompt | None = None,
    batch_size: int = 1,
    backend: str = "faster",
    out_dir: str | Path | None = None,
    name: str | None = None,
    split: str | None = None,
    progress: bool = True,
    iou_type: str = "bbox",
) -> tuple[EvalReport, DetectionMetrics]:
    """Predict and compute COCO box AP (``iou_type="bbox"``) or mask AP (``iou_type="segm"``).

    With ``out_dir``, the result records are written to ``<out_dir>/<name>_<split>_detections.json``
    (box AP) or ``<out_dir>/<name>_<split>_segm_detections.json`` (mask AP; the records carry both
    the box and the mask, and the report's ``extra["box_metrics"]`` gives the box AP of the same run).

    Raises:
        ConfigError: for an unknown ``iou_type``, or mask AP with a model without a mask head.
        DataError: mask AP on an annotation file whose annotations have no ``segmentation``.
    """
    check_iou_type(iou_type)
    segm = iou_type == "segm"
    if segm:  # before predicting: a file without masks cannot be scored
        check_gt_segmentations(dataset.data, str(dataset.annotation_file))
    prompt = prompt or dataset_prompt(dataset.category_names)
    t0 = time.perf_counter()
    results = predict_dataset(predictor, dataset, prompt, batch_size, plus_one=True, progress=progress, masks=segm)
    seconds = time.perf_counter() - t0
    metrics = evaluate_detections(dataset.data, results, backend=backend, iou_type=iou_type)
    extra: dict[str, Any] = {}
    if segm:
        extra["box_metrics"] = evaluate_detections(dataset.data, results, backend=backend).to_dict()
    name = name or dataset.annotation_file.parent.parent.name
    split = split or dataset.annotation_file.stem
    det_file = None
    if out_dir is not None:
        stem = f"{name}_{split}_segm_detections" if segm else f"{name}_{split}_detections"
        det_file = str(atomic_write_text(Path(out_dir) / f"{stem}.json", json.dumps(results)))
    report = EvalReport(
        dataset=name, split=split, annotation_file=str(dataset.annotation_file), num_images=len(dataset),
        prompt=prompt.describe(), metrics=metrics.to_dict(), seconds=round(seconds, 2),
        images_per_second=round(len(dataset) / seconds, 3) if seconds > 0 else 0.0, detections_file=det_file,
        extra=extra,
    )  # fmt: skip
    return report, metrics


# Official LVIS protocol settings (TEST.CHUNKED_EVALUATION 40, DETECTIONS_PER_IMG 300, no cross-chunk cut).
LVIS_CLASSES_PER_CHUNK = 40
LVIS_DETECTIONS_PER_CHUNK = 300


def configure_for_lvis(predictor: GLIPPredictor) -> GLIPPredictor:
    """Set a predictor up as the official LVIS evaluation runs: chunks of 40 classes, 300 detections
    per chunk, every chunk's detections kept (no per-image cap after merging)."""
    predictor.max_classes_per_chunk = LVIS_CLASSES_PER_CHUNK
    predictor.max_detections = None
    predictor.processor.postprocessor.detections_per_image = LVIS_DETECTIONS_PER_CHUNK
    return predictor


def evaluate_lvis_dataset(
    predictor: GLIPPredictor,
    dataset: CocoDataset,
    prompt: DatasetPrompt | None = None,
    batch_size: int = 1,
    out_dir: str | Path | None = None,
    name: str | None = None,
    split: str | None = None,
    progress: bool = True,
) -> tuple[EvalReport, Any]:
    """Predict with the official LVIS settings (see :func:`configure_for_lvis`) and compute Fixed AP."""
    from glip.evaluation.lvis import LvisResultCollector, evaluate_lvis

    configure_for_lvis(predictor)
    prompt = prompt or dataset_prompt(dataset.category_names)
    t0 = time.perf_counter()
    collector = LvisResultCollector()  # top-10,000 per category, memory-bounded (w = x2 - x1, official LVIS export)
    for record, det in iter_dataset_detections(predictor, dataset, prompt, batch_size, progress):
        collector.update(record["id"], det.boxes_xyxy, det.scores, det.labels)
    results = collector.results()
    seconds = time.perf_counter() - t0
    metrics = evaluate_lvis(dataset.data, results, fixed_ap=True)
    name = name or dataset.annotation_file.parent.parent.name
    split = split or dataset.annotation_file.stem
    det_file = None
    if out_dir is not None:
        det_file = str(atomic_write_text(Path(out_dir) / f"{name}_{split}_lvis_detections.json", json.dumps(results)))
    report = EvalReport(
        dataset=name, split=split, annotation_file=str(dataset.annotation_file), num_images=len(dataset),
        prompt=f"{len(prompt.names)} categories in chunks of {LVIS_CLASSES_PER_CHUNK}", metrics=metrics.to_dict(),
        seconds=round(seconds, 2), images_per_second=round(len(dataset) / seconds, 3) if seconds > 0 else 0.0,
        detections_file=det_file,
    )  # fmt: skip
    return report, metrics
