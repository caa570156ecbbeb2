"""Drawing: masks tinted in the label colour with an outline, boxes and labels on top, labels inside the image."""

import pytest
import torch
from PIL import Image

from glip.errors import GLIPError
from glip.visualize import MASK_OPACITY, draw_detections, draw_masks, label_color

GREY = (100, 100, 100)


def _det(boxes, scores, names, masks=None, size=(60, 80)):
    from glip.structures import Detections

    return Detections(
        torch.as_tensor(boxes, dtype=torch.float), torch.tensor(scores, dtype=torch.float),
        torch.zeros(len(scores), dtype=torch.long),
        names, size, masks,
    )  # fmt: skip


def _tint(color, opacity=MASK_OPACITY):
    return tuple(round(g * (1 - opacity) + c * opacity) for g, c in zip(GREY, color, strict=True))


def test_masks_are_tinted_and_outlined_under_the_boxes():
    img = Image.new("RGB", (80, 60), GREY)
    mask = torch.zeros(1, 60, 80, dtype=torch.bool)
    mask[0, 20:50, 10:50] = True  # 40 x 30
    det = _det([[10, 20, 49, 49]], [0.9], ["cat"], mask)
    out = draw_detections(img, det, line_width=1)
    color = label_color("cat")
    assert out.getpixel((30, 35)) == _tint(color)  # inside the mask, away from its edge
    assert out.getpixel((12, 35)) == _tint(color)  # the first pixel past the outline
    assert out.getpixel((11, 35)) == color and out.getpixel((30, 48)) == color  # the 2-px outline
    assert out.getpixel((10, 35)) == color  # the box (1 px) on top of the outline
    assert out.getpixel((9, 35)) == GREY and out.getpixel((30, 50)) == GREY  # just outside the mask
    assert out.getpixel((70, 55)) == GREY and out.getpixel((55, 35)) == GREY
    assert img.getpixel((30, 35)) == GREY  # the input is not modified


def test_no_masks_keep_the_plain_look():
    img = Image.new("RGB", (80, 60), GREY)
    det = _det([[10, 20, 49, 49]], [0.9], ["cat"])
    out = draw_detections(img, det, line_width=1)
    assert out.getpixel((30, 35)) == GREY  # nothing inside the box
    assert out.getpixel((10, 35)) == label_color("cat")


def test_stronger_masks_end_on_top_and_empty_masks_draw_nothing():
    img = Image.new("RGB", (80, 60), GREY)
    masks = torch.zeros(3, 60, 80, dtype=torch.bool)
    masks[0, 10:40, 10:40] = True
    masks[1, 10:40, 10:40] = True
    det = _det([[10, 10, 39, 39]] * 3, [0.3, 0.9, 0.5], ["weak", "strong", "nothing"], masks)
    full = draw_detections(img, det, line_width=1)
    weak_then_strong = draw_masks(img, masks[:2], [label_color("weak"), label_color("strong")])
    assert full.getpixel((30, 35)) == weak_then_strong.getpixel((30, 35))
    first = _tint(label_color("weak"))
    expected = [f * (1 - MASK_OPACITY) + c * MASK_OPACITY for f, c in zip(first, label_color("strong"), strict=True)]
    assert full.getpixel((30, 35)) == pytest.approx(expected, abs=1)
    assert full.getpixel((30, 35)) != draw_masks(img, masks[1:2], [label_color("strong")]).getpixel((30, 35))


def test_labels_stay_inside_the_image():
    img = Image.new("RGB", (80, 60), GREY)
    det = _det([[70, 50, 79, 59]], [0.9], ["a rather long label"])  # bottom-right corner
    out = draw_detections(img, det, line_width=1)
    color = label_color("a rather long label")
    # wider than the image: moved left to x = 0 (it began at the box's x = 70 before)
    assert any(out.getpixel((0, y)) == color for y in range(0, 50))
    det = _det([[30, 2, 50, 30]], [0.9], ["top"])  # no room above: inside the box, at its top
    out = draw_detections(img, det, line_width=1)
    assert out.getpixel((31, 3)) == label_color("top")


def test_masks_of_another_size_are_an_error():
    img = Image.new("RGB", (80, 60), GREY)
    det = _det([[1, 1, 5, 5]], [0.9], ["cat"], torch.zeros(1, 30, 40, dtype=torch.bool))
    with pytest.raises(GLIPError, match="do not fit an image of 80x60"):
        draw_detections(img, det)
    empty = _det(torch.zeros(0, 4), [], [], torch.zeros(0, 60, 80, dtype=torch.bool))
    assert draw_detections(img, empty).getpixel((5, 5)) == GREY
