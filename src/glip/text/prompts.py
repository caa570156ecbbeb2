"""Text prompts: the string the model reads and the character spans of its entities.

A :class:`Prompt` is the single hand-off between prompt building and tokenisation. It holds the
text, and for every *entity* (a class name in detection, a phrase in grounding) one or more
half-open character ranges ``[start, end)`` into that text, a display label, and a global label
id. Tokenisation (:mod:`glip.text.positive_map`) turns the character spans into token indices.

Two builders follow the official GLIP implementation exactly:

* :func:`detection_prompt` — the evaluation prompt built from category names
  (``"person. bicycle. car"``), including the ODinW per-class caption prompts;
* :func:`caption_prompt` — a free caption whose entities are noun phrases (extracted with
  :func:`glip.text.noun_phrases.extract_noun_phrases` when none are given), every occurrence of a
  phrase becoming its own entity.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from glip.errors import PromptError
from glip.text.noun_phrases import extract_noun_phrases

logger = logging.getLogger(__name__)

Span = tuple[int, int]
"""A half-open character range ``[start, end)`` into a prompt's text."""

DEFAULT_SEPARATOR = ". "
"""Separator between class names in the official evaluation prompt (``DATASETS.SEPARATION_TOKENS``)."""


def clean_name(name: str) -> str:
    """Clean a category name the way the official evaluation does before building the prompt.

    Three regex substitutions, in this order and nothing else (no strip):

    1. ``\\(.*\\)`` → ``""`` — drop a parenthesised part (greedy: from the first ``(`` to the last ``)``);
    2. ``_`` → ``" "``;
    3. two spaces → one space, in a single left-to-right pass (three spaces become two).

    ``"hair_drier (dryer)"`` therefore becomes ``"hair drier "`` *with* a trailing space, which then
    ends up inside the class's span, exactly as in the official prompt.
    """
    name = re.sub(r"\(.*\)", "", name)
    name = re.sub(r"_", " ", name)
    return re.sub(r"  ", " ", name)


@dataclass(frozen=True)
class Prompt:
    """A prompt string and the character spans of its entities.

    Attributes:
        text: the exact string given to the tokenizer.
        spans: per entity, one or more half-open character ranges ``[start, end)`` into ``text``.
        labels: a display name per entity (the class name, or the phrase).
        label_ids: a global id per entity; defaults to ``0 .. num_entities - 1``. Chunks of a long
            vocabulary keep the ids of the full vocabulary here, so their results can be merged.

    Lists are accepted for every field and stored as tuples. Inconsistent lengths and spans outside
    the text raise :class:`~glip.errors.PromptError`.
    """

    text: str
    spans: tuple[tuple[Span, ...], ...]
    labels: tuple[str, ...]
    label_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise PromptError(f"prompt text must be a string, got {type(self.text).__name__}")
        spans = tuple(tuple((int(s), int(e)) for s, e in entity) for entity in self.spans)
        labels = tuple(str(label) for label in self.labels)
        ids = tuple(int(i) for i in self.label_ids) if len(self.label_ids) else tuple(range(len(spans)))
        if not len(spans) == len(labels) == len(ids):
            raise PromptError(
                f"a prompt needs one label and one label id per entity: got {len(spans)} span lists, "
                f"{len(labels)} labels and {len(ids)} label ids"
            )
        for index, entity in enumerate(spans):
            if not entity:
                raise PromptError(f"entity {index} ({labels[index]!r}) has no character span")
            for start, end in entity:
                if not 0 <= start < end <= len(self.text):
                    raise PromptError(
                        f"entity {index} ({labels[index]!r}) has span ({start}, {end}), which is empty "
                        f"or outside the prompt text of {len(self.text)} characters"
                    )
        object.__setattr__(self, "spans", spans)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "label_ids", ids)

    @property
    def num_entities(self) -> int:
        """Number of entities (class names or phrases) in the prompt."""
        return len(self.spans)

    def entity_texts(self) -> list[list[str]]:
        """The text under every span, per entity (handy in tests and error messages)."""
        return [[self.text[s:e] for s, e in entity] for entity in self.spans]


