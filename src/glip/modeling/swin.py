"""Swin Transformer body, the detection variant used by GLIP.

This computes what the official ``maskrcnn_benchmark/modeling/backbone/swint.py`` computes for the
``SWINT-FPN-RETINANET`` body, and its parameter/buffer names are the official ones under
``backbone.body.`` so that official weights load after stripping that prefix:

* patch embedding: the input is zero-padded bottom/right to a multiple of ``patch_size``, then a
  ``patch_size x patch_size`` conv (stride ``patch_size``) and a LayerNorm;
* every block zero-pads its (layer-normed) input bottom/right to a multiple of the window and does
  **not** mask the padding; odd blocks cyclically shift by ``window_size // 2`` and add ``-100`` to
  the logits of token pairs from different shift regions (also when the map is smaller than one
  window: the detection variant never turns the shift off);
* relative position bias, ``qkv`` with bias, no absolute position embedding, stochastic depth
  rising linearly from 0 to ``drop_path_rate`` over all blocks;
* patch merging zero-pads odd ``H``/``W`` at the bottom/right, concatenates the
  ``(even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col)`` samples,
  then LayerNorm(4C) and a bias-free Linear 4C -> 2C; the output grid is ``ceil(H/2) x ceil(W/2)``;
* each returned stage output (taken *before* its patch merging) goes through ``norm{i}``.

Feature-map sizes are ``ceil(H / stride)`` for strides 4, 8, 16, 32 of stages 0..3.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

logger = logging.getLogger(__name__)

# Logit added to token pairs that come from different regions of a cyclically shifted window.
SHIFT_MASK_VALUE = -100.0


class DropPath(nn.Module):
    """Stochastic depth: zero the whole residual branch of a sample with probability ``p``.

    Kept samples are scaled by ``1 / (1 - p)``; identity in eval mode or when ``p == 0``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(batch, ...)`` -> same shape."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2`` applied to the last dimension."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(..., dim)`` -> ``(..., dim)``."""
        return self.fc2(self.act(self.fc1(x)))


def relative_position_index(window_size: int) -> Tensor:
    """Index into the relative position bias table for every token pair of a window.

    Returns:
        ``(window_size**2, window_size**2)`` int64; entry ``[i, j]`` is
        ``(dy + w - 1) * (2w - 1) + (dx + w - 1)`` with ``(dy, dx)`` = position of ``i`` minus
        position of ``j`` (row-major token order).
    """
    w = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    return (rel[0] + w - 1) * (2 * w - 1) + (rel[1] + w - 1)


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """``(B, H, W, C)`` with ``H, W`` multiples of the window -> ``(B * nW, window_size**2, C)``.

    Windows are ordered image-major, then row-major over the window grid.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_reverse(windows: Tensor, window_size: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window_size**2, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(
    height: int, width: int, window_size: int, shift_size: int, device: torch.device | None = None
) -> Tensor:
    """Additive attention mask of the shifted windows of a padded ``height x width`` map.

    The (padded) map is split into 3 x 3 regions by the row/column bounds ``-window_size`` and
    ``-shift_size``; token pairs from different regions get :data:`SHIFT_MASK_VALUE`, others 0.

    Returns:
        ``(nW, window_size**2, window_size**2)`` float32 with ``nW = height*width / window_size**2``.
    """

    def region_ids(n: int) -> Tensor:
        ids = torch.zeros(n, dtype=torch.float32, device=device)
        ids[max(n - window_size, 0) :] = 1.0
        ids[max(n - shift_size, 0) :] = 2.0
        return ids

    labels = region_ids(height)[:, None] * 3.0 + region_ids(width)[None, :]
    windows = window_partition(labels[None, :, :, None], window_size).squeeze(-1)  # (nW, N)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, SHIFT_MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Persistent, as in the official model: its checkpoints carry this buffer, so loading them
        # reports no unexpected key (the values are recomputable and always identical).
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    relative_position_index: Tensor

    def relative_position_bias(self) -> Tensor:
        """``(num_heads, N, N)`` bias with ``N = window_size**2``."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend within each window.

        Args:
            x: ``(B * nW, N, C)`` window tokens, windows ordered image-major.
            mask: ``(nW, N, N)`` additive mask of the shifted windows, or None.

        Returns:
            ``(B * nW, N, C)``.
        """
        bw, n, c = x.shape
        h = self.num_heads
        qkv = self.qkv(x).view(bw, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B * nW, heads, N, head_dim)
        bias = self.relative_position_bias()[None]  # (1, heads, N, N)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        else:
            # Fold the windows into the head axis so the per-window mask broadcasts over images.
            nw = mask.shape[0]
            full = (bias + mask[:, None]).reshape(1, nw * h, n, n).to(q.dtype)
            q, k, v = (t.reshape(bw // nw, nw * h, n, -1) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=full).reshape(bw, h, n, -1)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """One (shifted) window attention block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size={shift_size} must be in [0, window_size={window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, height: int, width: int, attn_mask: Tensor | None) -> Tensor:
        """Apply the block.

        Args:
            x: ``(B, height * width, C)`` tokens, row-major.
            height, width: the token grid.
            attn_mask: ``(nW, N, N)`` mask of the padded grid (used only when shifted).

        Returns:
            ``(B, height * width, C)``.
        """
        b, length, c = x.shape
        ws, shift = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(b, height, width, c)
        pad_r = (ws - width % ws) % ws
        pad_b = (ws - height % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # zeros after the norm, never masked
        hp, wp = height + pad_b, width + pad_r
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = self.attn(window_partition(x, ws), mask=attn_mask if shift > 0 else None)
        x = window_reverse(windows, ws, hp, wp)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :height, :width, :].reshape(b, length, c)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halve the token grid and double the channels: ``(B, H*W, C)`` -> ``(B, ceil(H/2)*ceil(W/2), 2C)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """``x``: ``(B, height * width, C)`` row-major tokens -> ``(B, ceil(h/2) * ceil(w/2), 2C)``."""
        b, _, c = x.shape
        x = x.view(b, height, width, c)
        if height % 2 == 1 or width % 2 == 1:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: ``(B, 3, H, W)`` -> ``(B, C, ceil(H/p), ceil(W/p))``."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Zero-pad bottom/right to a multiple of the patch size, project, LayerNorm the channels."""
        p = self.patch_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SwinStage(nn.Module):
    """``depth`` blocks alternating plain and shifted windows, then an optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        downsample: bool,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                shift_size=0 if i % 2 == 0 else self.shift_size,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, int, int]:
        """Run the blocks and the merging.

        Args:
            x: ``(B, height * width, C)`` tokens.

        Returns:
            ``(stage_out (B, height*width, C), next_in, next_height, next_width)``; ``next_in`` is
            ``(B, ceil(h/2) * ceil(w/2), 2C)`` after patch merging, or ``stage_out`` for the last stage.
        """
        ws = self.window_size
        mask = None
        if self.shift_size > 0 and len(self.blocks) > 1:
            hp, wp = -(-height // ws) * ws, -(-width // ws) * ws
            mask = shifted_window_mask(hp, wp, ws, self.shift_size, device=x.device)
        for blk in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, height, width, mask, use_reentrant=False)
            else:
                x = blk(x, height, width, mask)
        if self.downsample is None:
            return x, x, height, width
        return x, self.downsample(x, height, width), (height + 1) // 2, (width + 1) // 2


class SwinTransformer(nn.Module):
    """Swin Transformer body returning the normed outputs of the stages in ``out_indices``.

    Args:
        embed_dim: channels of stage 0 (96 Swin-T, 192 Swin-L); stage ``i`` has ``embed_dim * 2**i``.
        depths: blocks per stage, e.g. ``(2, 2, 6, 2)``.
        num_heads: attention heads per stage, e.g. ``(3, 6, 12, 24)``.
        window_size: attention window side (7 Swin-T, 12 Swin-L).
        mlp_ratio: MLP hidden width / channels.
        patch_size: side of the patch embedding (stride of stage 0).
        drop_path_rate: stochastic depth of the last block (linear from 0 over all blocks).
        out_indices: stages returned, each through ``norm{i}`` (``norm0`` is an Identity, as in the
            official RETINANET variant). The default ``(1, 2, 3)`` gives C3, C4, C5.
        use_checkpoint: activation checkpointing per block while training.

    Attributes:
        out_channels: channels of each returned map.
        strides: stride of each returned map.
    """

    def __init__(
        self,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        mlp_ratio: float = 4.0,
        patch_size: int = 4,
        drop_path_rate: float = 0.2,
        out_indices: Sequence[int] = (1, 2, 3),
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths={tuple(depths)} and num_heads={tuple(num_heads)} differ in length")
        num_stages = len(depths)
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f"out_indices={tuple(out_indices)} must be stage indices in [0, {num_stages})")
        self.out_indices = tuple(out_indices)
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        dims = [embed_dim * 2**i for i in range(num_stages)]
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    dims[i],
                    depths[i],
                    num_heads[i],
                    window_size,
                    mlp_ratio,
                    drop_path=rates[start : start + depths[i]],
                    downsample=i < num_stages - 1,
                    use_checkpoint=use_checkpoint,
                )
            )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.Identity() if i == 0 else nn.LayerNorm(dims[i]))
        self.out_channels: list[int] = [dims[i] for i in self.out_indices]
        self.strides: list[int] = [patch_size * 2**i for i in self.out_indices]
        self.frozen_stages = -1
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Swin initialisation: truncated normal (std 0.02) Linear weights and bias tables, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def freeze_stages(self, frozen_stages: int) -> None:
        """Freeze early parts, with the official ``FREEZE_CONV_BODY_AT`` meaning.

        ``frozen_stages >= 0`` freezes the patch embedding; ``>= 2`` also stages
        ``0 .. frozen_stages - 2``. Frozen parts get ``requires_grad=False`` and stay in eval mode
        (no stochastic depth) across :meth:`train` calls. ``-1`` freezes nothing.
        """
        self.frozen_stages = frozen_stages
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        modules: list[nn.Module] = []
        if self.frozen_stages >= 0:
            modules.append(self.patch_embed)
        if self.frozen_stages >= 2:
            modules.extend(self.layers[i] for i in range(self.frozen_stages - 1))
        return modules

    def train(self, mode: bool = True) -> SwinTransformer:
        """Set the mode, keeping frozen stages in eval mode."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        """Compute the stage outputs.

        Args:
            x: ``(B, 3, H, W)`` normalised pixels.

        Returns:
            One ``(B, out_channels[k], ceil(H / strides[k]), ceil(W / strides[k]))`` map per entry
            of ``out_indices`` (C3, C4, C5 by default).
        """
        x = self.patch_embed(x)
        b, _, height, width = x.shape
        x = x.flatten(2).transpose(1, 2)
        outs: list[Tensor] = []
        last = max(self.out_indices)
        for i, layer in enumerate(self.layers):
            if i > last:
                break
            out, x, next_h, next_w = layer(x, height, width)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs.append(out.view(b, height, width, -1).permute(0, 3, 1, 2).contiguous())
            height, width = next_h, next_w
        return outs
