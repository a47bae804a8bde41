"""The import framework: one function per native layout, turned into converter-ready parquet tables.

An importer is a generator registered with :func:`importer`. It reads ``source`` (a local path
or ``s3://`` URI; a file or a folder, as its layout needs), and yields :class:`Row`\\ s: the
values of one row of one of its declared tables (``parts``). It never holds a whole input in
memory, never writes files itself, and reports bad records with :meth:`ImportContext.skip`.
Images it finds (archive members, embedded bytes, files) go through
:meth:`ImportContext.image`, which writes them under ``--images-to`` (concurrently, resumably,
under a stable key) and returns the path the table should hold.

:func:`run_import` drives an importer: rows are buffered and written batch by batch as parquet
row groups (memory bounded), each table is committed in one step (a local rename, or one S3
upload) with its import metadata (kind, source, options, counts) in the parquet schema metadata,
and a rerun whose tables already exist for the same source and options does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from .. import s3

Frame = Literal["padded-square", "per-axis"]
META_KEY = b"lavida.import"
IMPORT_VERSION = 1


class ImportError_(ValueError):
    """A source does not have the layout its KIND expects (the message says what was expected)."""


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


# ---------------------------------------------------------------------------------------- images


class ImageSink:
    """Writes images under a folder or S3 prefix with stable keys; skips keys already there."""

    def __init__(self, root: str, workers: int = 16, max_pending: int = 256):
        self.is_s3 = s3.is_s3(root)
        self.root = root.rstrip("/") if self.is_s3 else os.path.abspath(root)  # tables hold absolute paths
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._sem = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()
        self._pending: list[Future] = []
        self._existing: set[str] | None = None
        self.written = 0
        self.reused = 0
        self.errors: dict[str, int] = {}

    def uri(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _exists(self, key: str) -> bool:
        if not self.is_s3:
            return os.path.isfile(self.uri(key)) and os.path.getsize(self.uri(key)) > 0
        if self._existing is None:  # one listing instead of a HEAD per image
            bucket, prefix = s3.split(self.root + "/")
            pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            self._existing = {o["Key"][len(prefix):] for p in pages for o in p.get("Contents", [])}
        return key in self._existing

    def _put(self, key: str, data: bytes | Callable[[], bytes]) -> None:
        try:
            blob = data() if callable(data) else data
            if self.is_s3:
                bucket, k = s3.split(self.uri(key))
                s3.client().put_object(Bucket=bucket, Key=k, Body=blob)
            else:
                path = self.uri(key)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
                with open(tmp, "wb") as f:
                    f.write(blob)
                os.replace(tmp, path)  # never a half-written image under the final name
            with self._lock:
                self.written += 1
        except Exception as e:
            with self._lock:
                self.errors[type(e).__name__] = self.errors.get(type(e).__name__, 0) + 1
            raise
        finally:
            self._sem.release()

    def put(self, key: str, data: bytes | Callable[[], bytes]) -> str:
        """Store ``data`` (or what ``data()`` returns) under ``key`` unless it is there; its URI."""
        key = key.lstrip("/")
        if ".." in key.split("/"):
            raise ValueError(f"image key {key!r} leaves the image folder")
        with self._lock:
            exists = self._exists(key)
        if exists:
            self.reused += 1
            return self.uri(key)
        self._sem.acquire()
        self._pending.append(self._pool.submit(self._put, key, data))
        if len(self._pending) > 4096:
            self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        return self.uri(key)

    def close(self) -> None:
        """Wait for every write; the first failure is raised (the table is then not committed)."""
        self._pool.shutdown(wait=True)
        for f in self._pending:
            if f.exception() is not None:
                raise f.exception()


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

    def skip(self, reason: str, detail: str = "") -> None:
        """Count one malformed record (``reason`` is a short stable label, ``detail`` says where)."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if detail and reason not in self.examples:
            self.examples[reason] = detail[:300]

    def image(self, key: str, data: bytes | Callable[[], bytes], fallback: str | None = None) -> str | None:
        """The path the table holds for an image: under ``--images-to`` when given (written there),
        else ``fallback`` (where the layout already keeps it readable), else None (not stored)."""
        if self.images is not None:
            return self.images.put(key, data)
        return fallback

    def progress(self, n: int = 1) -> None:
        if self.on_progress is not None:
            self.on_progress(n)


# ---------------------------------------------------------------------------------------- tables


def table_uri(out: str, importer_: Importer, part: str) -> str:
    """One declared part: ``out`` itself; several: ``out/<part>.parquet``."""
    if len(importer_.parts) == 1 and not importer_.dynamic_parts:
        return out
    return f"{out.rstrip('/')}/{part}.parquet"


class _PartWriter:
    def __init__(self, final: str, schema: pa.Schema, batch_rows: int):
        self.final = final
        self.schema = schema
        self.batch_rows = batch_rows
        self.dir = tempfile.mkdtemp(prefix="lavida-import-") if s3.is_s3(final) else None
        self.tmp = (os.path.join(self.dir, "part.parquet") if self.dir
                    else f"{os.path.dirname(os.path.abspath(final))}/.{os.path.basename(final)}.partial")
        if not self.dir:
            os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
        self.rows: list[dict] = []
        self.count = 0
        self.writer: pq.ParquetWriter | None = None

    def add(self, values: dict) -> None:
        self.rows.append(values)
        if len(self.rows) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self.rows and self.writer is not None:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)  # raises on a wrong column or type
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        self.writer.write_table(table)
        self.count += len(self.rows)
        self.rows = []

    def commit(self, meta: dict) -> None:
        self.flush()
        self.writer.add_key_value_metadata({META_KEY.decode(): json.dumps(meta)})  # in the footer
        self.writer.close()
        if s3.is_s3(self.final):
            bucket, key = s3.split(self.final)
            s3.client().upload_file(self.tmp, bucket, key)
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            os.replace(self.tmp, self.final)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def read_import_meta(uri: str) -> dict | None:
    """The import metadata of a table written by :func:`run_import`, or None."""
    from ..tables import _open

    try:
        with _open(uri, seekable=True) as f:
            md = pq.ParquetFile(f).metadata.metadata or {}
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return None
    raw = md.get(META_KEY)
    return json.loads(raw) if raw else None


