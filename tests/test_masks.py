"""glip.masks: RLE round trips (compressed, uncompressed, polygons), unions, IoUs, outlines, JSON records."""

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from glip.errors import DataError
from glip.masks import (
    decode_rle,
    encode_rle,
    intersection_union,
    mask_iou,
    mask_outline,
    rle_area,
    segmentation_to_mask,
    union,
)
from glip.structures import Detections


def _box_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_compressed_rle_round_trip_and_json():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(17, 23, generator=g) > 0.6
    rle = encode_rle(mask)
    assert rle["size"] == [17, 23] and isinstance(rle["counts"], str)
    again = json.loads(json.dumps(rle))
    assert torch.equal(decode_rle(again), mask)
    assert torch.equal(decode_rle({"size": rle["size"], "counts": rle["counts"].encode()}), mask)  # bytes counts
    assert rle_area([rle]) == [int(mask.sum())]
    # the same string pycocotools writes
    ref = coco_mask.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    assert ref["counts"].decode() == rle["counts"]
    assert torch.equal(decode_rle(encode_rle(mask.numpy())), mask)  # numpy input


def test_uncompressed_counts_are_column_major_runs():
    # 3x4 mask, runs in column-major order: 2 background, 3 foreground, 7 background
    mask = decode_rle({"size": [3, 4], "counts": [2, 3, 7]})
    expected = torch.zeros(3, 4, dtype=torch.bool)
    expected[2, 0] = expected[0, 1] = expected[1, 1] = True
    assert torch.equal(mask, expected)
    assert torch.equal(segmentation_to_mask({"size": [3, 4], "counts": [2, 3, 7]}, 3, 4), expected)
    assert decode_rle({"size": [3, 3], "counts": [9]}).sum() == 0


def test_polygons_rasterise_like_pycocotools():
    poly = [[1.0, 1.0, 6.0, 1.0, 6.0, 5.0, 1.0, 5.0], [8, 8, 9, 8, 9, 9]]
    mask = segmentation_to_mask(poly, 12, 10)
    ref = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(poly, 12, 10))).astype(bool)
    assert mask.shape == (12, 10) and np.array_equal(mask.numpy(), ref)
    assert int(mask[:7, :7].sum()) == 5 * 4  # the 5 x 4 rectangle [1, 6) x [1, 5)
    assert segmentation_to_mask([], 4, 5).sum() == 0 and segmentation_to_mask([[1, 2]], 4, 5).sum() == 0


@pytest.mark.parametrize(
    ("rle", "match"),
    [
        ({"size": [4, 5], "counts": "abc"}, "not a valid COCO RLE"),
        ({"size": [4], "counts": "abc"}, "size"),
        ({"size": [4, -1], "counts": []}, "size"),
        ({"size": [3, 3], "counts": [1, 2, 100]}, "not a valid COCO RLE"),
        ({"size": [3, 3], "counts": [1, "x"]}, "run lengths"),
        ({"size": [3, 3], "counts": 5}, "counts"),
        ({"counts": "abc"}, "expected"),
        ({"size": [100000, 100000], "counts": ""}, "larger than any image"),
    ],
)
def test_malformed_rle_is_a_data_error(rle, match):
    with pytest.raises(DataError, match=match) as info:
        decode_rle(rle)
    assert "\n" not in str(info.value)


def test_segmentation_errors():
    with pytest.raises(DataError, match="RLE mask of size"):
        segmentation_to_mask({"size": [3, 4], "counts": [12]}, 4, 3)
    with pytest.raises(DataError, match="polygons or an RLE"):
        segmentation_to_mask("abc", 4, 4)
    with pytest.raises(DataError, match="malformed"):
        segmentation_to_mask([["a", 1, 2, 3, 4, 5]], 4, 4)


def test_union_iou_and_counts_on_hand_made_masks():
    rows = _box_mask(4, 4, 0, 2, 0, 4)  # 8 px
    cols = _box_mask(4, 4, 0, 4, 0, 2)  # 8 px, 4 shared
    empty = torch.zeros(4, 4, dtype=torch.bool)
    assert int(union(torch.stack([rows, cols])).sum()) == 12
    assert union(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (4, 4)
    assert not union(torch.zeros(0, 4, 4, dtype=torch.bool)).any()
    iou = mask_iou(torch.stack([rows, empty]), torch.stack([cols, rows, empty]))
    assert iou.flatten().tolist() == pytest.approx([4 / 12, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert intersection_union(rows, cols) == (4, 12)
    assert intersection_union(empty, empty) == (0, 0)
    with pytest.raises(ValueError, match="different sizes"):
        intersection_union(rows, torch.zeros(3, 4, dtype=torch.bool))


def test_mask_outline():
    square = _box_mask(10, 10, 2, 8, 2, 8)  # 6 x 6
    assert int(mask_outline(square, 1).sum()) == 36 - 16
    assert int(mask_outline(square, 2).sum()) == 36 - 4
    assert not mask_outline(square, 0).any()
    assert not (mask_outline(square, 2) & ~square).any()  # inside the mask only
    corner = _box_mask(10, 10, 0, 4, 0, 4)  # touches the image border: no outline along it
    outline = mask_outline(corner, 1)
    assert int(outline.sum()) == 7 and outline[3, 0] and not outline[0, 0]


def test_detections_to_list_carries_decodable_masks():
    masks = torch.stack([_box_mask(6, 8, 1, 3, 2, 5), _box_mask(6, 8, 0, 6, 0, 1)])
    det = Detections(
        torch.tensor([[2.0, 1.0, 4.0, 2.0], [0.0, 0.0, 0.0, 5.0]]), torch.tensor([0.9, 0.4]),
        torch.tensor([3, 7]), ["cat", "pole"], (6, 8), masks,
    )  # fmt: skip
    records = json.loads(json.dumps(det.to_list()))
    assert [r["label_name"] for r in records] == ["cat", "pole"]
    for record, mask in zip(records, masks, strict=True):
        assert torch.equal(decode_rle(record["mask"]), mask)
    no_masks = Detections(det.boxes_xyxy, det.scores, det.labels, det.label_names, (6, 8))
    assert all("mask" not in r for r in no_masks.to_list())
