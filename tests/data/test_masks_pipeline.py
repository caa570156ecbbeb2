"""Instance masks through the data pipeline: COCO segmentations → samples → transforms → collated targets,
and referring expressions as training samples (the whole expression one entity, every referred instance)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glip.data import (
    CocoDataset,
    DetectionGroundingDataset,
    GroundingCollator,
    OdPromptOptions,
    RefExpGroundingDataset,
    TrainTransform,
    load_refexp,
    resize_masks,
)
from glip.data.transforms import hflip_masks
from glip.errors import DataError
from glip.masks import encode_rle, segmentation_to_mask
from glip.structures import GroundingSample
from glip.text import Prompt, load_tokenizer

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
COCO128 = SHARED / "coco128" / "annotations"

W, H = 60, 40
RLE_MASK = torch.zeros(H, W, dtype=torch.bool)
RLE_MASK[20:30, 35:50] = True  # rows 20..29, columns 35..49
RLE_MASK[25:30, 35:40] = False  # not a rectangle


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _annotations() -> list[dict]:
    polygon = [[4.0, 5.0, 24.0, 5.0, 24.0, 17.0, 4.0, 17.0]]  # the pixels x 4..23, y 5..16
    return [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 5, 20, 12], "iscrowd": 0, "segmentation": polygon},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 60, 40], "iscrowd": 1,
         "segmentation": {"size": [H, W], "counts": [0, W * H]}},  # crowd: skipped with its box
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [35, 20, 15, 10], "iscrowd": 0,
         "segmentation": encode_rle(RLE_MASK)},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [50, 2, 0.5, 9], "iscrowd": 0,
         "segmentation": [[50, 2, 50.5, 2, 50.5, 11]]},  # thin box (x2 <= x1 after x + w - 1): skipped
        {"id": 5, "image_id": 2, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 0,
         "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
    ]  # fmt: skip


def _coco(root: Path, annotations: list[dict] | None = None, images: int = 3) -> CocoDataset:
    """Image 1: a polygon, a crowd RLE, an RLE and a thin box; image 2: one polygon; image 3: nothing."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(1, images + 1):
        Image.fromarray(np.full((H, W, 3), 40 * i, dtype=np.uint8)).save(root / "images" / f"{i}.png")
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": W, "height": H} for i in range(1, images + 1)],
        "annotations": _annotations() if annotations is None else annotations,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    path = root / "annotations" / "train.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return CocoDataset.load(path)


def _all_classes(coco, tokenizer, **kwargs) -> DetectionGroundingDataset:
    options = OdPromptOptions(mode="all_classes", shuffle=False)
    return DetectionGroundingDataset(coco, tokenizer, options=options, **kwargs)


# ----------------------------------------------------------------------------- COCO → samples
def test_polygon_and_rle_annotations_give_their_masks_aligned_with_the_kept_boxes(tmp_path, tokenizer):
    ds = _all_classes(_coco(tmp_path), tokenizer, remove_images_without_annotations=False)
    assert ds.with_masks
    sample = ds[0]
    assert sample.boxes_xyxy.tolist() == [[4.0, 5.0, 23.0, 16.0], [35.0, 20.0, 49.0, 29.0]]  # crowd and thin: gone
    assert sample.masks is not None and sample.masks.dtype == torch.bool and sample.masks.shape == (2, H, W)
    polygon = torch.zeros(H, W, dtype=torch.bool)
    polygon[5:17, 4:24] = True
    assert torch.equal(sample.masks[0], polygon)  # the rectangle's pixels, exactly the +1 box's
    assert torch.equal(sample.masks[1], RLE_MASK)
    assert ds[1].masks.shape == (1, H, W)
    empty = ds[2]  # an image without objects
    assert empty.boxes_xyxy.shape == (0, 4) and empty.masks is not None and empty.masks.shape == (0, H, W)


def test_masks_are_decoded_per_sample_not_at_construction(tmp_path, tokenizer, monkeypatch):
    import glip.data.coco as coco_module

    calls = []
    original = coco_module.segmentation_to_mask
    monkeypatch.setattr(coco_module, "segmentation_to_mask", lambda *a: calls.append(1) or original(*a))
    ds = _all_classes(_coco(tmp_path), tokenizer)
    assert calls == []
    ds[1]
    assert len(calls) == 1  # only that image's one instance


