"""Char spans -> token indices (official char_to_token rule and fallbacks), tokenising, maps."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import torch

from glip.errors import ConfigError, PromptError
from glip.text import (
    Prompt,
    build_positive_map,
    caption_prompt,
    char_to_token_table,
    count_tokens,
    detection_prompt,
    label_to_token_ids,
    load_tokenizer,
    spans_to_token_ids,
    tokenize_prompt,
)


def _tokens(tokenizer, tokenized) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenized.input_ids)


def test_load_tokenizer_default_is_bert_base_uncased(tokenizer) -> None:
    assert tokenizer.is_fast
    assert len(tokenizer) == 30522
    assert tokenizer.tokenize("raccoon") == ["ra", "##cco", "##on"]
    assert tokenizer("person")["input_ids"] == [101, 2711, 102]


def test_load_tokenizer_from_folder(tmp_path: Path, tokenizer) -> None:
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded("a traffic light")["input_ids"] == tokenizer("a traffic light")["input_ids"]


def test_load_tokenizer_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(ConfigError, match="could not load a tokenizer"):
        load_tokenizer(tmp_path)


def test_detection_prompt_tokens(tokenizer) -> None:
    prompt = detection_prompt(["person", "traffic light", "hair_drier (dryer)"])
    tokenized = tokenize_prompt(tokenizer, prompt)
    assert _tokens(tokenizer, tokenized) == [
        "[CLS]", "person", ".", "traffic", "light", ".", "hair", "dr", "##ier", "[SEP]",
    ]  # fmt: skip
    # "hair drier " ends on a space: end-1 maps to no token, end-2 ("r") does.
    assert tokenized.token_ids_per_entity == [[1], [3, 4], [6, 7, 8]]
    assert tokenized.attention_mask == [1] * 10
    assert tokenized.num_tokens == 10
    assert tokenized.offsets[0] == (0, 0) and tokenized.offsets[-1] == (0, 0)


def test_multi_wordpiece_names(tokenizer) -> None:
    tokenized = tokenize_prompt(tokenizer, detection_prompt(["raccoon", "cat", "hippopotamus"]))
    assert _tokens(tokenizer, tokenized)[1:4] == ["ra", "##cco", "##on"]
    assert tokenized.token_ids_per_entity[0] == [1, 2, 3]
    assert tokenized.token_ids_per_entity[1] == [5]
    names = tokenizer.convert_ids_to_tokens([tokenized.input_ids[i] for i in tokenized.token_ids_per_entity[2]])
    assert "".join(n.removeprefix("##") for n in names) == "hippopotamus"


def test_punctuation_in_names(tokenizer) -> None:
    prompt = detection_prompt(["t-shirt", "mr. potato"])
    assert prompt.text == "t-shirt. mr. potato"
    tokenized = tokenize_prompt(tokenizer, prompt)
    assert _tokens(tokenizer, tokenized) == ["[CLS]", "t", "-", "shirt", ".", "mr", ".", "potato", "[SEP]"]
    assert tokenized.token_ids_per_entity == [[1, 2, 3], [5, 6, 7]]


def test_caption_spans_to_tokens(tokenizer) -> None:
    prompt = caption_prompt("A man walking a dog. The man smiles.")
    tokenized = tokenize_prompt(tokenizer, prompt)
    # [CLS] a man walking a dog . the man smiles . [SEP]
    assert _tokens(tokenizer, tokenized)[1:9] == ["a", "man", "walking", "a", "dog", ".", "the", "man"]
    assert tokenized.token_ids_per_entity == [[1, 2], [4, 5], [7, 8]]


# offsets of "[CLS] the dog [SEP]" for the text "the  dog  " (two spaces, two trailing spaces)
OFFSETS_THE_DOG = [(0, 0), (0, 3), (5, 8), (0, 0)]


@pytest.mark.parametrize(
    ("span", "tokens"),
    [
        ((0, 8), [1, 2]),
        ((3, 8), [2]),  # starts on a space: beg+1 is a space too, beg+2 is "d"
        ((4, 8), [2]),
        ((1, 2), [1]),  # inside a token
        ((0, 10), [1, 2]),  # ends on two spaces: end-1, end-2 are spaces, end-3 is "g"
        ((0, 5), [1]),  # ends on a space: end-2 is a space, end-3 is "e"
    ],
)
def test_fallback_rules(span: tuple[int, int], tokens: list[int]) -> None:
    assert spans_to_token_ids(OFFSETS_THE_DOG, [[span]]) == [tokens]


def test_unmappable_spans_are_skipped_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    offsets = [(0, 0), (0, 3), (6, 9), (0, 0)]  # "the   dog" (three spaces)
    with caplog.at_level(logging.WARNING, logger="glip.text.positive_map"):
        result = spans_to_token_ids(offsets, [[(3, 9)], [(0, 6)], [(0, 3), (3, 9)], [(20, 30)]])
    # (3, 9): beg, beg+1, beg+2 are all spaces; (0, 6): end-1..end-3 all spaces; (20, 30): past the text.
    assert result == [[], [], [1], []]
    assert caplog.text.count("maps to no token") == 4


def test_several_spans_per_entity_are_merged() -> None:
    offsets = [(0, 0), (0, 1), (2, 5), (6, 9), (0, 0)]  # "a cat dog"
    assert spans_to_token_ids(offsets, [[(6, 9), (2, 5)], [(0, 5)]]) == [[2, 3], [1, 2]]


def test_char_to_token_table_ignores_special_tokens() -> None:
    assert char_to_token_table([(0, 0), (0, 2), (3, 4), (0, 0)]) == [1, 1, -1, 2]
    assert char_to_token_table([]) == []


def _official_token_ids(encoding, spans) -> list[list[int]]:
    """The official rule written against the tokenizer's own char_to_token."""
    result = []
    for entity in spans:
        tokens: set[int] = set()
        for beg, end in entity:
            b = encoding.char_to_token(beg)
            if b is None:
                b = encoding.char_to_token(beg + 1)
                if b is None:
                    b = encoding.char_to_token(beg + 2)
            e = encoding.char_to_token(end - 1)
            if e is None:
                try:  # the official code catches the error raised for a negative position
                    e = encoding.char_to_token(end - 2)
                    if e is None:
                        e = encoding.char_to_token(end - 3)
                except OverflowError:
                    e = None
            if b is not None and e is not None:
                tokens.update(range(b, e + 1))
        result.append(sorted(tokens))
    return result


