"""ATSS anchor assignment (Adaptive Training Sample Selection, Zhang et al. 2020) as GLIP trains with it.

The rule, per image and per ground-truth box ``g`` (official ``rpn/loss.py``,
``ATSSLossComputation.prepare_targets``):

1. On every pyramid level take the ``topk`` anchors whose centres are closest (L2) to the centre
   of ``g`` (fewer when a level has fewer anchors). These are ``g``'s candidates.
2. The IoU threshold of ``g`` is ``mean + std`` of the candidates' IoUs with ``g`` (``std`` is the
   *unbiased* estimate, ``torch.std``'s default), IoU computed with the +1 area convention.
3. A candidate is positive for ``g`` when its IoU is ``>=`` the threshold and its centre lies
   strictly inside ``g``: ``min(cx - x1, cy - y1, x2 - cx, y2 - cy) > 0.01``.
4. An anchor positive for several boxes goes to the one with the highest IoU.

Every anchor that is positive for no box is unmatched (``-1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from glip.structures import box_iou

# The official "minus infinity" IoU of an anchor that is not a positive candidate of a box.
_NEG_INF = -1e8


def box_centers(boxes_xyxy: Tensor) -> Tensor:
    """``(N, 4)`` boxes → ``(N, 2)`` centres ``((x1 + x2) / 2, (y1 + y2) / 2)``."""
    return torch.stack(
        ((boxes_xyxy[:, 2] + boxes_xyxy[:, 0]) / 2.0, (boxes_xyxy[:, 3] + boxes_xyxy[:, 1]) / 2.0), dim=1
    )


def atss_assign(
    anchors_xyxy: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes_xyxy: Tensor,
    topk: int = 9,
    legacy_plus_one: bool = True,
    center_eps: float = 0.01,
) -> Tensor:
    """Match the anchors of one image to its ground-truth boxes with ATSS.

    Args:
        anchors_xyxy: ``(N, 4)`` float anchors of all levels, concatenated in level order
            (the layout of :attr:`glip.modeling.glip.GLIPOutput.anchors_xyxy`).
        num_anchors_per_level: ``L`` integers summing to ``N``: how many of the anchors belong to each
            level (``H_l * W_l`` with one anchor per location).
        gt_boxes_xyxy: ``(M, 4)`` float ground-truth boxes of the image in the anchors' pixel frame,
            +1 convention. ``M`` may be 0.
        topk: candidates per level and per box (official ``MODEL.ATSS.TOPK`` times the number of
            anchors per location, which is 1 in GLIP).
        legacy_plus_one: IoU with ``w = x2 - x1 + 1`` (official).
        center_eps: an anchor centre counts as inside a box when its smallest distance to the box's
            sides exceeds this (official 0.01 pixels).

    Returns:
        ``(N,)`` int64: for every anchor the index in ``[0, M)`` of the box it is assigned to, or
        ``-1`` when it is a negative. With ``M = 0`` every anchor is ``-1``.

    Ties: when several boxes have candidates with equal distances, ``torch.topk`` picks among them
    exactly as the official code does (same operation on the same layout); an anchor positive for
    several boxes with equal IoU goes to the box ``torch.max`` returns first.
    """
    num_anchors = anchors_xyxy.shape[0]
    num_gt = gt_boxes_xyxy.shape[0]
    if sum(num_anchors_per_level) != num_anchors:
        raise ValueError(f"num_anchors_per_level sums to {sum(num_anchors_per_level)}, but there are {num_anchors}")
    unmatched = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors_xyxy.device)
    if num_gt == 0 or num_anchors == 0:
        return unmatched
    gt = gt_boxes_xyxy.to(anchors_xyxy.dtype)
    ious = box_iou(anchors_xyxy, gt, legacy_plus_one)  # (N, M)
    anchor_points = box_centers(anchors_xyxy)  # (N, 2)
    gt_points = box_centers(gt)  # (M, 2)
    distances = (anchor_points[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()  # (N, M)

    # 1. candidates: the topk nearest anchor centres per level, (C, M) indices into the N anchors
    candidates = []
    start = 0
    for count in num_anchors_per_level:
        if count == 0:
            continue
        k = min(topk, count)
        _, idx = distances[start : start + count].topk(k, dim=0, largest=False)
        candidates.append(idx + start)
        start += count
    candidate_idx = torch.cat(candidates, dim=0)  # (C, M)

    # 2. per-box threshold mean + unbiased std of the candidates' IoUs
    gt_range = torch.arange(num_gt, device=anchors_xyxy.device)
    candidate_ious = ious[candidate_idx, gt_range]  # (C, M)
    threshold = candidate_ious.mean(0) + candidate_ious.std(0)
    is_pos = candidate_ious >= threshold[None, :]

    # 3. the candidate's centre must lie strictly inside the box
    cx = anchor_points[candidate_idx, 0]  # (C, M)
    cy = anchor_points[candidate_idx, 1]
    sides = torch.stack((cx - gt[:, 0], cy - gt[:, 1], gt[:, 2] - cx, gt[:, 3] - cy), dim=0)  # (4, C, M)
    is_pos &= sides.min(dim=0).values > center_eps

    # 4. one box per anchor: the highest IoU among the boxes it is positive for
    ious_inf = torch.full_like(ious, _NEG_INF)  # (N, M)
    pos_anchor, pos_gt = candidate_idx[is_pos], gt_range.expand_as(candidate_idx)[is_pos]
    ious_inf[pos_anchor, pos_gt] = ious[pos_anchor, pos_gt]
    best_iou, best_gt = ious_inf.max(dim=1)
    return torch.where(best_iou == _NEG_INF, unmatched, best_gt)


def atss_assign_batch(
    anchors_xyxy: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes_xyxy: Sequence[Tensor],
    topk: int = 9,
    legacy_plus_one: bool = True,
    center_eps: float = 0.01,
) -> Tensor:
    """:func:`atss_assign` for every image of a batch that shares one anchor grid.

    Args:
        anchors_xyxy: ``(N, 4)`` anchors common to all images.
        num_anchors_per_level: as in :func:`atss_assign`.
        gt_boxes_xyxy: ``B`` tensors ``(M_b, 4)``, one per image.
        topk, legacy_plus_one, center_eps: as in :func:`atss_assign`.

    Returns:
        ``(B, N)`` int64 matched box index per anchor (into that image's boxes), ``-1`` for negatives.
    """
    if not gt_boxes_xyxy:
        return torch.empty((0, anchors_xyxy.shape[0]), dtype=torch.long, device=anchors_xyxy.device)
    return torch.stack(
        [
            atss_assign(anchors_xyxy, num_anchors_per_level, boxes.to(anchors_xyxy.device), topk, legacy_plus_one,
                        center_eps)
            for boxes in gt_boxes_xyxy
        ]
    )  # fmt: skip
