"""Mask AP (iou_type "segm"): equal to pycocotools' on hand-made masks with crowd regions; box AP unchanged;
the dataset runner with a fake predictor that returns masks."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from glip.data.coco import CocoDataset
from glip.errors import ConfigError, DataError
from glip.evaluation.coco_eval import STAT_NAMES, evaluate_detections
from glip.evaluation.detection import evaluate_coco_dataset
from glip.evaluation.report import detection_markdown
from glip.masks import encode_rle
from glip.structures import Detections

H, W = 60, 80


def _rect(y0, y1, x0, x1, h=H, w=W):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def _poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _uncompressed(mask):
    """COCO's uncompressed RLE (as crowd regions come in COCO files): column-major runs, background first."""
    counts, value, run = [], False, 0
    for px in mask.T.flatten().tolist():
        if px != value:
            counts.append(run)
            value, run = px, 0
        run += 1
    return {"size": list(mask.shape), "counts": [*counts, run]}


def _gt():
    return {
        "images": [{"id": 1, "width": W, "height": H, "file_name": "a.png"},
                   {"id": 2, "width": W, "height": H, "file_name": "b.png"}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            # an L-shaped cat: its box is 30 x 30 but its mask is 500 px
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 500.0, "iscrowd": 0,
             "segmentation": [[10, 10, 40, 10, 40, 20, 20, 20, 20, 40, 10, 40]]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 5, 20, 20], "area": 400.0, "iscrowd": 0,
             "segmentation": _poly(50, 5, 70, 25)},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 40, 30, 20], "area": 600.0, "iscrowd": 1,
             "segmentation": _uncompressed(_rect(40, 60, 0, 30))},
            {"id": 4, "image_id": 2, "category_id": 2, "bbox": [5, 5, 60, 40], "area": 2400.0, "iscrowd": 0,
             "segmentation": _poly(5, 5, 65, 45)},
            {"id": 5, "image_id": 2, "category_id": 1, "bbox": [70, 50, 6, 6], "area": 36.0, "iscrowd": 0,
             "segmentation": _poly(70, 50, 76, 56)},
        ],
    }  # fmt: skip


def _l_shape():
    return _rect(10, 20, 10, 40) | _rect(10, 40, 10, 20)


# Detections: (image_id, category_id, mask, score)
def _dets():
    return [
        (1, 1, _l_shape(), 0.95),  # exact L: mask IoU 1, box IoU 1
        (1, 1, _rect(10, 40, 10, 40), 0.9),  # the full square: box IoU 1 with the cat, mask IoU 500/900
        (1, 2, _rect(6, 25, 50, 70), 0.8),  # dog, slightly short: IoU 380/400
        (1, 1, _rect(42, 58, 2, 28), 0.85),  # on the crowd region: ignored, not a false positive
        (1, 2, _rect(30, 39, 60, 79), 0.3),  # false positive
        (2, 2, _rect(5, 40, 5, 65), 0.7),  # IoU 2100/2400 = 0.875
        (2, 1, _rect(50, 56, 70, 73), 0.6),  # small cat, half of it: IoU 0.5
        (2, 1, _rect(0, 2, 0, 2), 0.2),  # tiny false positive
        # a thin false positive: a medium box (40 x 40) around a small mask (156 px)
        (2, 2, _rect(15, 55, 40, 42) | _rect(53, 55, 40, 80), 0.75),
    ]


def _records(with_bbox=True):
    out = []
    for image_id, cat, mask, score in _dets():
        ys, xs = torch.nonzero(mask, as_tuple=True)
        rec = {"image_id": image_id, "category_id": cat, "score": score, "segmentation": encode_rle(mask)}
        if with_bbox:
            x0, y0 = int(xs.min()), int(ys.min())
            rec["bbox"] = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        out.append(rec)
    return out


def _pycocotools(gt, dets, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        res = coco.loadRes(json.loads(json.dumps(dets)))
        ev = COCOeval(coco, res, iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STAT_NAMES, (float(x) for x in ev.stats), strict=True))


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_mask_ap_equals_pycocotools(backend):
    gt = _gt()
    ref = _pycocotools(gt, _records(with_bbox=False), "segm")
    ours = evaluate_detections(gt, _records(), backend, iou_type="segm")  # our records keep their boxes
    assert ours.iou_type == "segm" and ours.num_detections == 9
    for key, value in ref.items():
        assert ours.stats[key] == pytest.approx(value, abs=1e-9), key
    assert 0 < ours.stats["AP"] < 1
    # with their boxes, the COCO API would put the thin false positive among the medium objects
    assert _pycocotools(gt, _records(with_bbox=True), "segm")["APm"] != pytest.approx(ref["APm"])
    assert gt == _gt()  # the caller's ground truth is untouched


