"""Binary masks: COCO RLE encoding and decoding, polygons, unions and IoUs.

The run-length work is done by faster-coco-eval's mask module (the pycocotools C API); this module
only converts between it and torch tensors. Masks are ``(H, W)`` bool tensors; RLE records are COCO's
``{"size": [H, W], "counts": str}`` (compressed counts as text, ready for JSON).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from faster_coco_eval.core import mask as mask_utils
from torch import Tensor

from glip.errors import DataError

Rle = dict[str, Any]
MAX_MASK_PIXELS = 1 << 30  # a larger mask is not an image's (and would not fit in memory as bool)


def encode_rle(mask: Tensor | np.ndarray) -> Rle:
    """``(H, W)`` bool mask → COCO RLE with text counts."""
    arr = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    rle = mask_utils.encode(np.asfortranarray(arr.astype(np.uint8)))
    counts = rle["counts"]
    return {
        "size": [int(s) for s in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def _as_rle(rle: Mapping[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode_rle(rle: Mapping[str, Any]) -> Tensor:
    """COCO RLE (compressed text/bytes counts, or uncompressed list counts) → ``(H, W)`` bool mask.

    Raises:
        DataError: for a record that is not a valid RLE.
    """
    expected = "expected {'size': [H, W], 'counts': ...}"
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise DataError(f"not a valid COCO RLE mask: {expected}")
    size, counts = rle["size"], rle["counts"]
    if not (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise DataError(f"not a valid COCO RLE mask: 'size' must be [height, width] (2 integers >= 0), got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h * w > MAX_MASK_PIXELS:
        raise DataError(f"not a valid COCO RLE mask: size {h}x{w} is larger than any image")
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise DataError("not a valid COCO RLE mask: uncompressed 'counts' must be run lengths (integers >= 0)")
    elif not isinstance(counts, (str, bytes)):
        raise DataError(f"not a valid COCO RLE mask: 'counts' must be a string or a list, got {type(counts).__name__}")
    try:
        if isinstance(counts, list):  # uncompressed (iscrowd annotations)
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        return torch.from_numpy(mask_utils.decode(_as_rle(rle)).astype(bool))
    except (KeyError, TypeError, ValueError, RuntimeError, UnicodeError) as e:
        raise DataError(f"not a valid COCO RLE mask ({str(e).strip()})") from e


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> Tensor:
    """A COCO ``segmentation`` (polygons, compressed or uncompressed RLE) → ``(height, width)`` bool mask.

    Raises:
        DataError: for a malformed segmentation.
    """
    try:
        if isinstance(segmentation, list):  # polygons [[x1, y1, x2, y2, ...], ...]
            polygons = [list(map(float, p)) for p in segmentation if len(p) >= 6]
            if not polygons:
                return torch.zeros(height, width, dtype=torch.bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            return torch.from_numpy(mask_utils.decode(rle).astype(bool))
        if isinstance(segmentation, Mapping):
            mask = decode_rle(segmentation)
            if tuple(mask.shape) != (height, width):
                raise DataError(f"RLE mask of size {tuple(mask.shape)} on an image of {height}x{width}")
            return mask
    except DataError:
        raise
    except (TypeError, ValueError) as e:
        raise DataError(f"malformed segmentation ({e})") from e
    raise DataError(f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}")


def union(masks: Tensor) -> Tensor:
    """``(K, H, W)`` bool → ``(H, W)`` bool (all False for K = 0)."""
    return masks.any(dim=0)


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every pair: ``(N, H, W)`` and ``(M, H, W)`` bool → ``(N, M)`` float (0 where both are empty)."""
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = fa @ fb.T
    union_ = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return torch.where(union_ > 0, inter / union_.clamp(min=1), torch.zeros_like(inter))


def intersection_union(a: Tensor, b: Tensor) -> tuple[int, int]:
    """Pixel counts of ``a & b`` and ``a | b`` for two ``(H, W)`` bool masks of the same size."""
    if a.shape != b.shape:
        raise ValueError(f"masks of different sizes: {tuple(a.shape)} and {tuple(b.shape)}")
    return int((a & b).sum()), int((a | b).sum())


def mask_outline(mask: Tensor, width: int = 2) -> Tensor:
    """The inner boundary of a mask: ``(H, W)`` bool → ``(H, W)`` bool, the mask pixels within
    ``width`` pixels (chessboard distance) of a background pixel. The image border is not a boundary."""
    if width <= 0 or mask.numel() == 0:
        return torch.zeros_like(mask, dtype=torch.bool)
    background = (~mask.bool()).float()[None, None]
    near = torch.nn.functional.max_pool2d(background, 2 * width + 1, stride=1, padding=width)[0, 0] > 0
    return mask.bool() & near


def rle_area(rles: Sequence[Mapping[str, Any]]) -> list[int]:
    """Foreground pixel count of each RLE."""
    return [int(a) for a in mask_utils.area([_as_rle(r) for r in rles])]


__all__ = [
    "Rle",
    "decode_rle",
    "encode_rle",
    "intersection_union",
    "mask_iou",
    "mask_outline",
    "rle_area",
    "segmentation_to_mask",
    "union",
]
