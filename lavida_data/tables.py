"""Tables: csv, parquet, json (a list of records) and jsonl, local or on S3, read in batches.

Only the needed columns are read, batch by batch, so memory stays bounded for a table larger
than RAM. Every batch carries ``__row__``: the row's index in the source table, counted from 0
before any filter (it becomes the sample id).
"""

from __future__ import annotations

import io
import json
import os
from contextlib import contextmanager
from typing import IO, Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import s3
from .errors import suggest

ROW = "__row__"
FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_SCHEMA_SAMPLE = 200


def table_format(path: str) -> str:
    """``csv``, ``parquet``, ``json`` or ``jsonl``, from the path's suffix."""
    suffix = os.path.splitext(path.split("?")[0])[1].lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"{path!r}: unknown table format {suffix or '(no suffix)'!r}{suggest(suffix, FORMATS)}; "
            "expected .csv, .parquet, .json (a list of records) or .jsonl"
        )
    return FORMATS[suffix]


def source_info(path: str) -> dict[str, Any]:
    """Size and a change marker (etag on S3, mtime locally) of a table."""
    if s3.is_s3(path):
        return s3.head(path)
    st = os.stat(path)
    return {"size": st.st_size, "etag": None, "mtime": st.st_mtime}


@contextmanager
def _open(path: str, seekable: bool = False) -> Iterator[IO[bytes]]:
    if s3.is_s3(path):
        f = s3.open_ranged(path) if seekable else s3.open_stream(path)
    else:
        f = open(path, "rb")
    try:
        yield f
    finally:
        f.close()


def read_schema(path: str) -> list[str]:
    """Column names, from the parquet footer or the first rows; nothing else is read."""
    fmt = table_format(path)
    if fmt == "parquet":
        with _open(path, seekable=True) as f:
            return list(pq.ParquetFile(f).schema_arrow.names)
    if fmt == "csv":
        return csv_header(path)
    names: dict[str, None] = {}
    for i, rec in enumerate(_iter_records(path, fmt)):
        names.update(dict.fromkeys(rec))
        if i + 1 >= _SCHEMA_SAMPLE:
            break
    return list(names)


def count_rows(path: str) -> int | None:
    """Row count from parquet metadata; ``None`` for formats that would need a full read."""
    if table_format(path) != "parquet":
        return None
    with _open(path, seekable=True) as f:
        return pq.ParquetFile(f).metadata.num_rows


def iter_batches(
    path: str,
    columns: Sequence[str] | None = None,
    *,
    batch_size: int = 8192,
    numeric: Sequence[str] = (),
) -> Iterator[pa.RecordBatch]:
    """Record batches holding ``columns`` (all when ``None``) plus ``__row__``.

    For csv, columns other than ``numeric`` are read as strings, so that a caption like ``1984``
    stays text and type inference cannot fail half-way through a large file.
    """
    fmt = table_format(path)
    start = 0
    for batch in _raw_batches(path, fmt, columns, batch_size, numeric):
        n = batch.num_rows
        rows = np.arange(start, start + n, dtype=np.int64)  # from_buffers: pa.array(ndarray) would import pandas
        yield batch.append_column(ROW, pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(rows)]))
        start += n


def _raw_batches(path, fmt, columns, batch_size, numeric) -> Iterator[pa.RecordBatch]:
    cols = list(columns) if columns is not None else None
    if fmt == "parquet":
        if not s3.is_s3(path):  # Arrow's own file reader: no Python in the read path
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=cols)
            return
        with _open(path, seekable=True) as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=cols)
        return
    if fmt == "csv":
        header = csv_header(path) if cols is None else cols
        with _open(path) as f:
            yield from csv_batches(f, header, cols, numeric)
        return
    rows: list[dict] = []
    for rec in _iter_records(path, fmt):
        rows.append(rec)
        if len(rows) >= batch_size:
            yield records_to_batch(rows, cols)
            rows = []
    if rows:
        yield records_to_batch(rows, cols)


