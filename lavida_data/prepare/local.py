"""``lavida-data prepare``: each dataset's filtered table becomes MDS shards in its own folder.

Idempotent and crash-safe: a dataset is skipped when its manifest's fingerprint (source size and
etag or mtime, columns, filters, embedding) is unchanged; otherwise it is written into a private
folder and put in place in one step (locally a rename; on S3 the manifest goes last and marks
completion), so a run killed at any point and started again ends with the same shards as an
uninterrupted one. Weights, ``dup``, ``random``, ``first``/``end``, converter options and the
seed apply at load time: changing them needs no new preparation.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np

from lavida_data import io as storage
from lavida_data.io.tables import ROW, batch_records, read_schema, table_format
from lavida_data.prepare.images import MISSING_IMAGE_ERRORS, fetch_image, images_of
from lavida_data.prepare.rows import Stats, kept_batches
from lavida_data.prepared.commit import commit_local, commit_s3, committed_names, remove_stale
from lavida_data.prepared.layout import (
    RowCodec,
    build_manifest,
    column_kinds,
    fingerprint,
    join,
    pack_images,
    read_manifest,
    shard_sizes,
    write_manifest,
    write_rows,
)
from lavida_data.prepared.mds import ArrowMDSWriter
from lavida_data.spec.plan import DatasetPlan

DEFAULT_SHARD_SIZE = 64 << 20
BATCH_ROWS = 1 << 16  # rows per read batch; json/jsonl columns are typed (and images deduplicated) per batch


@dataclass
class Prepared:
    """The outcome for one dataset (``up_to_date`` when nothing had to be done)."""

    name: str
    path: str
    fingerprint: str
    rows_read: int
    rows_kept: int
    dropped: dict[str, int]
    shards: int
    up_to_date: bool = False
    images_embedded: int = 0
    images_missing: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "name"}


def _arrow_schema(path: str):
    import pyarrow.parquet as pq

    with storage.open_read(path, seekable=True) as f:
        return pq.ParquetFile(f).schema_arrow


def row_kinds(plan: DatasetPlan, columns: list[str]) -> dict[str, str]:
    """How each read column is stored in the shards (see :func:`column_kinds`)."""
    from lavida_data.prepare.rows import NUMERIC_COLUMNS

    fmt = table_format(plan.table)
    schema = _arrow_schema(plan.table) if fmt == "parquet" else None
    return column_kinds(schema, columns, fmt, [c for c in columns if c in NUMERIC_COLUMNS])


def _write(plan: DatasetPlan, work: str, columns: list[str], *, embed: bool, shard_size: int,
           pool: ThreadPoolExecutor | None, on_rows: Callable[[int], None] | None) -> tuple[Stats, int, dict, dict]:
    kinds = row_kinds(plan, columns)
    codec = RowCodec(kinds, embed)
    stats = Stats()
    rows: list[np.ndarray] = []
    embedded, missing = 0, {}
    position = 0
    with ArrowMDSWriter(work, codec.columns(), size_limit=shard_size) as writer:
        for batch in kept_batches(plan, columns=columns, stats=stats, batch_size=BATCH_ROWS):
            idx = batch.column(ROW).to_numpy()
            rows.append(idx)
            blobs = None
            if embed and pool is not None:
                recs = batch_records(batch)
                wanted = [images_of(plan, r, int(i), position + k) for k, (r, i) in enumerate(zip(recs, idx))]
                unique = list(dict.fromkeys(p for ps in wanted for p in ps))
                futures = {p: pool.submit(fetch_image, p) for p in unique}
                got: dict[str, bytes] = {}
                for p, fut in futures.items():
                    try:
                        got[p] = fut.result()
                    except MISSING_IMAGE_ERRORS as e:  # fetched again (and counted) at load time
                        missing[type(e).__name__] = missing.get(type(e).__name__, 0) + 1
                stored = [{p: got[p] for p in ps if p in got} for ps in wanted]
                blobs = [pack_images(imgs) for imgs in stored]
                embedded += sum(len(imgs) for imgs in stored)  # not the missing ones
            writer.write_batch(codec.encode(batch, batch.column(ROW), blobs))
            position += batch.num_rows
            if on_rows is not None:
                on_rows(batch.num_rows)
    write_rows(work, np.concatenate(rows) if rows else np.zeros(0, np.int64))
    return stats, embedded, missing, kinds


def prepare_dataset(plan: DatasetPlan, out: str, *, embed: bool = False, shard_size: int = DEFAULT_SHARD_SIZE,
                    on_rows: Callable[[int], None] | None = None, fetch_workers: int = 16) -> Prepared:
    """Prepare one dataset into ``{out}/{name}`` unless its manifest is up to date."""
    dest = join(out, plan.name)
    schema = read_schema(plan.table)
    digest, what = fingerprint(plan, schema, embed, shard_size)
    done = up_to_date(plan, out, digest)
    if done is not None:
        return done
    local = not storage.is_s3(out)
    if local:
        os.makedirs(out, exist_ok=True)
        work = os.path.join(out, f".{plan.name}.partial")
    else:
        import tempfile

        work = os.path.join(tempfile.mkdtemp(prefix="lavida-prepare-"), plan.name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    pool = ThreadPoolExecutor(max_workers=fetch_workers) if embed else None
    try:
        stats, embedded, missing, kinds = _write(plan, work, what["columns"], embed=embed,
                                                 shard_size=shard_size, pool=pool, on_rows=on_rows)
    finally:
        if pool is not None:
            pool.shutdown()
    n_shards = len(shard_sizes(work))
    manifest = build_manifest(plan, digest, what, kinds, stats, n_shards, embedded, missing)
    write_manifest(work, manifest)
    if local:
        commit_local(work, dest)
    else:
        commit_s3(work, dest)
        shutil.rmtree(os.path.dirname(work), ignore_errors=True)
    return Prepared(plan.name, dest, digest, stats.rows_read, stats.rows_kept, manifest["dropped"], n_shards,
                    images_embedded=embedded, images_missing=missing)


def up_to_date(plan: DatasetPlan, out: str, digest: str) -> Prepared | None:
    """The result recorded in ``{out}/{name}`` when its fingerprint is ``digest``, else ``None``."""
    dest = join(out, plan.name)
    old = read_manifest(dest)
    if old is None or old.get("fingerprint") != digest:
        return None
    if not storage.is_s3(out):  # what a run killed after its final rename left behind
        for leftover in (f".{plan.name}.old", f".{plan.name}.partial"):
            shutil.rmtree(os.path.join(out, leftover), ignore_errors=True)
    else:  # what a run killed after its manifest left behind: stale shards, a Ray work prefix
        remove_stale(dest, committed_names(int(old["shards"])))
        work = join(out, f".{plan.name}.partial")
        if storage.is_dir(work):
            storage.remove_tree(work)
    return Prepared(plan.name, dest, digest, old["rows_read"], old["rows_kept"], old["dropped"],
                    old["shards"], up_to_date=True, images_embedded=old.get("images_embedded", 0),
                    images_missing=old.get("images_missing", {}))


def _plan_args(plan: DatasetPlan) -> tuple:
    """A plan as picklable parts: a Converter (functions, lambdas) cannot cross to a spawned process."""
    return plan.spec, plan.converter.name, getattr(plan.converter.fn, "__module__", None), plan.table, plan.image_root


def _prepare_one(args: tuple) -> Prepared:
    (spec, conv_name, conv_module, table, image_root), out, embed, shard_size = args
    import importlib

    from lavida_data.convert.registry import registry

    if conv_name not in registry and conv_module and conv_module != "__main__":
        importlib.import_module(conv_module)  # a converter registered by the caller's own module
    conv = registry.get(conv_name)
    plan = DatasetPlan(spec, conv, conv.parse_options(spec.process_fn_kwargs), table, image_root)
    return prepare_dataset(plan, out, embed=embed, shard_size=shard_size)


def prepare(plans: Iterable[DatasetPlan], out: str, *, workers: int = 1, embed: bool = False,
            shard_size: int = DEFAULT_SHARD_SIZE, on_done: Callable[[Prepared], None] | None = None,
            on_rows: Callable[[str, int], None] | None = None) -> dict[str, Prepared]:
    """Prepare every dataset (``workers`` at a time, in separate processes)."""
    plans = list(plans)
    results: dict[str, Prepared] = {}
    if workers <= 1:
        for plan in plans:
            cb = (lambda n, name=plan.name: on_rows(name, n)) if on_rows else None
            results[plan.name] = r = prepare_dataset(plan, out, embed=embed, shard_size=shard_size, on_rows=cb)
            if on_done:
                on_done(r)
        return results
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        futures = {ex.submit(_prepare_one, (_plan_args(p), out, embed, shard_size)): p.name for p in plans}
        for fut in as_completed(futures):
            results[futures[fut]] = r = fut.result()
            if on_done:
                on_done(r)
    return {p.name: results[p.name] for p in plans}
