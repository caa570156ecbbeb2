"""GLIPv2 understanding heads on the fused text features ``P``: grounded VQA and captioning.

* :class:`VQAHead` — attention pooling over the real tokens (a linear score per token, softmax over
  the tokens the attention mask keeps, weighted sum) → 2-layer MLP with GELU → one logit per answer
  of the vocabulary; trained with binary cross-entropy against soft answer scores
  (:func:`vqa_loss`). The question carries an appended ``[MASK]`` token: the grounding head's
  region-word logits at that token box the answer entity (the data pipeline puts the answer's boxes
  on it), so VQA and grounding share every weight of the trunk.
* :class:`CaptionLMHead` — BERT's prediction transform (dense → activation → LayerNorm) and a
  decoder whose weight is passed in: the MLM decoder when the model has one, else the text
  encoder's word embeddings (tied, as BERT ties its LM head), so the head adds only ``O(D^2 + V)``
  parameters; trained with teacher-forced cross-entropy (:func:`caption_loss`) on the causally
  fused text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN


class VQAHead(nn.Module):
    """Answer scores from the fused text.

    Args:
        text_dim: width ``D`` of the fused text.
        num_answers: answers in the vocabulary ``A``.
        hidden_dim: MLP width (0: ``2 D``).
        dropout: dropout before the last linear layer.
    """

    def __init__(self, text_dim: int, num_answers: int, hidden_dim: int = 0, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = hidden_dim or 2 * text_dim
        self.pool_score = nn.Linear(text_dim, 1)
        self.mlp = nn.Sequential(
            nn.Linear(text_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, text_dim)
        )
        self.classifier = nn.Linear(text_dim, num_answers)

    def pool(self, text: Tensor, attention_mask: Tensor) -> Tensor:
        """Attention pooling: ``(B, T, D)`` text and ``(B, T)`` mask → ``(B, D)``; padding gets weight 0."""
        scores = self.pool_score(text).squeeze(-1).float()  # (B, T)
        scores = scores.masked_fill(attention_mask <= 0, float("-inf"))
        weights = scores.softmax(dim=-1).to(text.dtype)
        return torch.einsum("bt,btd->bd", weights, text)

    def forward(self, text: Tensor, attention_mask: Tensor) -> Tensor:
        """``(B, T, D)`` fused text, ``(B, T)`` attention mask → ``(B, A)`` answer logits."""
        return self.classifier(self.mlp(self.pool(text, attention_mask)))


class CaptionLMHead(nn.Module):
    """Next-token logits from the causally fused text, with a decoder weight given at call time.

    Args:
        text_dim: width ``D``; vocab_size: ``V``; layer_norm_eps, hidden_act: as the text encoder's.
    """

    def __init__(self, text_dim: int, vocab_size: int, layer_norm_eps: float = 1e-12, hidden_act: str = "gelu") -> None:
        super().__init__()
        self.dense = nn.Linear(text_dim, text_dim)
        self.act = ACT2FN[hidden_act]
        self.norm = nn.LayerNorm(text_dim, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, text: Tensor, decoder_weight: Tensor) -> Tensor:
        """``(B, T, D)`` text and the ``(V, D)`` decoder weight → ``(B, T, V)`` logits."""
        hidden = self.norm(self.act(self.dense(text)))
        return F.linear(hidden, decoder_weight.to(hidden.dtype), self.bias.to(hidden.dtype))


def vqa_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy of ``(B, A)`` logits against ``(B, A)`` soft scores in [0, 1], summed over
    answers and averaged over questions (the usual VQA convention, which scales with the vocabulary)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum") / max(
        logits.shape[0], 1
    )


def caption_loss(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Teacher-forced cross-entropy: position ``t`` predicts token ``t + 1``.

    Args:
        logits: ``(B, T, V)`` from :class:`CaptionLMHead`.
        input_ids: ``(B, T)`` the caption tokens (``[CLS] words [SEP]`` and padding).
        attention_mask: ``(B, T)``; padded positions are neither inputs nor targets.

    Returns:
        Mean cross-entropy over the predicted tokens (0 when there are none).
    """
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] <= 0, -100)
    pred = logits[:, :-1].float()
    if not bool((targets != -100).any()):
        return pred.sum() * 0.0
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets.reshape(-1), ignore_index=-100)


__all__ = ["CaptionLMHead", "VQAHead", "caption_loss", "vqa_loss"]
