"""Row filters of a dataset entry, applied to Arrow batches: ``aes_cutoff``, ``min_size``,
``max_enc_images``. Each dropped row is counted under the filter that dropped it; a row whose
filter column is null is counted under ``<filter>:null`` rather than silently vanishing.

They mean what upstream's loader makes them mean: ``fltLaionAesthScore > aes_cutoff`` (strictly),
``intHeight >= min_size and intWidth >= min_size``, and ``len(<column>) <= value`` (a list's items;
a string counts 1, or its items when it holds a JSON list), applied in that order. Upstream also
filters every table whose read columns include ``fltLaionAesthScore`` at ``> 5`` when the entry
gives no ``aes_cutoff``: :func:`lavida_data.spec.plan.with_upstream_aes` makes that cutoff explicit.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lavida_data.io.tables import column_values, is_json_field

SCORE = "fltLaionAesthScore"
HEIGHT = "intHeight"
WIDTH = "intWidth"
#: the cutoff upstream applies when an entry reading ``fltLaionAesthScore`` gives no ``aes_cutoff``
UPSTREAM_AES_CUTOFF = 5.0


@dataclass(frozen=True)
class Filters:
    aes_cutoff: float | None = None
    min_size: int | None = None
    max_enc_column: str | None = None
    max_enc_value: int | None = None

    @classmethod
    def of(cls, spec) -> "Filters":
        mei = spec.max_enc_images
        return cls(spec.aes_cutoff, spec.min_size, mei.column if mei else None, mei.value if mei else None)

    def columns(self) -> dict[str, str]:
        """Columns the filters read, each with the filter that needs it."""
        out: dict[str, str] = {}
        if self.aes_cutoff is not None:
            out[SCORE] = "aes_cutoff"
        if self.min_size is not None:
            out[HEIGHT] = out[WIDTH] = "min_size"
        if self.max_enc_column is not None:
            out[self.max_enc_column] = "max_enc_images"
        return out

    def numeric_columns(self) -> list[str]:
        return [c for c, f in self.columns().items() if f != "max_enc_images"]

    def apply(self, batch: pa.RecordBatch, dropped: Counter) -> pa.RecordBatch:
        """The rows of ``batch`` that pass every filter; counts the others into ``dropped``."""
        keep = np.ones(batch.num_rows, dtype=bool)
        if self.aes_cutoff is not None:
            keep &= self._check(batch, "aes_cutoff", pc.greater(_num(batch, SCORE), self.aes_cutoff), keep, dropped)
        if self.min_size is not None:
            ok = pc.and_kleene(
                pc.greater_equal(_num(batch, HEIGHT), self.min_size),
                pc.greater_equal(_num(batch, WIDTH), self.min_size),
            )
            keep &= self._check(batch, "min_size", ok, keep, dropped)
        if self.max_enc_column is not None:
            lengths = _list_lengths(batch, self.max_enc_column)
            ok = pc.less_equal(lengths, self.max_enc_value)
            keep &= self._check(batch, "max_enc_images", ok, keep, dropped)
        if keep.all():
            return batch
        return batch.filter(pa.array(keep))

    @staticmethod
    def _check(batch, reason: str, ok: pa.Array, keep: np.ndarray, dropped: Counter) -> np.ndarray:
        valid = np.asarray(ok.is_valid())
        passed = np.asarray(ok.fill_null(False))
        # count only rows not already dropped by an earlier filter
        dropped[f"{reason}:null"] += int((keep & ~valid).sum())
        dropped[reason] += int((keep & valid & ~passed).sum())
        return passed


def _num(batch: pa.RecordBatch, name: str) -> pa.Array:
    col = batch.column(name)
    if is_json_field(batch.schema.field(name)):  # mixed json values: numbers, numeric text, else null
        return pa.array([_as_float(v) for v in column_values(batch, name)], pa.float64())
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.cast(pc.if_else(pc.equal(pc.utf8_trim_whitespace(col), ""), None, col), pa.float64(), safe=False)
    return col


def _as_float(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        return float(v)
    except ValueError:
        return None


def _list_lengths(batch: pa.RecordBatch, name: str) -> pa.Array:
    """Item counts of a list column; a string counts 1, or its length when it holds a JSON list."""
    col = batch.column(name)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return pc.list_value_length(col)
    if is_json_field(batch.schema.field(name)):  # each value as it was: a list's items, else 1
        return pa.array([None if v is None else len(v) if isinstance(v, list) else 1
                         for v in column_values(batch, name)], pa.int64())
    out = []
    for v in col.to_pylist():
        if v is None:
            out.append(None)
        elif isinstance(v, str) and v.lstrip().startswith("["):
            try:
                out.append(len(json.loads(v)))
            except json.JSONDecodeError:
                out.append(1)
        else:
            out.append(1)
    return pa.array(out, pa.int64())
