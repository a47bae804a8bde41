"""One error type for configuration problems, one for bad samples.

Every configuration problem is an :class:`Issue` that carries where it came from (file, line,
column), which dataset and which field, so that a user can fix a thousand-line mixture file in one
pass. :class:`ConfigError` carries all issues of a file at once.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Issue:
    """One problem found in a configuration file."""

    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    dataset: str | None = None
    field: str | None = None
    severity: str = "error"  # "error" or "warning"

    def location(self) -> str:
        parts = [self.file or "<config>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = []
        if self.dataset is not None:
            where.append(f"dataset {self.dataset!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        ctx = f" [{', '.join(where)}]" if where else ""
        return f"{self.location()}: {self.severity}{ctx}: {self.message}"

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("severity")
        return d


class LavidaDataError(Exception):
    """Base class of this library's errors."""


class ConfigError(LavidaDataError, ValueError):
    """A configuration file has one or more errors; ``issues`` lists all of them."""

    def __init__(self, issues: Sequence[Issue], warnings: Sequence[Issue] = ()):
        self.issues = list(issues)
        self.warnings = list(warnings)
        n = len(self.issues)
        head = f"{n} error{'s' if n != 1 else ''} in configuration"
        super().__init__(head + ":\n" + "\n".join(f"  {i}" for i in self.issues))


class SampleError(LavidaDataError):
    """A row cannot be turned into a sample; it is skipped and counted under ``reason``
    (``path``: the file at fault, when one is, e.g. an unreadable image)."""

    def __init__(self, reason: str, message: str = "", field: str | None = None, path: str | None = None):
        self.reason = reason
        self.field = field
        self.path = path
        super().__init__(message or reason)


class TooManyBadSamples(LavidaDataError):
    """A dataset's bad fraction passed ``max_bad_fraction``: the message names it, gives its counts
    per reason and a few examples (sample id, path, error) of each."""


class MissingDependencyError(LavidaDataError, ImportError):
    """An optional dependency is not installed."""


def require(module: str, extra: str):
    """Import an optional dependency lazily, with an install hint when it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{module} is needed for this feature: pip install 'lavida-data[{extra}]'"
        ) from e


def suggest(name: str, choices: Iterable[str]) -> str:
    """A " (did you mean 'x'?)" suffix naming the closest valid choice, or ""."""
    matches = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
