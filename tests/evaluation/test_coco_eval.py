"""COCO AP: hand-computed cases, backend agreement on a real detection file, prompts and the runner."""

import json
from pathlib import Path

import pytest
import torch

from glip.data.coco import CocoDataset
from glip.errors import ConfigError
from glip.evaluation.coco_eval import evaluate_detections
from glip.evaluation.detection import predict_dataset
from glip.evaluation.prompts import dataset_prompt, load_prompt_overrides
from glip.evaluation.suite import suite_average
from glip.predictor import GLIPPredictor
from glip.structures import Detections

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BACKENDS = ["faster", "pycocotools"]


def _gt():
    return {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"},
                   {"id": 2, "width": 100, "height": 100, "file_name": "b.jpg"}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 5, "bbox": [0, 0, 60, 60], "area": 3600, "iscrowd": 0},
        ],
    }  # fmt: skip


def _det(image_id, cat, box, score):
    return {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_detections_give_ap_one(backend):
    gt = _gt()
    dets = [_det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in gt["annotations"]]
    m = evaluate_detections(gt, dets, backend)
    assert m.stats["AP"] == pytest.approx(1.0) and m.stats["AP50"] == pytest.approx(1.0)
    assert m.per_class == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_precision_recall_case(backend):
    gt = _gt()
    dets = [
        _det(1, 1, [10, 10, 30, 30], 0.9),  # TP
        _det(1, 1, [0, 80, 10, 10], 0.8),  # FP
        _det(1, 1, [50, 50, 40, 40], 0.7),  # TP -> precision 2/3 at recall 1
        _det(2, 5, [0, 0, 60, 60], 0.9),
    ]
    m = evaluate_detections(gt, dets, backend)
    cat_ap = (51 * 1.0 + 50 * 2 / 3) / 101  # 101-point interpolation: precision 1 up to recall 0.5
    assert m.per_class["cat"] == pytest.approx(cat_ap, abs=1e-6)
    assert m.per_class["dog"] == pytest.approx(1.0)
    assert m.stats["AP"] == pytest.approx((cat_ap + 1.0) / 2, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_detections_and_classes_without_ground_truth(backend):
    gt = _gt()
    gt["categories"].append({"id": 9, "name": "bird"})
    m = evaluate_detections(gt, [], backend)
    assert m.stats["AP"] == 0.0 and m.per_class["bird"] is None
    m = evaluate_detections(gt, [_det(1, 9, [1, 1, 5, 5], 0.5), _det(1, 1, [10, 10, 30, 30], 0.9)], backend)
    assert m.per_class["bird"] is None  # a class with no ground truth has no AP


def test_backends_agree_on_a_real_detection_file():
    gt = json.loads((FIXTURES / "raccoon_val.json").read_text())
    dets = json.loads((FIXTURES / "raccoon_val_detections.json").read_text())
    fast = evaluate_detections(gt, dets, "faster")
    ref = evaluate_detections(gt, dets, "pycocotools")
    assert fast.num_detections == ref.num_detections == len(dets) > 500
    for key, value in ref.stats.items():
        assert fast.stats[key] == pytest.approx(value, abs=1e-6), key
    assert fast.per_class == pytest.approx(ref.per_class, abs=1e-6)
    assert fast.stats["AP50"] > 0.0  # the file is not trivially empty of hits


def test_prompt_overrides_and_templates(tmp_path):
    p = dataset_prompt(["RBC", "WBC"], {"categories": {"RBC": "red blood cell"}})
    assert p.names == ("red blood cell", "WBC") and p.caption_prompts is None
    t = dataset_prompt(["cat", "dog"], None, "a photo of a {}")
    assert t.caption_prompts == ({"prefix": "a photo of a ", "name": "cat", "suffix": ""},
                                 {"prefix": "a photo of a ", "name": "dog", "suffix": ""})  # fmt: skip
    with pytest.raises(ConfigError, match="not categories"):
        dataset_prompt(["cat"], {"categories": {"cow": "x"}})
    with pytest.raises(ConfigError, match="2 entries for 1"):
        dataset_prompt(["cat"], {"caption_prompt": [{"name": "a"}, {"name": "b"}]})
    with pytest.raises(ConfigError, match="exactly one"):
        dataset_prompt(["cat"], None, "no slot")
    from glip.recipes import resolve

    shipped = load_prompt_overrides(resolve("shared_data", "prompts"))
    assert shipped["bccd"]["categories"]["RBC"] == "red blood cell"


def test_runner_exports_official_boxes_and_global_category_ids(tiny_model_dir, tmp_path, sample_image):
    from PIL import Image

    Image.open(sample_image).save(tmp_path / "x.jpg")
    names = [f"thing {i}" for i in range(90)]
    gt = {
        "images": [{"id": 7, "file_name": "x.jpg", "width": 384, "height": 288}],
        "categories": [{"id": 1000 + 3 * i, "name": n} for i, n in enumerate(names)],
        "annotations": [],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ds = CocoDataset.load(tmp_path / "gt.json")
    pred = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu", max_detections=0, max_classes_per_chunk=40)
    chunks = pred.prompts_for(classes=ds.category_names, label_ids=ds.category_ids)
    assert len(chunks) == 3  # 40 + 40 + 10, as the official LVIS chunking
    results = predict_dataset(pred, ds, progress=False)
    assert results and {r["image_id"] for r in results} == {7}
    assert {r["category_id"] for r in results} <= set(ds.category_ids)
    assert len({r["category_id"] for r in results}) > 40  # detections from more than one chunk
    det = pred.predict(tmp_path / "x.jpg", classes=ds.category_names, label_ids=ds.category_ids)[0]
    x1, y1, x2, y2 = det.boxes_xyxy[0].tolist()
    top = max(results, key=lambda r: r["score"])
    assert top["bbox"] == pytest.approx([x1, y1, x2 - x1 + 1, y2 - y1 + 1], abs=1e-2)  # w = x2 - x1 + 1
    lvis_style = predict_dataset(pred, ds, plus_one=False, progress=False)
    top = max(lvis_style, key=lambda r: r["score"])
    assert top["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-2)


def test_suite_average_takes_test_then_valid_then_val():
    from glip.evaluation.detection import EvalReport

    def rep(ds, split, ap):
        return EvalReport(ds, split, "", 1, "", {"stats": {"AP": ap}}, 1.0, 1.0)

    avg = suite_average([rep("a", "val", 0.1), rep("a", "test", 0.3), rep("b", "valid", 0.5), rep("c", "val", 0.2)])
    assert avg["splits"] == {"a": "test", "b": "valid", "c": "val"}
    assert avg["AP"] == pytest.approx((0.3 + 0.5 + 0.2) / 3)


def test_merge_detections_unlimited():
    from glip.predictor import merge_detections

    a = Detections(torch.zeros(2, 4), torch.tensor([0.9, 0.1]), torch.tensor([1, 1]), ["x", "x"])
    b = Detections(torch.ones(1, 4), torch.tensor([0.5]), torch.tensor([2]), ["y"])
    merged = merge_detections([a, b], None)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.5, 0.1]) and merged.label_names == ["x", "y", "x"]
    assert len(merge_detections([a, b], 2)) == 2
