"""Running an importer: its rows into parquet tables, committed atomically, and reruns skipped.

:func:`run_import` drives an importer: rows are buffered and written batch by batch as parquet
row groups (memory bounded), each table is committed in one step (a local rename, or one S3
upload) with its import metadata (kind, source, options, counts) in the parquet schema metadata.
An import writing a folder of tables also writes, last, ``<out>/_import.json``: the kind, the
source's fingerprint, the options and the tables written (part, path, rows). A rerun for the same
source and options whose tables are all in place, with the columns their parts declare now,
does nothing (``up_to_date``) and prints the same mixture entries (a table written by a version
with other columns is imported again); for KINDs whose tables are named at run time (one per
source) the index says which tables to look for.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from lavida_data import io as storage
from lavida_data.importers.base import IMPORTERS, Frame, ImportContext, Importer
from lavida_data.importers.sink import ImageSink
from lavida_data.importers.sources import source_fingerprint

META_KEY = b"lavida.import"
IMPORT_VERSION = 1
INDEX = "_import.json"


def table_uri(out: str, importer_: Importer, part: str) -> str:
    """One declared part: ``out`` itself; several (or parts named at run time): ``out/<part>.parquet``."""
    if not writes_folder(importer_):
        return out
    return f"{out.rstrip('/')}/{part}.parquet"


def writes_folder(importer_: Importer) -> bool:
    return len(importer_.parts) > 1 or importer_.dynamic_parts


class _PartWriter:
    def __init__(self, final: str, schema: pa.Schema, batch_rows: int):
        self.final = final
        self.schema = schema
        self.batch_rows = batch_rows
        self.dir = tempfile.mkdtemp(prefix="lavida-import-") if storage.is_s3(final) else None
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
        if storage.is_s3(self.final):
            storage.upload(self.tmp, self.final)
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


def _read_footer(uri: str) -> tuple[dict | None, list[tuple[str, pa.DataType]]]:
    """The import metadata of a table written by :func:`run_import` (or None) and its columns."""
    try:
        with storage.open_read(uri, seekable=True) as f:
            pf = pq.ParquetFile(f)
            md = pf.metadata.metadata or {}
            columns = [(c.name, c.type) for c in pf.schema_arrow]
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return None, []
    raw = md.get(META_KEY)
    return (json.loads(raw) if raw else None), columns


def read_import_meta(uri: str) -> dict | None:
    """The import metadata of a table written by :func:`run_import`, or None."""
    return _read_footer(uri)[0]


# ----------------------------------------------------------------------------------------- index


def read_index(out: str) -> dict | None:
    """The index ``<out>/_import.json`` of the last complete import into the folder ``out``, or None."""
    try:
        with storage.open_read(f"{out.rstrip('/')}/{INDEX}") as f:
            index = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and isinstance(index.get("tables"), list) else None


def write_index(out: str, index: dict) -> None:
    """Write ``<out>/_import.json`` in one step (a local rename, or one S3 upload)."""
    storage.write_bytes(f"{out.rstrip('/')}/{INDEX}", json.dumps(index, indent=1, ensure_ascii=False).encode())


def _previous(imp: Importer, out: str, fp: dict, options: dict) -> tuple[dict[str, dict], dict] | None:
    """The tables a previous import of the same source with the same options left at ``out``
    (part -> its metadata) and that import's skip counts; None when any is missing or differs,
    or has other columns than its part declares now (written by an older version)."""
    same = {"kind": imp.kind, "source_fingerprint": fp, "options": options}
    if imp.dynamic_parts:  # which tables: the index says
        index = read_index(out)
        if index is None or any(index.get(k) != v for k, v in same.items()):
            return None
        try:
            wanted = {t["part"]: t["rows"] for t in index["tables"]}
        except (KeyError, TypeError):
            return None
        skipped = index.get("skipped", {})
    else:
        wanted = {p: None for p in imp.parts}
        skipped = None
    metas = {}
    for part, rows in wanted.items():
        meta, columns = _read_footer(table_uri(out, imp, part))
        declared = [(f.name, f.type) for f in imp.part(part).schema]
        if (meta is None or any(meta.get(k) != v for k, v in same.items()) or meta.get("part") != part
                or rows not in (None, meta.get("rows")) or columns != declared):
            return None
        metas[part] = meta
    if skipped is None:
        skipped = next(iter(metas.values()))["skipped"]
    return metas, skipped


# ---------------------------------------------------------------------------------------- result


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
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "source": self.source, "up_to_date": self.up_to_date, "tables": self.tables,
            "rows": sum(t["rows"] for t in self.tables.values()), "skipped": self.skipped,
            "skipped_examples": self.examples, "images_written": self.images_written,
            "images_reused": self.images_reused, "mixture_entries": self.entries, "warnings": self.warnings,
        }


# ------------------------------------------------------------------------------------------- run


def run_import(kind: str, source: str, out: str, *, images_to: str | None = None, frame: Frame = "padded-square",
               batch_rows: int = 8192, workers: int = 16,
               on_progress: Callable[[int], None] | None = None) -> ImportResult:
    """Import ``source`` of layout ``kind`` into table(s) at ``out`` (see :func:`table_uri`)."""
    from lavida_data.importers.catalog import load_all

    load_all()
    if kind not in IMPORTERS:
        from lavida_data.errors import suggest

        raise ValueError(f"unknown import kind {kind!r}{suggest(kind, sorted(IMPORTERS))}")
    imp = IMPORTERS[kind]
    options = {"frame": frame, "images_to": images_to, "version": IMPORT_VERSION}
    fp = source_fingerprint(source)
    previous = _previous(imp, out, fp, options)
    if previous is not None:
        metas, skipped = previous
        tables = {p: {"path": table_uri(out, imp, p), "rows": m["rows"]} for p, m in metas.items()}
        entries = [mixture_entry(imp, p, tables[p]["path"], options=m.get("entry_options")) for p, m in metas.items()]
        warnings = next(iter(metas.values())).get("warnings", []) if metas else []
        return ImportResult(kind, source, tables, dict(sorted(skipped.items())), {}, up_to_date=True,
                            entries=entries, warnings=warnings)
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
        # declared parts in their declared order, as an up-to-date rerun lists them; then those named at run time
        writers = {p: writers[p] for p in [*(p for p in imp.parts if p in writers),
                                           *(p for p in writers if p not in imp.parts)]}
        if ctx.images is not None:
            ctx.images.close()
        skipped = dict(sorted(ctx.skipped.items()))
        warnings = _warnings(ctx)
        tables = {}
        for p, w in writers.items():
            meta = {"kind": kind, "source": source, "source_fingerprint": fp, "options": options,
                    "part": p, "rows": w.count + len(w.rows), "skipped": skipped, "frame": frame,
                    "entry_options": ctx.entry_options.get(p, {}), "warnings": warnings}
            w.commit(meta)
            tables[p] = {"path": w.final, "rows": w.count}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    if writes_folder(imp):  # last: it vouches for every table above
        write_index(out, {"kind": kind, "source": source, "source_fingerprint": fp, "options": options,
                          "skipped": skipped, "tables": [{"part": p, **t} for p, t in tables.items()]})
    entries = [mixture_entry(imp, p, t["path"], options=ctx.entry_options.get(p)) for p, t in tables.items()]
    return ImportResult(kind, source, tables, skipped, ctx.examples,
                        ctx.images.written if ctx.images else 0, ctx.images.reused if ctx.images else 0,
                        entries=entries, warnings=warnings)


def _warnings(ctx: ImportContext) -> list[str]:
    from lavida_data.importers.laion import resized_warning

    return [w for w in (resized_warning(ctx.notices),) if w]
