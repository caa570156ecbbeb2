"""Referring segmentation: metrics computed by hand, the evaluation loop with a fake predictor, the refexp
reader on a real coco128 file and on malformed files."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from glip.errors import ConfigError, DataError, GLIPError, PromptError
from glip.evaluation.refseg import (
    compute_refseg_metrics,
    evaluate_refseg,
    expression_prompt,
    load_refexp,
)
from glip.masks import encode_rle, rle_area
from glip.structures import Detections

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
COCO128_REFEXP = SHARED / "coco128" / "annotations" / "refexp_train2017.json"
H, W = 20, 30


def _rect(y0, y1, x0, x1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_metrics_by_hand():
    # IoUs 50/100, 70/100, 0/40
    m = compute_refseg_metrics([50, 70, 0], [100, 100, 40], ["a", "a", "b"])
    assert m.num_expressions == 3
    assert m.mean_iou == pytest.approx((0.5 + 0.7 + 0.0) / 3)
    assert m.cumulative_iou == pytest.approx(120 / 240)
    assert m.precision_at == pytest.approx({"Pr@0.5": 2 / 3, "Pr@0.7": 1 / 3, "Pr@0.9": 0.0})
    assert set(m.per_template) == {"a", "b"}
    a = m.per_template["a"]
    assert a["num_expressions"] == 2
    assert a["mean_iou"] == pytest.approx(0.6) and a["cumulative_iou"] == pytest.approx(0.6)
    assert a["precision_at"] == pytest.approx({"Pr@0.5": 1.0, "Pr@0.7": 0.5, "Pr@0.9": 0.0})
    assert m.per_template["b"]["mean_iou"] == 0.0
    assert compute_refseg_metrics([50], [100]).per_template == {}
    assert compute_refseg_metrics([0], [0]).mean_iou == 1.0  # both masks empty
    assert compute_refseg_metrics([], []).num_expressions == 0


# ------------------------------------------------------------------ the loop, with a fake predictor
GT = {  # ref_id -> (image_id, expression, template, gt mask)
    1: (1, "the left cat", "leftmost", _rect(0, 10, 0, 10)),  # 100 px
    2: (1, "all cats", "all", _rect(0, 10, 0, 10) | _rect(0, 10, 20, 30)),  # 200 px
    3: (2, "the dog", "unique", _rect(5, 15, 5, 15)),  # 100 px
    4: (2, "the bird", "unique", _rect(0, 4, 0, 5)),  # 20 px
}


class FakePredictor:
    """Returns, per expression, planned (mask, score) pairs; records the prompts it was given."""

    def __init__(self, planned, with_masks=True, fail_on=()):
        self.planned, self.with_masks, self.fail_on = planned, with_masks, fail_on
        self.prompts = []

    def prompts_for(self, classes=None, prompt=None, label_ids=None, caption_prompts=None):
        assert classes is None
        if prompt.text in self.fail_on:
            raise PromptError(f"prompt {prompt.text!r} is too long")
        return [prompt]

    def predict_chunks(self, images, chunks, masks=False):
        assert masks and len(images) == 1 and images[0].size == (W, H)
        self.prompts.append(chunks[0])
        items = self.planned.get(chunks[0].text, [])
        k = len(items)
        det = Detections(
            torch.zeros(k, 4), torch.tensor([s for _, s in items], dtype=torch.float), torch.zeros(k, dtype=torch.long),
            [chunks[0].labels[0]] * k, (H, W),
            torch.stack([m for m, _ in items]) if k else torch.zeros(0, H, W, dtype=torch.bool),
        )  # fmt: skip
        if not self.with_masks:
            det.masks = None
        return [det]

    def predict_prompts(self, images, prompts, masks=False, mask_min_score=0.0, mask_top_k=0):
        return [[self.predict_chunks(images, [p], masks=masks)[0] for p in prompts]]


PLANNED = {
    "the left cat": [(_rect(0, 10, 0, 10), 0.9), (_rect(0, 10, 20, 30), 0.3)],  # 2nd below threshold: IoU 1
    "all cats": [(_rect(0, 10, 0, 10), 0.8), (_rect(0, 10, 20, 25), 0.6)],  # union 150 of 200: IoU 0.75
    "the dog": [(_rect(10, 20, 10, 20), 0.7)],  # inter 25, union 175: IoU 1/7
    # "the bird": nothing returned -> IoU 0
}


def _write_refexp(folder, description="DERIVED referring expressions over a test set.", refs=None):
    (folder / "images" / "train").mkdir(parents=True)
    for i in (1, 2):
        Image.new("RGB", (W, H), (i * 40, 0, 0)).save(folder / "images" / "train" / f"{i}.png")
    (folder / "annotations").mkdir()
    data = {
        "info": {"description": description},
        "images": [{"id": i, "file_name": f"train/{i}.png", "width": W, "height": H} for i in (1, 2)],
        "categories": [{"id": 1, "name": "cat"}],
        "refs": refs if refs is not None else [
            {"ref_id": rid, "image_id": im, "expression": text, "ann_ids": [rid], "category_id": 1,
             "template": template, "bbox": [0, 0, 1, 1], "segmentation": encode_rle(mask)}
            for rid, (im, text, template, mask) in GT.items()
        ],
    }  # fmt: skip
    path = folder / "annotations" / "refexp_val.json"
    path.write_text(json.dumps(data))
    return path


def test_evaluate_refseg_by_hand(tmp_path):
    path = _write_refexp(tmp_path / "toy")
    pred = FakePredictor(PLANNED)
    report = evaluate_refseg(pred, path, threshold=0.5, progress=False, out_dir=tmp_path / "out")
    ious = [1.0, 0.75, 25 / 175, 0.0]
    m = report.metrics
    assert report.num_expressions == 4 and report.num_images == 2 and report.prompt_errors == 0
    assert m["mean_iou"] == pytest.approx(sum(ious) / 4)
    assert m["cumulative_iou"] == pytest.approx((100 + 150 + 25 + 0) / (100 + 200 + 175 + 20))
    assert m["precision_at"] == pytest.approx({"Pr@0.5": 0.5, "Pr@0.7": 0.5, "Pr@0.9": 0.25})
    assert m["per_template"]["unique"]["mean_iou"] == pytest.approx((25 / 175) / 2)
    # the whole expression is the one entity of each prompt
    assert pred.prompts[0].entity_texts() == [["the left cat"]]
    # derived data are named as such in every report
    assert report.derived and report.dataset == "toy refexp_val (coco_mt derived)"
    md = Path(report.report_files[0]).read_text()
    assert "coco_mt derived" in md and "| leftmost | 1 |" in md and "not RefCOCO" in md
    payload = json.loads(Path(report.report_files[1]).read_text())
    assert payload["dataset"] == report.dataset and payload["metrics"] == m  # exact: JSON keeps floats
    per_expr = json.loads(Path(report.results_file).read_text())
    assert [r["iou"] for r in per_expr] == pytest.approx(ious, abs=1e-6)
    assert [r["masks_kept"] for r in per_expr] == [1, 2, 1, 0]
    # a lower threshold lets the second "left cat" mask in: IoU 100/200
    low = evaluate_refseg(FakePredictor(PLANNED), path, threshold=0.2, progress=False)
    assert low.metrics["per_template"]["leftmost"]["mean_iou"] == pytest.approx(0.5)


def test_evaluate_refseg_real_data_name_and_errors(tmp_path):
    path = _write_refexp(tmp_path / "mine", description="my own expressions")
    report = evaluate_refseg(FakePredictor(PLANNED, fail_on=("the dog",)), path, progress=False)
    assert not report.derived and report.dataset == "mine refexp_val"
    assert report.prompt_errors == 1 and report.metrics["per_template"]["unique"]["mean_iou"] == 0.0
    with pytest.raises(ConfigError, match="no mask head"):
        evaluate_refseg(FakePredictor(PLANNED, with_masks=False), path, progress=False)
    with pytest.raises(GLIPError, match="threshold"):
        evaluate_refseg(FakePredictor(PLANNED), path, threshold=1.5, progress=False)
    Image.new("RGB", (W + 1, H)).save(tmp_path / "mine" / "images" / "train" / "2.png")
    with pytest.raises(DataError, match="31x20 pixels but its record says 30x20"):
        evaluate_refseg(FakePredictor(PLANNED), path, progress=False)


def test_expression_prompt():
    p = expression_prompt("  the dog on the left ")
    assert p.entity_texts() == [["the dog on the left"]] and p.labels == ("the dog on the left",)


# ------------------------------------------------------------------ the reader
@pytest.mark.skipif(not COCO128_REFEXP.is_file(), reason="shared/data/coco128 is not present")
def test_reader_on_the_coco128_refexp_file():
    ds = load_refexp(COCO128_REFEXP)
    assert len(ds) == 639 and len({r.image_id for r in ds.refs}) == 117 and len(ds.categories) == 80
    assert ds.derived and ds.name == "coco128 refexp_train2017 (coco_mt derived)"
    assert ds.image_root == SHARED / "coco128" / "images"
    templates = {}
    for r in ds.refs:
        templates[r.template] = templates.get(r.template, 0) + 1
    assert templates == {"unique": 161, "leftmost": 68, "rightmost": 61, "top": 42, "bottom": 56,
                         "largest": 55, "smallest": 34, "all": 81, "plural": 81}  # fmt: skip
    first = ds.refs[0]
    assert first.expression == "the leftmost bowl" and first.ann_ids == (4,) and first.category_id == 51
    mask = ds.gt_mask(first)
    assert tuple(mask.shape) == ds.image_size(first.image_id) == (288, 384)
    assert int(mask.sum()) == rle_area([first.segmentation])[0] > 0
    assert ds.image_path(first.image_id).is_file()


def _good_refs():
    return [
        {"ref_id": 1, "image_id": 1, "expression": "the cat", "ann_ids": [1], "category_id": 1, "template": "unique",
         "bbox": [0, 0, 10, 10], "segmentation": encode_rle(_rect(0, 10, 0, 10))},
        {"ref_id": 2, "image_id": 2, "expression": "the dog", "segmentation": encode_rle(_rect(0, 5, 0, 5))},
    ]  # fmt: skip


def _mutate(field, value):
    def apply(data):
        refs = data["refs"]
        if value is _DELETE:
            refs[0].pop(field)
        else:
            refs[0][field] = value

    return apply


_DELETE = object()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (_mutate("expression", "  "), r"refs\[0\]\.expression: must not be empty"),
        (_mutate("expression", _DELETE), r"refs\[0\]\.expression: missing"),
        (_mutate("image_id", 7), r"refs\[0\]\.image_id: unknown image id 7"),
        (_mutate("image_id", "1"), r"refs\[0\]\.image_id: expected an integer id"),
        (_mutate("ref_id", 2), r"refs\[1\]\.ref_id: duplicate id 2"),
        (_mutate("ann_ids", [1, "x"]), r"refs\[0\]\.ann_ids\[1\]: expected an integer"),
        (_mutate("category_id", 9), r"refs\[0\]\.category_id: unknown category id 9"),
        (_mutate("template", 3), r"refs\[0\]\.template: expected a string"),
        (_mutate("bbox", [0, 0, 1]), r"refs\[0\]\.bbox: expected \[x, y, width, height\]"),
        (_mutate("segmentation", [[0, 0, 1, 0, 1, 1]]), r"refs\[0\]\.segmentation: expected an object"),
        (_mutate("segmentation", {"size": [H, W]}), r"refs\[0\]\.segmentation\.counts: missing"),
        (_mutate("segmentation", {"size": [W, H], "counts": ""}), r"segmentation\.size: expected \[20, 30\]"),
        (_mutate("segmentation", {"size": [H, W], "counts": "abc"}), r"refs\[0\]\.segmentation: not a valid COCO RLE"),
        (lambda d: d.pop("refs"), r"refs: missing"),
        (lambda d: d.update(refs=[]), r"refs: the list is empty"),
        (lambda d: d.update(refs={}), r"refs: expected a list"),
        (lambda d: d["images"][0].update(width=-3), r"images\[0\]\.width: must be positive"),
        (lambda d: d["images"][1].update(id=1), r"images\[1\]\.id: duplicate id 1"),
        (lambda d: d["categories"][0].pop("name"), r"categories\[0\]\.name: missing"),
        (lambda d: d.update(info={"description": 5}), r"info\.description: expected a string"),
    ],
)
def test_malformed_refexp_files_name_the_field(tmp_path, mutate, match):
    path = _write_refexp(tmp_path / "bad", refs=_good_refs())
    load_refexp(path)  # the unmutated file is fine
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=match) as info:
        load_refexp(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_unreadable_refexp_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_refexp(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_refexp(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="must hold a JSON object"):
        load_refexp(tmp_path / "y.json")
    path = _write_refexp(tmp_path / "gone", refs=_good_refs())
    (tmp_path / "gone" / "images" / "train" / "2.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) listed .* are missing"):
        load_refexp(path)
    assert len(load_refexp(path, check_files=False)) == 2


def test_keep_best_puts_the_top_mask_in_even_below_the_threshold(tmp_path):
    path = _write_refexp(tmp_path)
    strict = evaluate_refseg(FakePredictor(PLANNED), path, threshold=0.95, progress=False, keep_best=False)
    best = evaluate_refseg(FakePredictor(PLANNED), path, threshold=0.95, progress=False, keep_best=True)
    assert strict.metrics["mean_iou"] == 0.0  # nothing scores 0.95
    # with keep_best each expression takes its top mask: left cat 1, all cats 100/200, dog 25/175, bird none: 0
    assert best.metrics["mean_iou"] == pytest.approx((1 + 100 / 200 + 25 / 175 + 0) / 4)
    assert best.keep_best and not strict.keep_best
