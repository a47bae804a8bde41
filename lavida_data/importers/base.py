"""The import framework's vocabulary: the importer registry, a table an importer writes
(:class:`Part`), a row of it (:class:`Row`) and what an importer gets besides its source
(:class:`ImportContext`).

An importer is a generator registered with :func:`importer`. It reads ``source`` (a local path
or ``s3://`` URI; a file or a folder, as its layout needs), and yields :class:`Row`\\ s: the
values of one row of one of its declared tables (``parts``). It never holds a whole input in
memory, never writes files itself, and reports bad records with :meth:`ImportContext.skip`.
Images it finds (archive members, embedded bytes, files) go through
:meth:`ImportContext.image`, which writes them under ``--images-to`` (see :mod:`.sink`) and
returns the path the table should hold. :func:`.run.run_import` drives an importer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

import pyarrow as pa

if TYPE_CHECKING:
    from lavida_data.importers.sink import ImageSink

Frame = Literal["padded-square", "per-axis"]


@dataclass(frozen=True)
class Part:
    """One output table of an importer: its columns and the mixture entry that reads it."""

    schema: pa.Schema
    converter: str
    options: dict[str, Any] = field(default_factory=dict)  # process_fn_kwargs of the mixture entry
    entry: dict[str, Any] = field(default_factory=dict)  # other keys of the entry (min_size, ...)


@dataclass(frozen=True)
class Row:
    part: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Importer:
    kind: str
    fn: Callable[[str, "ImportContext"], Iterator[Row]]
    parts: dict[str, Part]
    doc: str
    dynamic_parts: bool = False  # parts named at run time (e.g. one per source), all like parts["*"]

    def part(self, name: str) -> Part:
        if name in self.parts:
            return self.parts[name]
        if self.dynamic_parts and "*" in self.parts:
            return self.parts["*"]
        raise KeyError(f"importer {self.kind!r} yielded a row for undeclared table {name!r}")


IMPORTERS: dict[str, Importer] = {}


def importer(kind: str, parts: dict[str, Part], *, dynamic_parts: bool = False):
    """Register ``fn(source, ctx) -> Iterator[Row]`` as the importer of ``kind``."""

    def wrap(fn):
        if kind in IMPORTERS:
            raise ValueError(f"importer {kind!r} is registered twice")
        IMPORTERS[kind] = Importer(kind, fn, parts, (fn.__doc__ or "").strip(), dynamic_parts)
        return fn

    return wrap


# --------------------------------------------------------------------------------------- context


@dataclass
class ImportContext:
    """What an importer gets besides its source: options, the image sink and the skip counters."""

    kind: str
    source: str
    frame: Frame = "padded-square"
    images: ImageSink | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # the first record skipped for each reason
    on_progress: Callable[[int], None] | None = None
    # process_fn_kwargs learnt while importing (e.g. the image prefix), per part: merged into the
    # printed mixture entry and kept in the table metadata, so a rerun prints the same entry
    entry_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # what the user should know about the source though no record is skipped: key -> [count, first example]
    notices: dict[str, list] = field(default_factory=dict)

    def skip(self, reason: str, detail: str = "") -> None:
        """Count one malformed record (``reason`` is a short stable label, ``detail`` says where)."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if detail and reason not in self.examples:
            self.examples[reason] = detail[:300]

    def notice(self, key: str, detail: str = "") -> None:
        """Count one record worth a warning (``key``: a short stable label; the first ``detail`` kept)."""
        entry = self.notices.setdefault(key, [0, detail[:300]])
        entry[0] += 1

    def image(self, key: str, data: bytes | Callable[[], bytes], fallback: str | None = None) -> str | None:
        """The path the table holds for an image: under ``--images-to`` when given (written there),
        else ``fallback`` (where the layout already keeps it readable), else None (not stored)."""
        if self.images is not None:
            return self.images.put(key, data)
        return fallback

    def progress(self, n: int = 1) -> None:
        if self.on_progress is not None:
            self.on_progress(n)


