"""Training and test image transforms that move the boxes with the pixels.

The official pipeline (``maskrcnn_benchmark/data/transforms/build.py`` l.37-44,
``transforms.py``): ``Resize(min_sizes, max_size)`` → ``RandomHorizontalFlip(0.5)`` (train only)
→ ``ToTensor`` → ``Normalize(format="bgr255")``.

* Resize: one short side is drawn uniformly from ``min_sizes`` per image (``random.choice``;
  GLIP-T pretraining uses ``AUGMENT.MULT_MIN_SIZE_TRAIN = (480, 560, 640, 720, 800)``, max 1333),
  then the rule of :func:`glip.processing.resized_size` (shrink the short side so the long side
  stays ``<= max_size``; integer truncation of the long side). PIL bilinear. Boxes are scaled by
  plain multiplication per axis (``BoxList.resize``): ``x * new_w / old_w``.
* Horizontal flip with the +1 convention (``BoxList.transpose(FLIP_LEFT_RIGHT)``):
  ``x1' = W - x2 - 1``, ``x2' = W - x1 - 1`` (``W`` = width of the resized image).
* Normalisation as :class:`glip.processing.GLIPProcessor` (``bgr255``: channels reversed, ×255,
  BGR ImageNet statistics).
* Instance masks (``GroundingSample.masks``, ``(M, H, W)`` bool) follow the pixels: resized with
  nearest neighbour at pixel centres (``nearest-exact``: output pixel ``j`` reads input pixel
  ``floor((j + 0.5) * W / w)``, as PIL's NEAREST and as rasterising the polygons scaled by ``w / W``,
  which the official ``SegmentationMask.resize`` does), so a mask spans ``[x1 r, (x2 + 1) r)`` for a
  box scaled to ``[x1 r, x2 r]``; flipped by mirroring the pixel columns (column ``c`` → ``W - 1 - c``),
  which is exactly the +1 box flip (a box covering columns ``x1..x2`` covers ``W-1-x2..W-1-x1``
  after it; the official polygon flip ``W - x - 1`` lands one pixel left of its own box, not kept).
  Masks draw no random number: the image, its boxes and its masks share the one size/flip draw.

Randomness comes only from the ``torch.Generator`` given to ``__call__`` (first the size draw,
then the flip draw), so a sample is reproducible from its seed (exact resume).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from glip.config import BGR255_MEAN, BGR255_STD, InputConfig
from glip.errors import ConfigError, DataError
from glip.images import normalize_image
from glip.processing import resized_size
from glip.structures import GroundingSample

GLIP_T_TRAIN_SIZES = (480, 560, 640, 720, 800)
"""``AUGMENT.MULT_MIN_SIZE_TRAIN`` of the GLIP-T pretraining configs."""


def resize_boxes(boxes_xyxy: Tensor, old_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Scale ``(M, 4)`` boxes from an ``(h, w)`` image to an ``(h', w')`` one (``BoxList.resize``)."""
    ratio_h = float(new_size[0]) / float(old_size[0])
    ratio_w = float(new_size[1]) / float(old_size[1])
    scale = torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h], dtype=boxes_xyxy.dtype)
    return boxes_xyxy * scale


def hflip_boxes(boxes_xyxy: Tensor, width: int, legacy_plus_one: bool = True) -> Tensor:
    """Mirror ``(M, 4)`` boxes in an image of ``width`` pixels: ``x1' = W - x2 - 1`` (official +1)."""
    one = 1.0 if legacy_plus_one else 0.0
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)
    return torch.stack((width - x2 - one, y1, width - x1 - one, y2), dim=-1)


def resize_masks(masks: Tensor, new_size: tuple[int, int]) -> Tensor:
    """``(M, H, W)`` bool masks → ``(M, h', w')`` bool, nearest neighbour at pixel centres (``nearest-exact``)."""
    if masks.shape[0] == 0:
        return torch.zeros((0, *new_size), dtype=torch.bool)
    resized = F.interpolate(masks[None].to(torch.uint8), size=tuple(new_size), mode="nearest-exact")
    return resized[0].bool()


def hflip_masks(masks: Tensor) -> Tensor:
    """Mirror ``(M, H, W)`` masks left-right: column ``c`` → ``W - 1 - c`` (agrees with :func:`hflip_boxes`)."""
    return masks.flip(-1)


