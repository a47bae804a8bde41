"""Reading a planned dataset: filtered Arrow batches, the strategy's rows, converted samples.

This is the "cook" stage of the data path, before any preparation: it reads a table straight
from its source. Bad rows are skipped and counted per reason, never silently replaced.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa

from lavida_data.convert.sample import convert_row
from lavida_data.errors import SampleError
from lavida_data.io.tables import ROW, batch_records, count_rows, iter_batches, read_schema
from lavida_data.spec.filters import HEIGHT, SCORE, WIDTH
from lavida_data.spec.plan import DatasetPlan

NUMERIC_COLUMNS = (SCORE, HEIGHT, WIDTH, "hpsv2")


@dataclass
class Stats:
    """Counts of one dataset: rows read, rows kept by the filters, drops and skips by reason."""

    rows_read: int = 0
    rows_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": {k: v for k, v in sorted(self.dropped.items()) if v},
            "skipped": {k: v for k, v in sorted(self.skipped.items()) if v},
        }


def kept_batches(
    plan: DatasetPlan, *, columns: list[str] | None = None, stats: Stats | None = None, batch_size: int = 8192
) -> Iterator[pa.RecordBatch]:
    """The table's batches after the entry's filters, with ``__row__`` (the source row index)."""
    stats = stats if stats is not None else Stats()
    if columns is None:
        columns = plan.read_columns(read_schema(plan.table))
    numeric = [c for c in columns if c in NUMERIC_COLUMNS]
    for batch in iter_batches(plan.table, columns, batch_size=batch_size, numeric=numeric):
        stats.rows_read += batch.num_rows
        kept = plan.filters.apply(batch, stats.dropped)
        stats.rows_kept += kept.num_rows
        yield kept


def selected_rows(plan: DatasetPlan, seed: int) -> np.ndarray:
    """Source row indices of one pass over the dataset, in order (``dup`` repeats not expanded).

    Reads only what the filters need (nothing at all for an unfiltered parquet file).
    """
    strategy = plan.spec.sampling_strategy
    filter_cols = list(plan.filters.columns())
    total = count_rows(plan.table) if not filter_cols else None
    if total is not None:
        kept = np.arange(total, dtype=np.int64)
    else:
        # a batch needs one column to carry its row count
        columns = filter_cols or plan.read_columns(read_schema(plan.table))[:1]
        parts = [b.column(ROW).to_numpy() for b in kept_batches(plan, columns=columns)]
        kept = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return kept[strategy.select(len(kept), seed=seed, dataset=plan.name)]


def _streamable(plan: DatasetPlan) -> bool:
    s = plan.spec.sampling_strategy
    return s.kind in ("all", "dup") or (s.kind == "first" and s.percent is None)


def iter_rows(plan: DatasetPlan, seed: int, stats: Stats | None = None) -> Iterator[tuple[int, dict]]:
    """``(row_index, row)`` of one pass over the dataset in table order, as the strategy selects."""
    stats = stats if stats is not None else Stats()
    limit = None
    wanted: np.ndarray | None = None
    if _streamable(plan):
        if plan.spec.sampling_strategy.kind == "first":
            limit = plan.spec.sampling_strategy.count
    else:
        wanted = selected_rows(plan, seed)
    given = 0
    for batch in kept_batches(plan, stats=stats):
        rows = batch.column(ROW).to_numpy()
        if wanted is not None:
            mask = np.isin(rows, wanted, assume_unique=True)
            if not mask.any():
                continue
            batch = batch.filter(pa.array(mask))
        for rec in batch_records(batch):
            if limit is not None and given >= limit:
                return
            idx = rec.pop(ROW)
            given += 1
            yield idx, rec


def iter_samples(
    plan: DatasetPlan, seed: int, *, stats: Stats | None = None, epoch: int = 0
) -> Iterator[dict]:
    """Converted samples of one pass; position ``i`` is the sample's index in this pass."""
    stats = stats if stats is not None else Stats()
    position = 0
    for idx, row in iter_rows(plan, seed, stats):
        try:
            sample = convert_row(
                plan.converter, plan.options, row, dataset=plan.name, row_index=idx, seed=seed,
                epoch=epoch, position=position, image_root=plan.image_root,
            )
        except SampleError as e:
            stats.skipped[e.reason] += 1
            continue
        finally:
            position += 1
        yield sample
