"""Detection labels → training prompts: the official sampling, budget and overflow rules."""

import random
from collections import Counter

import pytest

from glip.data.od_to_grounding import (
    MAX_SEQ_LENGTH,
    ClassVocabulary,
    OdPromptOptions,
    check_for_positive_overflow,
    convert_od_to_grounding,
    sample_num_negatives,
)
from glip.errors import ConfigError, DataError
from glip.text import build_positive_map, load_tokenizer, tokenize_prompt


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def vocab(tokenizer):
    return ClassVocabulary.build([1, 2, 5], ["cat", "traffic_light", "dog (animal)"], tokenizer)


def test_vocabulary_cleans_names_and_counts_name_dot_space_tokens(vocab):
    assert vocab.prompt_names == ("cat", "traffic light", "dog ")
    assert vocab.token_counts == (2, 3, 2)  # "cat ." / "traffic light ." / "dog ."
    assert vocab.index_of(5) == 2
    with pytest.raises(DataError, match="category id 9"):
        vocab.index_of(9)


def test_all_negatives_prompt_spans_and_positive_map(tokenizer, vocab):
    # control (0, 0, 1, 0): always the full negative count, so every class is in the prompt.
    options = OdPromptOptions(control_probabilities=(0.0, 0.0, 1.0, 0.0))
    out = convert_od_to_grounding([2, 1, 2], vocab, options, random.Random(0))
    prompt = out.prompt
    assert sorted(prompt.label_ids) == [1, 2, 5]
    assert prompt.text == ". ".join(vocab.prompt_names[vocab.index_of(i)] for i in prompt.label_ids)
    for (span,), label in zip(prompt.spans, prompt.label_ids, strict=True):
        assert prompt.text[span[0] : span[1]] == vocab.prompt_names[vocab.index_of(label)]
    assert out.keep == [0, 1, 2]
    assert [prompt.label_ids[e[0]] for e in out.box_entities] == [2, 1, 2]
    assert out.entity_labels == list(prompt.label_ids)
    # Pinned for seed 0 (Python's random is stable across versions).
    assert prompt.text == "dog . cat. traffic light"
    assert prompt.spans == (((0, 4),), ((6, 9),), ((11, 24),))  # "dog " keeps its trailing space
    tokens = tokenize_prompt(tokenizer, prompt).token_ids_per_entity
    assert tokens == [[1], [3], [5, 6]]  # [CLS] dog . cat . traffic light [SEP]
    rows = build_positive_map([tokens[e[0]] for e in out.box_entities])
    assert rows[0].nonzero().flatten().tolist() == [5, 6] and rows[1].nonzero().flatten().tolist() == [3]


def test_same_seed_same_prompt_other_seed_other_prompt(vocab):
    options = OdPromptOptions()
    texts = {convert_od_to_grounding([1], vocab, options, random.Random(7)).prompt.text for _ in range(3)}
    assert len(texts) == 1
    many = {convert_od_to_grounding([1], vocab, options, random.Random(s)).prompt.text for s in range(50)}
    assert len(many) > 3


def test_control_probabilities_half_full_half_uniform():
    rng = random.Random(0)
    draws = [sample_num_negatives((0.0, 0.0, 0.5, 0.0), 85, rng) for _ in range(4000)]
    full = sum(d == 85 for d in draws) / len(draws)
    assert 0.47 < full < 0.545  # 0.5 + 0.5 / 85 expected
    uniform = [d for d in draws if d != 85]
    assert min(uniform) == 1 and max(uniform) == 84
    assert abs(sum(uniform) / len(uniform) - 42.5) < 2.5
    rng = random.Random(1)
    assert Counter(sample_num_negatives((1.0, 0.0, 0.0, 0.0), 85, rng) for _ in range(10)) == {1: 10}
    assert Counter(sample_num_negatives((0.0, 1.0, 0.0, 0.0), 85, rng) for _ in range(10)) == {0: 10}


def test_fifty_percent_of_prompts_hold_all_85_negatives(tokenizer):
    names = sorted(w for w in tokenizer.get_vocab() if w.isascii() and w.isalpha() and len(w) > 4)[:200]
    vocab = ClassVocabulary.build(range(1, 201), names, tokenizer)
    counts = []
    for seed in range(600):
        out = convert_od_to_grounding([], vocab, OdPromptOptions(), random.Random(seed))
        counts.append(out.prompt.num_entities)
    assert max(counts) == 85 and min(counts) >= 1
    assert 0.44 < sum(c == 85 for c in counts) / len(counts) < 0.58


