"""Pictures of results: boxes with their phrase and score drawn on the image."""

from __future__ import annotations

import colorsys
import hashlib

from PIL import Image, ImageDraw, ImageFont

from glip.structures import Detections


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


def draw_detections(image: Image.Image, detections: Detections, line_width: int | None = None) -> Image.Image:
    """Return a copy of ``image`` with every detection drawn.

    Args:
        image: the original image (detections are in its pixel coordinates).
        detections: what to draw (all of it: filter by score first).
        line_width: box outline width; default scales with the image size.
    """
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    short = min(canvas.size)
    width = line_width or max(2, short // 200)
    font = _font(max(12, short // 40))
    boxes = detections.boxes_xyxy.detach().cpu().tolist()
    scores = detections.scores.detach().cpu().tolist()
    # Draw the weakest first so the strongest boxes end on top.
    for box, score, name in sorted(zip(boxes, scores, detections.label_names, strict=True), key=lambda t: t[1]):
        color = label_color(name)
        x1, y1, x2, y2 = box
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        text = f"{name} {score:.2f}"
        tx1, ty1, tx2, ty2 = draw.textbbox((x1, y1), text, font=font)
        th = ty2 - ty1
        top = y1 - th - 4 if y1 - th - 4 >= 0 else y1
        draw.rectangle((x1, top, x1 + (tx2 - tx1) + 6, top + th + 4), fill=color)
        draw.text((x1 + 3, top + 2 - (ty1 - y1)), text, fill=(0, 0, 0), font=font)
    return canvas