def test_masks_only_when_every_kept_annotation_has_one_or_forced_off(tmp_path, tokenizer):
    anns = _annotations()
    anns[4]["segmentation"] = []  # a Roboflow-style box-only label
    coco = _coco(tmp_path, anns)
    assert not coco.has_masks
    assert _all_classes(coco, tokenizer)[0].masks is None
    with pytest.raises(DataError, match=r"1 annotation.*no segmentation.*masks were required"):
        _all_classes(coco, tokenizer, masks=True)
    full = _coco(tmp_path / "full")
    assert full.has_masks and _all_classes(full, tokenizer, masks=False)[0].masks is None


def test_malformed_segmentations_are_one_line_errors(tmp_path, tokenizer):
    anns = _annotations()
    anns[2]["segmentation"] = {"size": [H + 1, W], "counts": "abc"}
    with pytest.raises(DataError, match=r"annotation 3: segmentation.size \[41, 60\] is not the size \[40, 60\]"):
        _all_classes(_coco(tmp_path, anns), tokenizer)
    anns = _annotations()
    anns[0]["segmentation"] = 7
    with pytest.raises(DataError, match=r"annotations\[0\].segmentation: expected a list of polygons"):
        _coco(tmp_path / "b", anns)
    anns = _annotations()
    anns[0]["segmentation"] = [[1, 2, "x", 4, 5, 6]]
    ds = _all_classes(_coco(tmp_path / "c", anns), tokenizer)
    with pytest.raises(DataError, match=r"train.json: annotation 1 \(image 1\): segmentation: malformed") as e:
        ds[0]
    assert "\n" not in str(e.value)


def test_held_out_images_are_left_out(tmp_path, tokenizer):
    ds = _all_classes(_coco(tmp_path), tokenizer, remove_images_without_annotations=False, holdout_every=2)
    assert [im["id"] for im in ds.images] == [1, 3]


# ----------------------------------------------------------------------------- transforms
def _box_of(mask: torch.Tensor) -> list[float]:
    ys, xs = mask.nonzero(as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def _sample(masks: torch.Tensor, boxes: torch.Tensor, size=(200, 100)) -> GroundingSample:
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 2, 0] = 255
    return GroundingSample(
        Image.fromarray(pixels), Prompt("cat", (((0, 3),),), ("cat",)), boxes, [[0]] * len(boxes), [1],
        masks=masks,
    )  # fmt: skip


def test_flip_keeps_box_and_mask_pixel_aligned_with_the_plus_one_convention():
    mask = torch.zeros(1, 100, 200, dtype=torch.bool)
    mask[0, 5:21, 10:30] = True  # columns 10..29 = the +1 box x1=10, x2=29
    out = TrainTransform(min_sizes=(100,), max_size=1333, flip_prob=1.0)(
        _sample(mask, torch.tensor([[10.0, 5, 29, 20]]))
    )
    assert out.boxes_xyxy.tolist() == [[170.0, 5.0, 189.0, 20.0]]
    assert _box_of(out.masks[0]) == [170.0, 5.0, 189.0, 20.0]  # exactly the flipped box
    assert torch.equal(hflip_masks(hflip_masks(mask)), mask)