def test_negatives_are_drawn_from_all_classes_then_positives_removed(tokenizer):
    vocab = ClassVocabulary.build([1, 2, 3, 4], ["a", "b", "c", "d"], tokenizer)
    options = OdPromptOptions(control_probabilities=(1.0, 0.0, 0.0, 0.0))  # draw exactly 1 class
    sizes = Counter(
        convert_od_to_grounding([1], vocab, options, random.Random(s)).prompt.num_entities for s in range(400)
    )
    assert set(sizes) == {1, 2}  # the drawn class is the positive one about 1/4 of the time
    assert 0.15 < sizes[1] / 400 < 0.35


def test_positive_overflow_drops_classes_and_their_boxes(tokenizer):
    names = [f"extraordinarily elaborate category description number {i}" for i in range(40)]
    vocab = ClassVocabulary.build(range(1, 41), names, tokenizer)
    per_class = vocab.token_counts[0]
    assert per_class > 8
    labels = [c for c in range(1, 41) for _ in range(2)]
    kept, length = check_for_positive_overflow(labels, vocab, MAX_SEQ_LENGTH, random.Random(0))
    assert len(kept) == MAX_SEQ_LENGTH // per_class
    assert length == (len(kept) + 1) * per_class  # includes the class that overflowed (official)
    out = convert_od_to_grounding(labels, vocab, OdPromptOptions(), random.Random(0))
    assert set(out.prompt.label_ids) == set(kept)  # no room left for negatives
    assert len(out.keep) == 2 * len(kept)
    assert all(labels[i] in kept for i in out.keep)
    assert tokenize_prompt(tokenizer, out.prompt).num_tokens <= 256


def test_negatives_stop_at_the_token_budget(tokenizer):
    names = [f"long class name with several words {i}" for i in range(120)]
    vocab = ClassVocabulary.build(range(1, 121), names, tokenizer)
    options = OdPromptOptions(control_probabilities=(0.0, 0.0, 1.0, 0.0))
    out = convert_od_to_grounding([1, 2], vocab, options, random.Random(3))
    used = sum(vocab.token_counts[vocab.index_of(c)] for c in out.prompt.label_ids)
    assert used <= MAX_SEQ_LENGTH
    assert out.prompt.num_entities < 85
    assert {1, 2} <= set(out.prompt.label_ids)


def test_all_classes_mode_with_caption_prompts_and_overrides(tokenizer):
    vocab = ClassVocabulary.build(
        [1, 2],
        ["pothole", "car"],
        tokenizer,
        caption_prompts=[{"prefix": "there are some ", "name": "holes", "suffix": " on the road"}, {"name": "car"}],
    )
    options = OdPromptOptions(mode="all_classes", shuffle=False)
    out = convert_od_to_grounding([2], vocab, options, random.Random(0))
    assert out.prompt.text == "there are some holes on the road. car"
    assert out.prompt.entity_texts() == [["holes"], ["car"]]
    assert out.box_entities == [[1]]
    with pytest.raises(ConfigError, match="fixed class order"):
        convert_od_to_grounding([2], vocab, OdPromptOptions(mode="all_classes"), random.Random(0))
    renamed = ClassVocabulary.build([1, 2], ["RBC", "WBC"], tokenizer, overrides={"RBC": "red blood cell"})
    out = convert_od_to_grounding([1], renamed, options, random.Random(0))
    assert out.prompt.text == "red blood cell. WBC" and out.prompt.labels == ("RBC", "WBC")
    with pytest.raises(DataError, match="do not exist"):
        ClassVocabulary.build([1], ["RBC"], tokenizer, overrides={"XYZ": "x"})


def test_background_quirk_and_option_validation(tokenizer):
    vocab = ClassVocabulary.build([1, 2], ["a", "b"], tokenizer, background_negative=True)
    assert vocab.prompt_names[-1] == " background " and vocab.has_background
    options = OdPromptOptions(control_probabilities=(0.0, 0.0, 1.0, 0.0))
    assert 0 in convert_od_to_grounding([1], vocab, options, random.Random(0)).prompt.label_ids
    full = convert_od_to_grounding([1], vocab, OdPromptOptions(mode="all_classes", shuffle=False), random.Random(0))
    assert full.prompt.label_ids == (1, 2)
    with pytest.raises(ConfigError, match="must be 0"):
        OdPromptOptions(control_probabilities=(0.0, 0.0, 0.5, 0.1))
    with pytest.raises(ConfigError, match="mode"):
        OdPromptOptions(mode="x")
    with pytest.raises(DataError, match="empty once cleaned"):
        ClassVocabulary.build([1], ["(x)"], tokenizer)


def test_image_without_boxes_and_negatives_gets_empty_prompt(vocab):
    options = OdPromptOptions(random_sample_negative=0, control_probabilities=(0.0, 0.0, 1.0, 0.0))
    out = convert_od_to_grounding([], vocab, options, random.Random(0))
    assert out.prompt.text == "" and out.prompt.num_entities == 0 and out.keep == []
