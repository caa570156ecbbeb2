"""ATSS post-processing as the official GLIP evaluation runs it.

Per image and per pyramid level:

1. ``p = sigmoid(logits)`` over token slots; an entity's score is the mean (or max) of ``p`` over
   its tokens;
2. candidates: ``score > score_threshold`` (0.05, *before* centerness), at most ``pre_nms_top_n``
   (1000) per level, chosen by ``score * sigmoid(centerness)``; one location can yield several
   entities;
3. boxes decoded from the anchors, clipped to the resized image (``[0, W-1] x [0, H-1]`` with the
   +1 convention), final score ``sqrt(score * centerness)``.

Across levels: class-aware NMS (IoU > 0.6 suppressed; areas with the +1 convention as the
official CUDA kernel computes them), then the top ``detections_per_image`` (100) by the official
k-th-value rule (ties at the cut are all kept). Boxes are scaled to the original image by plain
per-axis multiplication. Output is sorted by decreasing score.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from glip.modeling.anchors import BoxCoder
from glip.structures import Detections, EntityMap


def entity_scores(probs: Tensor, token_ids: list[list[int]], aggregation: str = "mean") -> Tensor:
    """Aggregate token probabilities into entity scores.

    Args:
        probs: ``(..., N, T)`` token probabilities of N locations.
        token_ids: per entity, its token positions (may be empty).
        aggregation: ``"mean"`` or ``"max"``.

    Returns:
        ``(..., N, E)`` scores; entities without tokens score 0.
    """
    e = len(token_ids)
    width = max((len(t) for t in token_ids), default=0)
    if e == 0 or width == 0:
        return probs.new_zeros(*probs.shape[:-1], e)
    idx = torch.zeros(e, width, dtype=torch.long)
    valid = torch.zeros(e, width, dtype=torch.bool)
    for i, toks in enumerate(token_ids):
        idx[i, : len(toks)] = torch.as_tensor(toks, dtype=torch.long)
        valid[i, : len(toks)] = True
    idx, valid = idx.to(probs.device), valid.to(probs.device)
    gathered = probs[..., idx]  # (..., N, E, width)
    if aggregation == "mean":
        counts = valid.sum(-1).clamp(min=1).to(probs.dtype)
        return (gathered * valid).sum(-1) / counts
    if aggregation == "max":
        return gathered.masked_fill(~valid, 0.0).amax(-1)
    raise ValueError(f"unknown score aggregation {aggregation!r}: use 'mean' or 'max'")


def class_aware_nms(
    boxes_xyxy: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float, plus_one: bool
) -> Tensor:
    """Indices kept by per-class NMS, sorted by decreasing score.

    With ``plus_one`` the IoU uses widths ``x2 - x1 + 1`` (official GPU kernel), obtained by
    shifting ``x2, y2`` by one pixel before torchvision's NMS.
    """
    if plus_one:
        boxes_xyxy = boxes_xyxy + boxes_xyxy.new_tensor([0.0, 0.0, 1.0, 1.0])
    return batched_nms(boxes_xyxy, scores, classes, iou_threshold)


class ATSSPostProcessor:
    """Turns a :class:`~glip.modeling.glip.GLIPOutput` into :class:`~glip.structures.Detections`.

    Args:
        box_coder: decodes the box deltas.
        score_threshold: minimum entity probability of a candidate (before centerness).
        pre_nms_top_n: candidates kept per level.
        nms_threshold: IoU above which a same-class box is suppressed.
        detections_per_image: detections kept after NMS (ties at the cut are kept).
        score_aggregation: ``"mean"`` or ``"max"`` over an entity's tokens.
        legacy_plus_one: official +1 box convention for clipping and NMS.
    """

    def __init__(
        self,
        box_coder: BoxCoder,
        score_threshold: float = 0.05,
        pre_nms_top_n: int = 1000,
        nms_threshold: float = 0.6,
        detections_per_image: int = 100,
        score_aggregation: str = "mean",
        legacy_plus_one: bool = True,
    ) -> None:
        self.box_coder = box_coder
        self.score_threshold = score_threshold
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_threshold = nms_threshold
        self.detections_per_image = detections_per_image
        self.score_aggregation = score_aggregation
        self.one = 1.0 if legacy_plus_one else 0.0

    def __call__(
        self,
        logits: Tensor,
        box_regression: Tensor,
        centerness: Tensor,
        anchors_xyxy: Tensor,
        level_sizes: list[tuple[int, int]],
        entity_maps: list[EntityMap],
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> list[Detections]:
        """Detections per row, with few host synchronisations.

        Args:
            logits: ``(B, N, T)``; box_regression: ``(B, N, 4)``; centerness: ``(B, N)``.
            anchors_xyxy: ``(N, 4)``; level_sizes: ``(H_l, W_l)`` per level.
            entity_maps: per row, which tokens make each entity.
            image_sizes: per image, ``(height, width)`` of the resized image before padding.
            original_sizes: per image, ``(height, width)`` of the original image.

        Candidates are chosen for all rows and levels at once (non-candidates masked to -1, a
        fixed-size top-k per level, then one ``nonzero``); NMS and the final cut run per row. Rows
        may be images or images x prompt chunks with different entity maps (the chunks of a long
        vocabulary): entity scores are then formed per distinct map and padded to the widest.
        """
        b = logits.shape[0]
        scores = self._row_scores(logits.sigmoid(), entity_maps)  # (B, N, E); padded entities -1
        e = scores.shape[-1]
        ctr = centerness.sigmoid()
        vals_l, loc_l, ent_l = [], [], []
        start = 0
        for lh, lw in level_sizes:
            end = start + lh * lw
            s = scores[:, start:end]
            weighted = torch.where(s > self.score_threshold, s * ctr[:, start:end, None], -1.0).flatten(1)
            vals, idx = weighted.topk(min(self.pre_nms_top_n, weighted.shape[1]), dim=1)  # (B, k), descending
            vals_l.append(vals)
            loc_l.append(torch.div(idx, e, rounding_mode="floor") + start)
            ent_l.append(idx % e)
            start = end
        vals, loc, ents = torch.cat(vals_l, 1), torch.cat(loc_l, 1), torch.cat(ent_l, 1)
        deltas = box_regression.gather(1, loc[..., None].expand(-1, -1, 4))
        boxes = self.box_coder.decode(deltas, anchors_xyxy[loc])  # (B, K, 4)
        limits = torch.tensor([[w - self.one, h - self.one] for h, w in image_sizes], dtype=boxes.dtype)
        limits = limits.to(boxes.device)[:, None, :].repeat(1, 1, 2)  # (B, 1, 4): x, y, x, y maxima
        boxes = torch.minimum(boxes.clamp(min=0), limits)
        rows = (vals > -0.5).nonzero()  # row-major: per image, levels in order, each by decreasing score
        counts = torch.bincount(rows[:, 0], minlength=b).tolist()
        out, offset = [], 0
        for i, count in enumerate(counts):
            cols = rows[offset : offset + count, 1]
            offset += count
            cands = (boxes[i, cols], vals[i, cols].sqrt(), ents[i, cols])
            out.append(self._finish(*cands, entity_maps[i], image_sizes[i], original_sizes[i]))
        return out

    batched = __call__  # the batch path is the only path (a single image is a batch of one)

    def _row_scores(self, probs: Tensor, entity_maps: list[EntityMap]) -> Tensor:
        """``(B, N, T)`` token probabilities → ``(B, N, E_max)`` entity scores of each row's own map.

        Entities beyond a row's own count score -1 (never candidates).
        """
        groups: dict[tuple, list[int]] = {}
        for row, m in enumerate(entity_maps):
            groups.setdefault(tuple(map(tuple, m.token_ids)), []).append(row)
        if len(groups) == 1:
            return entity_scores(probs, entity_maps[0].token_ids, self.score_aggregation)
        width = max(len(m.token_ids) for m in entity_maps)
        scores = probs.new_full((*probs.shape[:-1], width), -1.0)
        for token_ids, rows in groups.items():
            index = torch.as_tensor(rows, device=probs.device)
            part = entity_scores(probs.index_select(0, index), [list(t) for t in token_ids], self.score_aggregation)
            scores[index, :, : part.shape[-1]] = part
        return scores

    def single(
        self,
        logits: Tensor,
        box_regression: Tensor,
        centerness: Tensor,
        anchors_xyxy: Tensor,
        level_sizes: list[tuple[int, int]],
        entity_map: EntityMap,
        image_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> Detections:
        """One image: ``logits (N, T)``, ``box_regression (N, 4)``, ``centerness (N,)``."""
        return self(
            logits[None], box_regression[None], centerness[None], anchors_xyxy, level_sizes, [entity_map],
            [image_size], [original_size],
        )[0]  # fmt: skip

    def _finish(
        self,
        boxes: Tensor,
        final_scores: Tensor,
        ents: Tensor,
        entity_map: EntityMap,
        image_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> Detections:
        """NMS, the top-``detections_per_image`` cut and scaling of one image's candidates ``(K, 4)``, ``(K,)``."""
        h, w = image_size
        keep = class_aware_nms(boxes, final_scores, ents, self.nms_threshold, self.one > 0)
        boxes, final_scores, ents = boxes[keep], final_scores[keep], ents[keep]
        n = final_scores.shape[0]
        if n > self.detections_per_image:
            kth = torch.kthvalue(final_scores.float().cpu(), n - self.detections_per_image + 1).values.item()
            sel = final_scores >= kth
            boxes, final_scores, ents = boxes[sel], final_scores[sel], ents[sel]
        order = final_scores.argsort(descending=True, stable=True)
        boxes, final_scores, ents = boxes[order], final_scores[order], ents[order]

        oh, ow = original_size
        ratio = boxes.new_tensor([ow / w, oh / h, ow / w, oh / h])
        ent_list = ents.tolist()
        label_ids = torch.as_tensor([entity_map.label_ids[e] for e in ent_list], dtype=torch.long)
        return Detections(
            boxes_xyxy=boxes * ratio,
            scores=final_scores,
            labels=label_ids.to(boxes.device),
            label_names=[entity_map.names[e] for e in ent_list],
            image_size=(oh, ow),
        )
