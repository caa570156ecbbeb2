"""COCO-format loading: validation errors name the file and the record; skippable records are counted."""

import json

import pytest
from PIL import Image

from glip.data.coco import CocoDataset, find_coco_splits
from glip.errors import DataError


def _write(tmp_path, data, images=("a.jpg",)):
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    for name in images:
        Image.new("RGB", (20, 10)).save(tmp_path / "images" / name)
    (tmp_path / "annotations").mkdir(exist_ok=True)
    path = tmp_path / "annotations" / "val.json"
    path.write_text(json.dumps(data))
    return path


def _good():
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5]},  # zero width: skipped
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [25, 1, 3, 3]},  # outside: skipped
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [2, 2, 3, 3], "iscrowd": 1},
        ],
    }


def test_loads_sorts_categories_and_counts_skipped_records(tmp_path):
    ds = CocoDataset.load(_write(tmp_path, _good()))
    assert ds.image_root == tmp_path / "images"
    assert ds.category_names == ["dog", "cat"] and ds.category_ids == [1, 3]
    assert [a["id"] for a in ds.annotations[1]] == [1]
    assert sum(ds.issues.values()) == 3
    assert ds.data["annotations"][1]["bbox"] == [1, 1, 0, 5]  # the raw data is untouched for evaluators


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["images"][0].pop("width"), r"images\[0\]\.width: missing"),
        (lambda d: d["annotations"][0].update(category_id=7), r"annotations\[0\]\.category_id: unknown category id 7"),
        (lambda d: d["annotations"][0].update(image_id=9), r"annotations\[0\]\.image_id: unknown image id 9"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\]\.bbox: expected \[x, y, width"),
        (lambda d: d["categories"].append({"id": 3, "name": "x"}), r"categories\[2\]\.id: duplicate id 3"),
        (lambda d: d["images"].append(dict(d["images"][0])), r"images\[1\]\.id: duplicate id 1"),
        (lambda d: d.pop("categories"), "categories: missing"),
    ],
)
def test_malformed_records_raise_with_file_and_record(tmp_path, mutate, message):
    data = _good()
    mutate(data)
    with pytest.raises(DataError, match=message) as err:
        CocoDataset.load(_write(tmp_path, data))
    assert "val.json" in str(err.value)


def test_missing_image_files_and_bad_json(tmp_path):
    data = _good()
    data["images"].append({"id": 2, "file_name": "missing.jpg", "width": 5, "height": 5})
    with pytest.raises(DataError, match=r"missing\.jpg"):
        CocoDataset.load(_write(tmp_path, data))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        CocoDataset.load(bad)


def test_find_splits_in_both_layouts(tmp_path):
    _write(tmp_path / "ds1", _good())
    rf = tmp_path / "ds2" / "valid"
    rf.mkdir(parents=True)
    (rf / "_annotations.coco.json").write_text(json.dumps(_good()))
    found = find_coco_splits(tmp_path)
    assert [(f.dataset, f.split) for f in found] == [("ds1", "val"), ("ds2", "valid")]
    assert found[1].image_root == rf
    assert [f.split for f in find_coco_splits(tmp_path, ("valid",))] == ["valid"]
