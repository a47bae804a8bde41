"""The importers' error: a source without the layout its KIND expects."""

from __future__ import annotations


class ImportError_(ValueError):
    """A source does not have the layout its KIND expects (the message says what was expected)."""
