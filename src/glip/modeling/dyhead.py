"""DyConv (DyHead's scale-, spatial- and task-aware block) and the VL DyHead tower.

One DyConv step updates every pyramid level ``l`` from three neighbours, all through 3x3
modulated deformable convolutions (DCNv2) followed by GroupNorm:

    mid_l  = conv_mid(P_l)                          offsets/masks predicted from P_l
    down_l = conv_down(P_{l-1})   (stride 2)         same offsets (the output grid is P_l's)
    up_l   = upsample(conv_up(P_{l+1}))              same offsets, see ``coarse_offset_mode``
    out_l  = DyReLU( mean_k( f_k * hsigmoid(ReLU(conv1x1(avgpool(f_k))) ) ) )

Official quirk (``coarse_offset_mode="prefix"``): the branch on the coarser level ``P_{l+1}`` (an
``h x w`` output) receives the ``H x W`` offset map of ``P_l``; the official CUDA kernel reads the
first ``18 * h * w`` values of each sample's offset buffer as if it were ``(18, h, w)`` (and the
first ``9 * h * w`` of the mask). torchvision's ``deform_conv2d`` insists on matching sizes, so the
prefix is sliced here explicitly. ``"own"`` instead predicts the offsets from ``P_{l+1}`` itself.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from functools import lru_cache, partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import deform_conv2d

from glip.modeling import dcn_triton
from glip.modeling.fusion import FusionBlock, flatten_levels
from glip.modeling.text_layer import ClampedBertLayer


def h_sigmoid(x: Tensor) -> Tensor:
    """Hard sigmoid ``ReLU6(x + 3) / 6``."""
    return F.relu6(x + 3.0) / 6.0


class ModulatedDeformConv3x3(nn.Module):
    """3x3 DCNv2 (padding 1) with bias; plain convolution when no offsets are given."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.fast = False
        bound = 1.0 / math.sqrt(in_channels * 9)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor, offset: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``x (B, C_in, H, W)``, ``offset (B, 18, H', W')``, ``mask (B, 9, H', W')`` → ``(B, C_out, H', W')``."""
        if offset is None:
            return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=1)
        if self.fast and mask is not None and _fused_ok(x, self.weight):
            # fast path: the fused Triton kernel in x's reduced dtype (fp32 coordinates and accumulation)
            return dcn_triton.deform_conv3x3(x, offset, mask, self.weight, self.bias, self.stride)
        if x.dtype != self.weight.dtype or offset.dtype != self.weight.dtype:
            # Under autocast: torchvision's deformable convolution runs in the weights' precision
            # (its CUDA autocast rule casts to fp32; its CPU kernel has no reduced precision); cast back.
            out = deform_conv2d(
                x.to(self.weight.dtype), offset.to(self.weight.dtype), self.weight, self.bias, stride=self.stride,
                padding=1, mask=None if mask is None else mask.to(self.weight.dtype),
            )  # fmt: skip
            return out.to(x.dtype)
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=1, mask=mask)


def _fused_ok(x: Tensor, weight: Tensor) -> bool:
    """The fused kernel serves reduced-precision inference only (it has no backward)."""
    reduced = x.dtype in (torch.bfloat16, torch.float16)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return reduced and not needs_grad and dcn_triton.available(x)


def _fused_input(x: Tensor, weight: Tensor) -> Tensor:
    """``x`` in the autocast dtype when the fused kernel will take it that way, else ``x`` unchanged."""
    reduced = _reduced(x)
    return reduced if _fused_ok(reduced, weight) else x


def _reduced(y: Tensor) -> Tensor:
    """Under autocast, bring an fp32 activation back to the autocast dtype (no-op otherwise)."""
    if torch.is_autocast_enabled(y.device.type) and y.dtype == torch.float32:
        return y.to(torch.get_autocast_dtype(y.device.type))
    return y


class ConvGN(nn.Module):
    """A (deformable) 3x3 convolution followed by GroupNorm."""

    def __init__(self, channels: int, stride: int, groups: int, deformable: bool) -> None:
        super().__init__()
        if deformable:
            self.conv: nn.Module = ModulatedDeformConv3x3(channels, channels, stride)
        else:
            self.conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=1)
            nn.init.normal_(self.conv.weight, std=0.01)
            nn.init.zeros_(self.conv.bias)
        self.norm = nn.GroupNorm(groups, channels)
        self.deformable = deformable
        self.fast = False

    def forward(self, x: Tensor, offset: Tensor | None, mask: Tensor | None) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, H', W')``."""
        y = self.conv(x, offset, mask) if self.deformable else self.conv(x)
        if self.fast and y.dtype != torch.float32:
            # fast path: GroupNorm straight on the reduced-precision activation (fp32 statistics inside the
            # kernel) instead of autocast's fp32 round trip
            with torch.autocast(y.device.type, enabled=False):
                n = self.norm
                return F.group_norm(y, n.num_groups, n.weight.to(y.dtype), n.bias.to(y.dtype), n.eps)
        # autocast runs GroupNorm in fp32; go back to the reduced dtype so that the upsampling,
        # attention and DyReLU that follow move half the bytes
        return _reduced(self.norm(y))


