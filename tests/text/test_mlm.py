"""MLM token masking: 80/10/10 statistics, what may be masked, greenlight map, determinism."""

import pytest
import torch

from glip.text import detection_prompt, spans_to_token_ids, tokenize_prompt
from glip.text.mlm import IGNORE_INDEX, greenlight_map, mask_tokens

VOCAB, MASK, CLS, SEP = 30522, 103, 101, 102


def _batch(b=64, t=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (b, t), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    return ids, torch.ones(b, t, dtype=torch.long)


def test_masking_statistics():
    ids, mask = _batch()
    out, labels = mask_tokens(ids, mask, VOCAB, MASK, (), 0.15, torch.Generator().manual_seed(0))
    selected = labels != IGNORE_INDEX
    assert selected.float().mean().item() == pytest.approx(0.15, abs=0.01)
    n = selected.sum().item()
    assert (out[selected] == MASK).sum().item() / n == pytest.approx(0.8, abs=0.03)
    assert (out[selected] == ids[selected]).sum().item() / n == pytest.approx(0.1, abs=0.02)
    random_ids = (out[selected] != MASK) & (out[selected] != ids[selected])
    assert random_ids.sum().item() / n == pytest.approx(0.1, abs=0.02)
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(out[~selected], ids[~selected])  # unselected tokens never change


def test_padding_is_never_masked():
    ids, mask = _batch(8, 32)
    mask[:, 20:] = 0
    out, labels = mask_tokens(ids, mask, VOCAB, MASK, (), 0.9, torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 20:], ids[:, 20:]) and (labels[:, 20:] == IGNORE_INDEX).all()
    assert (labels[:, :20] != IGNORE_INDEX).float().mean() > 0.8


def test_special_tokens_are_masked_like_others_unless_listed():
    ids, mask = _batch(256, 4)
    _, labels = mask_tokens(ids, mask, VOCAB, MASK, (), 0.5, torch.Generator().manual_seed(2))
    assert (labels[:, 0] == CLS).any() and (labels[:, -1] == SEP).any()  # official random_word behaviour
    out, labels = mask_tokens(ids, mask, VOCAB, MASK, (CLS, SEP), 0.5, torch.Generator().manual_seed(2))
    assert (labels[:, [0, -1]] == IGNORE_INDEX).all() and torch.equal(out[:, [0, -1]], ids[:, [0, -1]])


def test_greenlight_map():
    ids, mask = _batch(512, 3)
    greenlight = torch.tensor([1.0, 0.0, -1.0]).expand(512, 3)
    out, labels = mask_tokens(ids, mask, VOCAB, MASK, (), 0.5, torch.Generator().manual_seed(3), greenlight)
    # 1: masked and scored; 0: masked sometimes but never scored; -1: never masked
    assert (labels[:, 0] != IGNORE_INDEX).any()
    assert (labels[:, 1:] == IGNORE_INDEX).all()
    assert (out[:, 1] == MASK).any()
    assert torch.equal(out[:, 2], ids[:, 2])
    # a narrower map is padded with 0 (maskable, unscored)
    _, labels = mask_tokens(ids, mask, VOCAB, MASK, (), 0.5, None, torch.ones(512, 1))
    assert (labels[:, 1:] == IGNORE_INDEX).all() and (labels[:, 0] != IGNORE_INDEX).any()


def test_seeded_deterministic_and_pure():
    ids, mask = _batch(4, 64)
    before = ids.clone()
    a = mask_tokens(ids, mask, VOCAB, MASK, (), 0.15, torch.Generator().manual_seed(5))
    b = mask_tokens(ids, mask, VOCAB, MASK, (), 0.15, torch.Generator().manual_seed(5))
    c = mask_tokens(ids, mask, VOCAB, MASK, (), 0.15, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(ids, before)


def test_probability_bounds():
    ids, mask = _batch(2, 8)
    out, labels = mask_tokens(ids, mask, VOCAB, MASK, (), 0.0)
    assert torch.equal(out, ids) and (labels == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="probability"):
        mask_tokens(ids, mask, VOCAB, MASK, (), 1.0)


def test_greenlight_map_from_token_positions():
    assert greenlight_map([[1], [3, 4]], 6).tolist() == [0, 1, 0, 1, 1, 0]
    assert greenlight_map([[1], [9]], 6).tolist() == [0, 1, 0, 0, 0, 0]  # positions past T are dropped
    assert greenlight_map([[1]], 4, forbid_masking=True).tolist() == [-1, -1, -1, -1]


def test_greenlight_map_of_a_detection_prompt_and_a_whole_caption(tokenizer):
    prompt = detection_prompt(["person", "traffic light", "dog"])  # "person. traffic light. dog"
    tokenized = tokenize_prompt(tokenizer, prompt)
    present = [tokenized.token_ids_per_entity[1]]  # only a traffic light in the image
    assert greenlight_map(present, 8).tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    # grounding / caption data: the span of the whole caption, special tokens excluded
    whole = spans_to_token_ids(tokenized.offsets, [[(0, len(prompt.text))]])
    assert greenlight_map(whole, 8).tolist() == [0, 1, 1, 1, 1, 1, 1, 0]
