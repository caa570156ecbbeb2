"""ATSS post-processing on hand-made outputs."""

import math

import torch

from glip.modeling.anchors import BoxCoder, grid_anchors
from glip.modeling.postprocess import ATSSPostProcessor, class_aware_nms, entity_scores
from glip.structures import EntityMap


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_entity_scores_mean_and_max_and_empty():
    probs = torch.tensor([[0.1, 0.2, 0.6, 0.9], [0.5, 0.5, 0.5, 0.5]])
    s = entity_scores(probs, [[1, 2], [3], []], "mean")
    assert torch.allclose(s, torch.tensor([[0.4, 0.9, 0.0], [0.5, 0.5, 0.0]]))
    m = entity_scores(probs, [[1, 2], [3], []], "max")
    assert torch.allclose(m, torch.tensor([[0.6, 0.9, 0.0], [0.5, 0.5, 0.0]]))


def test_nms_uses_plus_one_areas():
    # A covers 10x10 pixels; B 10x6.2 (+1 convention). IoU(+1) = 6.2/10 = 0.62 > 0.6 -> suppressed;
    # without +1: 5.2/9 = 0.578 -> kept.
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 5.2]])
    scores = torch.tensor([0.9, 0.8])
    classes = torch.tensor([0, 0])
    assert class_aware_nms(boxes, scores, classes, 0.6, plus_one=True).tolist() == [0]
    assert class_aware_nms(boxes, scores, classes, 0.6, plus_one=False).tolist() == [0, 1]
    # different classes never suppress each other
    assert class_aware_nms(boxes, scores, torch.tensor([0, 1]), 0.6, plus_one=True).tolist() == [0, 1]


def _setup(level_sizes, strides, num_tokens):
    n = sum(h * w for h, w in level_sizes)
    anchors = grid_anchors(level_sizes, strides, 8.0)
    logits = torch.full((1, n, num_tokens), -20.0)
    return anchors, logits, torch.zeros(1, n, 4), torch.zeros(1, n)


def test_single_detection_score_box_label_and_rescale():
    level_sizes, strides = [(2, 2), (1, 1)], (8, 16)
    anchors, logits, reg, ctr = _setup(level_sizes, strides, 6)
    # location 3 (row 1, col 1 of level 0): entity 0 = tokens [1, 2] with p = 0.3, 0.5 -> mean 0.4
    logits[0, 3, 1], logits[0, 3, 2] = logit(0.3), logit(0.5)
    ctr[0, 3] = logit(0.25)
    emap = EntityMap([[1, 2], [4]], label_ids=[7, 9], names=["raccoon", "dog"])
    post = ATSSPostProcessor(BoxCoder())
    det = post(logits, reg, ctr, anchors, level_sizes, [emap], [(100, 200)], [(50, 100)])[0]
    assert len(det) == 1
    assert det.labels.tolist() == [7] and det.label_names == ["raccoon"]
    assert math.isclose(det.scores.item(), math.sqrt(0.4 * 0.25), rel_tol=1e-5)
    # zero deltas -> the anchor [8-28, 8-28, 8+35, 8+35] clipped to [0, 199]x[0, 99], then halved
    expected = torch.tensor([0.0, 0.0, 43.0, 43.0]) * 0.5
    assert torch.allclose(det.boxes_xyxy[0], expected)
    assert det.image_size == (50, 100)


def test_threshold_is_applied_before_centerness():
    level_sizes, strides = [(2, 2), (1, 1)], (8, 16)
    anchors, logits, reg, ctr = _setup(level_sizes, strides, 4)
    logits[0, 0, 1] = logit(0.049)  # below 0.05 -> dropped even with a perfect centerness
    logits[0, 4, 1] = logit(0.06)  # above 0.05 -> kept although 0.06 * 0.1 is far below 0.05
    ctr[0, 0] = 20.0
    ctr[0, 4] = logit(0.1)
    emap = EntityMap([[1]], [1], ["cat"])
    det = ATSSPostProcessor(BoxCoder())(logits, reg, ctr, anchors, level_sizes, [emap], [(64, 64)], [(64, 64)])[0]
    assert len(det) == 1
    assert math.isclose(det.scores.item(), math.sqrt(0.06 * 0.1), rel_tol=1e-4)


def test_one_location_can_yield_several_entities_and_results_are_sorted():
    level_sizes, strides = [(2, 2), (1, 1)], (8, 16)
    anchors, logits, reg, ctr = _setup(level_sizes, strides, 4)
    logits[0, 2, 1] = logit(0.5)
    logits[0, 2, 2] = logit(0.8)
    emap = EntityMap([[1], [2]], [1, 2], ["a", "b"])
    det = ATSSPostProcessor(BoxCoder())(logits, reg, ctr, anchors, level_sizes, [emap], [(64, 64)], [(64, 64)])[0]
    assert det.label_names == ["b", "a"]  # same box, different classes: both survive class-aware NMS
    assert det.scores[0] > det.scores[1]


