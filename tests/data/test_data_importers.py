"""VOC XML and YOLO txt → COCO: box conventions on hand-made files and on the real shared/data files."""

import json
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from glip.data.coco import CocoDataset
from glip.data.importers import load_yolo_names, voc_to_coco, write_coco_json, yolo_to_coco
from glip.errors import DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data is not present")

VOC = """<annotation><filename>{name}.jpg</filename><size><width>{w}</width><height>{h}</height></size>
{objects}</annotation>"""
OBJ = "<object><name>{cls}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>" \
    "<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"  # fmt: skip


def _voc(tmp_path, files):
    (tmp_path / "Annotations").mkdir(exist_ok=True)
    for name, (w, h), objects in files:
        body = "".join(OBJ.format(cls=c, d=d, b=b) for c, b, d in objects)
        (tmp_path / "Annotations" / f"{name}.xml").write_text(VOC.format(name=name, w=w, h=h, objects=body))
    return tmp_path / "Annotations"


def test_voc_one_based_inclusive_boxes(tmp_path):
    folder = _voc(
        tmp_path,
        [
            ("b", (20, 10), [("dog", (1, 1, 20, 10), 0), ("cat", (5, 2, 5, 8), 0)]),  # second: degenerate
            ("a", (30, 40), [("cat", (3, 4, 12, 9), 1)]),
        ],
    )
    data = voc_to_coco(folder)
    assert [im["file_name"] for im in data["images"]] == ["a.jpg", "b.jpg"]
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert [a["bbox"] for a in data["annotations"]] == [[2, 3, 10, 6], [0, 0, 20, 10]]  # whole image → [0, 0, W, H]
    assert data["annotations"][1]["area"] == 200
    assert len(voc_to_coco(folder, skip_difficult=True)["annotations"]) == 1
    with pytest.raises(DataError, match="degenerate"):
        voc_to_coco(folder, drop_degenerate=False)
    with pytest.raises(DataError, match="not in class_names"):
        voc_to_coco(folder, class_names=["cat"])
    subset = voc_to_coco(
        folder, image_set=["b"], class_names=["dog", "cat"], category_ids=[5, 9], file_name_prefix="x/"
    )
    assert subset["images"] == [{"id": 1, "file_name": "x/b.jpg", "width": 20, "height": 10}]
    assert subset["annotations"][0]["category_id"] == 5


def test_voc_errors_and_size_from_image(tmp_path):
    folder = _voc(tmp_path, [("a", (0, 0), [("cat", (1, 1, 4, 4), 0)])])
    with pytest.raises(DataError, match="no usable <size>"):
        voc_to_coco(folder)
    (tmp_path / "JPEGImages").mkdir()
    Image.new("RGB", (16, 12)).save(tmp_path / "JPEGImages" / "a.jpg")
    assert voc_to_coco(folder, tmp_path / "JPEGImages")["images"][0]["width"] == 16
    (folder / "a.xml").write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(DataError, match="has no <bndbox>"):
        voc_to_coco(folder)
    (folder / "a.xml").write_text("<annotation>")
    with pytest.raises(DataError, match="not valid XML"):
        voc_to_coco(folder)
    with pytest.raises(DataError, match="missing"):
        voc_to_coco(folder, image_set=["zzz"])


def test_yolo_normalised_boxes_polygons_and_names(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("a.jpg", "b.png"):
        Image.new("RGB", (200, 100)).save(tmp_path / "images" / name)
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.2 0.2 0.3 0.1\n")
    (tmp_path / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n")
    data = yolo_to_coco(tmp_path / "images", tmp_path / "labels", tmp_path / "data.yaml")
    assert [im["file_name"] for im in data["images"]] == ["a.jpg", "b.png"]  # b has no label file: no objects
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    boxes = [[round(v, 6) for v in a["bbox"]] for a in data["annotations"]]
    assert boxes == [[80.0, 30.0, 40.0, 40.0], [20.0, 10.0, 40.0, 10.0]]
    assert [a["category_id"] for a in data["annotations"]] == [2, 1]
    assert load_yolo_names(["x"]) == ["x"]
    (tmp_path / "labels" / "a.txt").write_text("7 0.5 0.5 0.2 0.4\n")
    with pytest.raises(DataError, match=r"a\.txt:1: class index 7"):
        yolo_to_coco(tmp_path / "images", tmp_path / "labels", ["cat", "dog"])
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.2\n")
    with pytest.raises(DataError, match="expected 'class cx cy w h'"):
        yolo_to_coco(tmp_path / "images", tmp_path / "labels", ["cat", "dog"])
    (tmp_path / "labels" / "zz.txt").write_text("")
    with pytest.raises(DataError, match="have no image"):
        yolo_to_coco(tmp_path / "images", tmp_path / "labels", ["cat", "dog"])


def test_written_json_loads_as_a_coco_dataset(tmp_path):
    folder = _voc(tmp_path, [("a", (20, 10), [("cat", (2, 2, 8, 8), 0)])])
    (tmp_path / "JPEGImages").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "JPEGImages" / "a.jpg")
    path = write_coco_json(voc_to_coco(folder), tmp_path / "out" / "train.json")
    ds = CocoDataset.load(path, tmp_path / "JPEGImages")
    assert ds.category_names == ["cat"] and len(ds.annotations[1]) == 1


def _by_file(data):
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {im["id"]: im["file_name"] for im in data["images"]}
    out = defaultdict(list)
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            out[files[a["image_id"]]].append((names[a["category_id"]], a["bbox"]))
    return out


@needs_shared
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_bccd_voc_reproduces_the_shared_json(split):
    voc = SHARED / "bccd" / "original_voc"
    ours = voc_to_coco(
        voc / "Annotations",
        image_set=voc / "ImageSets" / "Main" / f"{split}.txt",
        class_names=["RBC", "WBC", "Platelets"],
        file_name_prefix=f"{split}/",
    )
    reference = json.loads((SHARED / "bccd" / "annotations" / f"{split}.json").read_text())
    assert ours["images"] == reference["images"] and ours["categories"] == reference["categories"]
    assert ours["annotations"] == reference["annotations"]  # same boxes, ids, areas and order
    assert json.dumps(ours, sort_keys=True) == json.dumps(reference, sort_keys=True)  # integers stay integers


@needs_shared
def test_coco128_yolo_reproduces_the_shared_json_boxes():
    root = SHARED / "coco128"
    ours = yolo_to_coco(
        root / "images" / "train2017",
        root / "original_yolo" / "labels" / "train2017",
        root / "original_yolo" / "config.yaml",
        file_name_prefix="train2017/",
    )
    reference = json.loads((root / "annotations" / "train2017.json").read_text())
    assert [(im["file_name"], im["width"], im["height"]) for im in ours["images"]] == [
        (im["file_name"], im["width"], im["height"]) for im in reference["images"]
    ]
    mine, theirs = _by_file(ours), _by_file(reference)
    assert sum(map(len, mine.values())) == sum(map(len, theirs.values())) == 929
    worst = 0.0
    for file_name, boxes in theirs.items():
        candidates = list(mine[file_name])
        assert len(candidates) == len(boxes)
        for name, box in boxes:  # match each reference box to the closest imported box of its class
            errors = [max(abs(p - q) for p, q in zip(b, box, strict=True)) for n, b in candidates if n == name]
            best = min(range(len(errors)), key=errors.__getitem__)
            worst = max(worst, errors[best])
            candidates.remove([c for c in candidates if c[0] == name][best])
    assert worst < 0.01
