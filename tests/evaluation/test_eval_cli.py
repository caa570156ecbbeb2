"""`glip eval` (COCO and LVIS protocols) and `glip eval-suite` end to end on a real image."""

import json

import pytest
from PIL import Image

from glip.cli import main

# the two raccoons of assets/raccoon-72.jpg (boxes read off the picture, xywh)
RACCOONS = [[70, 30, 115, 190], [150, 135, 150, 115]]


def _coco_dataset(root, sample_image, categories, lvis=False):
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in (1, 2):
        Image.open(sample_image).save(root / "images" / "val" / f"r{i}.jpg")
    images = [{"id": i, "file_name": f"val/r{i}.jpg", "width": 384, "height": 288} for i in (1, 2)]
    anns = [
        {"id": k + 1, "image_id": i, "category_id": 1, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
        for k, (i, box) in enumerate((i, b) for i in (1, 2) for b in RACCOONS)
    ]
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(categories)]
    if lvis:
        for a in anns:
            a.pop("iscrowd")
        for im in images:
            im.update(neg_category_ids=[2], not_exhaustive_category_ids=[])
        for c in cats:
            c.update(frequency="f" if c["id"] == 1 else "r", synonyms=[c["name"]])
    path = root / "annotations" / "val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_eval_coco_writes_reports_and_detections(tiny_model_dir, sample_image, tmp_path, capsys):
    ann = _coco_dataset(tmp_path / "racc", sample_image, ["raccoon", "dog"])
    out = tmp_path / "out"
    code = main(["eval", "--model", str(tiny_model_dir), "--dataset", str(ann), "--out-dir", str(out), "-q",
                 "--device", "cpu"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "racc/val (2 images" in text and "AP50" in text
    report = json.loads((out / "racc_val_report.json").read_text())
    assert report["num_images"] == 2 and report["prompt"] == "raccoon. dog"
    assert set(report["metrics"]["per_class"]) == {"raccoon", "dog"}
    dets = json.loads((out / "racc_val_detections.json").read_text())
    assert dets and {d["image_id"] for d in dets} == {1, 2} and {d["category_id"] for d in dets} <= {1, 2}
    assert "| raccoon |" in (out / "racc_val_report.md").read_text()


def test_eval_lvis_protocol(tiny_model_dir, sample_image, tmp_path, capsys):
    names = ["raccoon", "dog"] + [f"object number {i}" for i in range(48)]  # two chunks of 40 / 10 classes
    ann = _coco_dataset(tmp_path / "lv", sample_image, names, lvis=True)
    out = tmp_path / "out"
    assert main(["eval", "--model", str(tiny_model_dir), "--dataset", str(ann), "--protocol", "lvis",
                 "--out-dir", str(out), "-q"]) == 0  # fmt: skip
    assert "LVIS Fixed AP (2 images)" in capsys.readouterr().out
    report = json.loads((out / "lv_val_lvis_report.json").read_text())
    assert report["metrics"]["fixed_ap"] is True and report["metrics"]["AP"] >= 0
    dets = json.loads((out / "lv_val_lvis_detections.json").read_text())
    per_image = [sum(d["image_id"] == i for d in dets) for i in (1, 2)]
    assert max(per_image) > 100  # every chunk's detections are kept (no 100-per-image cut)
    assert len({d["category_id"] for d in dets}) > 40  # global ids from both chunks


def test_eval_suite_table(tiny_model_dir, sample_image, tmp_path, capsys):
    root = tmp_path / "suite"
    _coco_dataset(root / "alpha", sample_image, ["raccoon"])
    _coco_dataset(root / "beta", sample_image, ["raccoon", "cat"])
    overrides = tmp_path / "o.yaml"
    overrides.write_text("beta:\n  categories: {cat: kitten}\n")
    code = main(["eval-suite", str(root), "--model", str(tiny_model_dir), "--out-dir", str(tmp_path / "o"), "-q",
                 "--prompt-overrides", str(overrides)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "| alpha | val | 2 |" in text and "| beta | val | 2 |" in text and "Average AP over 2 datasets" in text
    result = json.loads((tmp_path / "o" / "suite_report.json").read_text())
    assert [r["prompt"] for r in result["reports"]] == ["raccoon", "raccoon. kitten"]


@pytest.mark.parametrize("bad", ["missing.json", "broken"])
def test_eval_bad_dataset_is_a_one_line_error(tiny_model_dir, tmp_path, capsys, bad):
    path = tmp_path / bad
    if bad == "broken":
        path.write_text("{")
    assert main(["eval", "--model", str(tiny_model_dir), "--dataset", str(path), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
