"""GLIPv2 mask head: shapes, level mapping, phrase masks, targets, loss and pasting on hand-made inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from glip.modeling.mask_head import (
    Hourglass,
    MaskHead,
    map_levels,
    mask_loss,
    mask_targets,
    match_boxes,
    paste_masks,
    phrase_mask_logits,
    project_masks_on_boxes,
)

SCALES = (1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128)


def _pyramid(batch: int, channels: int, height: int = 128, width: int = 160) -> list[torch.Tensor]:
    return [torch.randn(batch, channels, height // 2**k, width // 2**k) for k in range(3, 8)]


@pytest.mark.parametrize(
    ("num_hourglasses", "scales", "resolution"),
    [(1, 1, 14), (4, 2, 16)],  # the T/B and H hourglass settings (tiny widths)
)
def test_output_shapes_for_both_hourglass_settings(num_hourglasses, scales, resolution):
    torch.manual_seed(0)
    head = MaskHead(8, 8, text_dim=12, num_hourglasses=num_hourglasses, hourglass_scales=scales,
                    pooler_resolution=resolution)  # fmt: skip
    assert len(head.hourglasses) == num_hourglasses
    assert isinstance(head.hourglasses[0].low2, Hourglass) == (scales == 2)
    boxes = [torch.tensor([[0.0, 0.0, 40.0, 30.0], [10.0, 20.0, 150.0, 120.0]]), torch.tensor([[5.0, 5.0, 9.0, 9.0]])]
    out = head(_pyramid(2, 8), boxes, torch.randn(2, 7, 12))
    m = 2 * resolution
    assert head.mask_resolution == m
    assert out.shape == (3, 7, m, m)
    assert torch.isfinite(out).all()
    empty = head(_pyramid(2, 8), [torch.zeros(0, 4), torch.zeros(0, 4)], torch.randn(2, 7, 12))
    assert empty.shape == (0, 7, m, m)


def test_residual_convolutions_follow_the_official_layout():
    head = MaskHead(8, 8, text_dim=4, pooler_resolution=4)
    res = head.hourglasses[0].up1
    assert [c.weight.shape[-1] for c in (res.conv1, res.conv2, res.conv3)] == [3, 3, 3]
    assert [c.dilation[0] for c in (res.conv1, res.conv2, res.conv3)] == [1, 3, 1]
    assert res.conv1.out_channels == 4 and res.conv3.out_channels == 8


def test_constructor_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="in_channels"):
        MaskHead(256, 384)
    with pytest.raises(ValueError, match="divisible"):
        MaskHead(8, 8, hourglass_scales=2, pooler_resolution=14)
    with pytest.raises(ValueError, match="powers of two"):
        MaskHead(8, 8, pooler_scales=(1 / 8, 1 / 12))


def test_level_mapping_follows_the_fpn_heuristic_with_plus_one_areas():
    # sqrt((w+1)(h+1)): 111 -> floor(4 + log2(111/224)) = 3 (P3), 224 -> 4, 448 -> 5, 4000 -> 8 clamped to 7
    sides = torch.tensor([110.0, 223.0, 447.0, 3999.0, 2.0])
    boxes = torch.stack((torch.zeros(5), torch.zeros(5), sides, sides), dim=1)
    assert map_levels(boxes, 3, 7).tolist() == [0, 1, 2, 4, 0]
    # just below the canonical size stays on the finer level
    assert map_levels(torch.tensor([[0.0, 0.0, 223.0, 222.0]]), 3, 7).tolist() == [0]


def test_boxes_of_each_image_are_pooled_from_their_own_image():
    torch.manual_seed(0)
    head = MaskHead(4, 4, text_dim=6, pooler_resolution=4)
    feats = _pyramid(2, 4)
    box = torch.tensor([[8.0, 8.0, 60.0, 50.0]])
    both = head.pool(feats, [box, box])
    second = head.pool([f[1:] for f in feats], [box])
    assert torch.equal(both[1], second[0])
    assert not torch.equal(both[0], both[1])


def test_logits_are_the_dot_product_with_the_projected_normalised_text():
    torch.manual_seed(0)
    head = MaskHead(4, 4, text_dim=6, pooler_resolution=4)
    with torch.no_grad():
        head.log_scale.fill_(math.log(2.0))
        head.bias_lang.normal_()
    feats, text = _pyramid(1, 4), torch.randn(1, 3, 6)
    boxes = [torch.tensor([[8.0, 8.0, 60.0, 50.0]])]
    out = head(feats, boxes, text)
    x = head.mask_features(head.pool(feats, boxes))[0]  # (C, M, M)
    emb = F.normalize(text[0], dim=-1)
    tok = head.text_proj(emb / 2)
    expected = torch.einsum("tc,chw->thw", tok, x) / 2.0 + (emb @ head.bias_lang)[:, None, None]
    torch.testing.assert_close(out[0], expected)


def test_phrase_mask_is_the_mean_of_its_token_logits():
    logits = torch.zeros(2, 5, 2, 2)
    logits[:, 1] = 1.0
    logits[:, 2] = 3.0
    logits[:, 4] = -4.0
    out = phrase_mask_logits(logits, [[1, 2], [4], []], torch.tensor([0, 1]))
    assert out.shape == (2, 2, 2)
    torch.testing.assert_close(out[0], torch.full((2, 2), 2.0))
    torch.testing.assert_close(out[1], torch.full((2, 2), -4.0))
    assert phrase_mask_logits(logits, [[1, 2], [4], []], torch.tensor([2])).eq(0).all()


def test_loss_is_near_zero_for_a_confident_correct_mask():
    target = torch.zeros(1, 6, 6)
    target[0, 1:4, 2:5] = 1.0
    logits = torch.full((1, 4, 6, 6), -3.0)
    logits[0, 2] = torch.where(target[0] > 0, 30.0, -30.0)  # the positive token
    logits[0, 3] = -30.0  # a token that is not positive must not count
    positive = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    assert mask_loss(logits, positive, target) < 1e-10
    # with token 3 positive too, the 9 object pixels average to logit 0 (loss ln 2 each), the rest to -30
    both = mask_loss(logits, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), target)
    assert abs(both.item() - 9 / 36 * math.log(2.0)) < 1e-6


def test_loss_matches_a_hand_computation():
    # one positive row with tokens 0 and 2 (mean of logits), one row without positives (ignored)
    logits = torch.zeros(2, 3, 1, 2)
    logits[0, 0] = torch.tensor([[1.0, -2.0]])
    logits[0, 2] = torch.tensor([[3.0, 0.0]])  # mean: [2, -1]
    logits[1] = 50.0
    positive = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert abs(mask_loss(logits, positive, targets).item() - expected) < 1e-6
    # without positive rows: zero, still connected to the graph
    logits.requires_grad_(True)
    zero = mask_loss(logits, torch.zeros(2, 3), targets)
    zero.backward()
    assert zero.item() == 0.0 and logits.grad is not None


def test_targets_crop_the_gt_bitmask_to_each_roi():
    masks = torch.zeros(1, 40, 40, dtype=torch.bool)
    masks[0, 10:30, 20:40] = True  # right half of the box [0, 10, 40, 30]
    box = torch.tensor([[0.0, 10.0, 40.0, 30.0]])
    t = project_masks_on_boxes(masks, box, torch.tensor([0]), 4)
    torch.testing.assert_close(t[0], torch.tensor([[0.0, 0, 1, 1]] * 4))
    # a box exactly on the object: all ones
    t = project_masks_on_boxes(masks, torch.tensor([[20.0, 10.0, 40.0, 30.0]]), torch.tensor([0]), 4)
    assert t.eq(1).all()


def test_match_boxes_uses_plus_one_iou_and_threshold():
    gt = torch.tensor([[0.0, 0.0, 9.0, 9.0], [50.0, 50.0, 59.0, 59.0]])
    rois = torch.tensor([[0.0, 0.0, 9.0, 4.0], [0.0, 0.0, 9.0, 3.0], [51.0, 51.0, 60.0, 60.0], [100.0, 100, 110, 110]])
    # IoU(+1): 50/100 = 0.5 -> matched; 40/100 -> not; 81/119 -> matched to the second
    assert match_boxes(rois, gt).tolist() == [0, -1, 1, -1]
    assert match_boxes(rois, gt[:0]).tolist() == [-1] * 4


def test_mask_targets_for_a_batch_of_two_images():
    masks = [torch.ones(1, 20, 20), torch.ones(2, 30, 30)]
    gt_boxes = [torch.tensor([[2.0, 2.0, 12.0, 12.0]]), torch.tensor([[0.0, 0.0, 9.0, 9.0], [10.0, 10.0, 25.0, 25.0]])]
    pmaps = [torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])]
    rois = [torch.tensor([[2.0, 2.0, 12.0, 12.0], [15.0, 15.0, 19.0, 19.0]]), torch.tensor([[10.0, 10.0, 25.0, 24.0]])]
    positive, targets = mask_targets(rois, gt_boxes, masks, pmaps, resolution=4)
    assert positive.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]
    assert targets.shape == (3, 4, 4)
    assert targets[0].eq(1).all() and targets[1].eq(0).all() and targets[2].eq(1).all()


def test_pasting_a_full_mask_fills_its_box():
    probs = torch.ones(1, 28, 28)
    box = torch.tensor([[10.0, 20.0, 49.0, 39.0]])  # 40 x 20 pixels with the +1 convention
    pasted = paste_masks(probs, box, (60, 80))
    assert pasted.dtype == torch.bool and pasted.shape == (1, 60, 80)
    # the official recipe (zero border, box grown by 30/28, truncated to integers, bilinear) moves the
    # edges by up to one pixel: here x covers 9..49 and y 20..38
    inner = torch.zeros(60, 80, dtype=torch.bool)
    inner[21:39, 11:49] = True
    outer = torch.zeros(60, 80, dtype=torch.bool)
    outer[19:41, 9:51] = True
    assert pasted[0][inner].all() and not pasted[0][~outer].any()
    box_region = torch.zeros(60, 80, dtype=torch.bool)
    box_region[20:40, 10:50] = True
    iou = (pasted[0] & box_region).sum() / (pasted[0] | box_region).sum()
    assert iou > 0.9
    # clipped at the image border, nothing for an empty list
    edge = paste_masks(probs, torch.tensor([[70.0, 50.0, 99.0, 79.0]]), (60, 80))[0]
    assert edge[51:, 71:].all() and not edge[:49].any() and not edge[:, :69].any()
    assert paste_masks(probs[:0], box[:0], (60, 80)).shape == (0, 60, 80)


def test_pasting_keeps_the_left_half():
    probs = torch.zeros(1, 28, 28)
    probs[0, :, :14] = 1.0
    pasted = paste_masks(probs, torch.tensor([[0.0, 0.0, 55.0, 55.0]]), (56, 56))[0]
    assert pasted[1:55, 1:27].all() and not pasted[:, 29:].any()


def test_autocast_bf16_on_cpu():
    torch.manual_seed(0)
    head = MaskHead(8, 8, text_dim=12, pooler_resolution=8)
    feats = _pyramid(2, 8)
    boxes = [torch.tensor([[0.0, 0.0, 40.0, 30.0]]), torch.tensor([[5.0, 5.0, 90.0, 60.0], [1.0, 1.0, 8.0, 8.0]])]
    text = torch.randn(2, 5, 12)
    reference = head(feats, boxes, text)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head([f.bfloat16() for f in feats], boxes, text)
        probs = phrase_mask_logits(out, [[1, 2], [3]], torch.tensor([0, 1, 0])).sigmoid()
        loss = mask_loss(out, torch.tensor([[0.0, 1, 1, 0, 0]] * 3), (reference[:, 1] > 0).float())
    assert out.shape == reference.shape and torch.isfinite(out).all()
    assert (out.float() - reference).abs().max() < 0.1 * reference.abs().max()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert head.text_proj.weight.grad is not None
    assert paste_masks(probs[:1], boxes[0], (50, 60)).any()


def test_batched_paste_matches_the_per_box_paste():
    """The GPU paste (batched GEMMs) equals the official per-box resize up to threshold ties."""
    import torch.nn.functional as F

    from glip.modeling.mask_head import _paste_batched, _paste_loop

    torch.manual_seed(0)
    r, m, h, w = 40, 14, 90, 130
    probs = F.pad(torch.rand(r, m, m), (1,) * 4)
    centre = torch.rand(r, 2) * torch.tensor([w, h])
    half = torch.rand(r, 2) * torch.tensor([w, h]) * 0.4 + 0.5
    grown = torch.cat((centre - half, centre + half), 1).to(torch.int64)  # boxes may leave the image
    loop = _paste_loop(probs, grown, torch.zeros(r, h, w, dtype=torch.bool), 0.5, 0)
    batched = _paste_batched(probs, grown, torch.zeros(r, h, w, dtype=torch.bool), 0.5, 2**12)  # several chunks
    assert (loop != batched).sum().item() <= 2
    assert loop.sum() > 1000


@pytest.mark.parametrize("preset", ["glip_t", "glip_l", "glip_t_a", "effnet_minilm", "mobilenet_minilm", "tiny"])
def test_mask_head_of_every_preset(preset):
    """Every preset takes a mask head: its width is the tower's, its text side the encoder's, and it maps
    ROIs on the preset's pyramid to (R, T, 2P, 2P) logits (built on the meta device: shapes only)."""
    from glip.config import GLIPConfig
    from glip.modeling.glip import GLIPModel

    config = GLIPConfig.from_preset(preset).replace(**{"heads.mask": {"pooler_resolution": 14}})
    with torch.device("meta"):
        model = GLIPModel(config, load_pretrained_parts=False)
    head = model.mask_head
    c, d = config.tower.channels, config.text.hidden_size
    assert head.text_proj.weight.shape == (c, d) and head.deconv.weight.shape == (c, c, 2, 2)
    assert head.mask_resolution == 28 and model.heads == ["grounding", "mask"]
    assert head.pooler_scales == tuple(1.0 / s for s in config.head.anchor_strides)
    if preset == "tiny":  # small enough to run for real
        real = GLIPModel(config)
        feats = [torch.randn(1, c, 256 // s, 384 // s) for s in (8, 16, 32, 64, 128)]
        out = real.mask_head(feats, [torch.tensor([[2.0, 3.0, 40.0, 50.0]])], torch.randn(1, 9, d))
        assert out.shape == (1, 9, 28, 28)
