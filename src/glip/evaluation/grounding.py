"""Phrase-grounding evaluation: Recall@k and upper bound on Flickr30k Entities (MDETR protocol).

For every phrase that has ground-truth boxes, the model's boxes for that phrase are ranked by
score. The phrase is a hit at ``k`` if one of its top-``k`` boxes has IoU >= 0.5 with a ground-truth
box; the *upper bound* uses all of its boxes. Two protocols (``DATASETS.FLICKR_GT_TYPE``):

* ``"any"`` (official ``"separate"``, the default): ANY-BOX, any ground-truth box of the phrase counts;
* ``"merged"``: MERGED-BOX, the phrase's ground-truth boxes are first merged into their enclosing box.

What the official code does, and what this module matches:

* IoU without the ``+1`` pixel convention, ``area = (x2 - x1) * (y2 - y1)``, ``>=`` the threshold
  (``flickr_eval.py::box_iou`` and ``Flickr30kEntitiesRecallEvaluator.evaluate``); predicted boxes
  are used as the model outputs them (``+1`` convention, scaled to the original image).
* Phrases without ground-truth boxes are not evaluated; every other phrase counts once per
  category: ``"all"`` and each of its phrase types.
* Per phrase, boxes in decreasing score order among the image's (at most 100) detections
  (``engine/inference.py::flickr_post_process``). The official code appends a dummy
  ``[0, 0, 0, 0]`` box to every list so that a phrase without detections is a miss; here an empty
  list is a miss, which gives the same numbers.

Typical use::

    predictor = GLIPPredictor.from_pretrained("glip_t", device="cuda")
    metrics = evaluate_grounding_model(predictor, "final_flickr_separateGT_test.json", "flickr30k-images")
    print(metrics.to_dict()["Recall@1_all"])
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from glip.errors import ConfigError, DataError
from glip.evaluation.grounding_data import EntryId, GroundingDataset, load_grounding_annotations
from glip.processing import load_image
from glip.structures import box_iou

if TYPE_CHECKING:
    from glip.predictor import GLIPPredictor

logger = logging.getLogger(__name__)

PROTOCOLS = {"any": "any", "separate": "any", "merged": "merged"}
"""Accepted protocol names (the official config values are aliases) → canonical name."""

ALL = "all"
"""Category that every evaluated phrase belongs to."""


@dataclass
class PhraseGrounding:
    """The predicted boxes of one phrase, best first.

    Attributes:
        boxes_xyxy: ``(K, 4)`` boxes in original-image pixels.
        scores: ``(K,)`` decreasing scores.
    """

    boxes_xyxy: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return int(self.boxes_xyxy.shape[0])


GroundingPredictions = dict[EntryId, list[PhraseGrounding]]
"""Per image-entry id, per phrase (in the entry's phrase order), the ranked boxes."""


@dataclass
class GroundingMetrics:
    """Recall@k and upper bound, overall and per phrase type.

    Attributes:
        protocol: ``"any"`` or ``"merged"``.
        iou_threshold: the IoU a box needs to hit.
        ks: the ``k`` of Recall@k.
        recall: per ``k``, the fraction of evaluated phrases hit within the top ``k`` boxes.
        upper_bound: fraction hit by any predicted box.
        recall_by_type: per phrase type, per ``k``, the recall over the phrases of that type.
        upper_bound_by_type: per phrase type, the upper bound.
        num_phrases: evaluated phrases (those with ground-truth boxes).
        num_phrases_by_type: evaluated phrases per type.
        num_entries: image-caption pairs with at least one evaluated phrase.
        num_phrases_without_boxes: phrases skipped because they have no ground-truth box.
    """

    protocol: str
    iou_threshold: float
    ks: tuple[int, ...]
    recall: dict[int, float]
    upper_bound: float
    recall_by_type: dict[str, dict[int, float]] = field(default_factory=dict)
    upper_bound_by_type: dict[str, float] = field(default_factory=dict)
    num_phrases: int = 0
    num_phrases_by_type: dict[str, int] = field(default_factory=dict)
    num_entries: int = 0
    num_phrases_without_boxes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict; the recall keys are those of the official summary
        (``Recall@1_all``, ``Upper_bound_all``, ``Recall@1_people``...)."""
        out: dict[str, Any] = {"protocol": self.protocol, "iou_threshold": self.iou_threshold}
        for cat, recall, bound in [(ALL, self.recall, self.upper_bound)] + [
            (t, self.recall_by_type[t], self.upper_bound_by_type[t]) for t in sorted(self.recall_by_type)
        ]:
            for k in self.ks:
                out[f"Recall@{k}_{cat}"] = recall[k]
            out[f"Upper_bound_{cat}"] = bound
        out["num_phrases"] = self.num_phrases
        out.update({f"num_phrases_{t}": n for t, n in sorted(self.num_phrases_by_type.items())})
        out["num_entries"] = self.num_entries
        out["num_phrases_without_boxes"] = self.num_phrases_without_boxes
        return out

    def summary(self) -> str:
        """A small text table (one row per category) for logs."""
        head = ["category", *(f"R@{k}" for k in self.ks), "upper", "phrases"]
        rows = [[ALL, *(self.recall[k] for k in self.ks), self.upper_bound, self.num_phrases]]
        for t in sorted(self.recall_by_type):
            r = self.recall_by_type[t]
            rows.append([t, *(r[k] for k in self.ks), self.upper_bound_by_type[t], self.num_phrases_by_type[t]])
        lines = ["  ".join(f"{h:>10}" for h in head)]
        for row in rows:
            cells = [f"{row[0]:>10}", *(f"{v:10.4f}" for v in row[1:-1]), f"{row[-1]:>10}"]
            lines.append("  ".join(cells))
        return f"phrase grounding ({self.protocol}-box, IoU >= {self.iou_threshold}):\n" + "\n".join(lines)


def flickr_box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> Tensor:
    """Pairwise IoU as the official Flickr evaluator computes it: no ``+1``, float64 (NaN where both
    boxes have zero area).

    Args:
        boxes1_xyxy: ``(N, 4)``.
        boxes2_xyxy: ``(M, 4)``.

    Returns:
        ``(N, M)`` IoU.
    """
    return box_iou(boxes1_xyxy.to(torch.float64), boxes2_xyxy.to(torch.float64), legacy_plus_one=False)


def merge_boxes(boxes_xyxy: Tensor) -> Tensor:
    """``(G, 4)`` → ``(1, 4)`` smallest box enclosing them all (the MERGED-BOX ground truth)."""
    if boxes_xyxy.shape[0] <= 1:
        return boxes_xyxy
    return torch.cat((boxes_xyxy[:, :2].amin(0), boxes_xyxy[:, 2:].amax(0)))[None]


def first_hit_rank(pred_boxes_xyxy: Tensor, gt_boxes_xyxy: Tensor, iou_threshold: float) -> int | None:
    """0-based rank of the first predicted box with IoU >= ``iou_threshold`` with a GT box, or None.

    The phrase is then a hit at every ``k > rank``; None means a miss even for the upper bound.
    """
    if pred_boxes_xyxy.shape[0] == 0 or gt_boxes_xyxy.shape[0] == 0:
        return None
    best = flickr_box_iou(pred_boxes_xyxy, gt_boxes_xyxy).amax(dim=1)  # (K,)
    hits = (best >= iou_threshold).nonzero()
    return int(hits[0, 0]) if hits.numel() else None


def evaluate_grounding(
    predictions: Mapping[EntryId, Sequence[PhraseGrounding | Tensor | Sequence[Sequence[float]]]],
    dataset: GroundingDataset,
    ks: Sequence[int] = (1, 5, 10),
    iou: float = 0.5,
    protocol: str = "any",
) -> GroundingMetrics:
    """Recall@k and upper bound of ranked per-phrase boxes.

    Args:
        predictions: per entry id, per phrase of the entry (same order), its boxes ``xyxy`` in
            original pixels ranked best first (:class:`PhraseGrounding`, a ``(K, 4)`` tensor or a
            list of boxes). Entries without a phrase that has ground truth may be left out.
        dataset: the ground truth (:func:`~glip.evaluation.grounding_data.load_grounding_annotations`).
        ks: the ``k`` of Recall@k (positive).
        iou: IoU threshold (a box hits at IoU ``>= iou``).
        protocol: ``"any"`` (ANY-BOX; official ``"separate"``) or ``"merged"`` (MERGED-BOX).

    Raises:
        ConfigError: on an unknown protocol, a non-positive ``k`` or an IoU outside ``(0, 1]``.
        DataError: if predictions are missing for an entry, name an unknown entry, have the wrong
            number of phrases, or if no phrase has ground-truth boxes.
    """
    proto = _protocol(protocol)
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"ks must be positive integers (the upper bound is always reported), got {ks}")
    if not 0.0 < iou <= 1.0:
        raise ConfigError(f"the IoU threshold must be in (0, 1], got {iou}")
    known = {e.id for e in dataset}
    unknown = [i for i in predictions if i not in known]
    if unknown:
        raise DataError(f"predictions for {len(unknown)} entry id(s) not in the dataset, e.g. {unknown[:5]}")

    total: Counter = Counter()
    hits: dict[int, Counter] = {k: Counter() for k in ks}
    bound: Counter = Counter()
    skipped = entries = 0
    missing = []
    for entry in dataset:
        evaluated = [p for p in entry.phrases if p.boxes_xyxy.shape[0] > 0]
        skipped += len(entry.phrases) - len(evaluated)
        if not evaluated:
            continue
        if entry.id not in predictions:
            missing.append(entry.id)
            continue
        per_phrase = predictions[entry.id]
        if len(per_phrase) != len(entry.phrases):
            raise DataError(
                f"entry {entry.id!r}: predictions for {len(per_phrase)} phrases, expected {len(entry.phrases)}"
            )
        entries += 1
        for phrase, pred in zip(entry.phrases, per_phrase, strict=True):
            if phrase.boxes_xyxy.shape[0] == 0:
                continue
            gt = merge_boxes(phrase.boxes_xyxy) if proto == "merged" else phrase.boxes_xyxy
            rank = first_hit_rank(_as_boxes(pred, entry.id), gt, iou)
            for cat in (ALL, *phrase.phrase_type):
                total[cat] += 1
                bound[cat] += rank is not None
                for k in ks:
                    hits[k][cat] += rank is not None and rank < k
    if missing:
        raise DataError(f"no predictions for {len(missing)} entries that have ground-truth phrases, e.g. {missing[:5]}")
    if total[ALL] == 0:
        raise DataError("no phrase with ground-truth boxes to evaluate")
    types = sorted(c for c in total if c != ALL)
    return GroundingMetrics(
        protocol=proto,
        iou_threshold=iou,
        ks=ks,
        recall={k: hits[k][ALL] / total[ALL] for k in ks},
        upper_bound=bound[ALL] / total[ALL],
        recall_by_type={t: {k: hits[k][t] / total[t] for k in ks} for t in types},
        upper_bound_by_type={t: bound[t] / total[t] for t in types},
        num_phrases=total[ALL],
        num_phrases_by_type={t: total[t] for t in types},
        num_entries=entries,
        num_phrases_without_boxes=skipped,
    )


def predict_grounding(
    predictor: GLIPPredictor,
    dataset: GroundingDataset,
    images_dir: str | Path,
    progress: bool = True,
) -> GroundingPredictions:
    """Run the model on every image-caption pair and rank each phrase's boxes.

    The prompt is the caption with one entity per phrase (label id = phrase index); all
    detections are kept (no score threshold beyond the post-processor's 0.05 candidate threshold;
    at most ``predictor.max_detections`` per image, 100 by default as in the official run). Each
    detection goes to the phrase it was scored for; per phrase, boxes stay in decreasing score order.
    Entries without phrases are skipped.

    Args:
        predictor: the model wrapper (its device, processor and detection cap are used).
        dataset: the annotations.
        images_dir: folder that the entries' ``file_name`` are relative to.
        progress: show a progress bar over entries.

    Raises:
        ImageError: if an image is missing or unreadable.
    """
    root = Path(images_dir)
    out: GroundingPredictions = {}
    cached: tuple[Path, Image.Image] | None = None  # Flickr has five consecutive captions per image
    for entry in tqdm(dataset.entries, desc="phrase grounding", unit="caption", disable=not progress):
        if not entry.phrases:
            continue
        path = root / entry.file_name
        if cached is None or cached[0] != path:
            cached = (path, load_image(path))
        det = predictor.predict(cached[1], prompt=entry.prompt(), threshold=0.0)[0]
        order = det.scores.argsort(descending=True, stable=True)
        boxes, scores, labels = det.boxes_xyxy[order].cpu(), det.scores[order].cpu(), det.labels[order].cpu()
        out[entry.id] = [PhraseGrounding(boxes[labels == i], scores[labels == i]) for i in range(len(entry.phrases))]
    return out


def evaluate_grounding_model(
    predictor: GLIPPredictor,
    annotation_file: str | Path,
    images_dir: str | Path,
    protocol: str = "any",
    ks: Sequence[int] = (1, 5, 10),
    iou: float = 0.5,
    sentences_dir: str | Path | None = None,
    progress: bool = True,
) -> GroundingMetrics:
    """Load an MDETR-format file, run the model on it and compute Recall@k.

    Args:
        predictor: the model wrapper.
        annotation_file: e.g. ``final_flickr_separateGT_test.json``.
        images_dir: the Flickr30k images folder.
        protocol: ``"any"`` or ``"merged"`` (see :func:`evaluate_grounding`).
        ks: the ``k`` of Recall@k.
        iou: IoU threshold.
        sentences_dir: optional Flickr30k Entities ``Sentences`` folder for per-type recall.
        progress: show a progress bar.

    Raises:
        DataError, ImageError, ConfigError: see the functions it calls.
    """
    _protocol(protocol)  # fail before running the model
    dataset = load_grounding_annotations(annotation_file, sentences_dir=sentences_dir)
    logger.info("%s: %d image-caption pairs, %d phrases", annotation_file, len(dataset), dataset.num_phrases)
    predictions = predict_grounding(predictor, dataset, images_dir, progress=progress)
    metrics = evaluate_grounding(predictions, dataset, ks=ks, iou=iou, protocol=protocol)
    logger.info("%s", metrics.summary())
    return metrics


def _protocol(name: str) -> str:
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown grounding protocol {name!r}: use 'any' (ANY-BOX, alias 'separate') or 'merged'")
    return PROTOCOLS[name]


def _as_boxes(pred: PhraseGrounding | Tensor | Sequence[Sequence[float]], entry_id: EntryId) -> Tensor:
    boxes = pred.boxes_xyxy if isinstance(pred, PhraseGrounding) else torch.as_tensor(pred, dtype=torch.float64)
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"entry {entry_id!r}: predicted boxes must have shape (K, 4), got {tuple(boxes.shape)}")
    return boxes
