"""Prompt building: clean_name, detection prompts, caption prompts (hand-computed answers)."""

from __future__ import annotations

import logging

import pytest

from glip.errors import GLIPError, PromptError
from glip.text import Prompt, caption_prompt, clean_class_names, clean_name, detection_prompt


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("person", "person"),
        ("traffic light", "traffic light"),
        ("hair_drier (dryer)", "hair drier "),  # trailing space kept, as official
        ("bow_(weapon)", "bow "),
        ("teddy_bear", "teddy bear"),
        ("a__b", "a b"),
        ("a___b", "a  b"),  # one pass of "  " -> " ": three spaces become two
        ("(x) y (z)", ""),  # greedy: from the first "(" to the last ")"
        ("  leading", " leading"),
        ("t-shirt", "t-shirt"),
    ],
)
def test_clean_name_matches_official_rules(name: str, cleaned: str) -> None:
    assert clean_name(name) == cleaned


def test_detection_prompt_official_string_and_spans() -> None:
    prompt = detection_prompt(["person", "traffic light", "hair_drier (dryer)"])
    assert prompt.text == "person. traffic light. hair drier "
    assert prompt.spans == (((0, 6),), ((8, 21),), ((23, 34),))
    assert prompt.entity_texts() == [["person"], ["traffic light"], ["hair drier "]]
    assert prompt.labels == ("person", "traffic light", "hair_drier (dryer)")
    assert prompt.label_ids == (0, 1, 2)
    assert prompt.num_entities == 3


def test_detection_prompt_single_class_has_no_separator() -> None:
    prompt = detection_prompt(["cat"])
    assert prompt.text == "cat"
    assert prompt.spans == (((0, 3),),)


def test_detection_prompt_custom_separator_prefix_and_ids() -> None:
    prompt = detection_prompt(["cat", "dog"], separator=" . ", prefix="object detection : ", label_ids=[17, 3])
    assert prompt.text == "object detection : cat . dog"
    assert prompt.spans == (((19, 22),), ((25, 28),))
    assert prompt.label_ids == (17, 3)


def test_detection_prompt_caption_prompts_span_only_the_name() -> None:
    prompt = detection_prompt(
        ["pothole"],
        caption_prompts=[{"prefix": "there are some ", "name": "holes", "suffix": " on the road"}],
    )
    assert prompt.text == "there are some holes on the road"
    assert prompt.spans == (((15, 20),),)
    assert prompt.labels == ("pothole",)

    prompt = detection_prompt(
        ["hand", "car_(auto)"],
        caption_prompts=[
            {"prefix": "", "name": "hand", "suffix": " of a person"},
            {"prefix": "a ", "name": "car", "suffix": ""},
        ],
    )
    assert prompt.text == "hand of a person. a car"
    assert prompt.spans == (((0, 4),), ((20, 23),))
    assert prompt.entity_texts() == [["hand"], ["car"]]


