"""Anchors and the box coder (official +1 conventions)."""

import math

import torch

from glip.modeling.anchors import BoxCoder, cell_anchor, grid_anchors


def test_cell_anchor_matches_official_values():
    # stride 8, side 64: centre (8-1)/2 = 3.5, half (64-1)/2 = 31.5 -> [-28, -28, 35, 35]
    assert cell_anchor(8, 64.0).tolist() == [-28.0, -28.0, 35.0, 35.0]
    assert cell_anchor(128, 1024.0).tolist() == [-448.0, -448.0, 575.0, 575.0]
    # without the +1 convention the anchor is centred on s/2 with side exactly a
    assert cell_anchor(8, 64.0, legacy_plus_one=False).tolist() == [-28.0, -28.0, 36.0, 36.0]


def test_grid_anchors_are_row_major_per_level_and_concatenated():
    anchors = grid_anchors([(2, 3), (1, 2)], (8, 16), anchor_scale=8.0)
    assert anchors.shape == (2 * 3 + 1 * 2, 4)
    base8 = torch.tensor([-28.0, -28.0, 35.0, 35.0])
    assert torch.equal(anchors[0], base8)
    assert torch.equal(anchors[1], base8 + torch.tensor([8.0, 0, 8.0, 0]))  # x moves first
    assert torch.equal(anchors[3], base8 + torch.tensor([0, 8.0, 0, 8.0]))  # second row
    base16 = cell_anchor(16, 128.0)
    assert torch.equal(anchors[6], base16)
    assert torch.equal(anchors[7], base16 + torch.tensor([16.0, 0, 16.0, 0]))


def test_box_coder_round_trip():
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(50, 2, generator=g) * 300
    anchors = torch.cat([anchors, anchors + 20 + torch.rand(50, 2, generator=g) * 100], dim=1)
    boxes = torch.rand(50, 2, generator=g) * 300
    boxes = torch.cat([boxes, boxes + 5 + torch.rand(50, 2, generator=g) * 200], dim=1)
    coder = BoxCoder()
    deltas = coder.encode(boxes, anchors)
    assert torch.allclose(coder.decode(deltas, anchors), boxes, atol=1e-3)


def test_box_coder_hand_computed():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    anchor = torch.tensor([[0.0, 0.0, 9.0, 19.0]])  # w=10, h=20 (+1), centre (4.5, 9.5)
    box = torch.tensor([[5.0, 0.0, 14.0, 39.0]])  # w=10, h=40, centre (9.5, 19.5)
    d = coder.encode(box, anchor)[0]
    assert torch.allclose(d, torch.tensor([10 * 5 / 10, 10 * 10 / 20, 0.0, 5 * math.log(2.0)]))
    # zero deltas decode to the anchor itself
    assert torch.allclose(coder.decode(torch.zeros(1, 4), anchor), anchor)


def test_box_coder_clamps_huge_sizes():
    coder = BoxCoder()
    anchor = torch.tensor([[0.0, 0.0, 15.0, 15.0]])  # w = 16
    box = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), anchor)[0]
    width = box[2] - box[0] + 1
    assert torch.allclose(width, torch.tensor(1000.0), rtol=1e-5)  # 16 * exp(log(1000/16))