class DyReLU(nn.Module):
    """Dynamic ReLU (K=2 with bias): ``max(x * a1 + b1, x * a2 + b2)`` with per-channel a, b from the pooled input."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, 4 * channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``."""
        b, c = x.shape[:2]
        y = h_sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1).flatten(1)))))
        a1, b1, a2, b2 = torch.split(y.view(b, 4 * c, 1, 1), c, dim=1)
        a1 = (a1 - 0.5) * 2.0 + 1.0
        a2 = (a2 - 0.5) * 2.0
        return torch.maximum(x * a1 + (b1 - 0.5), x * a2 + (b2 - 0.5))


def _upsample(x: Tensor, size: torch.Size, fast: bool) -> Tensor:
    """Bilinear (align_corners) resize of ``(B, C, h, w)`` to ``size``.

    The fast path (reduced precision) computes the same separable interpolation as two GEMMs with
    the interpolation matrices, ``M_H @ x @ M_W^T``, several times faster than the bilinear kernel.
    """
    if fast and x.dtype != torch.float32:
        rows = _interpolation_matrix(size[0], x.shape[-2], x.device, x.dtype)
        cols = _interpolation_matrix(size[1], x.shape[-1], x.device, x.dtype)
        return torch.matmul(rows, torch.matmul(x, cols.T))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


