"""ATSS assignment: hand-checked cases and a loop-by-loop reference on a real anchor grid."""

import math

import pytest
import torch

from glip.modeling.anchors import grid_anchors
from glip.modeling.assigner import atss_assign, atss_assign_batch
from glip.structures import box_iou

GT = torch.tensor([[0.0, 0.0, 19.0, 9.0]])  # a 20 x 10 box (+1 convention)


def _row(dx: float, dy: float = 0.0, w: float = 20.0, h: float = 10.0) -> list[float]:
    return [dx, dy, dx + w - 1, dy + h - 1]


def test_iou_uses_the_plus_one_area():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0]])
    # +1: 10x10 boxes overlapping 5x10 -> 50 / 150; without: 4*9 / (81 + 81 - 36)
    assert box_iou(a, b).item() == pytest.approx(1 / 3)
    assert box_iou(a, b, legacy_plus_one=False).item() == pytest.approx(36 / 126)


def test_threshold_is_mean_plus_unbiased_std():
    # Five candidates (topk covers the whole level). IoUs with GT:
    #   dx=-4: overlap 16x10=160, union 240 -> 2/3;  dx=-2: 180/220 -> 9/11;  dx=20, 22, 24: 0.
    # mean = 49/165 = 0.29697; sum of squared deviations = 0.67291
    # unbiased std = sqrt(0.67291/4) = 0.41016 -> threshold 0.70713: only 9/11 passes.
    # (the biased std 0.36685 would give 0.66382 and let 2/3 pass too)
    anchors = torch.tensor([_row(-4), _row(-2), _row(20), _row(22), _row(24)])
    ious = box_iou(anchors, GT)[:, 0]
    assert ious.tolist() == pytest.approx([2 / 3, 9 / 11, 0, 0, 0], abs=1e-6)
    assert (ious.mean() + ious.std()).item() == pytest.approx(0.70713, abs=1e-4)
    matched = atss_assign(anchors, [5], GT, topk=5)
    assert matched.tolist() == [-1, 0, -1, -1, -1]


def test_centre_must_lie_strictly_inside_the_box():
    # Candidates: one overlapping anchor and two far ones (IoU 0), topk 3.
    # Anchor rows 5..14 (centre y 9.5 > y2 = 9): IoU 100/300 = 1/3, threshold = 1/9 + sqrt(3)/9 = 0.3036:
    # the IoU passes, but the centre is outside -> negative.
    far = [_row(200), _row(300)]
    outside = torch.tensor([_row(0, 5), *far])
    assert box_iou(outside, GT)[0, 0].item() == pytest.approx(1 / 3)
    assert atss_assign(outside, [3], GT, topk=3).tolist() == [-1, -1, -1]
    # Rows 4..13 (centre y 8.5, 0.5 inside): IoU 120/280 = 0.4286 >= threshold 0.3903 -> positive.
    inside = torch.tensor([_row(0, 4), *far])
    assert atss_assign(inside, [3], GT, topk=3).tolist() == [0, -1, -1]


def test_centre_within_eps_of_the_border_is_outside():
    # A 1x1 GT whose right side is 0.005 px from the anchor centre: min(l, t, r, b) = 0.005 <= 0.01.
    anchor = torch.tensor([[0.0, 0.0, 9.0, 9.0], [100.0, 100.0, 109.0, 109.0], [200.0, 200.0, 209.0, 209.0]])
    gt = torch.tensor([[0.0, 0.0, 4.505, 9.0]])  # centre x of the anchor is 4.5
    assert atss_assign(anchor, [3], gt, topk=3)[0].item() == -1
    assert atss_assign(anchor, [3], gt, topk=3, center_eps=0.001)[0].item() == 0


def test_anchor_positive_for_two_boxes_goes_to_the_higher_iou():
    # Anchor 0 is a positive candidate of both boxes; IoU 1 with box 1, 9/11 with box 0.
    gts = torch.tensor([[2.0, 0.0, 21.0, 9.0], _row(0)])
    anchors = torch.tensor([_row(0), _row(200), _row(300), _row(400)])
    ious = box_iou(anchors, gts)
    assert ious[0].tolist() == pytest.approx([9 / 11, 1.0])
    assert atss_assign(anchors, [4], gts, topk=4).tolist() == [1, -1, -1, -1]
    # swapping the boxes swaps the index
    assert atss_assign(anchors, [4], gts.flip(0), topk=4).tolist() == [0, -1, -1, -1]


