"""Caption decoding: greedy and beam search over a model whose image features are computed once.

When captioning, the image side of the tower does not read the text (see
:meth:`glip.modeling.fusion.FusionBlock.forward`), so the whole visual path — backbone, FPN, every
block's DyConv and the visual keys each fusion block's text side attends to — is computed once per
image (:func:`encode_image_for_captions`). Each decoding step runs only the causal text path: the text
encoder, then per block the text→image attention on the cached keys and the causal text layer
(:func:`next_token_logprobs`).

:func:`beam_search` is independent of the model: it takes a function from the ``(K, t)`` prefixes to
``(K, V)`` log-probabilities of the next token, so it is tested on a toy language model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

StepFn = Callable[[Tensor], Tensor]


@dataclass
class CaptionImageState:
    """What decoding reuses at every step, for one image.

    Attributes:
        tower_features: the tower's output maps ``(1, C, H_l, W_l)`` (for grounding the caption).
        keys: per tower block, the visual keys its fusion's text side reads (None without fusion).
    """

    tower_features: list[Tensor]
    keys: list[tuple[Tensor, Tensor] | None]

    def expand(self, k: int) -> list[tuple[Tensor, Tensor] | None]:
        """The keys for ``k`` hypotheses of the same image (views, no copy)."""
        return [None if kv is None else (kv[0].expand(k, -1, -1, -1), kv[1].expand(k, -1, -1, -1)) for kv in self.keys]


def encode_image_for_captions(model: torch.nn.Module, pixel_values: Tensor) -> CaptionImageState:
    """Backbone, FPN and the tower's visual path of one image ``(1, 3, H, W)``, computed once."""
    states = model.tower.image_path(model.encode_image(pixel_values))  # type: ignore[attr-defined,operator]
    return CaptionImageState(states[-1][0], [keys for _, keys in states])


def next_token_logprobs(
    model: torch.nn.Module, state: CaptionImageState, input_ids: Tensor, attention_mask: Tensor
) -> Tensor:
    """``(K, V)`` log-probabilities of the token after each prefix ``(K, t)`` (all real tokens)."""
    text = model.encode_text(input_ids, attention_mask, causal=True)  # type: ignore[attr-defined,operator]
    fused = model.tower.text_path(state.expand(input_ids.shape[0]), text.hidden, attention_mask)  # type: ignore[attr-defined,operator]
    logits = model.caption_head(fused[:, -1:], model.decoder_weight())  # type: ignore[attr-defined,operator]
    return logits[:, 0].float().log_softmax(dim=-1)


def greedy_search(step: StepFn, bos: int, eos: int, max_length: int, banned: Sequence[int] = ()) -> list[int]:
    """The most probable next token at each step, from ``[bos]`` until ``eos`` or ``max_length`` tokens.

    Returns:
        The generated tokens after ``bos`` (``eos`` included when it was produced).
    """
    tokens = [bos]
    for _ in range(max_length):
        logprobs = step(torch.tensor([tokens])).squeeze(0)
        if banned:
            logprobs[list(banned)] = float("-inf")
        token = int(logprobs.argmax())
        tokens.append(token)
        if token == eos:
            break
    return tokens[1:]


def length_normalised(score: float, length: int, length_penalty: float) -> float:
    """Beam score: summed log-probability divided by ``length ** length_penalty`` (0: plain sum)."""
    return score / (max(length, 1) ** length_penalty) if length_penalty else score


def beam_search(
    step: StepFn,
    bos: int,
    eos: int,
    beam_size: int,
    max_length: int,
    length_penalty: float = 1.0,
    banned: Sequence[int] = (),
) -> list[tuple[list[int], float]]:
    """Beam search with a length penalty.

    Every step extends each live hypothesis by its ``beam_size`` best tokens and keeps the
    ``beam_size`` best extensions by summed log-probability; a hypothesis that produces ``eos`` is
    finished. Decoding stops when ``beam_size`` hypotheses are finished and no live one can still
    beat the worst of them, or after ``max_length`` tokens (live hypotheses then count as finished).

    Args:
        step: ``(K, t)`` prefixes (``bos`` first) → ``(K, V)`` next-token log-probabilities.
        bos, eos: start and end tokens; banned: tokens never generated.
        length_penalty: ranking by ``logprob / length ** length_penalty`` (length counts ``eos``).

    Returns:
        ``(tokens after bos, normalised score)``, best first (at most ``beam_size``).
    """
    live: list[tuple[list[int], float]] = [([bos], 0.0)]
    finished: list[tuple[list[int], float]] = []
    for _ in range(max_length):
        logprobs = step(torch.tensor([seq for seq, _ in live]))  # (K, V)
        if banned:
            logprobs[:, list(banned)] = float("-inf")
        top = logprobs.topk(min(beam_size, logprobs.shape[-1]), dim=-1)
        candidates = [
            ([*seq, int(tok)], score + float(lp))
            for (seq, score), lps, toks in zip(live, top.values, top.indices, strict=True)
            for lp, tok in zip(lps.tolist(), toks.tolist(), strict=True)
            if lp != float("-inf")
        ]
        candidates.sort(key=lambda c: c[1], reverse=True)
        live = []
        for seq, score in candidates:
            if seq[-1] == eos:
                finished.append((seq, length_normalised(score, len(seq) - 1, length_penalty)))
            else:
                live.append((seq, score))
            if len(live) == beam_size:
                break
        finished.sort(key=lambda c: c[1], reverse=True)
        finished = finished[:beam_size]
        if not live or (len(finished) == beam_size and _cannot_improve(live, finished, length_penalty, max_length)):
            break
    finished += [(seq, length_normalised(score, len(seq) - 1, length_penalty)) for seq, score in live]
    finished.sort(key=lambda c: c[1], reverse=True)
    return [(seq[1:], score) for seq, score in finished[:beam_size]]


def _cannot_improve(
    live: list[tuple[list[int], float]], finished: list[tuple[list[int], float]], penalty: float, max_length: int
) -> bool:
    """No live hypothesis can end above the worst finished one (log-probabilities only decrease)."""
    worst = finished[-1][1]
    best_live = max(score for _, score in live)
    # the most favourable normalisation a live hypothesis can still get: the longest length (score < 0)
    return length_normalised(best_live, max_length, penalty) < worst


__all__ = [
    "CaptionImageState",
    "beam_search",
    "encode_image_for_captions",
    "greedy_search",
    "length_normalised",
    "next_token_logprobs",
]