def test_mask_ap_differs_from_box_ap_where_it_should():
    gt = _gt()
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
         "segmentation": encode_rle(torch.from_numpy(COCO_mask(a)))}
        for a in gt["annotations"] if not a["iscrowd"]
    ]  # fmt: skip
    assert evaluate_detections(gt, perfect, iou_type="segm").stats["AP"] == pytest.approx(1.0)
    # a full square on the L-shaped cat: a perfect box, a poor mask (IoU 500/900 < 0.6)
    square = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10, 10, 30, 30],
               "segmentation": encode_rle(_rect(10, 40, 10, 40))}]  # fmt: skip
    box = evaluate_detections(gt, square, image_ids=[1], iou_type="bbox")
    mask = evaluate_detections(gt, square, image_ids=[1], iou_type="segm")
    assert box.per_class["cat"] == pytest.approx(1.0)
    assert mask.per_class["cat"] == pytest.approx(_pycocotools_per_class_ap(0.556))


def COCO_mask(ann):  # noqa: N802
    from pycocotools import mask as m

    rle = m.merge(m.frPyObjects(ann["segmentation"], H, W))
    return m.decode(rle).astype(bool)


def _pycocotools_per_class_ap(iou):
    """AP over IoU 0.50:0.95 of one perfect-rank detection with the given IoU: hits at thresholds <= iou."""
    return sum(t <= iou + 1e-12 for t in np.linspace(0.5, 0.95, 10)) / 10


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_box_ap_unchanged(backend):
    gt = _gt()
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in _records()]
    before = evaluate_detections(gt, boxes_only, backend)
    with_masks = evaluate_detections(gt, _records(), backend)  # default iou_type: bbox, masks ignored
    assert with_masks.stats == before.stats and with_masks.iou_type == "bbox"
    assert before.stats == pytest.approx(_pycocotools(gt, boxes_only, "bbox"), abs=1e-9)


def test_segm_input_errors():
    gt = _gt()
    with pytest.raises(ConfigError, match="iou_type 'mask'"):
        evaluate_detections(gt, [], iou_type="mask")
    no_seg = {**gt, "annotations": [{k: v for k, v in a.items() if k != "segmentation"} for a in gt["annotations"]]}
    with pytest.raises(DataError, match=r"annotations\[0\]\.segmentation: missing"):
        evaluate_detections(no_seg, _records(), iou_type="segm")
    bad = json.loads(json.dumps(gt))
    bad["annotations"][1]["segmentation"] = [[1, 2, 3]]
    with pytest.raises(DataError, match=r"annotations\[1\]\.segmentation\[0\]: expected a polygon"):
        evaluate_detections(bad, _records(), iou_type="segm")
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in _records()]
    with pytest.raises(DataError, match=r"detections\[0\]: mask AP needs"):
        evaluate_detections(gt, boxes_only, iou_type="segm")
    empty = evaluate_detections(gt, [], iou_type="segm")
    assert empty.stats["AP"] == 0.0 and empty.iou_type == "segm"
    # ground truth without area: the mask's area is used
    no_area = json.loads(json.dumps(gt))
    for a in no_area["annotations"]:
        a.pop("area")
    assert evaluate_detections(no_area, _records(), iou_type="segm").stats == pytest.approx(
        evaluate_detections(gt, _records(), iou_type="segm").stats
    )


# ------------------------------------------------------------------ the dataset runner
class FakePredictor:
    """Stands in for GLIPPredictor: returns planned detections, one image per call, in id order."""

    def __init__(self, planned, with_masks=True):
        self.planned = list(planned)
        self.with_masks = with_masks
        self.mask_calls = []

    def prompts_for(self, classes=None, prompt=None, label_ids=None, caption_prompts=None):
        return [("chunk", tuple(classes), tuple(label_ids))]

    def predict_chunks(self, images, chunks, masks=False):
        self.mask_calls.append(masks)
        out = []
        for image in images:
            det = self.planned.pop(0)
            assert image.size == (W, H)
            if not (masks and self.with_masks):
                det = Detections(det.boxes_xyxy, det.scores, det.labels, det.label_names, det.image_size)
            out.append(det)
        return out