def test_candidates_are_taken_per_level():
    # Level 0: the near anchors (IoU 1 and 9/11), level 1: two anchors far away (IoU 0).
    # topk=1 per level -> candidates {IoU 1, 0}: threshold 0.5 + sqrt(0.5) = 1.207 -> nothing passes.
    # topk=2 per level -> candidates {1, 9/11, 0, 0}: mean 0.4545, std 0.5301 -> threshold 0.9846: anchor 0.
    anchors = torch.tensor([_row(0), _row(-2), _row(500), _row(600)])
    assert atss_assign(anchors, [2, 2], GT, topk=1).tolist() == [-1, -1, -1, -1]
    assert atss_assign(anchors, [2, 2], GT, topk=2).tolist() == [0, -1, -1, -1]
    # one level of four anchors with topk=2 -> candidates {1, 9/11}: threshold above 1 -> nothing.
    assert atss_assign(anchors, [4], GT, topk=2).tolist() == [-1, -1, -1, -1]


def test_no_boxes_means_every_anchor_is_negative():
    anchors = grid_anchors([(4, 4), (2, 2)], (8, 16), 8.0)
    assert atss_assign(anchors, [16, 4], torch.zeros(0, 4)).tolist() == [-1] * 20
    batch = atss_assign_batch(anchors, [16, 4], [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 20.0, 20.0]])])
    assert batch.shape == (2, 20) and (batch[0] == -1).all()


def test_level_counts_must_cover_the_anchors():
    with pytest.raises(ValueError, match="sums to"):
        atss_assign(torch.zeros(5, 4), [2, 2], GT)


def _reference_atss(anchors, counts, gts, topk):
    """A direct, loop-by-loop restatement of the rule (slow, for comparison only)."""
    n = anchors.shape[0]
    acx, acy = ((anchors[:, 0] + anchors[:, 2]) / 2).tolist(), ((anchors[:, 1] + anchors[:, 3]) / 2).tolist()
    ious = box_iou(anchors, gts)
    best = [(-math.inf, -1)] * n
    for g, (x1, y1, x2, y2) in enumerate(gts.tolist()):
        gx, gy = (x1 + x2) / 2, (y1 + y2) / 2
        cands, start = [], 0
        for count in counts:
            d = [math.hypot(acx[i] - gx, acy[i] - gy) for i in range(start, start + count)]
            order = sorted(range(count), key=lambda i: d[i])[: min(topk, count)]
            cands += [start + i for i in order]
            start += count
        vals = torch.tensor([ious[i, g].item() for i in cands], dtype=torch.float64)
        thr = (vals.mean() + vals.std()).item()
        for i in cands:
            inside = min(acx[i] - x1, acy[i] - y1, x2 - acx[i], y2 - acy[i]) > 0.01
            if ious[i, g].item() >= thr - 1e-6 and inside and ious[i, g].item() > best[i][0]:
                best[i] = (ious[i, g].item(), g)
    return [g for _, g in best]


def test_matches_a_loop_reference_on_a_real_grid():
    g = torch.Generator().manual_seed(0)
    sizes, strides = [(20, 24), (10, 12), (5, 6), (3, 3), (2, 2)], (8, 16, 32, 64, 128)
    anchors = grid_anchors(sizes, strides, 8.0)
    counts = [h * w for h, w in sizes]
    xy = torch.rand(12, 2, generator=g) * torch.tensor([150.0, 120.0])
    wh = 8 + torch.rand(12, 2, generator=g) * 150
    gts = torch.cat((xy, xy + wh), dim=1)
    ours = atss_assign(anchors, counts, gts, topk=9)
    assert ours.tolist() == _reference_atss(anchors, counts, gts, 9)
    assert (ours >= 0).sum() > 12  # every box got several positives
