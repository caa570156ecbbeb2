"""Feature pyramid with the RetinaNet-style P6/P7 levels, as GLIP's official FPN computes it.

Given body maps ``C3, C4, C5`` (strides 8/16/32) it returns ``P3 .. P7`` (strides 8..128), all
with ``out_channels`` channels:

* lateral ``1x1`` convs (``inner_blocks``) and output ``3x3`` convs (``layer_blocks``), both plain
  convs with bias (kaiming-uniform ``a=1`` weights, zero bias; no norm, no activation);
* top-down: the running merged map is nearest-upsampled **to the size of the next lateral**
  (``F.interpolate(size=...)``, not ``scale_factor=2``, so odd sizes work) and added to it;
* ``P6 = conv3x3/s2/p1(P5)`` on the FPN's P5 *output* when ``p6_from_p5`` (the official choice,
  because its ``LastLevelP6P7`` gets in == out channels), else on ``C5``;
  ``P7 = conv3x3/s2/p1(ReLU(P6))``.

Not reproduced: the official training-only DropBlock (p=0.3, block 3) on the merged maps before
the output convs of P3/P4 (``MODEL.FPN.DROP_BLOCK``, default True); inference is unaffected.

State-dict names (ours -> official ``backbone.fpn.``): ``inner_blocks.{0,1,2}`` ->
``fpn_inner{2,3,4}``, ``layer_blocks.{0,1,2}`` -> ``fpn_layer{2,3,4}``, ``p6`` -> ``top_blocks.p6``,
``p7`` -> ``top_blocks.p7`` (the key map lives in :mod:`glip.checkpoints`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return conv


class FPN(nn.Module):
    """Top-down feature pyramid over ``len(in_channels)`` body maps plus two extra coarser levels.

    Args:
        in_channels: channels of the body maps, finest first (C3, C4, C5).
        out_channels: channels of every pyramid level (256 in GLIP).
        p6_from_p5: compute P6 from the P5 output (official) instead of from C5.

    Attributes:
        inner_blocks: lateral ``1x1`` convs, index 0 = finest map (C3).
        layer_blocks: output ``3x3`` convs, index 0 = P3.
        p6, p7: the extra stride-2 ``3x3`` convs.
        out_channels: channels of every output level.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, p6_from_p5: bool = True) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("FPN needs at least one input level")
        self.p6_from_p5 = p6_from_p5
        self.out_channels = out_channels
        self.inner_blocks = nn.ModuleList(_conv(c, out_channels, 1) for c in in_channels)
        self.layer_blocks = nn.ModuleList(_conv(out_channels, out_channels, 3) for _ in in_channels)
        self.p6 = _conv(out_channels if p6_from_p5 else in_channels[-1], out_channels, 3, stride=2)
        self.p7 = _conv(out_channels, out_channels, 3, stride=2)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Build the pyramid.

        Args:
            features: body maps, finest first; map ``i`` is ``(B, in_channels[i], H_i, W_i)``.

        Returns:
            ``len(features) + 2`` maps ``(B, out_channels, H_l, W_l)``, finest first (P3 .. P7);
            the two extra levels have ``H = ceil(H_prev / 2)``.
        """
        if len(features) != len(self.inner_blocks):
            raise ValueError(f"FPN built for {len(self.inner_blocks)} levels got {len(features)} maps")
        last_inner = self.inner_blocks[-1](features[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(features) - 2, -1, -1):
            lateral = self.inner_blocks[idx](features[idx])
            if lateral.shape[-2:] != last_inner.shape[-2:]:
                last_inner = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + last_inner
            results.insert(0, self.layer_blocks[idx](last_inner))
        p6 = self.p6(results[-1] if self.p6_from_p5 else features[-1])
        p7 = self.p7(F.relu(p6))
        return [*results, p6, p7]
