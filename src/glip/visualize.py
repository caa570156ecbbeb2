"""Pictures of results: masks, boxes, and each detection's phrase and score drawn on the image."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from glip.errors import GLIPError
from glip.masks import mask_outline
from glip.structures import Detections

MASK_OPACITY = 0.45
MASK_OUTLINE_WIDTH = 2


def label_color(name: str) -> tuple[int, int, int]:
    """A stable, saturated colour per label name."""
    hue = int(hashlib.md5(name.encode("utf-8")).hexdigest()[:6], 16) / 0xFFFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_masks(
    canvas: Image.Image,
    masks: torch.Tensor,
    colors: list[tuple[int, int, int]],
    opacity: float = MASK_OPACITY,
    outline_width: int = MASK_OUTLINE_WIDTH,
) -> Image.Image:
    """Tint each mask with its colour and outline its boundary, in order (later masks on top).

    Args:
        canvas: an RGB image of size ``(W, H)``.
        masks: ``(K, H, W)`` bool masks in the image's pixels.
        colors: ``K`` RGB colours.
        opacity: the tint's weight (0: invisible, 1: opaque).
        outline_width: pixels of the inner boundary painted in the plain colour (0: no outline).

    Returns:
        A new RGB image.

    Raises:
        GLIPError: if the masks are not the image's size.
    """
    width, height = canvas.size
    if masks.ndim != 3 or tuple(masks.shape[-2:]) != (height, width):
        raise GLIPError(
            f"masks of shape {tuple(masks.shape)} do not fit an image of {width}x{height} pixels: "
            "draw on the image the detections were made on"
        )
    pixels = np.asarray(canvas.convert("RGB"), dtype=np.float32).copy()
    for mask, color in zip(masks.detach().cpu().bool(), colors, strict=True):
        if not mask.any():
            continue
        rgb = np.asarray(color, dtype=np.float32)
        inside = mask.numpy()
        pixels[inside] = pixels[inside] * (1.0 - opacity) + rgb * opacity
        if outline_width > 0:
            pixels[mask_outline(mask, outline_width).numpy()] = rgb
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def draw_detections(image: Image.Image, detections: Detections, line_width: int | None = None) -> Image.Image:
    """Return a copy of ``image`` with every detection drawn.

    Masks (when ``detections.masks`` is not None) are filled with the label's colour at
    :data:`MASK_OPACITY` and outlined (:data:`MASK_OUTLINE_WIDTH` px) first; boxes and labels are
    drawn on top. Labels are kept inside the image.

    Args:
        image: the original image (detections are in its pixel coordinates).
        detections: what to draw (all of it: filter by score first); masks ``(K, H, W)`` bool, if any.
        line_width: box outline width; default scales with the image size.

    Raises:
        GLIPError: if the masks are not the image's size.
    """
    canvas = image.convert("RGB").copy()
    boxes = detections.boxes_xyxy.detach().cpu().tolist()
    scores = detections.scores.detach().cpu().tolist()
    # Draw the weakest first so the strongest end on top.
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    if detections.masks is not None:
        index = torch.as_tensor(order, dtype=torch.long)
        masks = detections.masks.detach().cpu()
        masks = masks[index] if len(order) else masks
        canvas = draw_masks(canvas, masks, [label_color(detections.label_names[i]) for i in order])
    draw = ImageDraw.Draw(canvas)
    short = min(canvas.size)
    width = line_width or max(2, short // 200)
    font = _font(max(12, short // 40))
    for i in order:
        name, score = detections.label_names[i], scores[i]
        color = label_color(name)
        x1, y1, x2, y2 = boxes[i]
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        _draw_label(draw, canvas.size, (x1, y1), f"{name} {score:.2f}", color, font)
    return canvas


def _draw_label(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    corner: tuple[float, float],
    text: str,
    color: tuple[int, int, int],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    """A filled label above the box's top-left corner (inside the box when there is no room above),
    moved so that it stays inside the image."""
    x1, y1 = corner
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow < 10.1's bitmap font only knows Latin-1
        text = text.encode("latin-1", "replace").decode("latin-1")
    tx1, ty1, tx2, ty2 = draw.textbbox((0, 0), text, font=font)
    label_w, label_h = (tx2 - tx1) + 6, (ty2 - ty1) + 4
    left = min(max(x1, 0.0), max(size[0] - label_w, 0))
    top = y1 - label_h if y1 - label_h >= 0 else min(max(y1, 0.0), max(size[1] - label_h, 0))
    draw.rectangle((left, top, left + label_w, top + label_h), fill=color)
    draw.text((left + 3, top + 2 - ty1), text, fill=(0, 0, 0), font=font)
