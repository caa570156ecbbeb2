"""Train/test transforms: boxes follow resizing and flipping (official +1 flip), determinism."""

import numpy as np
import pytest
import torch
from PIL import Image

from glip.config import InputConfig
from glip.data.transforms import (
    GroundingTransform,
    TestTransform,
    TrainTransform,
    hflip_boxes,
    resize_boxes,
    test_transform_from_config,
    train_transform_from_config,
)
from glip.errors import ConfigError
from glip.structures import GroundingSample
from glip.text import Prompt


def _image(width=200, height=100):
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] = 255  # left half red
    return Image.fromarray(pixels)


def test_hflip_uses_the_plus_one_convention():
    boxes = torch.tensor([[10.0, 5.0, 29.0, 20.0], [0.0, 0.0, 199.0, 99.0]])
    flipped = hflip_boxes(boxes, 200)
    assert flipped.tolist() == [[170.0, 5.0, 189.0, 20.0], [0.0, 0.0, 199.0, 99.0]]
    assert torch.equal(hflip_boxes(flipped, 200), boxes)
    assert hflip_boxes(boxes, 200, legacy_plus_one=False)[0].tolist() == [171.0, 5.0, 190.0, 20.0]


def test_resize_scales_each_axis():
    boxes = torch.tensor([[10.0, 5.0, 29.0, 20.0]])
    assert resize_boxes(boxes, (100, 200), (50, 400)).tolist() == [[20.0, 2.5, 58.0, 10.0]]


def test_resize_and_flip_of_boxes_hand_computed():
    # 200x100 image, short side 100 → 400 (long 800 <= 1333): scale 4.
    transform = TrainTransform(min_sizes=(400,), max_size=1333, flip_prob=1.0)
    image, boxes = transform.apply(_image(), torch.tensor([[10.0, 5.0, 29.0, 20.0]]))
    assert image.shape == (3, 400, 800)
    # resize: [40, 20, 116, 80]; flip in 800 px: x1' = 800 - 116 - 1, x2' = 800 - 40 - 1
    assert boxes.tolist() == [[683.0, 20.0, 759.0, 80.0]]
    # the red half moved to the right: BGR255 channel 2 is red
    assert image[2, 0, -1] > image[2, 0, 0]


def test_max_size_caps_the_long_side():
    transform = TestTransform(min_size=800, max_size=1000)
    image, boxes = transform.apply(_image(400, 100), torch.tensor([[0.0, 0.0, 399.0, 99.0]]))
    # 800 * 4 > 1000 → short side round(1000 * 100 / 400) = 250, long int(250 * 4) = 1000
    assert image.shape == (3, 250, 1000)
    assert boxes.tolist() == [[0.0, 0.0, 997.5, 247.5]]


def test_generator_makes_draws_deterministic_and_covers_all_sizes():
    transform = TrainTransform()
    draws = [transform.draw(torch.Generator().manual_seed(s)) for s in range(200)]
    assert {size for size, _ in draws} == {480, 560, 640, 720, 800}
    assert 60 < sum(flip for _, flip in draws) < 140
    assert draws[:20] == [transform.draw(torch.Generator().manual_seed(s)) for s in range(20)]


def test_sample_call_replaces_image_and_boxes():
    sample = GroundingSample(
        _image(), Prompt("cat", (((0, 3),),), ("cat",)), torch.tensor([[0.0, 0, 9, 9]]), [[0]], [1]
    )
    out = TrainTransform((200,), flip_prob=0.0)(sample, torch.Generator().manual_seed(0))
    assert out.image.shape == (3, 200, 400) and out.boxes_xyxy.tolist() == [[0.0, 0.0, 18.0, 18.0]]
    assert out.prompt is sample.prompt and out.box_entities == [[0]] and isinstance(sample.image, Image.Image)


def test_test_transform_matches_the_processor():
    from glip.processing import GLIPProcessor

    processor = GLIPProcessor(tokenizer=object())
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8))
    expected, size, _ = processor.transform_image(image)
    ours, _ = test_transform_from_config(InputConfig()).apply(image, torch.zeros(0, 4))
    assert size == tuple(ours.shape[1:]) and torch.equal(expected, ours)
    rgb = GroundingTransform((100,), flip_prob=0.0, input_format="rgb", pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1))
    x, _ = rgb.apply(image, torch.zeros(0, 4))
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_config_helpers_and_validation():
    assert train_transform_from_config(InputConfig()).min_sizes == (480, 560, 640, 720, 800)
    with pytest.raises(ConfigError, match="flip_prob"):
        TrainTransform(flip_prob=2.0)
    with pytest.raises(ConfigError, match="input_format"):
        TrainTransform(input_format="bgr")
    with pytest.raises(ConfigError, match="positive"):
        TrainTransform(min_sizes=())
