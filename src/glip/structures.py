"""Small typed containers shared across the package, and box-format helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Detections:
    """Detections of one image, sorted by decreasing score.

    Attributes:
        boxes_xyxy: ``(K, 4)`` float boxes in original-image pixels (official +1 convention:
            a box covers pixels ``x1..x2`` inclusive).
        scores: ``(K,)`` in [0, 1] (``sqrt(p * centerness)``).
        labels: ``(K,)`` int64 label ids (global class ids for detection prompts, phrase index for
            grounding prompts).
        label_names: ``K`` strings: the class name or phrase of each detection.
        image_size: ``(height, width)`` of the original image.
        masks: ``(K, height, width)`` bool instance masks in original-image pixels, or None when the
            model has no mask head or masks were not asked for.
    """

    boxes_xyxy: Tensor
    scores: Tensor
    labels: Tensor
    label_names: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)
    masks: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index: Tensor | slice) -> Detections:
        """Select detections with a boolean mask, an index tensor, or a slice."""
        if isinstance(index, slice):
            idx = list(range(len(self)))[index]
        else:
            idx = index.nonzero().flatten().tolist() if index.dtype == torch.bool else index.flatten().tolist()
        sel = torch.as_tensor(idx, dtype=torch.long, device=self.scores.device)
        return Detections(
            self.boxes_xyxy[sel],
            self.scores[sel],
            self.labels[sel],
            [self.label_names[i] for i in idx],
            self.image_size,
            None if self.masks is None else self.masks[sel.to(self.masks.device)],
        )

    def above(self, threshold: float) -> Detections:
        """Only the detections scoring at least ``threshold``."""
        return self[self.scores >= threshold]

    def to(self, device: torch.device | str) -> Detections:
        """Move the tensors to ``device``."""
        return Detections(
            self.boxes_xyxy.to(device),
            self.scores.to(device),
            self.labels.to(device),
            list(self.label_names),
            self.image_size,
            None if self.masks is None else self.masks.to(device),
        )

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-ready records ``{"box_xyxy", "score", "label", "label_name"}`` (+ ``"mask"``: COCO RLE)."""
        boxes = self.boxes_xyxy.detach().cpu().tolist()
        scores = self.scores.detach().cpu().tolist()
        labels = self.labels.detach().cpu().tolist()
        records = [
            {"box_xyxy": [round(c, 2) for c in b], "score": round(s, 4), "label": int(lab), "label_name": name}
            for b, s, lab, name in zip(boxes, scores, labels, self.label_names, strict=True)
        ]
        if self.masks is not None:
            from glip.masks import encode_rle

            for record, mask in zip(records, self.masks, strict=True):
                record["mask"] = encode_rle(mask)
        return records


def xyxy_to_xywh(boxes_xyxy: Tensor, legacy_plus_one: bool = True) -> Tensor:
    """``(K, 4)`` xyxy → COCO xywh; the official COCO export uses ``w = x2 - x1 + 1``."""
    one = 1.0 if legacy_plus_one else 0.0
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)
    return torch.stack((x1, y1, x2 - x1 + one, y2 - y1 + one), dim=-1)


def box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor, legacy_plus_one: bool = True) -> Tensor:
    """Pairwise IoU (the one IoU of the package: ATSS, mask-ROI matching, grounding recall).

    Args:
        boxes1_xyxy: ``(N, 4)`` boxes.
        boxes2_xyxy: ``(M, 4)`` boxes.
        legacy_plus_one: widths are ``x2 - x1 + 1`` (official ``boxlist_iou``).

    Returns:
        ``(N, M)`` IoU matrix.
    """
    one = 1.0 if legacy_plus_one else 0.0
    area1 = (boxes1_xyxy[:, 2] - boxes1_xyxy[:, 0] + one) * (boxes1_xyxy[:, 3] - boxes1_xyxy[:, 1] + one)
    area2 = (boxes2_xyxy[:, 2] - boxes2_xyxy[:, 0] + one) * (boxes2_xyxy[:, 3] - boxes2_xyxy[:, 1] + one)
    lt = torch.max(boxes1_xyxy[:, None, :2], boxes2_xyxy[None, :, :2])
    rb = torch.min(boxes1_xyxy[:, None, 2:], boxes2_xyxy[None, :, 2:])
    wh = (rb - lt + one).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def xywh_to_xyxy(boxes_xywh: Tensor, legacy_plus_one: bool = True) -> Tensor:
    """COCO ``(K, 4)`` xywh → xyxy; the official data loader uses ``x2 = x + w - 1``."""
    one = 1.0 if legacy_plus_one else 0.0
    x, y, w, h = boxes_xywh.unbind(-1)
    return torch.stack((x, y, x + w - one, y + h - one), dim=-1)


