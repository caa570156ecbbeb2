"""Images in: files, PIL images, numpy arrays and tensors → validated RGB PIL images.

Every image that enters glip passes through :func:`load_image` (files) or :func:`to_pil`
(anything). What they guarantee:

* the result is an 8-bit RGB :class:`PIL.Image.Image`, at least 1x1 pixel;
* EXIF orientation is applied (a phone photo stored sideways is seen upright, as detectron2 and
  most viewers show it);
* 16-bit and 32-bit grey images are scaled to 8 bits (not clipped to white), palette and
  transparent images are composed over white, CMYK/YCbCr/LAB are converted;
* a decompression bomb (more pixels than ``max_pixels``, PIL's limit by default: about 179M) is
  refused before its pixels are decoded;
* every problem is an :class:`~glip.errors.ImageError` that names the image and says what to do.

Numpy arrays are ``(H, W, 3)`` RGB or ``(H, W)`` grey, ``uint8`` (or float in ``[0, 1]``); tensors
are ``(3, H, W)`` or ``(1, H, W)`` ``uint8`` (or float in ``[0, 1]``), the torchvision convention.
OpenCV frames are BGR: pass ``frame[..., ::-1]``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from glip.errors import ImageError

_ORIENTATION = 0x0112  # the EXIF tag
ImageLike = Any  # PIL.Image.Image | str | Path | numpy.ndarray | torch.Tensor


def _pixel_limit(max_pixels: int | None) -> int:
    if max_pixels is not None:
        return max_pixels
    return 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)


def printable_path(path: str | Path) -> str:
    """A path as text that can always be printed (undecodable bytes escaped)."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def load_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open an image file as an 8-bit RGB image, EXIF orientation applied.

    Args:
        path: the file.
        max_pixels: refuse larger images (default: twice PIL's ``MAX_IMAGE_PIXELS``, ~179M pixels).

    Raises:
        ImageError: if the file is missing, unreadable, truncated, too large or not an image.
    """
    p = Path(path)
    name = printable_path(p)
    if not p.is_file():
        raise ImageError(f"image {name} does not exist" if not p.exists() else f"{name} is not a file")
    limit = _pixel_limit(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                width, height = img.size
                if width * height > limit:
                    raise ImageError(
                        f"image {name} is {width}x{height} = {width * height / 1e6:.0f}M pixels, more than the "
                        f"limit of {limit / 1e6:.0f}M (a decompression bomb?): downscale it first"
                    )
                img.load()
                rgb = to_rgb(img, name)
                return rgb.copy() if rgb is img else rgb  # never hand out the file-backed object
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"image {name} is too large to decode safely ({e}): downscale it first") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ImageError(f"cannot read image {name}: {reason}; check that it is a complete JPEG/PNG/... file") from e


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Any PIL image → 8-bit RGB with EXIF orientation applied (see the module docstring).

    Raises:
        ImageError: for an empty (0-pixel) image.
    """
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{name} is {image.width}x{image.height} pixels: an image needs at least 1x1")
    with contextlib.suppress(Exception):  # a broken EXIF block must not make a readable image unusable
        if image.getexif().get(_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _grey_to_rgb(np.nan_to_num(np.asarray(image, dtype=np.float64)), mode)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_rgb(arr: np.ndarray, mode: str) -> Image.Image:
    """16/32-bit integer or float grey pixels → 8-bit RGB, scaled rather than clipped."""
    top = float(arr.max(initial=0.0))
    if mode == "F":
        scale = 255.0 if top <= 1.0 else 255.0 / top  # floats: [0, 1], else the brightest pixel is white
    else:
        scale = 255.0 / 65535.0 if mode.startswith("I;16") or top > 255 else 1.0
    grey = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def to_pil(image: ImageLike, name: str | None = None, max_pixels: int | None = None) -> Image.Image:
    """A path, PIL image, numpy array or tensor → validated 8-bit RGB PIL image.

    Args:
        image: a file path, a PIL image, an ``(H, W, 3)`` / ``(H, W)`` numpy array (RGB, uint8 or
            float in [0, 1]), or a ``(3, H, W)`` / ``(1, H, W)`` tensor (uint8 or float in [0, 1]).
        name: how to call the image in error messages.
        max_pixels: refuse larger images (default: twice PIL's limit).

    Raises:
        ImageError: for anything that is not a usable image, with what to pass instead.
    """
    label = name or "image"
    if isinstance(image, (str, Path)):
        return load_image(image, max_pixels)
    if isinstance(image, Image.Image):
        if image.width * image.height > _pixel_limit(max_pixels):
            raise ImageError(f"{label} is {image.width}x{image.height} pixels, more than the limit: downscale it")
        return to_rgb(image, label)
    if isinstance(image, np.ndarray):
        return _from_array(image, label, channels_last=True, max_pixels=max_pixels)
    if type(image).__module__.startswith("torch") and hasattr(image, "detach"):
        arr = image.detach().cpu().numpy()
        return _from_array(arr, label, channels_last=False, max_pixels=max_pixels)
    raise ImageError(
        f"{label} is a {type(image).__name__}: pass a file path, a PIL image, an (H, W, 3) RGB uint8 numpy array "
        "or a (3, H, W) uint8 tensor"
    )


def _from_array(arr: np.ndarray, label: str, channels_last: bool, max_pixels: int | None) -> Image.Image:
    layout = "(H, W, 3) or (H, W)" if channels_last else "(3, H, W) or (1, H, W)"
    if arr.ndim == 3 and not channels_last:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # RGBA: alpha dropped
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise ImageError(f"{label} has shape {tuple(arr.shape)}: expected {layout} (one image, RGB)")
    h, w = arr.shape[:2]
    if h < 1 or w < 1:
        raise ImageError(f"{label} is {w}x{h} pixels: an image needs at least 1x1")
    if h * w > _pixel_limit(max_pixels):
        raise ImageError(f"{label} is {w}x{h} pixels, more than the limit: downscale it")
    if arr.dtype == np.uint8:
        data = np.ascontiguousarray(arr)
    elif arr.dtype == np.bool_:
        data = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError(f"{label} contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0 + 1e-6:
            raise ImageError(
                f"{label} is a float array with values in [{lo:.3g}, {hi:.3g}]: give floats in [0, 1] or uint8 0-255"
            )
        data = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ImageError(f"{label} is an integer array with values in [{lo}, {hi}]: convert it to uint8 0-255")
        data = arr.astype(np.uint8)
    else:
        raise ImageError(f"{label} has dtype {arr.dtype}: give uint8 (0-255) or float (0-1) pixels")
    image = Image.fromarray(data, "L" if data.ndim == 2 else "RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def is_image_like(value: object) -> bool:
    """True for one image (path, PIL image, array or tensor of 2-3 dims); False for a sequence of images."""
    if isinstance(value, (str, Path, Image.Image)):
        return True
    ndim = getattr(value, "ndim", None)
    return isinstance(ndim, int) and ndim in (2, 3)


# ---------------------------------------------------------------------------------------------- tensors
def normalize_image(
    image: Image.Image, input_format: str = "bgr255", pixel_mean: Tensor | None = None, pixel_std: Tensor | None = None
) -> Tensor:
    """PIL image → ``(3, H, W)`` float32 normalised tensor (the processor's and the data pipeline's arithmetic).

    Args:
        image: an RGB image (other modes are converted).
        input_format: ``"bgr255"`` (official: BGR, 0-255) or ``"rgb"`` (RGB, 0-1).
        pixel_mean, pixel_std: ``(3, 1, 1)`` statistics in the input format's order and scale.
    """
    if image.mode != "RGB":
        image = to_rgb(image)
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255)
    if input_format == "bgr255":
        x = x[[2, 1, 0]] * 255
    if pixel_mean is not None:
        x = x - pixel_mean
    if pixel_std is not None:
        x = x / pixel_std
    return x


def pad_images(images: Sequence[Tensor], size_divisibility: int = 32) -> tuple[Tensor, Tensor]:
    """Zero-pad ``(C, h_i, w_i)`` tensors to ``(B, C, H, W)``, H and W multiples of ``size_divisibility``
    (official ``to_image_list``).

    Returns:
        The batch and its ``(B, H, W)`` bool mask, True on real pixels.
    """
    d = max(int(size_divisibility), 1)
    hmax = int(math.ceil(max(x.shape[1] for x in images) / d) * d)
    wmax = int(math.ceil(max(x.shape[2] for x in images) / d) * d)
    batch = images[0].new_zeros(len(images), images[0].shape[0], hmax, wmax)
    mask = torch.zeros(len(images), hmax, wmax, dtype=torch.bool)
    for i, x in enumerate(images):
        batch[i, :, : x.shape[1], : x.shape[2]] = x
        mask[i, : x.shape[1], : x.shape[2]] = True
    return batch, mask


__all__ = [
    "ImageLike", "is_image_like", "load_image", "normalize_image", "pad_images", "printable_path", "to_pil", "to_rgb",
]