class BoxOnlyPredictor(FakePredictor):
    """A predictor without the ``masks`` keyword (today's signature)."""

    def predict_chunks(self, images, chunks):
        return super().predict_chunks(images, chunks)


def _dataset(tmp_path):
    gt = _gt()
    (tmp_path / "images").mkdir()
    for im in gt["images"]:
        Image.new("RGB", (W, H), (90, 90, 90)).save(tmp_path / "images" / im["file_name"])
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "val.json").write_text(json.dumps(gt))
    return CocoDataset.load(tmp_path / "annotations" / "val.json")


def _planned():
    per_image = {1: [], 2: []}
    for image_id, cat, mask, score in _dets():
        per_image[image_id].append((cat, mask, score))
    out = []
    for image_id in (1, 2):
        items = sorted(per_image[image_id], key=lambda t: -t[2])
        boxes = []
        for _, mask, _ in items:
            ys, xs = torch.nonzero(mask, as_tuple=True)
            boxes.append([float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())])
        names = {1: "cat", 2: "dog"}
        out.append(Detections(
            torch.tensor(boxes), torch.tensor([t[2] for t in items]), torch.tensor([t[0] for t in items]),
            [names[t[0]] for t in items], (H, W), torch.stack([t[1] for t in items]),
        ))  # fmt: skip
    return out


def test_runner_scores_masks_and_writes_them(tmp_path):
    ds = _dataset(tmp_path)
    pred = FakePredictor(_planned())
    report, metrics = evaluate_coco_dataset(pred, ds, iou_type="segm", out_dir=tmp_path / "out", progress=False)
    assert pred.mask_calls == [True, True]
    expected = evaluate_detections(_gt(), _records(), iou_type="segm")
    assert metrics.stats == pytest.approx(expected.stats, abs=1e-9) and metrics.iou_type == "segm"
    assert report.metrics["iou_type"] == "segm" and report.extra["box_metrics"]["iou_type"] == "bbox"
    with open(report.detections_file) as f:
        written = json.load(f)
    assert report.detections_file.endswith("_val_segm_detections.json")
    assert len(written) == 9 and all({"segmentation", "bbox"} <= set(r) for r in written)
    md = detection_markdown(report)
    assert "(mask AP)" in md and "mask AP50" in md and "box AP" in md


def test_runner_box_ap_path_is_unchanged(tmp_path):
    ds = _dataset(tmp_path)
    pred = BoxOnlyPredictor(_planned())  # no masks keyword at all: box AP must not ask for masks
    report, metrics = evaluate_coco_dataset(pred, ds, progress=False)
    assert metrics.iou_type == "bbox" and "box_metrics" not in report.extra
    assert "(mask AP)" not in detection_markdown(report)


def test_runner_errors(tmp_path):
    ds = _dataset(tmp_path)
    with pytest.raises(ConfigError, match="no mask head"):
        evaluate_coco_dataset(FakePredictor(_planned(), with_masks=False), ds, iou_type="segm", progress=False)
    with pytest.raises(ConfigError, match="iou_type"):
        evaluate_coco_dataset(FakePredictor(_planned()), ds, iou_type="masks", progress=False)
    data = json.loads(ds.annotation_file.read_text())
    for a in data["annotations"]:
        a.pop("segmentation")
    ds.annotation_file.write_text(json.dumps(data))
    pred = FakePredictor(_planned())
    with pytest.raises(DataError, match=r"val\.json: annotations\[0\]\.segmentation: missing"):
        evaluate_coco_dataset(pred, CocoDataset.load(ds.annotation_file), iou_type="segm", progress=False)
    assert pred.mask_calls == []  # failed before predicting
    # an image file whose size is not its record's
    ds = CocoDataset.load(ds.annotation_file)
    planned = _planned()
    planned[0].masks = planned[0].masks[:, :50]
    gt = _gt()
    ds.annotation_file.write_text(json.dumps(gt))
    with pytest.raises(DataError, match="80x50 pixels but its record says 80x60"):
        evaluate_coco_dataset(FakePredictor(planned), CocoDataset.load(ds.annotation_file), iou_type="segm",
                              progress=False)  # fmt: skip
