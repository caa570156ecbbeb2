"""Labelled sets in any layout (glip.data.formats) and split folders / names (glip.data.coco)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from glip.data.coco import find_coco_splits, split_role
from glip.data.formats import has_val_split, load_labelled_set, split_off
from glip.errors import DataError


def _image(path: Path, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 30)).save(path)


def _coco(path: Path, files: list[str], names: tuple[str, ...] = ("cat", "dog")) -> Path:
    images = [{"id": i + 1, "file_name": f, "width": 40, "height": 30} for i, f in enumerate(files)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0}
            for i in range(len(files))]  # fmt: skip
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("train", "train"), ("train2017", "train"), ("train_2017", "train"), ("instances_train2017", "train"),
        ("training", "train"), ("trainval", "train"), ("val", "val"), ("valid", "val"), ("val2017", "val"),
        ("validation", "val"), ("minival", "val"), ("test", "test"), ("test2017", "test"), ("test-dev", "test"),
        ("train_10_3", None), ("fewshot_train_shot1_seed3", None), ("refexp_train", None), ("holdout", None),
    ],
)  # fmt: skip
def test_split_roles(name, role):
    assert split_role(name) == role


def test_odinw_download_layout_with_versions(tmp_path):
    for version in ("large", "tiny"):
        for split in ("train", "valid", "test"):
            folder = tmp_path / "Aerial" / version / split
            _coco(folder / "annotations_without_background.json", ["a.jpg"])
            _coco(folder / "_annotations.coco.json", ["a.jpg"])  # the Roboflow file beside it is not used
            _coco(folder / "fewshot_train_shot1_seed3.json", ["a.jpg"])
    _coco(tmp_path / "Pothole" / "v1" / "train" / "annotations_without_background.json", ["a.jpg"])
    found = find_coco_splits(tmp_path)
    assert [(f.dataset, f.split) for f in found] == [
        ("Aerial_large", "test"), ("Aerial_large", "train"), ("Aerial_large", "valid"),
        ("Aerial_tiny", "test"), ("Aerial_tiny", "train"), ("Aerial_tiny", "valid"), ("Pothole", "train"),
    ]  # fmt: skip
    assert all(f.annotation_file.name == "annotations_without_background.json" for f in found)
    assert found[0].image_root == tmp_path / "Aerial" / "large" / "test"


def test_coco_file_with_images_beside_it_in_an_images_folder(tmp_path):
    _image(tmp_path / "set" / "images" / "a.jpg")
    labelled = load_labelled_set(_coco(tmp_path / "set" / "labels.json", ["a.jpg"]), tmp_path / "work")
    assert labelled.source_format == "coco" and labelled.image_root == tmp_path / "set" / "images"
    assert labelled.describe() == "1 images, 1 boxes, 2 classes (COCO)"
    with pytest.raises(DataError, match="--images"):
        load_labelled_set(_coco(tmp_path / "lost" / "labels.json", ["a.jpg"]), tmp_path / "work")


def test_roboflow_split_folder(tmp_path):
    _image(tmp_path / "train" / "a.jpg")
    _coco(tmp_path / "train" / "_annotations.coco.json", ["a.jpg"])
    labelled = load_labelled_set(tmp_path / "train", tmp_path / "work")
    assert labelled.annotation_file.name == "_annotations.coco.json" and labelled.image_root == tmp_path / "train"


def test_yolo_data_yaml_with_train_and_val(tmp_path):
    root = tmp_path / "yolo"
    for split, n in (("train", 3), ("valid", 1)):
        for i in range(n):
            _image(root / split / "images" / f"{i}.jpg")
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{i}.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    # a Roboflow export: paths relative to the yaml's folder, written as ../train/images
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: ['cat', 'dog']\n")
    assert has_val_split(root / "data.yaml") and has_val_split(root)
    train = load_labelled_set(root / "data.yaml", tmp_path / "work", "train")
    val = load_labelled_set(root, tmp_path / "work", "val")
    assert (train.num_images, train.num_boxes, train.class_names) == (3, 3, ("cat", "dog"))
    assert (val.num_images, val.source_format) == (1, "yolo")
    data = json.loads(train.annotation_file.read_text())
    assert data["annotations"][0]["category_id"] == 2 and data["annotations"][0]["bbox"] == [15.0, 7.5, 10.0, 15.0]


def test_yolo_labels_beside_the_images_with_names_above(tmp_path):
    _image(tmp_path / "set" / "photos" / "a.png")
    (tmp_path / "set" / "photos" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "set" / "classes.txt").write_text("cat\n")
    labelled = load_labelled_set(tmp_path / "set" / "photos", tmp_path / "work")
    assert labelled.source_format == "yolo" and labelled.class_names == ("cat",)
    (tmp_path / "set" / "classes.txt").unlink()
    with pytest.raises(DataError, match="need class names"):
        load_labelled_set(tmp_path / "set" / "photos", tmp_path / "work")


def test_voc_folder_and_a_val_set_with_the_training_classes(tmp_path):
    for split, objects in (("train", ("dog", "cat")), ("val", ("cat",))):
        root = tmp_path / split
        _image(root / "JPEGImages" / "a.jpg")
        (root / "Annotations").mkdir(parents=True)
        xml = "".join(
            f"<object><name>{n}</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>11</xmax><ymax>10</ymax></bndbox></object>"
            for n in objects
        )
        (root / "Annotations" / "a.xml").write_text(
            f"<annotation><filename>a.jpg</filename><size><width>40</width><height>30</height></size>{xml}</annotation>"
        )
    train = load_labelled_set(tmp_path / "train", tmp_path / "work", "train")
    val = load_labelled_set(tmp_path / "val", tmp_path / "work", "val", class_names=list(train.class_names))
    assert train.class_names == val.class_names == ("dog", "cat")
    assert train.annotation_file == tmp_path / "work" / "train.json" and val.num_boxes == 1


def test_split_off_holds_back_every_fifth_image(tmp_path):
    files = [f"{i}.jpg" for i in range(10)]
    for f in files:
        _image(tmp_path / "images" / f)
    labelled = load_labelled_set(_coco(tmp_path / "all.json", files), tmp_path / "work", images=tmp_path / "images")
    train, val = split_off(labelled, 0.2, tmp_path / "work")
    assert (train.num_images, val.num_images) == (8, 2) and val.class_names == train.class_names
    held = {im["id"] for im in json.loads(val.annotation_file.read_text())["images"]}
    assert held == {5, 10}
    with pytest.raises(DataError, match="too few"):
        split_off(
            load_labelled_set(_coco(tmp_path / "one.json", files[:1]), tmp_path / "w", images=tmp_path / "images"),
            0.2,
            tmp_path / "w",
        )


def test_unknown_layouts_are_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"not a \.json"):
        load_labelled_set(tmp_path / "notes.txt", tmp_path / "work")
    (tmp_path / "ds" / "annotations").mkdir(parents=True)
    _coco(tmp_path / "ds" / "annotations" / "train.json", ["a.jpg"])
    with pytest.raises(DataError, match="give the one to train on"):
        load_labelled_set(tmp_path / "ds", tmp_path / "work")
