"""Fixtures of the transforms' tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tok_dir(tiny_tokenizer: str) -> str:
    """The tiny tokenizer's folder (built once per run)."""
    return tiny_tokenizer