def test_resize_and_flip_hand_computed():
    # 200x100 → 800x400 (scale 4), flipped. Box (official scaling of x2): [40, 20, 116, 80] → [683, 20, 759, 80].
    # Mask: columns 10..29 cover [10, 30) → [40, 120) → columns 40..119 → flipped 680..759; rows 20..83.
    mask = torch.zeros(1, 100, 200, dtype=torch.bool)
    mask[0, 5:21, 10:30] = True
    out = TrainTransform(min_sizes=(400,), max_size=1333, flip_prob=1.0)(
        _sample(mask, torch.tensor([[10.0, 5, 29, 20]]))
    )
    assert out.image.shape == (3, 400, 800) and out.masks.shape == (1, 400, 800) and out.masks.dtype == torch.bool
    assert out.boxes_xyxy.tolist() == [[683.0, 20.0, 759.0, 80.0]]
    assert _box_of(out.masks[0]) == [680.0, 20.0, 759.0, 83.0]
    assert int(out.masks.sum()) == 80 * 64


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_downscaled_masks_stay_within_a_pixel_of_their_boxes(flip):
    gen = torch.Generator().manual_seed(0)
    masks, boxes = [], []
    for _ in range(20):
        x1, y1 = int(torch.randint(0, 300, (1,), generator=gen)), int(torch.randint(0, 150, (1,), generator=gen))
        w, h = int(torch.randint(8, 90, (1,), generator=gen)), int(torch.randint(8, 80, (1,), generator=gen))
        m = torch.zeros(240, 384, dtype=torch.bool)
        m[y1 : y1 + h, x1 : x1 + w] = True
        masks.append(m)
        boxes.append([x1, y1, x1 + w - 1, y1 + h - 1])
    transform = TrainTransform(min_sizes=(200,), max_size=1333, flip_prob=flip)  # 384x240 → 320x200
    out = transform(_sample(torch.stack(masks), torch.tensor(boxes, dtype=torch.float32), size=(384, 240)))
    assert out.masks.shape == (20, 200, 320)
    for box, mask in zip(out.boxes_xyxy, out.masks, strict=True):
        assert (torch.tensor(_box_of(mask)) - box).abs().max() <= 1.0


def test_masks_add_no_randomness():
    mask = torch.zeros(1, 100, 200, dtype=torch.bool)
    mask[0, 5:21, 10:30] = True
    transform = TrainTransform(min_sizes=(64, 80, 96, 112), max_size=400, flip_prob=0.5)
    boxes = torch.tensor([[10.0, 5, 29, 20]])
    for seed in range(6):
        with_masks = transform(_sample(mask, boxes), torch.Generator().manual_seed(seed))
        without = transform(_sample(None, boxes), torch.Generator().manual_seed(seed))
        assert without.masks is None
        assert torch.equal(with_masks.image, without.image) and torch.equal(with_masks.boxes_xyxy, without.boxes_xyxy)
        assert with_masks.masks.shape[1:] == with_masks.image.shape[1:]


def test_masks_that_do_not_match_the_image_are_refused():
    with pytest.raises(DataError, match=r"masks of shape \(1, 10, 10\) for 1 boxes on a 200x100 image"):
        TrainTransform(min_sizes=(100,))(_sample(torch.zeros(1, 10, 10, dtype=torch.bool), torch.zeros(1, 4)))


def test_resize_masks_of_no_instance():
    assert resize_masks(torch.zeros(0, 10, 20, dtype=torch.bool), (5, 7)).shape == (0, 5, 7)


# ----------------------------------------------------------------------------- collation
def test_collator_carries_masks_unpadded(tmp_path, tokenizer):
    ds = _all_classes(
        _coco(tmp_path), tokenizer, transform=TrainTransform((48, 64), 96), remove_images_without_annotations=False
    )
    samples = [ds[0], ds[2]]
    samples[1].image = samples[1].image[:, :, :-8]  # another size than the first
    samples[1].masks = samples[1].masks[:, :, :-8]
    batch = GroundingCollator(tokenizer, pad_to_max=False)(samples)
    for sample, target in zip(samples, batch.targets, strict=True):
        assert target.masks is not None and target.masks.dtype == torch.bool
        assert torch.equal(target.masks, sample.masks) and target.image_size == tuple(sample.image.shape[1:])
    assert batch.targets[1].masks.shape[0] == 0
    no_masks = GroundingSample(samples[0].image, samples[0].prompt, samples[0].boxes_xyxy,
                               samples[0].box_entities, samples[0].entity_labels)  # fmt: skip
    assert GroundingCollator(tokenizer, pad_to_max=False)([no_masks]).targets[0].masks is None
    samples[0].masks = samples[0].masks[:1]
    with pytest.raises(DataError, match=r"sample 0 .* masks of shape"):
        GroundingCollator(tokenizer)(samples)


