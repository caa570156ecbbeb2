"""GLIPProcessor: official resize rule, normalisation, padding, prompts and entity maps."""

import numpy as np
import pytest
import torch
from PIL import Image

from glip.config import GLIPConfig
from glip.errors import ImageError, PromptError
from glip.processing import GLIPProcessor, load_image, resized_size
from glip.text import caption_prompt


@pytest.mark.parametrize(
    ("w", "h", "expected"),
    [
        (640, 480, (800, 1066)),  # short side 800, long side int(800 * 640 / 480)
        (480, 640, (1066, 800)),
        (2000, 500, (333, 1332)),  # long side capped: size = round(1333 * 500 / 2000) = 333
        (800, 600, (800, 1066)),
        (1066, 800, (800, 1066)),  # already at size: unchanged
        (384, 288, (800, 1066)),
    ],
)
def test_official_resize_rule(w, h, expected):
    assert resized_size(w, h, 800, 1333) == expected


def test_bgr255_normalisation_of_a_constant_image():
    proc = GLIPProcessor(min_size=32, max_size=64)
    img = Image.new("RGB", (40, 32), (10, 20, 30))
    x, size, orig = proc.transform_image(img)
    assert size == (32, 40) and orig == (32, 40)
    expected = [(30 - 103.530) / 57.375, (20 - 116.280) / 57.120, (10 - 123.675) / 58.395]  # B, G, R
    for c in range(3):
        assert torch.allclose(x[c], torch.full_like(x[c], expected[c]), atol=1e-4)


def test_rgb_normalisation():
    proc = GLIPProcessor(
        min_size=32, max_size=64, input_format="rgb", pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.5, 0.5, 0.5)
    )
    x, _, _ = proc.transform_image(Image.new("RGB", (32, 32), (255, 0, 51)))
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, -1.0, 51 / 255 * 2 - 1]), atol=1e-5)


def test_padding_to_multiple_of_32_with_mask():
    proc = GLIPProcessor(min_size=50, max_size=100)
    inputs = proc([Image.new("RGB", (60, 50)), Image.new("RGB", (50, 70))], ["cat"])
    assert inputs.pixel_values.shape == (2, 3, 96, 64)
    assert inputs.image_sizes == [(50, 60), (70, 50)]
    assert inputs.pixel_mask[0, :50, :60].all() and not inputs.pixel_mask[0, 50:].any()
    assert (inputs.pixel_values[0, :, 50:] == 0).all()


def test_batch_with_different_prompts_per_image():
    proc = GLIPProcessor(min_size=32, max_size=64)
    img = Image.new("RGB", (32, 32))
    inputs = proc([img, img], [["raccoon", "dog"], caption_prompt("a man walking a dog")])
    assert inputs.input_ids.shape == (2, 256)  # official: padded to the full 256-token budget
    raccoon, dog = inputs.entity_maps[0].token_ids
    assert raccoon == [1, 2, 3] and dog == [5]  # [CLS] ra ##cco ##on . dog
    assert inputs.entity_maps[0].names == ["raccoon", "dog"]
    assert inputs.entity_maps[1].names == ["a man", "a dog"]
    assert inputs.attention_mask[0].sum() == 7  # [CLS] ra ##cco ##on . dog [SEP]


def test_pad_to_longest_when_asked():
    cfg = GLIPConfig.tiny().replace(**{"text.pad_to_max": False})
    proc = GLIPProcessor.from_config(cfg)
    inputs = proc(Image.new("RGB", (32, 32)), ["person", "traffic light"])
    assert inputs.input_ids.shape == (1, 6)  # [CLS] person . traffic light [SEP]


def test_prompt_errors():
    proc = GLIPProcessor(min_size=32, max_size=64)
    img = Image.new("RGB", (32, 32))
    with pytest.raises(PromptError):
        proc(img, [])
    with pytest.raises(PromptError):
        proc(img, "   ")
    with pytest.raises(PromptError, match="2 images but 3 prompts"):
        proc([img, img], [["a"], ["b"], ["c"]])
    with pytest.raises(PromptError, match="256"):
        proc(img, " ".join(["word"] * 300))


def test_unreadable_images_raise_image_error(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(bad)
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    # a truncated real image is refused too, not silently half-decoded
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageError):
        load_image(truncated)


def test_real_image_through_the_official_transform(sample_image):
    proc = GLIPProcessor()
    inputs = proc(load_image(sample_image), ["raccoon"])
    # 384x288 photo -> short side 800 -> 800x1066, padded to 800x1088
    assert inputs.image_sizes == [(800, 1066)] and inputs.original_sizes == [(288, 384)]
    assert inputs.pixel_values.shape == (1, 3, 800, 1088)
