"""A validated dataset entry, ready to read: its converter, options, table and columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import DatasetSpec, Mixture
from .filters import SCORE, Filters
from .registry import Converter


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

    @property
    def filters(self) -> Filters:
        return Filters.of(self.spec)

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

    def reads_score_without_cutoff(self, schema: list[str] | None) -> bool:
        if self.spec.aes_cutoff is not None:
            return False
        cols = self.read_columns(schema)
        return SCORE in cols and (schema is None and self.spec.columns is not None or schema is not None and SCORE in schema)


def make_plan(mixture: Mixture, spec: DatasetSpec, converter: Converter) -> DatasetPlan:
    return DatasetPlan(
        spec=spec,
        converter=converter,
        options=converter.parse_options(spec.process_fn_kwargs),
        table=mixture.resolve(spec.path) or spec.path,
        image_root=mixture.resolve(spec.image_root),
    )
