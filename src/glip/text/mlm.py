"""Token masking for GLIPv2's masked-language-model loss (data side, before the model).

Reproduces the official ``random_word`` (``modeling/detector/generalized_vl_rcnn.py``): every
non-padding token is selected with probability ``p`` (0.15); a selected token becomes ``[MASK]``
with probability 0.8, a uniformly random vocabulary id with probability 0.1, and stays unchanged
otherwise; its label is its original id, every other label is ``-100``. As in the official code a
single uniform draw ``u`` per token decides both steps (selected when ``u < p``; then ``u / p``
below 0.8 masks, below 0.9 randomises).

**Special tokens.** The official function masks ``[CLS]`` and ``[SEP]`` like any other token (only
padding is exempt). Pass ``special_ids=()`` to reproduce that; pass the tokenizer's
``all_special_ids`` to exempt them as BERT pre-training does.

**Greenlight map** (official ``MLM_LOSS_FOR_ONLY_POSITIVES``, on by default there): per token ``1`` =
may be masked and is scored, ``0`` = may be masked but is not scored (label ``-100``), ``-1`` = never
masked (whole detection captions with ``NO_MASK_FOR_OD``). :func:`greenlight_map` builds it.

Unlike the official loop over Python's global ``random``, this is vectorised, pure (the input is
not modified) and reproducible from a ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import Tensor

IGNORE_INDEX = -100


def greenlight_map(token_ids: Sequence[Sequence[int]], num_tokens: int, forbid_masking: bool = False) -> Tensor:
    """Per-token MLM permission of one prompt (official ``create_greenlight_map``).

    Args:
        token_ids: token positions whose words are scored, grouped by span. The official datasets
            give the spans of the class names present in the image for detection prompts, and the
            whole caption (``[(0, len(caption))]``) for grounding and caption data;
            :func:`glip.text.spans_to_token_ids` turns such character spans into positions.
        num_tokens: length ``T`` of the map (the padded prompt length).
        forbid_masking: every token ``-1`` (official ``NO_MASK_FOR_OD`` on detection data).

    Returns:
        ``(T,)`` float32: 1 at the listed positions inside ``[0, T)``, 0 elsewhere; all -1 when
        ``forbid_masking``.
    """
    out = torch.zeros(num_tokens, dtype=torch.float32)
    if forbid_masking:
        return out.fill_(-1.0)
    for group in token_ids:
        for t in group:
            if 0 <= t < num_tokens:
                out[t] = 1.0
    return out


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    vocab_size: int,
    mask_token_id: int,
    special_ids: Collection[int],
    probability: float = 0.15,
    generator: torch.Generator | None = None,
    greenlight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT-style 80/10/10 masking of a batch of prompts.

    Args:
        input_ids: ``(B, T)`` int64 token ids.
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding (padding is never masked).
        vocab_size: random replacements are drawn uniformly from ``[0, vocab_size)`` (the official
            draws from every id of the tokenizer's vocabulary, special ids included).
        mask_token_id: id of ``[MASK]``.
        special_ids: ids that are never masked; empty reproduces the official behaviour.
        probability: selection probability ``p`` of a token (official 0.15).
        generator: CPU generator for reproducible masks (the global RNG when None).
        greenlight: optional ``(B, T')`` map with values 1 / 0 / -1 (see the module docstring);
            cut or padded with 0 to ``T``.

    Returns:
        ``masked_ids (B, T)`` (a new tensor) and ``labels (B, T)``: the original id at selected,
        scored positions, ``-100`` elsewhere.
    """
    if not 0.0 <= probability < 1.0:
        raise ValueError(f"probability={probability} must be in [0, 1)")
    shape, device = input_ids.shape, input_ids.device
    draw = torch.rand(shape, generator=generator).to(device)
    random_ids = torch.randint(vocab_size, shape, generator=generator, dtype=input_ids.dtype).to(device)
    eligible = attention_mask.to(device) > 0
    if special_ids:
        eligible &= ~torch.isin(input_ids, torch.as_tensor(list(special_ids), dtype=input_ids.dtype, device=device))
    scored = torch.ones(shape, dtype=torch.bool, device=device)
    if greenlight is not None:
        g = greenlight.to(device)
        if g.shape[-1] >= shape[-1]:
            g = g[..., : shape[-1]]
        else:
            g = torch.cat((g, g.new_zeros((*g.shape[:-1], shape[-1] - g.shape[-1]))), dim=-1)
        eligible &= g != -1
        scored = g == 1
    selected = eligible & (draw < probability)
    ratio = draw / probability if probability > 0 else torch.ones_like(draw)
    masked_ids = torch.where(selected & (ratio < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    masked_ids = torch.where(selected & (ratio >= 0.8) & (ratio < 0.9), random_ids, masked_ids)
    labels = torch.where(selected & scored, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked_ids, labels
