"""Caption decoding: beam search on a toy language model with a known best sequence, greedy search,
and the cached-image decoding of a tiny captioning model against its full forward pass."""

import math

import pytest
import torch

from glip.generation import (
    beam_search,
    encode_image_for_captions,
    greedy_search,
    length_normalised,
    next_token_logprobs,
)

BOS, EOS, A, B, C = 0, 1, 2, 3, 4


def toy_lm(prefixes: torch.Tensor) -> torch.Tensor:
    """A 5-token language model (log-probabilities) whose greedy path is not the best sequence.

    After BOS: A 0.6, B 0.4. After A: C 0.35, EOS 0.3, B 0.35 ... every continuation of A is weak;
    after B: EOS 0.9. Best sequence: B EOS (0.4 * 0.9 = 0.36) > A then anything (<= 0.6 * 0.35 = 0.21).
    """
    rows = []
    for seq in prefixes.tolist():
        last = seq[-1]
        probs = {BOS: [0.0, 0.0, 0.6, 0.4, 0.0], A: [0.0, 0.3, 0.0, 0.35, 0.35], B: [0.0, 0.9, 0.05, 0.0, 0.05],
                 C: [0.0, 1.0, 0.0, 0.0, 0.0]}[last]  # fmt: skip
        rows.append([math.log(p) if p > 0 else float("-inf") for p in probs])
    return torch.tensor(rows)


def test_beam_search_finds_the_best_sequence_that_greedy_misses():
    assert greedy_search(toy_lm, BOS, EOS, max_length=5) == [A, B, EOS]  # 0.6 * 0.35 * 0.9
    best = beam_search(toy_lm, BOS, EOS, beam_size=2, max_length=5, length_penalty=0.0)
    assert best[0][0] == [B, EOS]
    assert best[0][1] == pytest.approx(math.log(0.4 * 0.9))
    # every returned hypothesis is sorted best first
    assert [s for _, s in best] == sorted((s for _, s in best), reverse=True)


def test_length_penalty_changes_the_ranking():
    # with a strong length normalisation the longer A B EOS (0.189 over 3 tokens) beats B EOS (0.36 over 2)
    assert length_normalised(math.log(0.189), 3, 2.0) > length_normalised(math.log(0.36), 2, 2.0)
    best = beam_search(toy_lm, BOS, EOS, beam_size=3, max_length=5, length_penalty=2.0)
    assert len(best[0][0]) == 3 and best[0][0][-1] == EOS


def test_banned_tokens_are_never_generated():
    out = beam_search(toy_lm, BOS, EOS, beam_size=2, max_length=5, banned=[B])
    assert all(B not in seq for seq, _ in out)
    assert B not in greedy_search(toy_lm, BOS, EOS, 5, banned=[B])


def test_cached_image_decoding_equals_the_full_causal_forward():
    from glip.config import GLIPConfig
    from glip.modeling.glip import GLIPModel

    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.tiny().replace(**{"heads.caption": {}, "text.pad_to_max": False})).eval()
    pixels = torch.randn(1, 3, 64, 96)
    ids = torch.tensor([[101, 1037, 3899, 2006, 1037]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = model(pixels, ids, mask, causal=True).lm_logits[0].log_softmax(-1)  # (T, V)
        state = encode_image_for_captions(model, pixels)
        for t in range(1, ids.shape[1] + 1):
            step = next_token_logprobs(model, state, ids[:, :t], mask[:, :t])[0]
            torch.testing.assert_close(step, full[t - 1], rtol=1e-4, atol=1e-4)
        # beams of one image share its cached keys
        two = next_token_logprobs(model, state, ids[:, :3].repeat(2, 1), mask[:, :3].repeat(2, 1))
        torch.testing.assert_close(two[0], two[1])
