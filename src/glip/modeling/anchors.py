"""Anchors (one per feature-map location per level) and the GLIP box coder.

Conventions follow the official implementation (Detectron v1 "+1" boxes when
``legacy_plus_one``): a box ``[x1, y1, x2, y2]`` has width ``x2 - x1 + 1``.

Anchor layout: for a level of stride ``s`` and grid ``H x W`` the anchors are ordered row-major
(``y`` outer, ``x`` inner), which is the order of ``feature.flatten(2)``; levels are concatenated
P3 first. The cell anchor for stride ``s`` and side ``a = anchor_scale * s`` is centred on
``((s - 1) / 2, (s - 1) / 2)``: with the +1 convention it spans ``[c - (a - 1)/2, c + (a - 1)/2]``,
e.g. ``[-28, -28, 35, 35]`` for ``s = 8``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glip.config import HeadConfig


def cell_anchor(stride: int, size: float, legacy_plus_one: bool = True) -> Tensor:
    """The anchor of the location at the origin of a level, as ``(4,)`` float32 xyxy.

    Args:
        stride: level stride in pixels.
        size: anchor side in pixels (``anchor_scale * stride``).
        legacy_plus_one: use the official ``w = x2 - x1 + 1`` convention.
    """
    one = 1.0 if legacy_plus_one else 0.0
    center = (stride - one) / 2.0
    half = (size - one) / 2.0
    # Computed in float64 and cast once, as the official numpy-based generator does.
    box = torch.tensor([center - half, center - half, center + half, center + half], dtype=torch.float64)
    return box.float()


def grid_anchors(
    level_sizes: list[tuple[int, int]],
    strides: tuple[int, ...] | list[int],
    anchor_scale: float,
    legacy_plus_one: bool = True,
    device: torch.device | None = None,
) -> Tensor:
    """All anchors of all levels, concatenated P3 first, row-major within a level.

    Args:
        level_sizes: ``(H_l, W_l)`` of each feature level.
        strides: stride of each level.
        anchor_scale: anchor side / stride (8 in GLIP).
        legacy_plus_one: box convention (see module docstring).
        device: where to create the anchors.

    Returns:
        ``(sum_l H_l * W_l, 4)`` float32 anchors, xyxy in padded-image pixels.
    """
    out = []
    for (h, w), s in zip(level_sizes, strides, strict=True):
        base = cell_anchor(s, anchor_scale * s, legacy_plus_one).to(device)
        shifts_x = torch.arange(0, w * s, step=s, dtype=torch.float32, device=device)
        shifts_y = torch.arange(0, h * s, step=s, dtype=torch.float32, device=device)
        sy, sx = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        sx, sy = sx.reshape(-1), sy.reshape(-1)
        out.append(torch.stack((sx, sy, sx, sy), dim=1) + base)
    return torch.cat(out, dim=0)


class BoxCoder:
    """Encodes boxes as anchor-relative deltas ``(dx, dy, dw, dh)`` and decodes them back.

    ``dx = wx * (gx - ax) / aw``, ``dw = ww * log(gw / aw)`` with centres ``(x1 + x2) / 2`` and
    widths ``x2 - x1 + 1`` (``legacy_plus_one``). Decoding clamps ``dw / ww`` at ``bbox_xform_clip``.
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        bbox_xform_clip: float = 4.135166556742356,
        legacy_plus_one: bool = True,
    ) -> None:
        self.weights = weights
        self.bbox_xform_clip = bbox_xform_clip
        self.one = 1.0 if legacy_plus_one else 0.0

    def _center_size(self, boxes_xyxy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        w = boxes_xyxy[..., 2] - boxes_xyxy[..., 0] + self.one
        h = boxes_xyxy[..., 3] - boxes_xyxy[..., 1] + self.one
        cx = (boxes_xyxy[..., 2] + boxes_xyxy[..., 0]) / 2
        cy = (boxes_xyxy[..., 3] + boxes_xyxy[..., 1]) / 2
        return cx, cy, w, h

    def encode(self, boxes_xyxy: Tensor, anchors_xyxy: Tensor) -> Tensor:
        """Deltas that turn each anchor into its box.

        Args:
            boxes_xyxy: ``(..., 4)`` target boxes.
            anchors_xyxy: ``(..., 4)`` anchors, broadcastable with ``boxes_xyxy``.

        Returns:
            ``(..., 4)`` deltas ``(dx, dy, dw, dh)``.
        """
        wx, wy, ww, wh = self.weights
        acx, acy, aw, ah = self._center_size(anchors_xyxy)
        gcx, gcy, gw, gh = self._center_size(boxes_xyxy)
        return torch.stack(
            (wx * (gcx - acx) / aw, wy * (gcy - acy) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)), dim=-1
        )

    def decode(self, deltas: Tensor, anchors_xyxy: Tensor) -> Tensor:
        """Boxes from deltas.

        Args:
            deltas: ``(..., 4)`` predicted deltas.
            anchors_xyxy: ``(..., 4)`` anchors, broadcastable with ``deltas``.

        Returns:
            ``(..., 4)`` boxes xyxy, in the dtype of ``deltas``.
        """
        anchors_xyxy = anchors_xyxy.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        acx, acy, aw, ah = self._center_size(anchors_xyxy)
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = torch.clamp(deltas[..., 2] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(deltas[..., 3] / wh, max=self.bbox_xform_clip)
        cx, cy = dx * aw + acx, dy * ah + acy
        w, h = torch.exp(dw) * aw, torch.exp(dh) * ah
        half_w, half_h = 0.5 * (w - self.one), 0.5 * (h - self.one)
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def box_coder_for(head: HeadConfig) -> BoxCoder:
    """The box coder of a model's grounding head (the one place a config becomes a :class:`BoxCoder`)."""
    return BoxCoder(tuple(head.box_coder_weights), head.bbox_xform_clip, head.legacy_plus_one)