class GroundingTransform:
    """Resize (one of several short sides), optional horizontal flip, normalise; boxes follow.

    Args:
        min_sizes: candidate short sides; one is drawn per image.
        max_size: cap on the long side.
        flip_prob: probability of a horizontal flip.
        input_format, pixel_mean, pixel_std: normalisation (as :class:`~glip.config.InputConfig`).
        legacy_plus_one: flip with the official ``W - x - 1`` convention.
    """

    def __init__(
        self,
        min_sizes: int | Sequence[int] = GLIP_T_TRAIN_SIZES,
        max_size: int = 1333,
        flip_prob: float = 0.5,
        input_format: str = "bgr255",
        pixel_mean: Sequence[float] = BGR255_MEAN,
        pixel_std: Sequence[float] = BGR255_STD,
        legacy_plus_one: bool = True,
    ) -> None:
        sizes = (min_sizes,) if isinstance(min_sizes, int) else tuple(int(s) for s in min_sizes)
        if not sizes or min(sizes) <= 0 or max_size <= 0:
            raise ConfigError(f"min_sizes={min_sizes} and max_size={max_size} must be positive (at least one size)")
        if not 0.0 <= flip_prob <= 1.0:
            raise ConfigError(f"flip_prob={flip_prob} must be in [0, 1]")
        if input_format not in ("bgr255", "rgb"):
            raise ConfigError(f"input_format={input_format!r}: use 'bgr255' or 'rgb'")
        self.min_sizes = sizes
        self.max_size = int(max_size)
        self.flip_prob = float(flip_prob)
        self.input_format = input_format
        self.pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32)[:, None, None]
        self.pixel_std = torch.tensor(pixel_std, dtype=torch.float32)[:, None, None]
        self.legacy_plus_one = legacy_plus_one

    def draw(self, generator: torch.Generator | None = None) -> tuple[int, bool]:
        """The random choices for one image: ``(short side, flip)`` (size first, then flip)."""
        index = int(torch.randint(len(self.min_sizes), (1,), generator=generator)) if len(self.min_sizes) > 1 else 0
        flip = self.flip_prob > 0 and float(torch.rand((), generator=generator)) < self.flip_prob
        return self.min_sizes[index], flip

    def apply(
        self, image: Image.Image, boxes_xyxy: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Transform an image and its ``(M, 4)`` boxes.

        Returns:
            ``(3, h, w)`` normalised image and the boxes in its pixels.
        """
        image_t, boxes, _ = self.apply_with_masks(image, boxes_xyxy, None, generator)
        return image_t, boxes

    def apply_with_masks(
        self, image: Image.Image, boxes_xyxy: Tensor, masks: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Transform an image, its ``(M, 4)`` boxes and its ``(M, H, W)`` bool masks (or None).

        Returns:
            ``(3, h, w)`` normalised image, the boxes in its pixels and the ``(M, h, w)`` masks (None
            without masks). The random draws are the same with and without masks.

        Raises:
            DataError: if the masks are not ``(M, H, W)`` for the image's ``H x W`` and its ``M`` boxes.
        """
        if image.mode != "RGB":
            image = image.convert("RGB")
        min_size, flip = self.draw(generator)
        width, height = image.size
        new_h, new_w = resized_size(width, height, min_size, self.max_size)
        boxes = boxes_xyxy.to(torch.float32).reshape(-1, 4)
        if masks is not None and (masks.dim() != 3 or tuple(masks.shape) != (boxes.shape[0], height, width)):
            raise DataError(
                f"masks of shape {tuple(masks.shape)} for {boxes.shape[0]} boxes on a {width}x{height} image: "
                f"expected ({boxes.shape[0]}, {height}, {width})"
            )
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
            boxes = resize_boxes(boxes, (height, width), (new_h, new_w))
            masks = None if masks is None else resize_masks(masks, (new_h, new_w))
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            boxes = hflip_boxes(boxes, new_w, self.legacy_plus_one)
            masks = None if masks is None else hflip_masks(masks)
        return normalize_image(image, self.input_format, self.pixel_mean, self.pixel_std), boxes, masks

    def __call__(self, sample: GroundingSample, generator: torch.Generator | None = None) -> GroundingSample:
        """A copy of ``sample`` with a ``(3, h, w)`` tensor image, and boxes and masks in its pixels."""
        image, boxes, masks = self.apply_with_masks(sample.image, sample.boxes_xyxy, sample.masks, generator)
        return replace(sample, image=image, boxes_xyxy=boxes, masks=masks)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_sizes={self.min_sizes}, max_size={self.max_size}, "
            f"flip_prob={self.flip_prob}, input_format={self.input_format!r})"
        )


class TrainTransform(GroundingTransform):
    """The official train transform: multi-scale short side, max size, flip p=0.5, normalise."""


class TestTransform(GroundingTransform):
    """The official test transform: one short side (800), max 1333, no flip, normalise."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        min_size: int = 800,
        max_size: int = 1333,
        input_format: str = "bgr255",
        pixel_mean: Sequence[float] = BGR255_MEAN,
        pixel_std: Sequence[float] = BGR255_STD,
    ) -> None:
        super().__init__((min_size,), max_size, 0.0, input_format, pixel_mean, pixel_std)


def train_transform_from_config(
    config: InputConfig, min_sizes: Sequence[int] = GLIP_T_TRAIN_SIZES, max_size: int | None = None
) -> TrainTransform:
    """The train transform matching a model's input config (normalisation), with training sizes."""
    return TrainTransform(
        min_sizes, max_size or config.max_size, 0.5, config.input_format, config.pixel_mean, config.pixel_std
    )


def test_transform_from_config(config: InputConfig) -> TestTransform:
    """The test transform of a model's input config (what :class:`GLIPProcessor` applies)."""
    return TestTransform(config.min_size, config.max_size, config.input_format, config.pixel_mean, config.pixel_std)


test_transform_from_config.__test__ = False  # type: ignore[attr-defined]
