"""The language self-attention layer inside the VL tower (a BERT encoder layer with fp16 clamps).

After each fusion block GLIP runs one freshly initialised BERT layer over the fused tokens. It is
stock post-LN BERT (multi-head self-attention, GELU feed-forward) except that, as in the official
code, attention scores are clamped (after the ``1/sqrt(d)`` scaling, before the mask is added), the
feed-forward activations are clamped before and after GELU, and the output projection is clamped
before the residual + LayerNorm and after it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN


def attention_allowed(attention_mask: Tensor, causal: bool | Tensor = False) -> Tensor:
    """Which keys each query may attend to, as a boolean mask for ``(B, heads, T_q, T_k)`` scores.

    Args:
        attention_mask: ``(batch, tokens)``, 1 for real tokens and 0 for padding.
        causal: also hide every later token (a token sees itself and the tokens before it): for every
            row (True), none (False), or per row (a ``(batch,)`` bool tensor, for batches that mix
            captions with other prompts).

    Returns:
        ``(batch, 1, 1, tokens)`` without ``causal``, ``(batch, 1, tokens, tokens)`` with it.
    """
    keys = (attention_mask > 0)[:, None, None, :]
    if isinstance(causal, bool) and not causal:
        return keys
    t = attention_mask.shape[-1]
    lower = torch.ones(t, t, dtype=torch.bool, device=attention_mask.device).tril()[None, None]
    if isinstance(causal, Tensor):
        lower = lower | ~causal.to(attention_mask.device)[:, None, None, None]
    return keys & lower


class ClampedBertLayer(nn.Module):
    """One BERT encoder layer with the official overflow clamps.

    Args:
        hidden_size: token width (768 for BERT-base).
        num_heads: attention heads.
        intermediate_size: feed-forward width.
        layer_norm_eps: LayerNorm epsilon (1e-12 in BERT).
        hidden_act: activation name understood by ``transformers.activations.ACT2FN``.
        dropout: hidden-state dropout; attention_dropout: attention-probability dropout.
        clamp_value: clamp bound, or None for no clamping.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        layer_norm_eps: float = 1e-12,
        hidden_act: str = "gelu",
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        clamp_value: float | None = 50000.0,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} is not a multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.clamp_value = clamp_value
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = nn.Dropout(attention_dropout)
        self.attn_out = nn.Linear(hidden_size, hidden_size)
        self.attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn_in = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]
        self.ffn_out = nn.Linear(intermediate_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        # Fast path (inference): fused attention kernel; the score clamp (overflow only) is skipped.
        self.fast = False

    def _clamp(self, x: Tensor) -> Tensor:
        if self.clamp_value is None:
            return x
        return x.clamp(min=-self.clamp_value, max=self.clamp_value)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: Tensor, attention_mask: Tensor, causal: bool | Tensor = False) -> Tensor:
        """Self-attention + feed-forward.

        Args:
            hidden: ``(batch, tokens, hidden_size)``.
            attention_mask: ``(batch, tokens)`` with 1 for real tokens and 0 for padding.
            causal: each token attends only to itself and the tokens before it (captioning): all rows,
                none, or a ``(batch,)`` bool tensor.

        Returns:
            ``(batch, tokens, hidden_size)``.
        """
        b, t, c = hidden.shape
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(hidden)), self._heads(self.value(hidden))
        attend = attention_allowed(attention_mask, causal)  # (B, 1, 1 or T, T)
        if self.fast and not self.training:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend).transpose(1, 2).reshape(b, t, c)
        else:
            scores = self._clamp((q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim))
            # Same additive mask as transformers' get_extended_attention_mask: 0 or the dtype's minimum.
            additive = (~attend).to(scores.dtype) * torch.finfo(scores.dtype).min
            probs = self.attn_dropout((scores + additive).softmax(dim=-1))
            context = (probs @ v).transpose(1, 2).reshape(b, t, c)
        attn = self.attn_norm(self.dropout(self.attn_out(context)) + hidden)

        inter = self._clamp(self.act(self._clamp(self.ffn_in(attn))))
        out = self._clamp(self.dropout(self.ffn_out(inter)))
        return self._clamp(self.ffn_norm(out + attn))
