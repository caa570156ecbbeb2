"""Splitting a long vocabulary into detection prompts that each fit the text encoder.

The text encoder reads at most 256 tokens, so a vocabulary such as LVIS (1,203 classes) is
evaluated in several forward passes, one prompt per *chunk* of classes. The official code cuts the
class list into fixed groups of ``TEST.CHUNKED_EVALUATION`` (40 for LVIS) and lets the model
truncate a chunk that is too long. :func:`chunk_vocabulary` instead packs classes greedily, in
order, so that every chunk is guaranteed to fit, optionally capped at a number of classes per
chunk (a cap of 40 reproduces the official chunks whenever those fit). Each chunk's
:class:`~glip.text.prompts.Prompt` keeps the *global* label ids so results can be concatenated.

Templated class prompts (ODinW caption prompts, ``--prompt-template "a photo of a {}"``: each class
reads ``prefix + name + suffix``) are packed the same way, each class counting the tokens of its
whole text; every chunk keeps each class's prefix and suffix, and a chunk that fits is exactly the
prompt :func:`~glip.text.prompts.detection_prompt` builds for those classes.

Every name is tokenised once (one batched call); the prompt length is the sum of the name and
separator token counts plus the special tokens. That sum is exact when the separator starts and
ends at a word boundary (whitespace or punctuation, as ``". "`` does); every chunk is tokenised
once more at the end to check, and a chunk that does not fit after all is split further.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from glip.errors import PromptError
from glip.text.positive_map import MAX_QUERY_LEN, count_tokens
from glip.text.prompts import (
    DEFAULT_SEPARATOR,
    Prompt,
    check_caption_prompts,
    clean_class_names,
    detection_prompt,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


def _pack(counts: Sequence[int], separator_count: int, budget: int, max_classes: int | None) -> list[list[int]]:
    """Greedy in-order packing of items with token ``counts`` into groups within ``budget``."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, count in enumerate(counts):
        extra = count + (separator_count if current else 0)
        full = max_classes is not None and len(current) >= max_classes
        if current and (used + extra > budget or full):
            groups.append(current)
            current, used, extra = [], 0, count
        current.append(index)
        used += extra
    if current:
        groups.append(current)
    return groups


def chunk_vocabulary(
    tokenizer: PreTrainedTokenizerBase,
    class_names: Sequence[str],
    max_len: int = MAX_QUERY_LEN,
    max_classes_per_chunk: int | None = None,
    separator: str = DEFAULT_SEPARATOR,
    label_ids: Sequence[int] | None = None,
    caption_prompts: Sequence[Mapping[str, str]] | None = None,
) -> list[Prompt]:
    """Pack class names, in order, into detection prompts of at most ``max_len`` tokens each.

    Args:
        tokenizer: the fast tokenizer the model uses (see :func:`glip.text.load_tokenizer`).
        class_names: the whole vocabulary, in label order.
        max_len: the most tokens one prompt may have, ``[CLS]`` and ``[SEP]`` included.
        max_classes_per_chunk: optional cap on classes per prompt (the official LVIS setting is 40).
        separator: text between two class names, as in :func:`~glip.text.prompts.detection_prompt`.
        label_ids: global id per class; defaults to ``0 .. len(class_names) - 1``.
        caption_prompts: optional ``{"prefix", "name", "suffix"}`` per class (a template applied to
            every class, or ODinW caption prompts): a class then counts as its whole
            ``prefix + name + suffix`` (see :func:`~glip.text.prompts.detection_prompt`).

    Returns:
        Detection prompts covering every class exactly once, in order; each keeps the global
        ``label_ids`` of its classes.

    Raises:
        PromptError: empty vocabulary, an empty name, one name that alone needs more than
            ``max_len`` tokens, or invalid ``max_len`` / ``max_classes_per_chunk``.
    """
    cleaned = clean_class_names(class_names)
    parts = check_caption_prompts(caption_prompts, len(cleaned)) if caption_prompts is not None else None
    texts = cleaned if parts is None else [f"{before}{name}{after}" for before, name, after in parts]
    if max_classes_per_chunk is not None and max_classes_per_chunk < 1:
        raise PromptError(f"max_classes_per_chunk must be at least 1, got {max_classes_per_chunk}")
    if label_ids is not None and len(label_ids) != len(cleaned):
        raise PromptError(f"got {len(label_ids)} label ids for {len(cleaned)} class names")
    ids = list(label_ids) if label_ids is not None else list(range(len(cleaned)))
    special = tokenizer.num_special_tokens_to_add(pair=False)
    budget = max_len - special
    if budget < 1:
        raise PromptError(f"max_len = {max_len} leaves no room for a class name next to the special tokens")

    counts = [len(tokens) for tokens in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    separator_count = len(tokenizer(separator, add_special_tokens=False)["input_ids"]) if separator else 0
    for index, count in enumerate(counts):
        if count > budget:
            raise PromptError(
                f"class_names[{index}] = {_shorten(texts[index] if parts else class_names[index])} alone needs "
                f"{count + special} tokens; "
                f"the model reads at most {max_len}: shorten that name"
            )

    pending = _pack(counts, separator_count, budget, max_classes_per_chunk)
    prompts: list[Prompt] = []
    while pending:
        group = pending.pop(0)
        prompt = _group_prompt(class_names, ids, group, separator, caption_prompts)
        if count_tokens(tokenizer, prompt.text) <= max_len:
            prompts.append(prompt)
            continue
        # The separator merged with its neighbours, so the counts were not additive: keep the
        # longest prefix that really fits and try the rest as a new group.
        logger.debug("chunk of %d classes is over %d tokens once tokenised; splitting it", len(group), max_len)
        keep = len(group) - 1
        prompt = _group_prompt(class_names, ids, group[:keep], separator, caption_prompts)
        while keep > 1 and count_tokens(tokenizer, prompt.text) > max_len:
            keep -= 1
            prompt = _group_prompt(class_names, ids, group[:keep], separator, caption_prompts)
        prompts.append(prompt)
        pending.insert(0, group[keep:])
    logger.info("split %d class names into %d prompts of at most %d tokens", len(cleaned), len(prompts), max_len)
    return prompts


def _group_prompt(
    class_names: Sequence[str],
    ids: Sequence[int],
    group: Sequence[int],
    separator: str,
    caption_prompts: Sequence[Mapping[str, str]] | None = None,
) -> Prompt:
    captions = None if caption_prompts is None else [caption_prompts[i] for i in group]
    names, labels = [class_names[i] for i in group], [ids[i] for i in group]
    return detection_prompt(names, separator=separator, caption_prompts=captions, label_ids=labels)


def _shorten(name: str, limit: int = 60) -> str:
    """``repr`` of a name, cut after ``limit`` characters for error messages."""
    return repr(name) if len(name) <= limit else repr(name[:limit]) + "..."
