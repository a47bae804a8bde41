"""Tables: csv, parquet, json (a list of records) and jsonl, local or on S3, read in batches.

Only the needed columns are read, batch by batch, so memory stays bounded for a table larger
than RAM. Every batch carries ``__row__``: the row's index in the source table, counted from 0
before any filter (it becomes the sample id).

Every value reads back as it was in the table. csv cells are text (but the numeric filter
columns); parquet columns keep their types; a json/jsonl column is typed by Arrow only when its
values in the batch share one scalar type (str, bool, int, float; ints and floats together in a
numeric filter column). Any other column (lists, objects, or a mix such as GPT-Image-Edit's
``input_paths``, a string in some rows and a list in others) holds each value's JSON text, and
its field is marked (:data:`JSON_FIELD`): :func:`batch_records` and :func:`column_values` decode
it, and a prepared shard stores that text as is (never quoted twice).
"""

from __future__ import annotations

import io
import json
import os
from typing import IO, Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lavida_data import io as storage
from lavida_data.errors import suggest

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
#: field metadata of a json/jsonl column that holds each value's JSON text
JSON_FIELD = b"lavida.json"


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
    """Size and a change marker (etag on S3, mtime locally) of a table, from the object."""
    info = storage.stat(path)
    return {"size": info.size, "etag": info.etag, "mtime": info.mtime}


def read_schema(path: str) -> list[str]:
    """Column names, from the parquet footer or the first rows; nothing else is read."""
    fmt = table_format(path)
    if fmt == "parquet":
        with storage.open_read(path, seekable=True) as f:
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
    with storage.open_read(path, seekable=True) as f:
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
        if not storage.is_s3(path):  # Arrow's own file reader: no Python in the read path
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=cols)
            return
        with storage.open_read(path, seekable=True) as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=cols)
        return
    if fmt == "csv":
        header = csv_header(path) if cols is None else cols
        with storage.open_read(path) as f:
            yield from csv_batches(f, header, cols, numeric)
        return
    yield from record_batches(_iter_records(path, fmt), batch_size, cols, numeric)


def record_batches(records: Iterable[dict], batch_size: int, columns: Sequence[str] | None,
                   numeric: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """``records`` as record batches of ``batch_size`` rows (the last one shorter), each typed
    on its own by :func:`records_to_batch`."""
    rows: list[dict] = []
    for rec in records:
        rows.append(rec)
        if len(rows) >= batch_size:
            yield records_to_batch(rows, columns, numeric)
            rows = []
    if rows:
        yield records_to_batch(rows, columns, numeric)


def records_to_batch(rows: list[dict], columns: Sequence[str] | None, numeric: Sequence[str] = ()) -> pa.RecordBatch:
    """Records to a batch; a column Arrow would change (lists, objects, mixed types) holds each
    value's JSON text, its field marked with :data:`JSON_FIELD`."""
    if columns is None:
        names: dict[str, None] = {}
        for r in rows:
            names.update(dict.fromkeys(r))
        columns = list(names)
    fields, arrays = [], []
    for c in columns:
        values = [r.get(c) for r in rows]
        arr = _exact_array(values, c in numeric)
        if arr is None:
            arr = pa.array([None if v is None else encode_json(v) for v in values], pa.string())
            fields.append(pa.field(c, pa.string(), metadata={JSON_FIELD: b"1"}))
        else:
            fields.append(pa.field(c, arr.type))
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


_SCALAR = {str: pa.string(), bool: pa.bool_(), int: pa.int64(), float: pa.float64()}


def _exact_array(values: list, numeric: bool) -> pa.Array | None:
    """An Arrow array that gives back each value as it is, or ``None`` when there is none: the
    values (nulls aside) must share one scalar type; ints and floats mix in a numeric column."""
    types = {type(v) for v in values if v is not None}
    if numeric and types and types <= {int, float}:
        types = {float} if float in types else {int}
    if len(types) > 1 or (types and next(iter(types)) not in _SCALAR):
        return None
    try:
        return pa.array(values, type=_SCALAR[types.pop()] if types else None)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None  # an int beyond int64


def is_json_field(field: pa.Field) -> bool:
    return bool(field.metadata) and field.metadata.get(JSON_FIELD) == b"1"


def column_values(batch: pa.RecordBatch, name: str) -> list:
    """A column's values as they were in the table (JSON text decoded)."""
    values = batch.column(name).to_pylist()
    if is_json_field(batch.schema.field(name)):
        return [None if v is None else json.loads(v) for v in values]
    return values


def batch_records(batch: pa.RecordBatch) -> list[dict]:
    """The batch's rows as dicts of the values as they were in the table (JSON text decoded)."""
    rows = batch.to_pylist()
    for i, field in enumerate(batch.schema):
        if is_json_field(field):
            for r in rows:
                v = r[field.name]
                if v is not None:
                    r[field.name] = json.loads(v)
    return rows


def _json_default(v: Any) -> Any:
    if isinstance(v, bytes):
        raise TypeError("binary table columns cannot be prepared; store images as files")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def encode_json(value: Any) -> str:
    """A value's JSON text as shards store it (compact, UTF-8)."""
    return json.dumps(value, ensure_ascii=False, default=_json_default, separators=(",", ":"))


def csv_header(path: str, chunk: int = 1 << 16) -> list[str]:
    """The column names of a csv file, parsed from its first lines in memory (Arrow's streaming
    reader would start a read-ahead thread on the open file just to learn them)."""
    head = b""
    with storage.open_read(path) as f:
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
    with storage.open_read(path) as raw:
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
