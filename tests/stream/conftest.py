"""Fixtures of the loader's tests (the prepared demo mixture is the session's: tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer: str) -> str:
    """The tiny tokenizer's folder, as the loader's ``tokenize`` step takes it."""
    return tiny_tokenizer