def source_fingerprint(source: str) -> dict:
    """Size and mtime (or etag) of a source file, or of every file under a source folder."""
    if s3.is_s3(source):
        bucket, prefix = s3.split(source)  # an object, or every object under a prefix
        pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        items = sorted((o["Key"], o["Size"], o.get("ETag", "")) for p in pages for o in p.get("Contents", []))
    elif os.path.isdir(source):
        items = []
        for root, _, files in os.walk(source):
            for name in files:
                p = os.path.join(root, name)
                st = os.stat(p)
                items.append((os.path.relpath(p, source), st.st_size, int(st.st_mtime)))
        items.sort()
    else:
        st = os.stat(source)
        items = [(os.path.basename(source), st.st_size, int(st.st_mtime))]
    digest = hashlib.sha256(json.dumps(items).encode()).hexdigest()[:32]
    return {"files": len(items), "digest": digest}


def mixture_entry(importer_: Importer, part: str, uri: str, images_prefix: str | None = None,
                  options: dict[str, Any] | None = None) -> dict:
    """The dataset entry to paste into a mixture file for one imported table (``options``: the
    process_fn_kwargs the importer set at run time, over the part's declared ones)."""
    spec = importer_.part(part)
    name = f"{importer_.kind}-{part}" if part != "main" else importer_.kind
    entry: dict[str, Any] = {"name": name.replace("_", "-"), "path": uri, "preprocess_fn": spec.converter}
    entry.update(spec.entry)
    kwargs = {**spec.options, **(options or {})}
    if kwargs:
        entry["process_fn_kwargs"] = kwargs
    return entry


@dataclass
class ImportResult:
    kind: str
    source: str
    tables: dict[str, dict]  # part -> {"path", "rows"}
    skipped: dict[str, int]
    examples: dict[str, str]
    images_written: int = 0
    images_reused: int = 0
    up_to_date: bool = False
    entries: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "source": self.source, "up_to_date": self.up_to_date, "tables": self.tables,
            "rows": sum(t["rows"] for t in self.tables.values()), "skipped": self.skipped,
            "skipped_examples": self.examples, "images_written": self.images_written,
            "images_reused": self.images_reused, "mixture_entries": self.entries,
        }


def run_import(kind: str, source: str, out: str, *, images_to: str | None = None, frame: Frame = "padded-square",
               batch_rows: int = 8192, workers: int = 16,
               on_progress: Callable[[int], None] | None = None) -> ImportResult:
    """Import ``source`` of layout ``kind`` into table(s) at ``out`` (see :func:`table_uri`)."""
    from . import load_all

    load_all()
    if kind not in IMPORTERS:
        from ..errors import suggest

        raise ValueError(f"unknown import kind {kind!r}{suggest(kind, sorted(IMPORTERS))}")
    imp = IMPORTERS[kind]
    options = {"frame": frame, "images_to": images_to, "version": IMPORT_VERSION}
    fp = source_fingerprint(source)
    if not imp.dynamic_parts:
        metas = {p: read_import_meta(table_uri(out, imp, p)) for p in imp.parts}
        if all(m is not None and m.get("source_fingerprint") == fp and m.get("options") == options
               for m in metas.values()):
            return ImportResult(kind, source, {p: {"path": table_uri(out, imp, p), "rows": m["rows"]}
                                               for p, m in metas.items()},
                                next(iter(metas.values()))["skipped"], {}, up_to_date=True,
                                entries=[mixture_entry(imp, p, table_uri(out, imp, p), options=m.get("entry_options"))
                                         for p, m in metas.items()])
    ctx = ImportContext(kind, source, frame, ImageSink(images_to, workers) if images_to else None,
                        on_progress=on_progress)
    writers: dict[str, _PartWriter] = {}
    try:
        for row in imp.fn(source, ctx):
            w = writers.get(row.part)
            if w is None:
                w = writers[row.part] = _PartWriter(table_uri(out, imp, row.part), imp.part(row.part).schema,
                                                    batch_rows)
            w.add(row.values)
        for p in imp.parts:  # a declared part with no rows is still written (empty), so it validates
            if p != "*" and p not in writers:
                writers[p] = _PartWriter(table_uri(out, imp, p), imp.part(p).schema, batch_rows)
        if ctx.images is not None:
            ctx.images.close()
        tables = {}
        for p, w in writers.items():
            meta = {"kind": kind, "source": source, "source_fingerprint": fp, "options": options,
                    "part": p, "rows": w.count + len(w.rows), "skipped": ctx.skipped, "frame": frame,
                    "entry_options": ctx.entry_options.get(p, {})}
            w.commit(meta)
            tables[p] = {"path": w.final, "rows": w.count}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    entries = [mixture_entry(imp, p, t["path"], options=ctx.entry_options.get(p)) for p, t in tables.items()]
    return ImportResult(kind, source, tables, dict(sorted(ctx.skipped.items())), ctx.examples,
                        ctx.images.written if ctx.images else 0, ctx.images.reused if ctx.images else 0,
                        entries=entries)
