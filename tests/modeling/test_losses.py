"""The pure loss functions: focal, GIoU, centerness, inter-image contrastive (label propagation), MLM."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from glip.modeling.losses import (
    centerness_loss,
    centerness_targets,
    giou_loss,
    mlm_loss,
    random_subset,
    region_word_contrastive_loss,
    token_sigmoid_focal_loss,
)


# ----------------------------------------------------------------------------- token focal loss
def test_focal_equals_torchvision_without_mask():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 5, generator=g) * 3
    targets = (torch.rand(2, 7, 5, generator=g) > 0.7).float()
    ours = token_sigmoid_focal_loss(logits, targets, None, alpha=0.25, gamma=2.0)
    ref = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="sum")
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    ones = torch.ones(2, 5)
    assert token_sigmoid_focal_loss(logits, targets, ones, 0.25, 2.0).item() == pytest.approx(ref.item(), rel=1e-6)


def test_focal_ignores_masked_tokens():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, generator=g)
    targets = (torch.rand(2, 4, 6, generator=g) > 0.5).float()
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    keep = mask.bool().unsqueeze(1).expand_as(logits)
    ref = sigmoid_focal_loss(logits[keep], targets[keep], alpha=0.25, gamma=2.0, reduction="sum")
    ours = token_sigmoid_focal_loss(logits, targets, mask, 0.25, 2.0)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    # changing masked logits or targets changes nothing, and they get no gradient
    logits2 = logits.clone().requires_grad_(True)
    with torch.no_grad():
        logits2[~keep] = 40.0
    targets2 = targets.clone()
    targets2[~keep] = 1.0
    out = token_sigmoid_focal_loss(logits2, targets2, mask, 0.25, 2.0)
    assert out.item() == pytest.approx(ours.item(), rel=1e-6)
    out.backward()
    assert (logits2.grad[~keep] == 0).all() and (logits2.grad[keep] != 0).any()


def test_focal_without_alpha_weighting():
    logits, targets = torch.tensor([[[0.0, 2.0]]]), torch.tensor([[[1.0, 0.0]]])
    # p = 0.5 for a positive: 0.5^2 * log 2; p = sigmoid(2) for a negative: p^2 * -log(1 - p)
    p = torch.sigmoid(torch.tensor(2.0)).item()
    expected = 0.25 * math.log(2) + p**2 * -math.log(1 - p)
    assert token_sigmoid_focal_loss(logits, targets, None, alpha=-1, gamma=2.0).item() == pytest.approx(expected)


# ----------------------------------------------------------------------------- GIoU and centerness
def test_giou_hand_computed():
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 2.0, 2.0], [10.0, 0.0, 5.0, 10.0]])
    target = torch.tensor([[5.0, 5.0, 15.0, 15.0], [4.0, 0.0, 6.0, 2.0], [0.0, 0.0, 10.0, 10.0]])
    # 1) areas 100 (no +1), intersection 25, union 175, enclosing 225: giou = 25/175 - 50/225
    # 2) disjoint: intersection 0, union 8, enclosing 6*2 = 12: giou = -4/12
    # 3) x2 < x1 is flattened to a zero-width box: intersection 0, union 100, enclosing 100: giou = 0
    expected = [1 - (25 / 175 - 50 / 225), 1 + 4 / 12, 1.0]
    for i, e in enumerate(expected):
        assert giou_loss(pred[i : i + 1], target[i : i + 1]).item() == pytest.approx(e, rel=1e-5)
    assert giou_loss(pred, target).item() == pytest.approx(sum(expected), rel=1e-5)
    w = torch.tensor([0.5, 2.0, 1.0])
    weighted = sum(a * b for a, b in zip(w.tolist(), expected, strict=True))
    assert giou_loss(pred, target, w).item() == pytest.approx(weighted, rel=1e-5)
    # all-zero weights fall back to the plain sum (official)
    assert giou_loss(pred, target, torch.zeros(3)).item() == pytest.approx(sum(expected), rel=1e-5)


def test_identical_boxes_have_zero_giou_loss():
    boxes = torch.tensor([[3.0, 4.0, 30.0, 40.0]])
    assert giou_loss(boxes, boxes).item() == pytest.approx(0.0, abs=1e-6)


def test_centerness_targets_hand_computed():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [-5.0, -5.0, 25.0, 15.0]])  # centres (5, 5), (10, 5)
    boxes = torch.tensor([[0.0, 0.0, 20.0, 10.0], [0.0, 0.0, 20.0, 10.0]])
    # 1) l=5, r=15, t=5, b=5 -> sqrt(5/15 * 5/5);  2) l=r=10, t=b=5 -> 1
    assert centerness_targets(anchors, boxes).tolist() == pytest.approx([math.sqrt(1 / 3), 1.0])


def test_centerness_loss_is_summed_bce():
    logits, targets = torch.tensor([0.0, 2.0]), torch.tensor([0.5, 1.0])
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum()
    assert centerness_loss(logits, targets).item() == pytest.approx(expected.item())


# ----------------------------------------------------------------------------- contrastive
def _batch():
    """Three images, 3 regions and 6 token slots each (slot 5 is padding).

    image 0, detection "person. dog":  [CLS] person . dog [SEP] <pad>; regions: person box, dog box, negative
    image 1, detection "cat. person":  [CLS] cat . person [SEP] <pad>; regions: cat box, negative, negative
             (a bogus label 1 on the padding slot must be masked)
    image 2, grounding "a man walks":  [CLS] a man walks [SEP] <pad>; regions: the "a man" box, negative x2
    """
    region_labels = torch.tensor([[1, 18, -1], [17, -1, -1], [-1, -1, -1]])
    token_labels = torch.tensor([[-1, 1, -1, 18, -1, -1], [-1, 17, -1, 1, -1, 1], [-1, -1, -1, -1, -1, -1]])
    region_token_map = torch.zeros(3, 3, 6, dtype=torch.bool)
    region_token_map[0, 0, 1] = region_token_map[0, 1, 3] = True
    region_token_map[1, 0, 1] = True
    region_token_map[2, 0, 1] = region_token_map[2, 0, 2] = True
    text_mask = torch.tensor([[1, 1, 1, 1, 1, 0]] * 3)
    return region_labels, token_labels, region_token_map, text_mask


# rows: 9 regions (image-major), columns: 18 token slots (image-major)
EXPECTED_TARGETS = torch.tensor(
    [
        # image 0 tokens   | image 1 tokens    | image 2 tokens
        [0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # img0 person box: own "person" + img1 "person"
        [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # img0 dog box: own "dog" only
        [0] * 18,  # negative
        [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # img1 cat box: own "cat" only
        [0] * 18,
        [0] * 18,
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0],  # grounding box: its own phrase, no propagation
        [0] * 18,
        [0] * 18,
    ],
    dtype=torch.float32,
)


def _reference_contrastive(regions, tokens, targets, text_mask):
    logits = regions.reshape(-1, regions.shape[-1]) @ tokens.reshape(-1, tokens.shape[-1]).T
    logits = logits.masked_fill(~text_mask.reshape(1, -1).bool(), -1e6)

    def side(lg, tg):
        norm = tg / tg.sum(-1, keepdim=True).clamp(min=1e-6)
        return -(norm * lg.log_softmax(-1)).sum()

    return (side(logits, targets) + side(logits.T, targets.T)) / 2


def test_label_propagation_target_matrix():
    region_labels, token_labels, region_token_map, text_mask = _batch()
    g = torch.Generator().manual_seed(0)
    regions = F.normalize(torch.randn(3, 3, 8, generator=g), dim=-1).requires_grad_(True)
    tokens = F.normalize(torch.randn(3, 6, 8, generator=g), dim=-1).requires_grad_(True)
    ours = region_word_contrastive_loss(regions, tokens, region_labels, region_token_map, token_labels, text_mask)
    expected = _reference_contrastive(regions, tokens, EXPECTED_TARGETS, text_mask)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    # a wrong matrix (no cross-image positive) gives a different value
    wrong = EXPECTED_TARGETS.clone()
    wrong[0, 9] = 0
    assert abs(_reference_contrastive(regions, tokens, wrong, text_mask).item() - ours.item()) > 1e-3
    ours.backward()
    assert regions.grad.abs().sum() > 0 and tokens.grad.abs().sum() > 0
    assert (tokens.grad[:, 5] == 0).all()  # padding slots get no gradient


def test_contrastive_temperature_and_region_mask():
    region_labels, token_labels, region_token_map, text_mask = _batch()
    g = torch.Generator().manual_seed(1)
    regions = F.normalize(torch.randn(3, 3, 8, generator=g), dim=-1)
    tokens = F.normalize(torch.randn(3, 6, 8, generator=g), dim=-1)
    args = (regions, tokens, region_labels, region_token_map, token_labels, text_mask)
    scaled = region_word_contrastive_loss(*args, log_scale=math.log(0.5))
    expected = _reference_contrastive(regions * 2, tokens, EXPECTED_TARGETS, text_mask)
    assert scaled.item() == pytest.approx(expected.item(), rel=1e-5)
    # masking the negatives removes them from the region softmax of every token
    mask = region_labels >= 0
    mask[2, 0] = True
    masked = region_word_contrastive_loss(*args, region_mask=mask)
    assert masked.item() < region_word_contrastive_loss(*args).item()


def test_random_subset_is_sorted_distinct_and_seeded():
    pop = torch.arange(10, 30)
    a = random_subset(pop, 5, torch.Generator().manual_seed(3))
    b = random_subset(pop, 5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.tolist() == sorted(set(a.tolist())) and len(a) == 5
    assert set(a.tolist()) <= set(pop.tolist())
    assert random_subset(pop, 50).tolist() == pop.tolist()
    assert random_subset(pop, 0).numel() == 0


# ----------------------------------------------------------------------------- MLM
def test_mlm_loss_ignores_unlabelled_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 11, generator=g)
    labels = torch.tensor([[-100, 3, -100, -100], [7, -100, -100, 2]])
    keep = labels != -100
    expected = F.cross_entropy(logits[keep], labels[keep])
    assert mlm_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_mlm_loss_without_masked_tokens_is_zero_not_nan():
    logits = torch.randn(1, 3, 5, requires_grad=True)
    out = mlm_loss(logits, torch.full((1, 3), -100))
    assert out.item() == 0.0
    out.backward()
    assert logits.grad is not None
