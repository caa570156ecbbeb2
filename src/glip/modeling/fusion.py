"""Bidirectional image<->text cross-attention (GLIP's deep fusion block, "MHA-B").

One block attends every pixel of every pyramid level to the prompt's tokens (image side) and
every token to all pixels (text side), with shared attention scores:

    v, l = LN_v(V), LN_l(L)
    S    = (W_q v / sqrt(d)) (W_k l)^T                       (batch, heads, pixels, tokens)
    dV   = W_ov( softmax_tokens(S + text_mask) (W_vl l) )
    dL   = W_ol( softmax_pixels(S^T - max)     (W_vv v) )
    V', L' = v + gamma_v * dV,  l + gamma_l * dL              (official: residual on the *normed* input)

Official quirks kept (see :class:`glip.config.TowerConfig`): the residual is added to the
layer-normed inputs, scores are clamped to +-50000, the text->image softmax is unmasked (all pixels
of all levels, padding included), and the text mask adds ``+1`` to valid tokens' scores and
``-9e15`` to padded ones (the ``+1`` cancels in the softmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def flatten_levels(features: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
    """Concatenate pyramid levels into one sequence.

    Args:
        features: ``L`` maps of shape ``(batch, channels, H_l, W_l)``.

    Returns:
        ``(batch, sum_l H_l * W_l, channels)`` (row-major per level, P3 first) and the level sizes.
    """
    sizes = [(f.shape[-2], f.shape[-1]) for f in features]
    flat = torch.cat([f.flatten(2) for f in features], dim=2).transpose(1, 2)
    return flat, sizes


def split_levels(flat: Tensor, sizes: list[tuple[int, int]]) -> list[Tensor]:
    """Inverse of :func:`flatten_levels`: ``(batch, N, C)`` → ``L`` maps ``(batch, C, H_l, W_l)``."""
    b, _, c = flat.shape
    chunks = torch.split(flat.transpose(1, 2), [h * w for h, w in sizes], dim=2)
    return [x.reshape(b, c, h, w) for x, (h, w) in zip(chunks, sizes, strict=True)]


class BiMultiHeadAttention(nn.Module):
    """Multi-head attention whose scores are shared by the image→text and text→image directions."""

    def __init__(
        self,
        visual_dim: int,
        text_dim: int,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.1,
        clamp_value: float | None = 50000.0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not a multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = dropout
        self.clamp_value = clamp_value
        # Fast path (inference): both softmaxes through fused scaled_dot_product_attention kernels.
        # Identical in exact arithmetic (the max-subtraction and the +1 on valid tokens cancel in the
        # softmax); only the +-50000 clamps, which bind only on overflow, are skipped.
        self.fast = False
        self.v_proj = nn.Linear(visual_dim, embed_dim)
        self.l_proj = nn.Linear(text_dim, embed_dim)
        self.values_v_proj = nn.Linear(visual_dim, embed_dim)
        self.values_l_proj = nn.Linear(text_dim, embed_dim)
        self.out_v_proj = nn.Linear(embed_dim, visual_dim)
        self.out_l_proj = nn.Linear(embed_dim, text_dim)
        for lin in (self.v_proj, self.l_proj, self.values_v_proj, self.values_l_proj, self.out_v_proj, self.out_l_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: Tensor) -> Tensor:
        b, _, n, _ = x.shape
        return x.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)

    def _clamp(self, x: Tensor) -> Tensor:
        if self.clamp_value is None:
            return x
        return x.clamp(min=-self.clamp_value, max=self.clamp_value)

    def _fused(
        self, q: Tensor, k: Tensor, values_v: Tensor, values_l: Tensor, text_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Both directions with ``scaled_dot_product_attention`` (``q`` is already scaled)."""
        attend = None if text_mask is None else (text_mask > 0)[:, None, None, :]  # (B, 1, 1, T)
        out_v = F.scaled_dot_product_attention(q, k, values_l, attn_mask=attend, scale=1.0)
        out_l = F.scaled_dot_product_attention(k, q, values_v, scale=1.0)  # text -> all pixels, unmasked
        return self.out_v_proj(self._merge(out_v)), self.out_l_proj(self._merge(out_l))

    def text_side(self, visual_keys: tuple[Tensor, Tensor], t: Tensor) -> Tensor:
        """Only the text→image direction: ``delta_l (batch, tokens, text_dim)`` (captioning).

        Args:
            visual_keys: :meth:`visual_keys` of the normed visual sequence (computed once per image).
            t: ``(batch, tokens, text_dim)`` normed token features.
        """
        q, values_v = visual_keys
        k = self._heads(self.l_proj(t))
        if self.fast and not self.training:
            out_l = F.scaled_dot_product_attention(k, q, values_v, scale=1.0)
            return self.out_l_proj(self._merge(out_l))
        scores_l = self._clamp(k @ q.transpose(-1, -2))  # (B, h, T, N)
        scores_l = self._clamp(scores_l - scores_l.amax(dim=-1, keepdim=True))
        probs_l = F.dropout(scores_l.softmax(dim=-1), p=self.dropout, training=self.training)
        return self.out_l_proj(self._merge(probs_l @ values_v))

    def visual_keys(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """The scaled queries and the values of a normed visual sequence ``(batch, pixels, visual_dim)``:
        what the text side reads; ``(B, heads, N, d)`` each."""
        return self._heads(self.v_proj(v) * self.scale), self._heads(self.values_v_proj(v))

    def forward(
        self, v: Tensor, t: Tensor, text_mask: Tensor | None = None, pixel_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend both ways.

        Args:
            v: ``(batch, pixels, visual_dim)`` normed visual sequence.
            t: ``(batch, tokens, text_dim)`` normed token features.
            text_mask: ``(batch, tokens)``, 1 for real tokens, 0 for padding (masks image→text only).
            pixel_mask: ``(batch, pixels)`` bool, True for real pixels. Only given when the
                text→image softmax is to be masked (off in the official model).

        Returns:
            ``delta_v (batch, pixels, visual_dim)`` and ``delta_l (batch, tokens, text_dim)``.
        """
        q = self._heads(self.v_proj(v) * self.scale)  # (B, h, N, d)
        k = self._heads(self.l_proj(t))  # (B, h, T, d)
        values_v = self._heads(self.values_v_proj(v))
        values_l = self._heads(self.values_l_proj(t))

        if self.fast and not self.training and pixel_mask is None:
            return self._fused(q, k, values_v, values_l, text_mask)

        scores = self._clamp(q @ k.transpose(-1, -2))  # (B, h, N, T)

        scores_l = scores.transpose(-1, -2)  # (B, h, T, N)
        scores_l = self._clamp(scores_l - scores_l.amax(dim=-1, keepdim=True))
        if pixel_mask is not None:
            scores_l = scores_l.masked_fill(~pixel_mask[:, None, None, :], float("-inf"))
        probs_l = scores_l.softmax(dim=-1)

        if text_mask is not None:
            # Official: the mask tensor itself (1 for valid) is added after its zeros became -9e15.
            additive = text_mask.to(scores.dtype).masked_fill(text_mask == 0, -9e15)
            scores = scores + additive[:, None, None, :]
        probs_v = scores.softmax(dim=-1)

        probs_v = F.dropout(probs_v, p=self.dropout, training=self.training)
        probs_l = F.dropout(probs_l, p=self.dropout, training=self.training)

        delta_v = self.out_v_proj(self._merge(probs_v @ values_l))
        delta_l = self.out_l_proj(self._merge(probs_l @ values_v))
        return delta_v, delta_l


class FusionBlock(nn.Module):
    """Layer-normed bidirectional attention with layer-scaled residuals over all pyramid levels."""

    def __init__(
        self,
        visual_dim: int,
        text_dim: int,
        embed_dim: int = 2048,
        num_heads: int = 8,
        dropout: float = 0.1,
        layer_scale_init: float = 1.0 / 6,
        clamp_value: float | None = 50000.0,
        residual_on_normed: bool = True,
    ) -> None:
        super().__init__()
        self.layer_norm_v = nn.LayerNorm(visual_dim)
        self.layer_norm_l = nn.LayerNorm(text_dim)
        self.attn = BiMultiHeadAttention(visual_dim, text_dim, embed_dim, num_heads, dropout, clamp_value)
        self.gamma_v = nn.Parameter(torch.full((visual_dim,), layer_scale_init))
        self.gamma_l = nn.Parameter(torch.full((text_dim,), layer_scale_init))
        self.residual_on_normed = residual_on_normed

    def forward(
        self,
        visual: list[Tensor],
        text: Tensor,
        text_mask: Tensor | None,
        pixel_mask: Tensor | None = None,
        image_reads_text: bool | Tensor = True,
    ) -> tuple[list[Tensor], Tensor]:
        """Fuse.

        Args:
            visual: ``L`` maps ``(batch, visual_dim, H_l, W_l)``.
            text: ``(batch, tokens, text_dim)``.
            text_mask: ``(batch, tokens)`` attention mask of the prompt.
            pixel_mask: optional ``(batch, sum_l H_l W_l)`` bool validity of each pixel.
            image_reads_text: False for captioning: the image side gets no update from the text
                (so the image features do not depend on the text and can be computed once), the text
                side still reads the image; or a ``(batch,)`` bool tensor, per row.

        Returns:
            The fused maps (same shapes as ``visual``) and the fused text ``(batch, tokens, text_dim)``.
        """
        if image_reads_text is False:
            new_visual, keys = self.image_side_only(visual)
            return new_visual, self.text_side_only(keys, text)
        flat, sizes = flatten_levels(visual)
        v, t = self.layer_norm_v(flat), self.layer_norm_l(text)
        base_v, base_l = (v, t) if self.residual_on_normed else (flat, text)
        delta_v, delta_l = self.attn(v, t, text_mask, pixel_mask)
        if isinstance(image_reads_text, Tensor):  # caption rows: no update of the image from the text
            delta_v = delta_v * image_reads_text.to(delta_v.dtype)[:, None, None]
        new_v = base_v + self.gamma_v * delta_v
        new_l = base_l + self.gamma_l * delta_l
        return split_levels(new_v, sizes), new_l

    def image_side_only(self, visual: list[Tensor]) -> tuple[list[Tensor], tuple[Tensor, Tensor]]:
        """Captioning, once per image: the block's visual output (no text update) and the visual keys
        the text side reads (:meth:`BiMultiHeadAttention.visual_keys`)."""
        flat, sizes = flatten_levels(visual)
        v = self.layer_norm_v(flat)
        return split_levels(v if self.residual_on_normed else flat, sizes), self.attn.visual_keys(v)

    def text_side_only(self, visual_keys: tuple[Tensor, Tensor], text: Tensor) -> Tensor:
        """Captioning, per decoding step: the fused text from cached visual keys."""
        t = self.layer_norm_l(text)
        base = t if self.residual_on_normed else text
        return base + self.gamma_l * self.attn.text_side(visual_keys, t)
