"""GLIP's output head: box regression, centerness and region-word dot-product logits.

For every location ``i`` of every level and every token ``t``:

    e_t      = L2norm(text_t)                                   (batch, tokens, text_dim)
    tok_t    = W e_t * text_input_scale + b                     (batch, tokens, channels)
    logit_it = <q_i, tok_t> / exp(log_scale) + <e_t, bias_lang> + bias0,   clamped to +-50000

where ``q_i`` is the raw (not normalised) tower feature of the location. Logits exist for every
token slot, padding included; only the tokens of a phrase are read when scoring it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glip.modeling.fusion import flatten_levels


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level for the box deltas)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init_value]))

    def forward(self, x: Tensor) -> Tensor:
        """Any shape → same shape."""
        return x * self.scale


class GLIPHead(nn.Module):
    """Box, centerness and grounding-logit predictors shared across levels.

    Args:
        channels: tower width.
        text_dim: width of the text features.
        num_levels: pyramid levels (5).
        prior_prob: initial foreground probability, sets ``bias0 = -log((1 - p) / p)``.
        log_scale_init: initial logit temperature (log).
        text_input_scale: factor applied to the normalised text before projection (0.5).
        clamp_value: clamp of the logits, or None.
    """

    def __init__(
        self,
        channels: int,
        text_dim: int,
        num_levels: int = 5,
        prior_prob: float = 0.01,
        log_scale_init: float = 0.0,
        text_input_scale: float = 0.5,
        clamp_value: float | None = 50000.0,
    ) -> None:
        super().__init__()
        self.bbox_pred = nn.Conv2d(channels, 4, kernel_size=1)
        self.centerness = nn.Conv2d(channels, 1, kernel_size=1)
        for conv in (self.bbox_pred, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])
        self.text_proj = nn.Linear(text_dim, channels)
        self.log_scale = nn.Parameter(torch.tensor([log_scale_init]))
        self.bias_lang = nn.Parameter(torch.zeros(text_dim))
        self.bias0 = nn.Parameter(torch.tensor([-math.log((1.0 - prior_prob) / prior_prob)]))
        self.text_input_scale = text_input_scale
        self.clamp_value = clamp_value
        # Set by GLIPModel.enable_fast_path: under autocast the text queries and the logits are formed in
        # fp32 (a bf16 logit near bias0 ~ -4.6 is only resolved to 0.03; the GEMM is a small share of the work)
        self.fast = False

    def _fp32(self, x: Tensor) -> bool:
        """Fast path under autocast: form this step in fp32 (a model cast to half as a whole stays as it is)."""
        return self.fast and torch.is_autocast_enabled(x.device.type)

    def box_outputs(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Box deltas and centerness logits of every location.

        Args:
            features: ``L`` tower maps ``(batch, channels, H_l, W_l)``.

        Returns:
            ``box_regression (batch, N, 4)`` and ``centerness (batch, N)``, ``N = sum_l H_l W_l``.
        """
        boxes = [scale(self.bbox_pred(f)) for f, scale in zip(features, self.scales, strict=True)]
        ctr = [self.centerness(f) for f in features]
        return flatten_levels(boxes)[0], flatten_levels(ctr)[0][..., 0]

    def text_queries(self, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project the text once (reusable across images and pyramid levels).

        Args:
            text: ``(batch, tokens, text_dim)`` text features.

        Returns:
            ``normalised (batch, tokens, text_dim)``, ``projected (batch, tokens, channels)`` and
            ``bias (batch, tokens)``.
        """
        if self._fp32(text):
            with torch.autocast(text.device.type, enabled=False):
                return self.text_queries(text.float())
        emb = F.normalize(text, p=2, dim=-1)
        proj = self.text_proj(emb * self.text_input_scale)
        bias = emb @ self.bias_lang + self.bias0
        return emb, proj, bias

    def grounding_logits(self, features: list[Tensor], proj: Tensor, bias: Tensor) -> Tensor:
        """Region-word logits.

        Args:
            features: ``L`` tower maps ``(batch, channels, H_l, W_l)``.
            proj, bias: from :meth:`text_queries`.

        Returns:
            ``(batch, N, tokens)`` logits.
        """
        if self._fp32(features[0]):
            with torch.autocast(features[0].device.type, enabled=False):
                return self.grounding_logits([f.float() for f in features], proj.float(), bias.float())
        queries, _ = flatten_levels(features)
        logits = (queries @ proj.transpose(-1, -2)) / self.log_scale.exp() + bias[:, None, :]
        if self.clamp_value is not None:
            logits = logits.clamp(min=-self.clamp_value, max=self.clamp_value)
        return logits