def clean_class_names(class_names: Sequence[str]) -> list[str]:
    """Validate category names and return them cleaned with :func:`clean_name`.

    Raises:
        PromptError: ``class_names`` is a string or empty, or an entry is not a string or is empty
            once cleaned (the message names the entry).
    """
    if isinstance(class_names, str):
        raise PromptError(
            f"class_names must be a list of names, not the string {class_names!r}: pass e.g. ['person', 'bicycle']"
        )
    if len(class_names) == 0:
        raise PromptError("class_names is empty: give at least one class name")
    cleaned = []
    for index, name in enumerate(class_names):
        if not isinstance(name, str):
            raise PromptError(f"class_names[{index}] must be a string, got {type(name).__name__}: {name!r}")
        clean = clean_name(name)
        if not clean.strip():
            raise PromptError(
                f"class_names[{index}] = {name!r} is empty once cleaned "
                "(a parenthesised part and underscores are removed): give it a real name"
            )
        cleaned.append(clean)
    return cleaned


def check_caption_prompts(caption_prompts: Sequence[Mapping[str, str]], num_classes: int) -> list[tuple[str, str, str]]:
    """Validate ODinW-style caption prompts; return (prefix, name, suffix) per class."""
    if len(caption_prompts) != num_classes:
        raise PromptError(
            f"caption_prompts has {len(caption_prompts)} entries but there are {num_classes} class names: "
            "give exactly one {'prefix', 'name', 'suffix'} entry per class, in class order"
        )
    parts = []
    for index, entry in enumerate(caption_prompts):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise PromptError(f"caption_prompts[{index}] must be a mapping with a 'name' key, got {entry!r}")
        prefix, name, suffix = entry.get("prefix", ""), entry["name"], entry.get("suffix", "")
        if not all(isinstance(p, str) for p in (prefix, name, suffix)):
            raise PromptError(f"caption_prompts[{index}]: 'prefix', 'name' and 'suffix' must be strings")
        if not name.strip():
            raise PromptError(f"caption_prompts[{index}]['name'] is empty: give the class name to ground")
        parts.append((prefix, name, suffix))
    return parts


def detection_prompt(
    class_names: Sequence[str],
    separator: str = DEFAULT_SEPARATOR,
    prefix: str = "",
    caption_prompts: Sequence[Mapping[str, str]] | None = None,
    label_ids: Sequence[int] | None = None,
) -> Prompt:
    """Build the official evaluation prompt from category names.

    Each name is passed through :func:`clean_name`; names are joined with ``separator`` *between*
    them (no trailing separator): ``["person", "traffic light"]`` → ``"person. traffic light"``.
    Each class's span is the character range of its cleaned name.

    Args:
        class_names: category names in label order.
        separator: text between two classes (official ``". "``).
        prefix: text put before the first class (the official training option
            ``"object detection : "``; empty at evaluation).
        caption_prompts: optional ODinW ``CAPTION_PROMPT`` entries, one ``{"prefix", "name",
            "suffix"}`` mapping per class. The class then reads ``prefix + name + suffix``; its span
            covers only ``name``, which is used as given (not cleaned) in place of the class name.
            A missing ``prefix`` or ``suffix`` counts as ``""``.
        label_ids: global label id per class; defaults to ``0 .. len(class_names) - 1``.

    Returns:
        A :class:`Prompt` whose labels are the class names as given.

    Raises:
        PromptError: empty list, a name that is empty once cleaned, or mismatched lengths.
    """
    cleaned = clean_class_names(class_names)
    parts: list[tuple[str, str, str]]
    if caption_prompts is None:
        parts = [("", name, "") for name in cleaned]
    else:
        parts = check_caption_prompts(caption_prompts, len(cleaned))
    if label_ids is not None and len(label_ids) != len(cleaned):
        raise PromptError(f"got {len(label_ids)} label ids for {len(cleaned)} class names")

    pieces = [prefix]
    length = len(prefix)
    spans: list[tuple[Span, ...]] = []
    for index, (before, name, after) in enumerate(parts):
        pieces.append(before)
        start = length + len(before)
        end = start + len(name)
        spans.append(((start, end),))
        pieces.extend((name, after))
        length = end + len(after)
        if index != len(parts) - 1:
            pieces.append(separator)
            length += len(separator)
    text = "".join(pieces)
    ids = tuple(label_ids) if label_ids is not None else ()
    return Prompt(text=text, spans=tuple(spans), labels=tuple(class_names), label_ids=ids)