# ----------------------------------------------------------------------------- referring expressions
def _refexp(root: Path, refs: list[dict]) -> Path:
    data = {
        "info": {"description": "DERIVED test file"},
        "images": [{"id": i, "file_name": f"{i}.png", "width": W, "height": H} for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "refs": [{"segmentation": encode_rle(torch.zeros(H, W, dtype=torch.bool)), **r} for r in refs],
    }
    path = root / "annotations" / "refexp.json"
    path.write_text(json.dumps(data))
    return path


def test_refexp_sample_of_a_synthetic_file(tmp_path):
    anns = _annotations()
    anns.append({"id": 6, "image_id": 1, "category_id": 1, "bbox": [30, 2, 10, 8], "iscrowd": 0,
                 "segmentation": [[30, 2, 40, 2, 40, 10, 30, 10]]})  # fmt: skip
    coco = _coco(tmp_path, anns)
    refs = [
        {"ref_id": 1, "image_id": 1, "expression": " all cats ", "ann_ids": [1, 6, 1]},
        {"ref_id": 2, "image_id": 2, "expression": "the cat", "ann_ids": [5]},
        {"ref_id": 3, "image_id": 1, "expression": "the crowd", "ann_ids": [2]},  # only a crowd: skipped
        {"ref_id": 4, "image_id": 1, "expression": "nothing named"},  # no ann_ids: skipped
    ]
    ds = RefExpGroundingDataset(_refexp(tmp_path, refs), coco, TrainTransform((40,), 80, flip_prob=0.0))
    assert len(ds) == 2 and ds.with_masks
    assert ds.issues["expression that refers only to crowd regions"] == 1
    assert ds.issues["expression without ann_ids (no instance to learn)"] == 1
    sample = ds[0]
    assert sample.prompt.text == " all cats " and sample.prompt.spans == (((1, 9),),) and sample.kind == "grounding"
    assert sample.box_entities == [[0], [0]] and sample.entity_labels == [-1]
    assert sample.boxes_xyxy.tolist() == [[4.0, 5.0, 23.0, 16.0], [30.0, 2.0, 39.0, 9.0]]
    assert sample.masks.shape == (2, 40, 60) and [int(m.sum()) for m in sample.masks] == [20 * 12, 10 * 8]
    held = RefExpGroundingDataset(_refexp(tmp_path, refs), coco, holdout_every=2)
    assert [r.ref_id for r in held.refs] == [1]
    with pytest.raises(DataError, match=r"ref_id 9: ann_id 5 is annotation of image 2 .* not an instance of image 1"):
        RefExpGroundingDataset(
            _refexp(tmp_path, [{"ref_id": 9, "image_id": 1, "expression": "x", "ann_ids": [5]}]), coco
        )
    with pytest.raises(DataError, match="ref_id 9: ann_id 77 is no annotation"):
        RefExpGroundingDataset(
            _refexp(tmp_path, [{"ref_id": 9, "image_id": 1, "expression": "x", "ann_ids": [77]}]), coco
        )


@pytest.mark.skipif(not (COCO128 / "refexp_train2017.json").is_file(), reason="shared/data/coco128 is not present")
def test_plural_refexp_gives_every_referred_instance_and_their_union_is_the_files_mask():
    coco = CocoDataset.load(COCO128 / "train2017.json")
    refexp = load_refexp(COCO128 / "refexp_train2017.json")
    ds = RefExpGroundingDataset(refexp, coco)
    assert len(ds) == len(refexp) == 639 and ds.with_masks
    index = next(i for i, r in enumerate(ds.refs) if r.template == "plural" and len(r.ann_ids) >= 3)
    ref, sample = ds.refs[index], ds[index]
    assert sample.prompt.text == ref.expression and sample.prompt.num_entities == 1
    assert sample.boxes_xyxy.shape[0] == sample.masks.shape[0] == len(ref.ann_ids)
    assert sample.box_entities == [[0]] * len(ref.ann_ids)
    union = sample.masks.any(dim=0)
    assert torch.equal(union, segmentation_to_mask(ref.segmentation, *union.shape))