def records_to_batch(rows: list[dict], columns: Sequence[str] | None) -> pa.RecordBatch:
    """Records to a batch; a column whose values Arrow cannot unify is kept as JSON text."""
    if columns is None:
        names: dict[str, None] = {}
        for r in rows:
            names.update(dict.fromkeys(r))
        columns = list(names)
    arrays = []
    for c in columns:
        values = [r.get(c) for r in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.array([None if v is None else json.dumps(v) for v in values], pa.string()))
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


def csv_header(path: str, chunk: int = 1 << 16) -> list[str]:
    """The column names of a csv file, parsed from its first lines in memory (Arrow's streaming
    reader would start a read-ahead thread on the open file just to learn them)."""
    head = b""
    with _open(path) as f:
        while True:
            more = f.read(chunk)
            head += more
            if not more or b"\n" in more:
                break
    if b"\n" in head:
        head = head[: head.rindex(b"\n") + 1]
    opts = pacsv.ReadOptions(use_threads=False, block_size=max(len(head), 1) + 1)
    return list(pacsv.read_csv(io.BytesIO(head), read_options=opts).schema.names)


def csv_batches(f: IO[bytes], header: Sequence[str], columns: Sequence[str] | None,
                numeric: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The non-empty batches of a csv stream; columns other than ``numeric`` read as strings.
    The reader (and its read-ahead thread) is closed also when the caller stops early: a reader
    left to the interpreter's shutdown aborts the process."""
    types = {c: pa.string() for c in header if c not in set(numeric)}
    reader = pacsv.open_csv(
        f,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        convert_options=pacsv.ConvertOptions(include_columns=columns, column_types=types),
    )
    try:
        for batch in reader:
            if batch.num_rows:
                yield batch
    finally:
        reader.close()


def jsonl_records(text: IO[str], path: str, first_line: int = 1) -> Iterator[dict]:
    """The objects of JSON lines; a bad line is an error naming ``path`` and its line number."""
    for lineno, line in enumerate(text, first_line):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON: {e.msg}") from e
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: a record must be a JSON object")
        yield rec


def _iter_records(path: str, fmt: str) -> Iterator[dict]:
    with _open(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8")
        if fmt == "jsonl":
            yield from jsonl_records(text, path)
        else:
            yield from iter_json_array(text, path)


def iter_json_array(text: IO[str], name: str = "<json>", chunk: int = 1 << 20) -> Iterator[dict]:
    """The records of a JSON array, parsed incrementally: memory is bounded by one record."""
    dec = json.JSONDecoder()
    buf = ""
    pos = 0
    eof = False

    def fill() -> bool:
        nonlocal buf, pos, eof
        more = text.read(chunk)
        if not more:
            eof = True
            return False
        buf = buf[pos:] + more
        pos = 0
        return True

    def skip_ws() -> None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf) or not fill():
                return

    skip_ws()
    if pos >= len(buf) or buf[pos] != "[":
        raise ValueError(f"{name}: a .json table must be a JSON array of records")
    pos += 1
    index = 0
    skip_ws()
    if pos < len(buf) and buf[pos] == "]":
        return
    while True:
        skip_ws()
        while True:
            try:
                rec, end = dec.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as e:
                if eof or not fill():
                    raise ValueError(f"{name}: invalid JSON in record {index}: {e.msg}") from e
        if not isinstance(rec, dict):
            raise ValueError(f"{name}: record {index} is a {type(rec).__name__}, not an object")
        pos = end
        yield rec
        index += 1
        skip_ws()
        if pos >= len(buf):
            raise ValueError(f"{name}: the JSON array is not closed")
        if buf[pos] == ",":
            pos += 1
            continue
        if buf[pos] == "]":
            return
        raise ValueError(f"{name}: expected ',' or ']' after record {index - 1}")