@lru_cache(maxsize=64)
def _interpolation_matrix(n_out: int, n_in: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(n_out, n_in)`` 1-D linear interpolation weights with align_corners=True (rows sum to 1).

    Built on ``device`` (no host-to-device copy, so it can be traced and captured in CUDA graphs).
    """
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    rows = torch.arange(n_out, device=device)
    pos = rows.to(torch.float64) * scale
    low = pos.floor().clamp(max=max(n_in - 2, 0)).long()
    frac = pos - low
    m = torch.zeros(n_out, n_in, device=device, dtype=torch.float64)
    m[rows, low] = 1.0 - frac
    if n_in > 1:
        m[rows, low + 1] += frac
    return m.to(dtype)


def _prefix(t: Tensor, h: int, w: int) -> Tensor:
    """Read a ``(B, K, H, W)`` map as the official kernel does for a smaller ``h x w`` output."""
    b, k = t.shape[:2]
    return t.reshape(b, -1)[:, : k * h * w].reshape(b, k, h, w)


class DyConv(nn.Module):
    """One DyHead step over all pyramid levels (see module docstring)."""

    def __init__(
        self,
        channels: int,
        groups: int = 16,
        use_deform: bool = True,
        use_dyrelu: bool = True,
        use_scale_attention: bool = True,
        coarse_offset_mode: str = "prefix",
    ) -> None:
        super().__init__()
        # Index order of the official ModuleList: 0 = coarser level (up), 1 = same level, 2 = finer level (down).
        self.convs = nn.ModuleList([ConvGN(channels, s, groups, use_deform) for s in (1, 1, 2)])
        self.scale_attn = nn.Conv2d(channels, 1, kernel_size=1) if use_scale_attention else None
        if self.scale_attn is not None:
            nn.init.normal_(self.scale_attn.weight, std=0.01)
            nn.init.zeros_(self.scale_attn.bias)
        self.act: nn.Module = DyReLU(channels) if use_dyrelu else nn.ReLU()
        self.offset = nn.Conv2d(channels, 27, kernel_size=3, padding=1) if use_deform else None
        if coarse_offset_mode not in ("prefix", "own"):
            raise ValueError(f"coarse_offset_mode={coarse_offset_mode!r}: use 'prefix' or 'own'")
        self.coarse_offset_mode = coarse_offset_mode
        self.fast = False

    def _offsets(self, feature: Tensor) -> tuple[Tensor | None, Tensor | None]:
        if self.offset is None:
            return None, None
        om = self.offset(feature)
        return om[:, :18], om[:, 18:].sigmoid()

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """``L`` maps ``(B, C, H_l, W_l)`` → ``L`` maps of the same shapes."""
        up_conv, mid_conv, down_conv = self.convs
        if self.fast and self.offset is not None:
            # each map feeds up to three deformable convolutions: cast it once for the fused kernel
            features = [_fused_input(f, mid_conv.conv.weight) for f in features]
        outputs = []
        for level, feature in enumerate(features):
            offset, mask = self._offsets(feature)
            branches = [mid_conv(feature, offset, mask)]
            if level > 0:
                branches.append(down_conv(features[level - 1], offset, mask))
            if level < len(features) - 1:
                coarse = features[level + 1]
                h, w = coarse.shape[-2:]
                if offset is None or mask is None:
                    off_c, mask_c = None, None
                elif self.coarse_offset_mode == "prefix":
                    off_c, mask_c = _prefix(offset, h, w), _prefix(mask, h, w)
                else:
                    off_c, mask_c = self._offsets(coarse)
                up = up_conv(coarse, off_c, mask_c)
                branches.append(_upsample(up, feature.shape[-2:], self.fast))
            outputs.append(self._combine(branches))
        return outputs

    def _combine(self, branches: list[Tensor]) -> Tensor:
        """Scale-attention-weighted mean of a level's 1-3 branches ``(B, C, H, W)``, then the activation.

        On the fast path with reduced-precision branches this arithmetic runs in fp32 and is rounded
        once at the end (DyReLU's ``x * a + b`` terms cancel: rounding every step cost a third of the
        bf16 logit error of the embedded model, see docs/speed.md); compiled, it fuses into one kernel.
        """
        dtype, kind = branches[0].dtype, branches[0].device.type
        reduced = self.fast and dtype != torch.float32 and torch.is_autocast_enabled(kind)
        with torch.autocast(kind, enabled=False) if reduced else nullcontext():
            if reduced:
                branches = [b.float() for b in branches]
            stacked = torch.stack(branches)
            if self.scale_attn is not None:
                attn = torch.stack([h_sigmoid(F.relu(self.scale_attn(F.adaptive_avg_pool2d(f, 1)))) for f in branches])
                stacked = stacked * attn
            out = self.act(stacked.mean(dim=0))
        return out.to(dtype) if reduced else out


class VLTowerBlock(nn.Module):
    """``fusion → text layer → DyConv``; fusion and text layer are absent in a GLIP-T(A) tower."""

    def __init__(self, fusion: FusionBlock | None, text_layer: ClampedBertLayer | None, dyconv: DyConv) -> None:
        super().__init__()
        self.fusion = fusion
        self.text_layer = text_layer
        self.dyconv = dyconv

    def forward(
        self,
        visual: list[Tensor],
        text: Tensor,
        text_mask: Tensor,
        pixel_mask: Tensor | None = None,
        causal: bool | Tensor = False,
    ) -> tuple[list[Tensor], Tensor]:
        """Visual maps ``(B, C, H_l, W_l)`` and text ``(B, T, D)`` → updated visual maps and text.

        ``causal`` (captioning; all rows, none, or a ``(batch,)`` bool tensor): the text attends
        causally and the image side does not read the text.
        """
        if self.fusion is not None:
            reads = ~causal if isinstance(causal, Tensor) else not causal
            visual, text = self.fusion(visual, text, text_mask, pixel_mask, image_reads_text=reads)
        if self.text_layer is not None:
            text = self.text_layer(text, text_mask, causal)
        return self.dyconv(visual), text


class VLTower(nn.Module):
    """The stack of :class:`VLTowerBlock` s (6 in GLIP-T, 8 in GLIP-L)."""

    def __init__(self, blocks: list[VLTowerBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.gradient_checkpointing = False

    def forward(
        self,
        visual: list[Tensor],
        text: Tensor,
        text_mask: Tensor,
        pixel_mask: Tensor | None = None,
        causal: bool | Tensor = False,
    ) -> tuple[list[Tensor], Tensor]:
        """Run all blocks; shapes are preserved (``causal``: see :class:`VLTowerBlock`)."""
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                n = len(visual)
                out = checkpoint(
                    partial(_flat_call, block, n, causal),
                    *visual,
                    text,
                    text_mask,
                    pixel_mask,
                    use_reentrant=False,
                )
                visual, text = list(out[:n]), out[n]
            else:
                visual, text = block(visual, text, text_mask, pixel_mask, causal)
        return visual, text

    def image_path(self, visual: list[Tensor]) -> list[tuple[list[Tensor], tuple[Tensor, Tensor] | None]]:
        """Captioning, once per image: per block, the visual keys its text side reads (None without
        fusion), the visual path being independent of the text (see :meth:`FusionBlock.image_side_only`).

        Returns:
            Per block ``(visual maps after the block, visual keys)``.
        """
        states = []
        for block in self.blocks:
            keys = None
            if block.fusion is not None:
                visual, keys = block.fusion.image_side_only(visual)
            visual = block.dyconv(visual)
            states.append((visual, keys))
        return states

    def text_path(self, keys: list[tuple[Tensor, Tensor] | None], text: Tensor, text_mask: Tensor) -> Tensor:
        """Captioning, per decoding step: the causal text path of every block on cached visual keys."""
        for block, block_keys in zip(self.blocks, keys, strict=True):
            if block.fusion is not None and block_keys is not None:
                text = block.fusion.text_side_only(block_keys, text)
            if block.text_layer is not None:
                text = block.text_layer(text, text_mask, causal=True)
        return text


def _flat_call(block: VLTowerBlock, n: int, causal: bool | Tensor, *args: Tensor) -> tuple[Tensor, ...]:
    visual, text, text_mask, pixel_mask = list(args[:n]), args[n], args[n + 1], args[n + 2]
    new_visual, new_text = block(visual, text, text_mask, pixel_mask, causal)
    return (*new_visual, new_text)


def level_pixel_mask(pixel_mask: Tensor, level_sizes: list[tuple[int, int]]) -> Tensor:
    """Validity of every pyramid pixel from the image's pixel mask.

    Args:
        pixel_mask: ``(B, H, W)`` bool, True where the padded image holds real pixels.
        level_sizes: ``(H_l, W_l)`` of each level.

    Returns:
        ``(B, sum_l H_l W_l)`` bool, flattened like :func:`glip.modeling.fusion.flatten_levels`.
    """
    maps = [F.interpolate(pixel_mask[:, None].float(), size=s, mode="nearest")[:, 0] > 0.5 for s in level_sizes]
    flat, _ = flatten_levels([m[:, None].float() for m in maps])
    return flat[..., 0] > 0.5
