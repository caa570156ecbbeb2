"""Rule-based noun-phrase extraction (NLTK grammar ``<DT>?<JJ.*>*<NN.*>+`` approximated offline).

Every expected answer below was checked by hand. Where it deliberately differs from what the
official NLTK pipeline returns, the comment says so.
"""

from __future__ import annotations

import time

import pytest

from glip.text import caption_prompt, extract_noun_phrases, tag_words

CASES = [
    ("a man walking a dog", ["a man", "a dog"]),
    # numerals are kept in the determiner slot (NLTK would give "cats")
    ("two cats sleeping on a red couch", ["two cats", "a red couch"]),
    ("the person in the blue shirt is riding a bicycle", ["the person", "the blue shirt", "a bicycle"]),
    ("A woman holds an umbrella in the rain.", ["a woman", "an umbrella", "the rain"]),
    ("a sleeping cat on the parked car", ["a sleeping cat", "the parked car"]),
    ("people waiting at the bus stop", ["people", "the bus stop"]),
    ("a dog and a cat. the dog is brown.", ["a dog", "a cat", "the dog"]),
    ("the man's hat is on the table", ["the man", "hat", "the table"]),
    # possessive pronouns stay outside the phrase, as in NLTK; "in front of" is a preposition
    ("a girl with her kite in front of a building", ["a girl", "kite", "a building"]),
    # degree adverbs before an adjective are kept (NLTK would give "large elephant")
    ("a very large elephant standing next to a small tree", ["a very large elephant", "a small tree"]),
    ("three young children playing soccer on the grass", ["three young children", "soccer", "the grass"]),
    ("a man and a woman sitting on a bench near the water", ["a man", "a woman", "a bench", "the water"]),
    ("the kids are eating pizza, drinking soda, and laughing", ["the kids", "pizza", "soda"]),
    ("a surfer rides a big wave", ["a surfer", "a big wave"]),
    ("dogs play in the park", ["dogs", "the park"]),
    ("an old red truck parked beside a wooden fence", ["an old red truck", "a wooden fence"]),
    ("there is a cup of coffee on the table", ["a cup", "coffee", "the table"]),
    ("a child wearing a t-shirt and jeans", ["a child", "a t-shirt", "jeans"]),
    ("a plate with 2 slices of pizza", ["a plate", "2 slices", "pizza"]),
    ("The dog, the cat and the bird!", ["the dog", "the cat", "the bird"]),
    ("a brightly colored kite flying over the beach", ["a brightly colored kite", "the beach"]),
    ("sliced apples on a plate", ["sliced apples", "a plate"]),
    ("a can of soda next to a trash can", ["a can", "soda", "a trash can"]),
    ("a stop sign on a street corner", ["a stop sign", "a street corner"]),
    ("a giraffe eating leaves from a tree", ["a giraffe", "leaves", "a tree"]),
    ("a man sits and waits for the bus", ["a man", "the bus"]),
    ("I don't see a cat", ["a cat"]),
    ("two zebras grazing in a field", ["two zebras", "a field"]),
    ("a baseball player swinging a bat at a ball", ["a baseball player", "a bat", "a ball"]),
    ("a large passenger jet flying through a blue sky", ["a large passenger jet", "a blue sky"]),
    ("a group of people standing around a table with food", ["a group", "people", "a table", "food"]),
    ("a café near the naïve façade", ["a café", "the naïve façade"]),  # non-ASCII letters are letters
    ("a 3.5 kg fish", ["a 3.5 kg fish"]),
]


@pytest.mark.parametrize(("caption", "phrases"), CASES)
def test_noun_phrases(caption: str, phrases: list[str]) -> None:
    assert extract_noun_phrases(caption) == phrases


@pytest.mark.parametrize("caption", ["it is sunny.", "", "   ", "!!!", "very very fast"])
def test_no_noun_phrase(caption: str) -> None:
    assert extract_noun_phrases(caption) == []


def test_phrases_are_deduplicated_in_order() -> None:
    caption = "a man walking a dog while another man walks a dog"
    assert extract_noun_phrases(caption) == ["a man", "a dog", "another man"]


@pytest.mark.parametrize(("caption", "_"), CASES)
def test_phrases_are_lowercase_substrings_without_punctuation(caption: str, _: list[str]) -> None:
    for phrase in extract_noun_phrases(caption):
        assert phrase in caption.lower()
        assert phrase == phrase.strip()
        assert not any(ch in phrase for ch in ',!?;:()[]{}"')
        assert not phrase.endswith(".")


def test_tag_words_offsets_and_clitics() -> None:
    tagged = tag_words("The man's dog can't swim.")
    words = [w for w, _, _, _ in tagged]
    assert words == ["the", "man", "'s", "dog", "ca", "n't", "swim", "."]
    for word, _, start, end in tagged:
        assert "the man's dog can't swim.".__getitem__(slice(start, end)) == word
    tags = dict((w, t) for w, t, _, _ in tagged)
    assert tags["the"] == "DET" and tags["man"] == "NOUN" and tags["swim"] == "VERB"


def test_caption_prompt_grounds_extracted_phrases() -> None:
    prompt = caption_prompt("Two cats sleeping on a red couch.")
    assert prompt.labels == ("two cats", "a red couch")
    assert prompt.entity_texts() == [["Two cats"], ["a red couch"]]


def test_extraction_is_fast() -> None:
    captions = [caption for caption, _ in CASES] * 20
    start = time.perf_counter()
    for caption in captions:
        extract_noun_phrases(caption)
    assert (time.perf_counter() - start) / len(captions) < 0.005


def test_caption_prompt_never_fails_on_extracted_phrases() -> None:
    # "İ".lower() is two characters, so phrases found in caption.lower() may not be found again.
    prompt = caption_prompt("İstanbul street at night")
    assert prompt.num_entities >= 1
    for label, (text,) in zip(prompt.labels, prompt.entity_texts(), strict=True):
        assert text.lower() == label
