"""Masks end to end: the predictor's masks, ``glip predict --masks``, ``glip eval --iou-type segm``,
``glip eval-refseg``, and the clear error of a model without a mask head."""

import json

import pytest
import torch
from PIL import Image

from glip.cli import main
from glip.errors import ConfigError
from glip.masks import decode_rle, encode_rle, segmentation_to_mask
from glip.modeling.glip import GLIPModel
from glip.predictor import GLIPPredictor


@pytest.fixture(scope="module")
def predictor(tiny_mask_model_dir):
    return GLIPPredictor.from_pretrained(tiny_mask_model_dir, device="cpu")


def test_predictor_masks_follow_the_detections(predictor, sample_image):
    det = predictor.predict(sample_image, classes=["raccoon", "dog"], threshold=0.5, masks=True)[0]
    assert len(det) > 0 and det.masks is not None
    assert det.masks.shape == (len(det), 288, 384) and det.masks.dtype == torch.bool
    # a pasted mask never leaves its (slightly grown) box
    for box, mask in zip(det.boxes_xyxy, det.masks, strict=True):
        ys, xs = mask.nonzero(as_tuple=True)
        if len(xs):
            x1, y1, x2, y2 = box.tolist()
            w, h = x2 - x1, y2 - y1
            assert xs.min() >= x1 - 0.2 * w - 2 and xs.max() <= x2 + 0.2 * w + 2
            assert ys.min() >= y1 - 0.2 * h - 2 and ys.max() <= y2 + 0.2 * h + 2
    # the same boxes and scores as without masks
    plain = predictor.predict(sample_image, classes=["raccoon", "dog"], threshold=0.5)[0]
    assert torch.equal(plain.boxes_xyxy, det.boxes_xyxy) and plain.masks is None


def test_masks_survive_vocabulary_chunks(predictor, sample_image):
    names = [f"object number {i}" for i in range(120)]  # several prompt chunks
    det = predictor.predict(sample_image, classes=names, threshold=0.5, masks=True)[0]
    assert det.masks is not None and det.masks.shape[0] == len(det) > 0


def test_phrase_logits_equal_the_mean_of_token_logits(predictor, sample_image):
    model = predictor.model
    inputs = predictor.processor(Image.open(sample_image), ["raccoon", "dog"])
    with torch.no_grad():
        out = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
        rois = torch.tensor([[0.0, 10, 20, 60, 70], [0.0, 0, 0, 90, 60]])
        per_token = model.mask_head(out.tower_features, rois, out.mask_text)  # (R, T, M, M)
        weights = torch.zeros(2, per_token.shape[1])
        weights[0, 1:3] = 0.5
        weights[1, 4] = 1.0
        phrase = model.segment(out.tower_features, out.mask_text, rois, weights)
    expected = torch.einsum("rt,rthw->rhw", weights, per_token)
    torch.testing.assert_close(phrase, expected, rtol=1e-4, atol=1e-4)


def test_model_without_mask_head_is_a_clear_error(tiny_model_dir, sample_image, tmp_path, capsys):
    with pytest.raises(ConfigError, match="no mask head"):
        GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu").predict(sample_image, classes=["a"], masks=True)
    code = main(["predict", str(sample_image), "--classes", "a", "--model", str(tiny_model_dir), "--masks",
                 "--out-dir", str(tmp_path / "o"), "-q"])  # fmt: skip
    assert code == 1 and "no mask head" in capsys.readouterr().err
    assert GLIPModel.from_pretrained(tiny_model_dir).heads == ["grounding"]


def test_predict_masks_writes_rle_and_draws(tiny_mask_model_dir, sample_image, tmp_path):
    out = tmp_path / "o"
    code = main(["predict", str(sample_image), "--classes", "raccoon", "--model", str(tiny_mask_model_dir),
                 "--masks", "--threshold", "0.5", "--out-dir", str(out), "-q"])  # fmt: skip
    assert code == 0
    record = json.loads((out / "raccoon-72.json").read_text())
    assert record["detections"] and all("mask" in d for d in record["detections"])
    mask = decode_rle(record["detections"][0]["mask"])
    assert mask.shape == (288, 384)


def _coco_with_masks(root, sample_image):
    (root / "images").mkdir(parents=True)
    Image.open(sample_image).save(root / "images" / "r.jpg")
    polygon = [[70, 30, 185, 30, 185, 220, 70, 220]]
    ann = {
        "images": [{"id": 1, "file_name": "r.jpg", "width": 384, "height": 288}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [70, 30, 115, 190], "area": 21850,
                         "iscrowd": 0, "segmentation": polygon}],
        "categories": [{"id": 1, "name": "raccoon"}],
    }  # fmt: skip
    path = root / "ann.json"
    path.write_text(json.dumps(ann))
    refs = {
        "info": {"description": "DERIVED test file"},
        "images": ann["images"],
        "categories": ann["categories"],
        "refs": [{"ref_id": 1, "image_id": 1, "expression": "the raccoon", "ann_ids": [1], "category_id": 1,
                  "template": "unique", "bbox": [70, 30, 115, 190],
                  "segmentation": encode_rle(segmentation_to_mask(polygon, 288, 384))}],
    }  # fmt: skip
    ref_path = root / "refexp.json"
    ref_path.write_text(json.dumps(refs))
    return path, ref_path


def test_eval_segm_and_refseg_commands(tiny_mask_model_dir, sample_image, tmp_path, capsys):
    ann, refs = _coco_with_masks(tmp_path / "d", sample_image)
    out = tmp_path / "out"
    code = main(["eval", "--dataset", str(ann), "--images", str(tmp_path / "d" / "images"), "--model",
                 str(tiny_mask_model_dir), "--iou-type", "segm", "--out-dir", str(out), "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "AP" in capsys.readouterr().out
    code = main(["eval-refseg", "--annotations", str(refs), "--images", str(tmp_path / "d" / "images"),
                 "--model", str(tiny_mask_model_dir), "--out-dir", str(out), "-q"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and "mIoU" in text and "cIoU" in text and "Pr@0.5" in text
