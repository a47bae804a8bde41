"""A validated dataset entry, ready to read: its converter, options, table and columns."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from lavida_data.convert.registry import Converter
from lavida_data.spec.config import DatasetSpec, Mixture
from lavida_data.spec.filters import SCORE, UPSTREAM_AES_CUTOFF, Filters


def reads_score(spec: DatasetSpec, schema: list[str] | None) -> bool | None:
    """Whether upstream's table has ``fltLaionAesthScore``: upstream reads ``columns`` when the
    entry lists them, else every column of the table. ``None`` when that needs the (unknown) schema."""
    if spec.columns is not None:
        return SCORE in spec.columns
    return None if schema is None else SCORE in schema


def with_upstream_aes(spec: DatasetSpec, schema: list[str] | None) -> DatasetSpec:
    """``spec`` with upstream's hidden aesthetic filter made explicit: an entry that gives no
    ``aes_cutoff`` and reads ``fltLaionAesthScore`` gets ``aes_cutoff: 5.0``, one that does not read
    it ``aes_cutoff: null``. Unchanged when the entry sets ``aes_cutoff`` (a number, or null for no
    filter) or when the answer needs the schema and ``schema`` is None."""
    if spec.aes_declared:
        return spec
    reads = reads_score(spec, schema)
    if reads is None:
        return spec
    out = spec.model_copy(update={"aes_cutoff": UPSTREAM_AES_CUTOFF if reads else None})
    out._declared_name = spec._declared_name
    return out


@dataclass(frozen=True)
class DatasetPlan:
    spec: DatasetSpec
    converter: Converter
    options: Any
    table: str  # the table's path, resolved against the mixture file's folder
    image_root: str | None

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def filters(self) -> Filters:
        spec = self.spec
        if not spec.aes_declared and spec.columns is None:  # validated offline: decide on the table
            from lavida_data.io.tables import read_schema

            spec = with_upstream_aes(spec, read_schema(self.table))
        return Filters.of(spec)

    def needed_columns(self) -> dict[str, str]:
        """Columns that must be read, each with who needs it."""
        out = {c: f"converter {self.converter.name!r}" for c in self.converter.required_columns(self.options)}
        for c, f in self.filters.columns().items():
            out.setdefault(c, f"filter {f}")
        return out

    def read_columns(self, schema: list[str] | None) -> list[str]:
        """Columns to read: ``columns`` when the entry gives them, else what the converter and
        filters need plus the converter's optional columns that the table has."""
        if self.spec.columns is not None:
            return list(dict.fromkeys(self.spec.columns))
        cols = list(self.needed_columns())
        for c in self.converter.optional_columns(self.options):
            if schema is None or c in schema:
                cols.append(c)
        return list(dict.fromkeys(cols))


def make_plan(mixture: Mixture, spec: DatasetSpec, converter: Converter,
              schema: list[str] | None = None) -> DatasetPlan:
    """The plan of one entry; with ``schema`` (the table's columns) upstream's hidden aesthetic
    filter is decided now (see :func:`with_upstream_aes`), else when the plan's filters are first used."""
    return DatasetPlan(
        spec=with_upstream_aes(spec, schema),
        converter=converter,
        options=converter.parse_options(spec.process_fn_kwargs),
        table=mixture.resolve(spec.path) or spec.path,
        image_root=mixture.resolve(spec.image_root),
    )
