"""GLIPPredictor: long vocabularies are chunked and merged with global ids; batching; pictures."""

from collections import Counter

import pytest
import torch
from PIL import Image

from glip.modeling.glip import GLIPModel
from glip.predictor import GLIPPredictor, merge_detections
from glip.processing import load_image
from glip.structures import Detections
from glip.visualize import draw_detections, label_color


def _names(n):
    return [f"thing{i} with a long descriptive name" for i in range(n)]


def test_long_vocabulary_is_chunked_and_keeps_global_ids(tiny_model_dir, sample_image):
    pred = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu", max_detections=300)
    names = _names(120)
    chunks = pred.prompts_for(classes=names)
    assert len(chunks) > 1
    assert [i for c in chunks for i in c.label_ids] == list(range(120))
    det = pred.predict(sample_image, classes=names)[0]
    assert len(det) > 0
    for label, name in zip(det.labels.tolist(), det.label_names, strict=True):
        assert names[label] == name
    assert det.scores.tolist() == sorted(det.scores.tolist(), reverse=True)
    assert len({int(x) for x in det.labels}) > 1


def test_chunked_result_equals_running_each_chunk_alone(tiny_model_dir, sample_image):
    pred = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu", max_detections=10_000)
    names = _names(60)
    chunks = pred.prompts_for(classes=names)
    merged = pred.predict(sample_image, classes=names)[0]
    image = load_image(sample_image)
    parts = []
    for chunk in chunks:
        parts.extend(pred.predict(image, prompt=chunk))
    expected = merge_detections(parts, 10_000)
    assert torch.allclose(merged.scores, expected.scores, atol=1e-6)
    assert torch.allclose(merged.boxes_xyxy, expected.boxes_xyxy, atol=1e-4)
    assert merged.labels.tolist() == expected.labels.tolist()


def test_batching_same_size_images_gives_the_same_detections(tiny_model_dir, sample_image):
    pred = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu")
    one = pred.predict([sample_image, sample_image], classes=["raccoon"], batch_size=1)
    two = pred.predict([sample_image, sample_image], classes=["raccoon"], batch_size=2)
    for a, b in zip(one, two, strict=True):
        assert torch.allclose(a.scores, b.scores, atol=1e-5)
        assert torch.allclose(a.boxes_xyxy, b.boxes_xyxy, atol=1e-3)


def test_threshold_filters(tiny_model_dir, sample_image):
    pred = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu")
    everything = pred.predict(sample_image, classes=["raccoon"])[0]
    cut = float(everything.scores.median())
    kept = pred.predict(sample_image, classes=["raccoon"], threshold=cut)[0]
    assert 0 < len(kept) < len(everything)
    assert (kept.scores >= cut).all()


def test_model_object_and_device_resolution(tiny_model_dir):
    model = GLIPModel.from_pretrained(tiny_model_dir)
    pred = GLIPPredictor(model, device="cpu")
    assert pred.device.type == "cpu" and not pred.model.training


def test_draw_detections_paints_boxes_in_label_colours():
    img = Image.new("RGB", (100, 80), (255, 255, 255))
    det = Detections(
        torch.tensor([[10.0, 30.0, 60.0, 70.0]]), torch.tensor([0.9]), torch.tensor([0]), ["cat"], (80, 100)
    )
    out = draw_detections(img, det, line_width=2)
    assert out.size == img.size and img.getpixel((10, 50)) == (255, 255, 255)  # input untouched
    assert out.getpixel((10, 50)) == label_color("cat")  # left edge of the box
    assert out.getpixel((35, 50)) == (255, 255, 255)  # inside stays clear


def test_cuda_graphs_need_a_gpu(tiny_model_dir):
    from glip.errors import GLIPError

    with pytest.raises(GLIPError, match="CUDA graphs need a GPU"):
        GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu", dtype="bf16", cuda_graphs=True)
    with pytest.raises(GLIPError, match="need the fast path"):
        GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu", cuda_graphs=True)


def test_long_vocabulary_with_several_images_and_chunk_groups(tiny_model_dir, sample_image):
    names = _names(100)
    pred = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu", max_detections=10_000, chunk_batch_size=2)
    assert len(pred.prompts_for(classes=names)) > 2
    one = pred.predict([sample_image, sample_image], classes=names, batch_size=1)
    two = pred.predict([sample_image, sample_image], classes=names, batch_size=2)
    for a, b in zip(one, two, strict=True):
        assert len(a) == len(b) > 0
        assert torch.allclose(a.scores, b.scores, atol=1e-5)
        # detections whose scores tie within float noise may come in either order (batched and
        # single-image convolutions round differently): the same detections, as a multiset of labels
        assert Counter(a.labels.tolist()) == Counter(b.labels.tolist())