def test_detection_prompt_caption_prompt_name_is_not_cleaned() -> None:
    prompt = detection_prompt(["x"], caption_prompts=[{"name": "hair_drier", "suffix": "!"}])
    assert prompt.text == "hair_drier!"
    assert prompt.spans == (((0, 10),),)


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        ([], "class_names is empty"),
        (["cat", "(only parentheses)"], "class_names[1]"),
        (["cat", "dog", "   "], "class_names[2]"),
        (["cat", "___"], "class_names[1]"),
        ("cat. dog", "not the string"),
        (["cat", 3], "class_names[1] must be a string"),
    ],
)
def test_detection_prompt_rejects_bad_names(names, fragment: str) -> None:
    with pytest.raises(PromptError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        detection_prompt(names)


def test_detection_prompt_rejects_bad_caption_prompts() -> None:
    with pytest.raises(PromptError, match="2 class names"):
        detection_prompt(["a", "b"], caption_prompts=[{"name": "a"}])
    with pytest.raises(PromptError, match=r"caption_prompts\[0\]\['name'\] is empty"):
        detection_prompt(["a"], caption_prompts=[{"prefix": "x ", "name": " ", "suffix": ""}])
    with pytest.raises(PromptError, match="'name' key"):
        detection_prompt(["a"], caption_prompts=[{"prefix": "x "}])
    with pytest.raises(PromptError, match="label ids"):
        detection_prompt(["a", "b"], label_ids=[1])


def test_prompt_error_is_a_glip_error() -> None:
    with pytest.raises(GLIPError):
        detection_prompt([])


def test_clean_class_names_returns_cleaned() -> None:
    assert clean_class_names(["hair_drier (dryer)", "cat"]) == ["hair drier ", "cat"]


def test_prompt_validation_and_defaults() -> None:
    prompt = Prompt(text="a cat", spans=[[(2, 5)]], labels=["cat"])
    assert prompt.spans == (((2, 5),),)
    assert prompt.label_ids == (0,)
    with pytest.raises(PromptError, match="one label"):
        Prompt(text="a cat", spans=[[(2, 5)]], labels=["cat", "dog"])
    with pytest.raises(PromptError, match="outside"):
        Prompt(text="a cat", spans=[[(2, 6)]], labels=["cat"])
    with pytest.raises(PromptError, match="empty"):
        Prompt(text="a cat", spans=[[(2, 2)]], labels=["cat"])
    with pytest.raises(PromptError, match="no character span"):
        Prompt(text="a cat", spans=[[]], labels=["cat"])
    empty = Prompt(text="nothing", spans=(), labels=())
    assert empty.num_entities == 0 and empty.label_ids == ()


def test_caption_prompt_extracts_noun_phrases() -> None:
    caption = "A man walking a dog. The man smiles."
    prompt = caption_prompt(caption)
    assert prompt.text == caption
    assert prompt.labels == ("a man", "a dog", "the man")
    assert prompt.spans == (((0, 5),), ((14, 19),), ((21, 28),))
    assert prompt.entity_texts() == [["A man"], ["a dog"], ["The man"]]
    assert prompt.label_ids == (0, 1, 2)


def test_caption_prompt_every_occurrence_is_an_entity() -> None:
    prompt = caption_prompt("a dog chases A DOG", ["a dog"])
    assert prompt.spans == (((0, 5),), ((13, 18),))
    assert prompt.labels == ("a dog", "a dog")
    assert prompt.label_ids == (0, 1)


def test_caption_prompt_orders_by_phrase_then_position_and_dedupes() -> None:
    prompt = caption_prompt("cat, dog, cat", ["dog", "cat", "CAT"])
    assert prompt.labels == ("dog", "cat", "cat")
    assert prompt.spans == (((5, 8),), ((0, 3),), ((10, 13),))


def test_caption_prompt_uses_substring_semantics_like_official() -> None:
    prompt = caption_prompt("a cat near a category sign", ["cat"])
    assert prompt.spans == (((2, 5),), ((13, 16),))


def test_caption_prompt_phrase_with_regex_characters() -> None:
    prompt = caption_prompt("a c++ book (new)", ["c++", "(new)"])
    assert prompt.entity_texts() == [["c++"], ["(new)"]]


def test_caption_prompt_missing_phrases_are_named() -> None:
    with pytest.raises(PromptError, match=r"\['zebra', 'giraffe'\]"):
        caption_prompt("a man walking a dog", ["a dog", "zebra", "giraffe"])


@pytest.mark.parametrize("caption", ["", "   ", "\n"])
def test_caption_prompt_rejects_empty_caption(caption: str) -> None:
    with pytest.raises(PromptError, match="caption is empty"):
        caption_prompt(caption)


def test_caption_prompt_rejects_empty_phrases() -> None:
    with pytest.raises(PromptError, match="phrases is empty"):
        caption_prompt("a dog", [])
    with pytest.raises(PromptError, match=r"phrases\[1\]"):
        caption_prompt("a dog", ["dog", " "])
    with pytest.raises(PromptError, match="not the string"):
        caption_prompt("a dog", "dog")


def test_caption_without_noun_phrase_falls_back_to_whole_caption(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="glip.text.prompts"):
        prompt = caption_prompt("  it is sunny.  ")
    assert prompt.spans == (((2, 14),),)
    assert prompt.labels == ("it is sunny.",)
    assert "no noun phrase" in caplog.text