@dataclass
class EntityMap:
    """What each scored entity of a prompt is, and which tokens carry it.

    Built by the processor from a prompt; read by the post-processor.

    Attributes:
        token_ids: per entity, the token positions (``[CLS]`` is position 0) whose probabilities
            are aggregated into the entity's score. An empty list means the entity could not be
            located in the tokenised prompt; it then never scores.
        label_ids: per entity, the id reported in :attr:`Detections.labels` (global class id).
        names: per entity, the class name or phrase reported in :attr:`Detections.label_names`.
    """

    token_ids: list[list[int]]
    label_ids: list[int]
    names: list[str]

    def __post_init__(self) -> None:
        if not len(self.token_ids) == len(self.label_ids) == len(self.names):
            raise ValueError(
                f"EntityMap fields disagree in length: {len(self.token_ids)} token lists, "
                f"{len(self.label_ids)} label ids, {len(self.names)} names"
            )

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass
class GroundingSample:
    """One training example before transforms and tokenisation (the data pipeline's output).

    Attributes:
        image: the RGB image.
        prompt: the text and its entities (class names of a detection prompt, or phrases of a caption).
        boxes_xyxy: ``(M, 4)`` float32 boxes in original-image pixels, official +1 convention
            (``x2 = x + w - 1``).
        box_entities: per box, the indices of the prompt entities it belongs to (usually one; a
            grounding box referred to by several phrases lists them all).
        entity_labels: per entity, its object-detection class id for detection-type prompts (used by
            GLIPv2's label propagation), or -1 for phrases of free captions.
        kind: ``"detection"``, ``"grounding"`` or ``"image_text"`` (pseudo-labelled caption).
        image_id: identifier of the source record (for logs and errors).
        masks: ``(M, H, W)`` bool instance masks in original-image pixels, one per box, or None when
            the source has no masks.
        vqa_scores: VQA samples: ``(A,)`` soft scores over the model's answer vocabulary, else None.
        causal: caption samples: the text is read causally and trains the language model.
        ground: the grounding losses apply (False when the sample links no phrase to boxes).
    """

    image: Any
    prompt: Any
    boxes_xyxy: Tensor
    box_entities: list[list[int]]
    entity_labels: list[int]
    kind: str = "detection"
    image_id: Any = None
    masks: Tensor | None = None
    vqa_scores: Tensor | None = None
    causal: bool = False
    ground: bool = True


@dataclass
class GroundingTarget:
    """Training target of one image, in network-input (resized, unpadded) pixels.

    Attributes:
        boxes_xyxy: ``(M, 4)`` float32 boxes, +1 convention.
        positive_map: ``(M, T)`` float 0/1: token ``t`` belongs to box ``m``'s phrase(s).
        box_labels: ``(M,)`` int64 object-detection class id of each box, -1 when it has none.
        token_labels: ``(T,)`` int64 class id that each token names (detection prompts), -1 otherwise
            (special tokens, separators, padding and caption tokens): the label-propagation map.
        kind: as :attr:`GroundingSample.kind`.
        image_size: ``(height, width)`` of the resized image.
        masks: ``(M, h, w)`` bool instance masks at the resized image size, or None (no masks in the source).
        vqa_scores: ``(A,)`` soft answer scores in [0, 1] over the model's answer vocabulary (VQA
            samples), or None.
        causal: a caption sample: its text is read causally and trains the language model.
        ground: the grounding losses apply to this sample (False for captions without linked boxes:
            "no box" would wrongly teach that nothing in the image is named).
    """

    boxes_xyxy: Tensor
    positive_map: Tensor
    box_labels: Tensor
    token_labels: Tensor
    kind: str = "detection"
    image_size: tuple[int, int] = (0, 0)
    masks: Tensor | None = None
    vqa_scores: Tensor | None = None
    causal: bool = False
    ground: bool = True

    def to(self, device: torch.device | str) -> GroundingTarget:
        """Move the tensors to ``device``."""
        return GroundingTarget(
            self.boxes_xyxy.to(device), self.positive_map.to(device), self.box_labels.to(device),
            self.token_labels.to(device), self.kind, self.image_size,
            None if self.masks is None else self.masks.to(device),
            None if self.vqa_scores is None else self.vqa_scores.to(device), self.causal, self.ground,
        )  # fmt: skip


@dataclass
class TrainBatch:
    """A collated training batch.

    Attributes:
        pixel_values: ``(B, 3, H, W)`` normalised, padded images.
        pixel_mask: ``(B, H, W)`` bool, True on real pixels.
        input_ids, attention_mask: ``(B, T)`` prompt tokens (``input_ids`` already MLM-masked when MLM is on).
        targets: one :class:`GroundingTarget` per image.
        mlm_labels: ``(B, T)`` int64 original ids of masked tokens, -100 elsewhere; None without MLM.
    """

    pixel_values: Tensor
    pixel_mask: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    targets: list[GroundingTarget]
    mlm_labels: Tensor | None = None

    @property
    def causal(self) -> Tensor:
        """``(B,)`` bool: the caption rows (read causally)."""
        return torch.tensor([t.causal for t in self.targets], dtype=torch.bool, device=self.input_ids.device)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainBatch:
        """Move every tensor to ``device``."""
        return TrainBatch(
            self.pixel_values.to(device, non_blocking=non_blocking),
            self.pixel_mask.to(device, non_blocking=non_blocking),
            self.input_ids.to(device, non_blocking=non_blocking),
            self.attention_mask.to(device, non_blocking=non_blocking),
            [t.to(device) for t in self.targets],
            None if self.mlm_labels is None else self.mlm_labels.to(device, non_blocking=non_blocking),
        )