def test_pre_nms_top_n_and_detections_per_image_caps():
    level_sizes, strides = [(4, 4), (1, 1)], (8, 16)
    anchors, logits, reg, ctr = _setup(level_sizes, strides, 4)
    # 16 locations of level 0 with distinct scores; entity 0; far apart? anchors overlap heavily,
    # so use one entity per location to avoid NMS: 16 entities, one token each is too many tokens;
    # instead set nms_threshold=1.0 (nothing is suppressed).
    for i in range(16):
        logits[0, i, 1] = logit(0.1 + 0.05 * i)
    emap = EntityMap([[1]], [1], ["x"])
    post = ATSSPostProcessor(BoxCoder(), pre_nms_top_n=10, nms_threshold=1.0, detections_per_image=4)
    det = post(logits, reg, ctr, anchors, level_sizes, [emap], [(32, 32)], [(32, 32)])[0]
    assert len(det) == 4
    expected = [math.sqrt((0.1 + 0.05 * i) * 0.5) for i in (15, 14, 13, 12)]
    assert torch.allclose(det.scores, torch.tensor(expected), atol=1e-6)
    post = ATSSPostProcessor(BoxCoder(), pre_nms_top_n=3, nms_threshold=1.0, detections_per_image=100)
    assert len(post(logits, reg, ctr, anchors, level_sizes, [emap], [(32, 32)], [(32, 32)])[0]) == 3


def test_no_candidates_gives_empty_detections():
    level_sizes, strides = [(2, 2), (1, 1)], (8, 16)
    anchors, logits, reg, ctr = _setup(level_sizes, strides, 4)
    emap = EntityMap([[1]], [1], ["x"])
    det = ATSSPostProcessor(BoxCoder())(logits, reg, ctr, anchors, level_sizes, [emap], [(32, 32)], [(32, 32)])[0]
    assert len(det) == 0 and det.boxes_xyxy.shape == (0, 4)


def test_batched_path_equals_image_by_image():
    torch.manual_seed(0)
    level_sizes, strides = [(12, 16), (6, 8), (3, 4)], (8, 16, 32)
    anchors = grid_anchors(level_sizes, strides, 8, True, torch.device("cpu"))
    n, b = anchors.shape[0], 3
    logits = torch.randn(b, n, 12) * 2 - 1
    reg = torch.randn(b, n, 4) * 0.5
    ctr = torch.randn(b, n)
    emap = EntityMap([[1], [3, 4], [6], [], [8, 9, 10]], [11, 12, 13, 14, 15], ["a", "b c", "d", "e", "f g h"])
    sizes, originals = [(96, 128), (80, 120), (96, 100)], [(480, 640), (200, 300), (96, 100)]
    post = ATSSPostProcessor(BoxCoder(), pre_nms_top_n=50, detections_per_image=30)
    batched = post.batched(logits, reg, ctr, anchors, level_sizes, [emap] * b, sizes, originals)
    assert post(logits, reg, ctr, anchors, level_sizes, [emap] * b, sizes, originals)[0].scores.shape == (30,)
    for i in range(b):
        one = post.single(logits[i], reg[i], ctr[i], anchors, level_sizes, emap, sizes[i], originals[i])
        assert len(one) == len(batched[i]) > 0
        # the same up to the last bit of the CPU's vectorised sigmoid (batch shapes change its tail loop)
        assert torch.allclose(one.scores, batched[i].scores, atol=1e-6, rtol=0)
        assert torch.allclose(one.boxes_xyxy, batched[i].boxes_xyxy, atol=1e-4, rtol=0)
        assert torch.equal(one.labels, batched[i].labels) and one.label_names == batched[i].label_names


def test_rows_with_different_prompt_chunks_equal_row_by_row():
    torch.manual_seed(1)
    level_sizes, strides = [(12, 16), (6, 8), (3, 4)], (8, 16, 32)
    anchors = grid_anchors(level_sizes, strides, 8, True, torch.device("cpu"))
    n = anchors.shape[0]
    chunk_a = EntityMap([[1], [3, 4], [6]], [0, 1, 2], ["a", "b c", "d"])
    chunk_b = EntityMap([[1, 2], [4], [6], [8], [10, 11]], [3, 4, 5, 6, 7], ["e f", "g", "h", "i", "j k"])
    maps = [chunk_a, chunk_a, chunk_b, chunk_b]  # chunk-major rows: 2 chunks x 2 images
    b = len(maps)
    logits = torch.randn(b, n, 12) * 2 - 1
    reg = torch.randn(b, n, 4) * 0.5
    ctr = torch.randn(b, n)
    sizes, originals = [(96, 128), (80, 120)] * 2, [(480, 640), (200, 300)] * 2
    post = ATSSPostProcessor(BoxCoder(), pre_nms_top_n=50, detections_per_image=30)
    together = post(logits, reg, ctr, anchors, level_sizes, maps, sizes, originals)
    for i in range(b):
        one = post.single(logits[i], reg[i], ctr[i], anchors, level_sizes, maps[i], sizes[i], originals[i])
        assert len(one) == len(together[i]) > 0
        assert torch.allclose(one.scores, together[i].scores, atol=1e-6, rtol=0)
        assert torch.allclose(one.boxes_xyxy, together[i].boxes_xyxy, atol=1e-4, rtol=0)
        assert torch.equal(one.labels, together[i].labels) and one.label_names == together[i].label_names
    assert set(together[0].labels.tolist()) <= {0, 1, 2} and set(together[2].labels.tolist()) <= set(range(3, 8))
