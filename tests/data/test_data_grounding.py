"""Grounding datasets: box conversion, per-sample seeding, MDETR phrases, pseudo boxes, bad records."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from glip.data.coco import CocoDataset
from glip.data.grounding import (
    DetectionGroundingDataset,
    ImageTextDataset,
    MdetrGroundingDataset,
    coco_boxes_to_xyxy,
    sample_seed,
)
from glip.data.od_to_grounding import OdPromptOptions
from glip.data.transforms import TrainTransform
from glip.errors import DataError, ImageError
from glip.text import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _coco(tmp_path, images=((1, "a.jpg"), (2, "b.jpg"), (3, "c.jpg"))):
    (tmp_path / "images").mkdir(exist_ok=True)
    for _, name in images:
        Image.new("RGB", (40, 30)).save(tmp_path / "images" / name)
    data = {
        "images": [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in images],
        "categories": [{"id": 1, "name": "cat"}, {"id": 4, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 4, "bbox": [2, 3, 10, 5]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [35, 20, 10, 20]},  # clipped to 39, 29
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, 1, 4]},  # 1 px wide: dropped
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9], "iscrowd": 1},
            {"id": 5, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]},  # only tiny: image dropped
        ],
    }
    (tmp_path / "annotations").mkdir(exist_ok=True)
    path = tmp_path / "annotations" / "train.json"
    path.write_text(json.dumps(data))
    return CocoDataset.load(path)


def test_coco_boxes_to_xyxy_official_conversion():
    boxes, keep = coco_boxes_to_xyxy([[2, 3, 10, 5], [35, 20, 10, 20], [5, 5, 1, 4], [-3, 1, 5, 5]], 40, 30)
    assert keep == [0, 1, 3]
    assert boxes.tolist() == [[2.0, 3.0, 11.0, 7.0], [35.0, 20.0, 39.0, 29.0], [0.0, 1.0, 1.0, 5.0]]


def test_detection_dataset_boxes_prompt_and_labels(tmp_path, tokenizer):
    coco = _coco(tmp_path)
    ds = DetectionGroundingDataset(coco, tokenizer, label_offset=100)
    assert [im["id"] for im in ds.images] == [1]  # image 2 has only a <= 1 px box, image 3 none
    assert sum(ds.issues.values()) == 1
    sample = ds[0]
    assert sample.kind == "detection" and sample.image_id == 1 and isinstance(sample.image, Image.Image)
    assert sample.boxes_xyxy.tolist() == [[2.0, 3.0, 11.0, 7.0], [35.0, 20.0, 39.0, 29.0]]
    entity_names = [sample.prompt.labels[e[0]] for e in sample.box_entities]
    assert entity_names == ["dog", "cat"]
    assert sorted(sample.entity_labels) == [101, 104] and sorted(sample.prompt.label_ids) == [1, 4]
    keep_all = DetectionGroundingDataset(coco, tokenizer, remove_images_without_annotations=False)
    assert len(keep_all) == 3 and keep_all[2].boxes_xyxy.shape == (0, 4)


def test_samples_depend_only_on_seed_epoch_and_index(tmp_path, tokenizer):
    ds = DetectionGroundingDataset(_coco(tmp_path), tokenizer, TrainTransform((60, 90)), seed=5)
    assert ds[(0, 0)].prompt == ds[0].prompt
    first = ds[(0, 3)]
    again = ds[(0, 3)]
    assert first.prompt == again.prompt and torch.equal(first.image, again.image)
    assert torch.equal(first.boxes_xyxy, again.boxes_xyxy)
    draws = {(ds[(0, e)].prompt.text, tuple(ds[(0, e)].image.shape)) for e in range(12)}
    assert len(draws) > 1
    assert sample_seed(5, 3, 0) == sample_seed(5, 3, 0) != sample_seed(5, 4, 0)
    ds.set_epoch(3)
    assert ds[0].prompt == first.prompt


def test_all_classes_mode_and_few_shot(tmp_path, tokenizer):
    coco = _coco(tmp_path)
    ds = DetectionGroundingDataset(
        coco, tokenizer, options=OdPromptOptions(mode="all_classes", shuffle=False), few_shot=1
    )
    assert ds[0].prompt.text == "cat. dog"
    assert len(ds) == 1


def test_image_size_mismatch_is_reported(tmp_path, tokenizer):
    coco = _coco(tmp_path)
    Image.new("RGB", (41, 30)).save(tmp_path / "images" / "a.jpg")
    with pytest.raises(DataError, match="41x30"):
        DetectionGroundingDataset(coco, tokenizer)[0]
    (tmp_path / "images" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageError):
        DetectionGroundingDataset(coco, tokenizer)[0]


def _mdetr(tmp_path, annotations=None, images=None, name="final.json"):
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.new("RGB", (50, 40)).save(tmp_path / "img" / "p.jpg")
    caption = "A man holds a dog and he smiles"
    data = {
        "images": images
        or [
            {"id": 7, "file_name": "p.jpg", "width": 50, "height": 40, "caption": caption},
            {"id": 8, "file_name": "p.jpg", "width": 50, "height": 40, "caption": "empty one"},
        ],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 1, "image_id": 7, "bbox": [1, 1, 20, 30], "tokens_positive": [[0, 5], [22, 24]]},  # man + he
            {"id": 2, "image_id": 7, "bbox": [25, 20, 10, 10], "tokens_positive": [[12, 17]], "score": 0.9},
            {"id": 3, "image_id": 7, "bbox": [0, 0, 0, 10], "tokens_positive": [[12, 17]]},
        ],
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_mdetr_box_referred_by_two_phrases(tmp_path, tokenizer):
    ds = MdetrGroundingDataset(_mdetr(tmp_path), tmp_path / "img")
    assert len(ds) == 1  # record 8 has no boxes: dropped as the official
    assert ds.issues["box with zero or negative width/height"] == 1
    sample = ds[0]
    assert sample.kind == "grounding" and sample.image_id == 7
    assert sample.prompt.entity_texts() == [["A man"], ["a dog"], ["he"]]
    assert sample.box_entities == [[0, 2], [1]]
    assert sample.entity_labels == [-1, -1, -1]
    assert sample.boxes_xyxy.tolist() == [[1.0, 1.0, 20.0, 30.0], [25.0, 20.0, 34.0, 29.0]]
    kept = MdetrGroundingDataset(_mdetr(tmp_path), tmp_path / "img", keep_images_without_boxes=True)
    assert len(kept) == 2 and kept[1].prompt.num_entities == 0


def test_pseudo_boxes_are_thresholded(tmp_path):
    annotations = [
        {"id": 1, "image_id": 7, "bbox": [1, 1, 20, 30], "tokens_positive": [[0, 5]], "score": 0.3},
        {"id": 2, "image_id": 7, "bbox": [25, 20, 10, 10], "tokens_positive": [[12, 17]], "score": 0.8},
        {"id": 3, "image_id": 7, "bbox": [5, 5, 10, 10], "tokens_positive": [[12, 17]], "score": 0.5},
    ]
    path = _mdetr(tmp_path, annotations)
    ds = ImageTextDataset(path, tmp_path / "img", score_threshold=0.5)
    sample = ds[0]
    assert sample.kind == "image_text" and sample.boxes_xyxy.shape == (2, 4)
    assert sample.prompt.entity_texts() == [["a dog"]] and sample.box_entities == [[0], [0]]
    assert ds.issues["pseudo box with score below 0.5"] == 1
    assert len(ImageTextDataset(path, tmp_path / "img", score_threshold=0.95)) == 0
    annotations[0].pop("score")
    with pytest.raises(
        DataError, match=r"annotations\[0\]\.score: missing: a pseudo-labelled box needs a numeric 'score'"
    ):
        ImageTextDataset(_mdetr(tmp_path, annotations), tmp_path / "img")


@pytest.mark.parametrize(
    ("annotations", "images", "message"),
    [
        ([{"id": 1, "image_id": 9, "bbox": [1, 1, 2, 2], "tokens_positive": [[0, 1]]}], None, "unknown image id 9"),
        (
            [{"id": 1, "image_id": 7, "bbox": [1, 1, 2, 2], "tokens_positive": [[0, 99]]}],
            None,
            r"tokens_positive\[0\]: expected \[start, end\] .* inside the caption",
        ),
        (
            [{"id": 1, "image_id": 7, "bbox": [1, 1, 2], "tokens_positive": [[0, 1]]}],
            None,
            r"annotations\[0\]\.bbox: expected \[x, y, width, height\]",
        ),
        ([{"id": 1, "image_id": 7, "bbox": [1, 1, 2, 2]}], None, "neither 'tokens_positive' nor 'phrase_ids'"),
        (
            [{"id": 1, "image_id": 7, "bbox": [1, 1, 2, 2], "tokens_positive": [0, 1]}],
            None,
            r"tokens_positive\[0\]: expected \[start, end\].*got 0$",
        ),
        ([], [{"id": 7, "file_name": "p.jpg", "width": 50, "height": 40}], r"images\[0\]\.caption: missing"),
        (
            [],
            [{"id": 7, "file_name": "p.jpg", "width": 0, "height": 40, "caption": "x"}],
            r"images\[0\]\.width: must be positive, got 0",
        ),
    ],
)
def test_malformed_mdetr_records_name_file_and_record(tmp_path, annotations, images, message):
    path = _mdetr(tmp_path, annotations, images)
    with pytest.raises(DataError, match=message) as err:
        MdetrGroundingDataset(path, tmp_path / "img")
    assert str(path) in str(err.value)


def test_missing_images_and_files_fail_at_construction(tmp_path):
    path = _mdetr(tmp_path)
    with pytest.raises(DataError, match="missing under"):
        MdetrGroundingDataset(path, tmp_path / "elsewhere")
    with pytest.raises(DataError, match="does not exist"):
        MdetrGroundingDataset(tmp_path / "nope.json", tmp_path / "img")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        MdetrGroundingDataset(tmp_path / "bad.json", tmp_path / "img")
    assert len(MdetrGroundingDataset(path, tmp_path / "elsewhere", check_files=False)) == 1


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data is not present")
def test_real_pipeline_resumes_exactly_whatever_the_workers(tokenizer):
    from torch.utils.data import DataLoader

    from glip.data import GroundingCollator, MixedDataset, WeightedMixSampler

    transform = TrainTransform((96, 128), max_size=200)
    datasets = [
        DetectionGroundingDataset(CocoDataset.load(SHARED / name / "annotations" / f"{split}.json"), tokenizer,
                                  transform, seed=1, label_offset=offset)
        for name, split, offset in (("coco128", "train2017", 0), ("raccoon", "train", 1000))
    ]  # fmt: skip
    mixed = MixedDataset(datasets, names=["coco128", "raccoon"])
    collator = GroundingCollator(tokenizer, pad_to_max=False)

    def batches(state=None, workers=0, count=4):
        sampler = WeightedMixSampler(mixed.sizes, [1, 2], seed=3)
        if state is not None:
            sampler.load_state_dict(state)
        loader = DataLoader(mixed, batch_size=2, sampler=sampler, collate_fn=collator, num_workers=workers)
        it = iter(loader)
        return sampler, [next(it) for _ in range(count)]

    sampler, straight = batches(workers=2)
    state = sampler.state_dict(consumed=2 * 2)  # two batches trained before the interruption
    _, resumed = batches(state, workers=0, count=2)
    for a, b in zip(straight[2:], resumed, strict=True):
        assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.input_ids, b.input_ids)
        for ta, tb in zip(a.targets, b.targets, strict=True):
            assert torch.equal(ta.boxes_xyxy, tb.boxes_xyxy) and torch.equal(ta.positive_map, tb.positive_map)
    labels = {int(v) for b in straight for t in b.targets for v in t.box_labels}
    assert labels and all(v < 91 or v == 1001 for v in labels)


def test_extra_negatives_join_the_pool_but_never_get_boxes(tmp_path):
    import json as _json
    import random as _random

    from PIL import Image as _Image

    from glip.data import CocoDataset, DetectionGroundingDataset, OdPromptOptions
    from glip.text import load_tokenizer

    (tmp_path / "images").mkdir()
    _Image.new("RGB", (40, 30)).save(tmp_path / "images" / "a.jpg")
    ann = tmp_path / "a.json"
    ann.write_text(_json.dumps({
        "images": [{"id": 1, "file_name": "images/a.jpg", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "raccoon"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20]}],
    }))  # fmt: skip
    coco = CocoDataset.load(ann, tmp_path)
    ds = DetectionGroundingDataset(
        coco, load_tokenizer(), options=OdPromptOptions(random_sample_negative=5),
        extra_negatives=["dog", "cat", "raccoon", "traffic_light"],
    )  # fmt: skip
    assert set(ds.vocab.prompt_names) == {"raccoon", "dog", "cat", "traffic light"}  # own name not duplicated
    texts = set()
    for i in range(20):
        sample = ds.raw_sample(0, _random.Random(i))
        names = list(sample.prompt.labels)
        texts.add(sample.prompt.text)
        assert len(sample.boxes_xyxy) == 1
        assert [names[e] for e in sample.box_entities[0]] == ["raccoon"]  # only raccoon has boxes
    assert any("dog" in t for t in texts) and any("traffic light" in t for t in texts)