def test_offsets_rule_matches_tokenizer_char_to_token(tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(0)
    pieces = [
        "a",
        "dog",
        "raccoon",
        " ",
        "  ",
        ".",
        ",",
        "-",
        "t-shirt",
        "café",
        "東京",
        "naïve",
        "(x)",
        "'s",
        "\t",
    ]
    caplog.set_level(logging.ERROR)
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        encoding = tokenizer(text, return_offsets_mapping=True)
        spans = []
        for _ in range(4):
            start = rng.randrange(len(text))
            spans.append([(start, rng.randint(start + 1, len(text)))])
        ours = spans_to_token_ids(encoding["offset_mapping"], spans)
        assert ours == _official_token_ids(encoding, spans), text


def test_prompt_over_256_tokens_is_rejected(tokenizer) -> None:
    prompt = detection_prompt(["cat"] * 200)  # 200 names + 199 separators + [CLS] + [SEP]
    assert count_tokens(tokenizer, prompt.text) == 401
    message = "prompt has 401 tokens; the model reads at most 256: shorten it, or pass class names"
    with pytest.raises(PromptError, match=message):
        tokenize_prompt(tokenizer, prompt)


def test_prompt_of_exactly_max_len_is_accepted(tokenizer) -> None:
    prompt = detection_prompt(["cat"] * 127)  # 127 + 126 + 2 = 255
    assert tokenize_prompt(tokenizer, prompt).num_tokens == 255
    assert tokenize_prompt(tokenizer, prompt, max_len=255).num_tokens == 255
    with pytest.raises(PromptError, match="at most 254"):
        tokenize_prompt(tokenizer, prompt, max_len=254)


def test_build_positive_map() -> None:
    positive = build_positive_map([[1], [3, 4], []], max_len=8)
    assert positive.shape == (3, 8) and positive.dtype == torch.float32
    expected = torch.zeros(3, 8)
    expected[0, 1] = expected[1, 3] = expected[1, 4] = 1
    assert torch.equal(positive, expected)
    normalized = build_positive_map([[1], [3, 4], []], max_len=8, normalize=True)
    assert torch.allclose(normalized[1, 3:5], torch.full((2,), 0.5), atol=1e-5)
    assert normalized[2].sum() == 0
    assert build_positive_map([], max_len=4).shape == (0, 4)
    with pytest.raises(PromptError, match="outside a map of width 8"):
        build_positive_map([[8]], max_len=8)


def test_positive_map_from_prompt(tokenizer) -> None:
    tokenized = tokenize_prompt(tokenizer, detection_prompt(["person", "traffic light"]))
    positive = build_positive_map(tokenized.token_ids_per_entity)
    assert positive.shape == (2, 256)
    assert positive[0].nonzero().flatten().tolist() == [1]
    assert positive[1].nonzero().flatten().tolist() == [3, 4]


def test_label_to_token_ids() -> None:
    prompt = Prompt(
        text="a dog, a dog",
        spans=[[(0, 5)], [(7, 12)], [(2, 5)]],
        labels=["a", "b", "c"],
        label_ids=[4, 4, 9],
    )
    assert label_to_token_ids(prompt, [[1, 2], [4, 5], []]) == {4: [1, 2, 4, 5]}
    with pytest.raises(PromptError, match="the prompt has 3"):
        label_to_token_ids(prompt, [[1]])
