"""The embedded default model: loads offline from the package, finds the raccoons, rejects 'dog'."""

import json

import torch

from glip.assets import default_model_path
from glip.cli import main
from glip.modeling.glip import GLIPModel
from glip.modeling.language import minilm_path

RACCOONS_XYXY = [[70, 30, 184, 219], [150, 135, 299, 249]]  # assets/raccoon-72.jpg ground truth (val split)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_default_model_ships_only_what_packages_do_not_provide():
    folder = default_model_path()
    manifest = json.loads((folder / "weights.json").read_text())
    assert manifest["excluded_prefixes"] == ["text_encoder."]
    assert (folder / "model.safetensors").stat().st_size < 25_000_000  # the package's budget for the model
    model = GLIPModel.from_pretrained(folder)
    assert model.heads == ["grounding", "mask"]
    from safetensors.torch import load_file

    minilm = load_file(str(minilm_path() / "model.safetensors"))
    ours = model.text_encoder.bert.state_dict()
    assert torch.equal(ours["embeddings.word_embeddings.weight"], minilm["embeddings.word_embeddings.weight"])


def test_predict_without_model_finds_the_raccoons_and_not_a_dog(sample_image, tmp_path, capsys):
    assert main(["predict", str(sample_image), "--classes", "raccoon,dog", "--out-dir", str(tmp_path), "-q"]) == 0
    record = json.loads((tmp_path / "raccoon-72.json").read_text())
    raccoons = [d for d in record["detections"] if d["label_name"] == "raccoon"]
    assert raccoons and raccoons[0]["score"] > 0.5
    assert max(_iou(raccoons[0]["box_xyxy"], gt) for gt in RACCOONS_XYXY) > 0.5
    assert not [d for d in record["detections"] if d["label_name"] == "dog"]  # nothing above 0.3
    assert (tmp_path / "raccoon-72.jpg").is_file()
    assert "raccoon" in capsys.readouterr().out


def test_embedded_model_segments_the_raccoon(sample_image):
    """The trained mask head: the raccoon's mask fills a good part of its box and stays inside it."""
    from glip.predictor import GLIPPredictor

    det = GLIPPredictor.from_pretrained(device="cpu").predict(sample_image, classes=["raccoon"], threshold=0.5,
                                                             masks=True)[0]  # fmt: skip
    assert len(det) >= 1 and det.masks is not None
    x1, y1, x2, y2 = (round(c) for c in det.boxes_xyxy[0].tolist())
    mask = det.masks[0]
    inside = mask[y1 : y2 + 1, x1 : x2 + 1].sum().item()
    box_area = (x2 - x1 + 1) * (y2 - y1 + 1)
    assert 0.3 * box_area < inside < 0.95 * box_area  # an object shape, not the empty mask or the whole box
    assert inside >= 0.95 * mask.sum().item()  # nearly all of it inside the box