def _phrase_occurrences(caption: str, phrase: str) -> list[Span]:
    """Every non-overlapping, case-insensitive occurrence of ``phrase`` in ``caption``.

    Official semantics: a plain substring search (``re.finditer`` on the lowercased caption), so
    ``"cat"`` also matches inside ``"category"``.
    """
    return [(m.start(), m.end()) for m in re.finditer(re.escape(phrase), caption, flags=re.IGNORECASE)]


def caption_prompt(caption: str, phrases: Sequence[str] | None = None) -> Prompt:
    """Build a grounding prompt from a free caption.

    The caption is the prompt text, unchanged. Every occurrence of every phrase (case-insensitive
    substring match, as the official demo does) becomes its own entity labelled with the phrase;
    entities are ordered by phrase, then by position.

    Args:
        caption: the sentence to ground.
        phrases: the phrases to ground. ``None`` extracts noun phrases with
            :func:`~glip.text.noun_phrases.extract_noun_phrases`; a caption without any noun phrase
            then becomes one entity covering the whole (stripped) caption, with a logged warning.
            Repeated phrases (ignoring case) are used once.

    Raises:
        PromptError: the caption is empty, a phrase is empty, or a phrase does not occur in the
            caption (the message names every missing phrase).
    """
    if not isinstance(caption, str) or not caption.strip():
        raise PromptError(f"the caption is empty ({caption!r}): give a sentence that names what to find")
    if phrases is None:
        found = extract_noun_phrases(caption)
        if not found:
            logger.warning("no noun phrase found in caption %r; grounding the whole caption", caption)
            return _whole_caption(caption)
        wanted = found
    else:
        if isinstance(phrases, str):
            raise PromptError(f"phrases must be a list of phrases, not the string {phrases!r}")
        if len(phrases) == 0:
            raise PromptError("phrases is empty: give at least one phrase, or None to extract noun phrases")
        wanted = []
        seen: set[str] = set()
        for index, phrase in enumerate(phrases):
            if not isinstance(phrase, str) or not phrase.strip():
                raise PromptError(f"phrases[{index}] = {phrase!r} is empty: give the words to ground")
            if phrase.lower() not in seen:
                seen.add(phrase.lower())
                wanted.append(phrase)

    spans: list[tuple[Span, ...]] = []
    labels: list[str] = []
    missing: list[str] = []
    for phrase in wanted:
        occurrences = _phrase_occurrences(caption, phrase)
        if not occurrences:
            missing.append(phrase)
        for span in occurrences:
            spans.append((span,))
            labels.append(phrase)
    if missing and phrases is not None:
        raise PromptError(f"phrases not found in the caption {caption!r}: {missing!r}")
    if missing:  # extracted from caption.lower(), which can differ in length for rare characters
        logger.warning("noun phrases %r not found again in caption %r; dropped", missing, caption)
        if not spans:
            return _whole_caption(caption)
    return Prompt(text=caption, spans=tuple(spans), labels=tuple(labels))


def _whole_caption(caption: str) -> Prompt:
    """One entity covering the caption without its surrounding whitespace."""
    start = len(caption) - len(caption.lstrip())
    end = len(caption.rstrip())
    return Prompt(text=caption, spans=(((start, end),),), labels=(caption[start:end],))
