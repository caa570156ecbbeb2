"""Prompt building, character span → token maps, noun phrases and vocabulary chunking.

Typical use::

    from glip.text import load_tokenizer, detection_prompt, tokenize_prompt

    tokenizer = load_tokenizer()
    prompt = detection_prompt(["person", "traffic light"])      # "person. traffic light"
    tokenized = tokenize_prompt(tokenizer, prompt)               # ids + tokens of each class
    tokenized.token_ids_per_entity                               # [[1], [3, 4]]
"""

from glip.text.chunking import chunk_vocabulary
from glip.text.noun_phrases import extract_noun_phrases, tag_words
from glip.text.positive_map import (
    MAX_QUERY_LEN,
    TokenizedPrompt,
    build_positive_map,
    char_to_token_table,
    count_tokens,
    label_to_token_ids,
    load_tokenizer,
    spans_to_token_ids,
    tokenize_prompt,
)
from glip.text.prompts import (
    DEFAULT_SEPARATOR,
    Prompt,
    Span,
    caption_prompt,
    clean_class_names,
    clean_name,
    detection_prompt,
)

__all__ = [
    "DEFAULT_SEPARATOR",
    "MAX_QUERY_LEN",
    "Prompt",
    "Span",
    "TokenizedPrompt",
    "build_positive_map",
    "caption_prompt",
    "char_to_token_table",
    "chunk_vocabulary",
    "clean_class_names",
    "clean_name",
    "count_tokens",
    "detection_prompt",
    "extract_noun_phrases",
    "label_to_token_ids",
    "load_tokenizer",
    "spans_to_token_ids",
    "tag_words",
    "tokenize_prompt",
]
