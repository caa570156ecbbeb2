"""Packing a long vocabulary (LVIS-sized) into prompts that fit the text encoder."""

from __future__ import annotations

import random
import time

import pytest

from glip.errors import PromptError
from glip.text import chunk_vocabulary, clean_name, count_tokens, detection_prompt, tokenize_prompt

# fmt: off
_WORDS = [
    "red", "blue", "striped", "wooden", "electric", "baby", "grand", "sea", "traffic", "hair",
    "ice", "cream", "raccoon", "kitchen", "table", "chair", "bottle", "cap", "hat", "rubber",
    "band", "aerosol", "can", "alarm", "clock", "alcohol", "tennis", "racket", "pirate", "flag",
    "hippopotamus", "zucchini", "t-shirt", "mr.", "o'clock",
]
# fmt: on


def lvis_like_names(count: int = 1203, seed: int = 0) -> list[str]:
    """LVIS-style names: underscores, parenthesised disambiguations, some very long ones."""
    rng = random.Random(seed)
    names = []
    for index in range(count):
        size = rng.choice([1, 1, 2, 2, 3, 4, 6, 12])
        name = "_".join(rng.choice(_WORDS) for _ in range(size))
        if index % 7 == 0:
            name += f"_({rng.choice(_WORDS)})"
        names.append(name)
    return names


@pytest.fixture(scope="module")
def names() -> list[str]:
    return lvis_like_names()


def test_1203_names_chunks_fit_and_keep_global_ids(tokenizer, names: list[str]) -> None:
    start = time.perf_counter()
    prompts = chunk_vocabulary(tokenizer, names)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"chunking 1,203 names took {elapsed:.2f} s"

    ids = [i for prompt in prompts for i in prompt.label_ids]
    assert ids == list(range(len(names)))  # complete, global, in order
    assert [label for prompt in prompts for label in prompt.labels] == names
    for index, prompt in enumerate(prompts):
        assert prompt == detection_prompt(list(prompt.labels), label_ids=list(prompt.label_ids))
        assert count_tokens(tokenizer, prompt.text) <= 256
        if index + 1 < len(prompts):  # greedy: the next class would not have fitted
            grown = detection_prompt([*prompt.labels, prompts[index + 1].labels[0]])
            assert count_tokens(tokenizer, grown.text) > 256


def test_chunk_positive_maps_cover_exactly_each_name(tokenizer, names: list[str]) -> None:
    for prompt in chunk_vocabulary(tokenizer, names):
        tokenized = tokenize_prompt(tokenizer, prompt)
        for label, tokens in zip(prompt.labels, tokenized.token_ids_per_entity, strict=True):
            assert tokens == list(range(tokens[0], tokens[-1] + 1))
            alone = tokenizer(clean_name(label), add_special_tokens=False)["input_ids"]
            assert [tokenized.input_ids[t] for t in tokens] == alone, label


def test_official_lvis_chunks_of_40(tokenizer) -> None:
    names = [f"class_{i}" for i in range(1203)]  # short names: 40 always fit
    prompts = chunk_vocabulary(tokenizer, names, max_classes_per_chunk=40)
    assert len(prompts) == 31
    assert [p.num_entities for p in prompts] == [40] * 30 + [3]
    assert prompts[1].label_ids == tuple(range(40, 80))
    assert prompts[-1].labels == ("class_1200", "class_1201", "class_1202")


def test_cap_and_budget_together(tokenizer, names: list[str]) -> None:
    prompts = chunk_vocabulary(tokenizer, names, max_classes_per_chunk=40)
    assert all(p.num_entities <= 40 for p in prompts)
    assert all(count_tokens(tokenizer, p.text) <= 256 for p in prompts)
    assert [i for p in prompts for i in p.label_ids] == list(range(len(names)))


def test_small_budget_and_custom_ids(tokenizer) -> None:
    prompts = chunk_vocabulary(tokenizer, ["person", "traffic light", "raccoon"], max_len=8, label_ids=[1, 10, 7])
    # "person. traffic light" = 1 + 1 + 2 tokens + 2 specials = 6; adding ". raccoon" (4) exceeds 8.
    assert [p.text for p in prompts] == ["person. traffic light", "raccoon"]
    assert [p.label_ids for p in prompts] == [(1, 10), (7,)]


def test_single_vocabulary_prompt_when_it_fits(tokenizer) -> None:
    prompts = chunk_vocabulary(tokenizer, ["person", "bicycle", "car"])
    assert len(prompts) == 1
    assert prompts[0] == detection_prompt(["person", "bicycle", "car"])


def test_name_over_budget_is_rejected(tokenizer) -> None:
    long_name = " ".join(["hippopotamus"] * 100)  # 4 word pieces each
    message = r"class_names\[1\] = 'hippopotamus hippo.*\.\.\. alone needs 402 tokens; the model reads at most 256"
    with pytest.raises(PromptError, match=message):
        chunk_vocabulary(tokenizer, ["cat", long_name])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"class_names": []}, "class_names is empty"),
        ({"class_names": ["cat", "(x)"]}, r"class_names\[1\]"),
        ({"class_names": ["cat"], "max_classes_per_chunk": 0}, "at least 1"),
        ({"class_names": ["cat"], "max_len": 2}, "no room"),
        ({"class_names": ["cat"], "label_ids": [1, 2]}, "label ids"),
    ],
)
def test_invalid_arguments(tokenizer, kwargs: dict, fragment: str) -> None:
    with pytest.raises(PromptError, match=fragment):
        chunk_vocabulary(tokenizer, **kwargs)


class _MergingTokenizer:
    """A fake tokenizer whose token counts are not additive: a "+" costs nothing alone, 3 in context."""

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 2

    def __call__(self, text, add_special_tokens: bool = True):
        def count(t: str) -> int:
            plus = t.count("+")
            words = len(t.replace("+", " ").split())
            return words + (3 * plus if t.strip() != "+" else 0) + (2 if add_special_tokens else 0)

        if isinstance(text, list):
            return {"input_ids": [[0] * count(t) for t in text]}
        return {"input_ids": [0] * count(text)}


def test_chunks_are_verified_when_counts_are_not_additive() -> None:
    tokenizer = _MergingTokenizer()
    names = [f"n{i}" for i in range(20)]
    prompts = chunk_vocabulary(tokenizer, names, max_len=12, separator="+")
    # Estimated: 10 names per chunk; really 1 + 4k tokens for k names + 2 specials <= 12 -> 3 names.
    assert [i for p in prompts for i in p.label_ids] == list(range(20))
    assert all(count_tokens(tokenizer, p.text) <= 12 for p in prompts)
    assert [p.num_entities for p in prompts][:2] == [3, 3]
