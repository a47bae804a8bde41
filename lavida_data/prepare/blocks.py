"""The pieces of a distributed preparation that run in Ray tasks: splitting a table into blocks,
reading one block, encoding its kept rows into MDS samples, and writing a group of shards.

A *block* is a range ``[start, end)`` of the table's rows (counted from 0 before any filter):
whole parquet row groups (or slices of a large one), or line-aligned byte ranges of a csv/jsonl
file found by one scan (json arrays cannot be split: one block). Each block is read, filtered and
encoded exactly as the local engine does it (same reader, same filters, same :class:`RowCodec`,
same ``ArrowMDSWriter`` sample bytes), so the shards cut from the blocks are byte-identical.

Everything is persisted in a work folder (local, shared by the workers, or an ``s3://`` prefix):
``blocks/NNNNNN.arrow`` (the encoded samples, Arrow IPC) then ``blocks/NNNNNN.npz`` (their sizes,
source rows and counts; written last, it marks the block done), and the shard files.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from lavida_data import io as storage
from lavida_data.io.tables import (
    ROW,
    batch_records,
    csv_batches,
    iter_batches,
    jsonl_records,
    record_batches,
)
from lavida_data.prepare.rows import Stats
from lavida_data.prepared.layout import RowCodec, join, pack_images
from lavida_data.prepared.mds import ArrowMDSWriter, array_buffers, shard_name
from lavida_data.spec.plan import DatasetPlan

EMBED_ROWS = 1024  # rows whose images are fetched (and held) at once when embedding
_SCAN_CHUNK = 8 << 20
_JSONL_SPACE = b" \t\r\n\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.strip() removes, among single bytes


@dataclass(frozen=True)
class Job:
    """What every task of one dataset's preparation needs (pickled into the tasks)."""

    plan: DatasetPlan
    fmt: str
    columns: list[str]
    numeric: list[str]
    kinds: dict[str, str]
    embed: bool
    shard_size: int
    batch_rows: int
    work: str  # where the shards go
    scratch: str  # blocks and the plan
    fetch_workers: int = 16

    def writer(self) -> ArrowMDSWriter:
        return ArrowMDSWriter(None, RowCodec(self.kinds, self.embed).columns(), size_limit=self.shard_size)


# ------------------------------------------------------------------------------------------ storage


def get_bytes(path: str) -> bytes | None:
    """A whole file or object, or ``None`` when it is not there."""
    try:
        return storage.read_bytes(path)
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------------------------------- blocks


def parquet_blocks(path: str, block_rows: int) -> list[dict]:
    """Whole row groups of about ``block_rows`` rows; a larger row group is cut into slices."""
    import pyarrow.parquet as pq

    with storage.open_read(path, seekable=True) as f:
        md = pq.ParquetFile(f).metadata
        counts = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
    blocks, start, pos = [], 0, 0
    for n in counts:
        if n > block_rows:
            if pos > start:
                blocks.append({"start": start, "end": pos})
            blocks += [{"start": a, "end": min(a + block_rows, pos + n)} for a in range(pos, pos + n, block_rows)]
            start = pos + n
        elif pos + n - start > block_rows:
            blocks.append({"start": start, "end": pos})
            start = pos
        pos += n
    if pos > start:
        blocks.append({"start": start, "end": pos})
    return blocks


def text_blocks(path: str, fmt: str, block_rows: int) -> list[dict]:
    """Line-aligned byte ranges of a csv or jsonl file holding ``block_rows`` records each.

    One pass over the bytes: a line is a record when it holds a character other than white space
    (jsonl) or any character (csv, after its header line), as the readers count them."""
    content = np.ones(256, dtype=bool)
    content[list(_JSONL_SPACE if fmt == "jsonl" else b"\r\n")] = False
    blocks: list[dict] = []
    header_end = 0 if fmt == "jsonl" else None
    records = lines = offset = 0
    carry = False  # the unfinished line so far holds a record's character
    first = {"start": 0, "byte_start": 0, "line": 1}
    with storage.open_read(path) as f:
        while True:
            chunk = f.read(_SCAN_CHUNK)
            if not chunk:
                break
            a = np.frombuffer(chunk, dtype=np.uint8)
            ends = np.flatnonzero(a == 10) + 1
            csum = np.concatenate([[0], np.cumsum(content[a], dtype=np.int64)])
            starts = np.concatenate([[0], ends[:-1]])
            has = csum[ends] - csum[starts] > 0
            if len(has):
                has[0] |= carry
                carry = bool(csum[-1] - csum[ends[-1]] > 0)
            else:
                carry = carry or bool(csum[-1] > 0)
            if header_end is None and len(ends):  # csv: the first line is the header
                header_end, has = offset + int(ends[0]), has[1:].copy()
                ends, lines = ends[1:], lines + 1
                first.update(byte_start=header_end, line=2)
            total = records + np.cumsum(has)
            cut = np.flatnonzero(has & (total % block_rows == 0))
            for k in cut:
                end_byte = offset + int(ends[k])
                blocks.append({**first, "end": int(total[k]), "byte_end": end_byte})
                first = {"start": int(total[k]), "byte_start": end_byte, "line": lines + int(k) + 2}
            records = int(total[-1]) if len(total) else records
            lines += len(ends)
            offset += len(chunk)
    if carry and header_end is not None:
        records += 1  # a last line without a line break
    if records > first["start"]:
        blocks.append({**first, "end": records, "byte_end": offset})
    for b in blocks:
        b["header_end"] = header_end or 0
    return blocks


def read_block(job: Job, block: dict, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The block's rows of ``columns`` as the local reader gives them, with ``__row__``."""
    path, start, end = job.plan.table, block["start"], block.get("end")
    numeric = [c for c in columns if c in job.numeric]
    if job.fmt == "parquet":
        yield from _parquet_block(path, start, end, columns, job.batch_rows)
        return
    if job.fmt == "json" or "byte_start" not in block:  # the whole table, one block
        yield from iter_batches(path, columns, batch_size=job.batch_rows, numeric=numeric)
        return
    n = 0
    raw = (_csv_block(path, block, columns, numeric) if job.fmt == "csv"
           else _jsonl_block(path, block, columns, numeric, job.batch_rows))
    for batch in raw:
        yield batch.append_column(ROW, pa.array(np.arange(start + n, start + n + batch.num_rows, dtype=np.int64)))
        n += batch.num_rows
    if n != end - start:
        raise ValueError(f"{path}: the lines from byte {block['byte_start']} hold {n} record(s), not {end - start} "
                         "(line breaks other than \\n?); prepare this table with --engine local")


def _parquet_block(path, start, end, columns, batch_rows) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    with storage.open_read(path, seekable=True) if storage.is_s3(path) else nullcontext(path) as f:  # locally Arrow's own reader
        pf = pq.ParquetFile(f)
        counts = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        groups = [g for g in range(len(counts)) if offsets[g] < end and offsets[g + 1] > start]
        if not groups:
            return
        pos = int(offsets[groups[0]])
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns, row_groups=groups):
            lo, hi = max(start, pos), min(end, pos + batch.num_rows)
            if hi > lo:
                part = batch.slice(lo - pos, hi - lo)
                yield part.append_column(ROW, pa.array(np.arange(lo, hi, dtype=np.int64)))
            pos += batch.num_rows
            if pos >= end:
                return


def _csv_block(path, block, columns, numeric) -> Iterator[pa.RecordBatch]:
    # the options of tables._raw_batches, for the header line followed by the block's lines
    data = (storage.read_range(path, 0, block["header_end"])
            + storage.read_range(path, block["byte_start"], block["byte_end"]))
    yield from csv_batches(io.BytesIO(data), columns, columns, numeric)


def _jsonl_block(path, block, columns, numeric, batch_rows) -> Iterator[pa.RecordBatch]:
    # tables._iter_records on the block's lines; blocks start at a multiple of batch_rows records,
    # so each batch (whose values Arrow types together) holds the rows the local reader puts in it
    text = io.TextIOWrapper(io.BytesIO(storage.read_range(path, block["byte_start"], block["byte_end"])),
                            encoding="utf-8")
    yield from record_batches(jsonl_records(text, path, block["line"]), batch_rows, columns, numeric)


# -------------------------------------------------------------------------------------------- tasks


def count_block(job: Job, block: dict) -> dict:
    """Rows read and kept by the filters (only the filter columns are read)."""
    stats = Stats()
    for batch in read_block(job, block, list(job.plan.filters.columns())):
        stats.rows_read += batch.num_rows
        stats.rows_kept += job.plan.filters.apply(batch, stats.dropped).num_rows
    return {"rows_read": stats.rows_read, "rows_kept": stats.rows_kept}


def block_path(job: Job, index: int, suffix: str) -> str:
    return join(job.scratch, "blocks", f"{index:06d}.{suffix}")


def encode_block(job: Job, index: int, block: dict, position: int) -> dict:
    """Read, filter and encode one block; persist its samples, then their sizes and counts.

    ``position`` is the block's first kept row's index among the dataset's kept rows (images
    are resolved by the converter as the local engine does, at that position)."""
    from lavida_data.prepare.images import fetch_image, images_of

    codec, writer = RowCodec(job.kinds, job.embed), job.writer()
    stats = Stats()
    sizes, rows, batches = [], [], []
    missing: list[list] = []  # [read batch, path, error]: the driver counts each once per read batch
    embedded = 0
    pool = ThreadPoolExecutor(max_workers=job.fetch_workers) if job.embed else None
    fd, tmp = tempfile.mkstemp(suffix=".arrow", dir=None if storage.is_s3(job.scratch) else _ensure_dir(job, "blocks"))
    os.close(fd)
    try:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, pa.schema([("sample", pa.binary())])) as out:
            for batch in read_block(job, block, job.columns):
                stats.rows_read += batch.num_rows
                kept = job.plan.filters.apply(batch, stats.dropped)
                stats.rows_kept += kept.num_rows
                for part in _parts(kept, job) if job.embed else [kept]:
                    idx = part.column(ROW).to_numpy()
                    blobs = None
                    if job.embed:
                        blobs, n = _embed(job, part, idx, position, pool, missing, images_of, fetch_image)
                        embedded += n
                    position += part.num_rows
                    if not part.num_rows:
                        continue
                    samples = writer.encode(codec.encode(part, part.column(ROW), blobs))
                    out.write_batch(pa.record_batch([samples], names=["sample"]))
                    offsets, _ = array_buffers(samples)
                    sizes.append(np.diff(offsets).astype(np.int64) + 4)
                    rows.append(idx.astype(np.int64))
                    batches.append(len(samples))
        if storage.is_s3(job.scratch):
            storage.upload(tmp, block_path(job, index, "arrow"))
        else:
            os.replace(tmp, block_path(job, index, "arrow"))
    finally:
        if pool is not None:
            pool.shutdown()
        if os.path.exists(tmp):
            os.unlink(tmp)
    meta = {"rows_read": stats.rows_read, "rows_kept": stats.rows_kept,
            "dropped": {k: v for k, v in stats.dropped.items() if v}, "images_embedded": embedded,
            "missing": missing}
    buf = io.BytesIO()
    np.savez(buf, sizes=_cat(sizes), rows=_cat(rows), batches=np.asarray(batches, dtype=np.int64),
             meta=np.array(json.dumps(meta)))
    storage.write_bytes(block_path(job, index, "npz"), buf.getvalue())
    return {"rows_read": stats.rows_read, "rows_kept": stats.rows_kept}


def load_block_meta(job: Job, index: int) -> dict | None:
    """A finished block's sizes, rows, record batch lengths and counts; ``None`` if not finished."""
    data = get_bytes(block_path(job, index, "npz"))
    if data is None:
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        meta.update(sizes=z["sizes"], rows=z["rows"], batches=z["batches"])
    return meta


def _ensure_dir(job: Job, sub: str) -> str:
    folder = join(job.scratch, sub)
    os.makedirs(folder, exist_ok=True)
    return folder


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _parts(kept: pa.RecordBatch, job: Job) -> Iterator[pa.RecordBatch]:
    """Pieces of at most EMBED_ROWS rows that never straddle two of the local engine's read batches."""
    idx = kept.column(ROW).to_numpy()
    group = idx // job.batch_rows
    cuts = np.flatnonzero(np.diff(group)) + 1
    bounds = [0, *cuts.tolist(), len(idx)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        for s in range(a, b, EMBED_ROWS):
            yield kept.slice(s, min(s + EMBED_ROWS, b) - s)


def _embed(job, part, idx, position, pool, missing, images_of, fetch) -> tuple[list[bytes], int]:
    """The packed images of each row (fetched concurrently), as the local engine stores them."""
    from lavida_data.prepare.local import MISSING_IMAGE_ERRORS

    plan = job.plan
    recs = batch_records(part)
    wanted = [images_of(plan, r, int(i), position + k) for k, (r, i) in enumerate(zip(recs, idx))]
    unique = list(dict.fromkeys(p for ps in wanted for p in ps))
    futures = {p: pool.submit(fetch, p) for p in unique}
    got: dict[str, bytes] = {}
    group = int(idx[0]) // job.batch_rows if len(idx) else 0
    for p, fut in futures.items():
        try:
            got[p] = fut.result()
        except MISSING_IMAGE_ERRORS as e:  # fetched again (and counted) at load time; a transient fault stops
            missing.append([group, p, type(e).__name__])
    stored = [{p: got[p] for p in ps if p in got} for ps in wanted]
    return [pack_images(imgs) for imgs in stored], sum(len(imgs) for imgs in stored)


def count_missing(metas: list[dict]) -> dict[str, int]:
    """Missing images per error, each path once per read batch (as the local engine counts them)."""
    seen: dict[tuple[int, str], str] = {}
    for m in metas:
        for group, path, err in m["missing"]:
            seen.setdefault((group, path), err)
    return dict(sorted(Counter(seen.values()).items()))


def write_shards(job: Job, shards: list[list[int]], sources: list[list]) -> dict:
    """Write shards ``[[index, start, end], ...]`` (kept-row ranges) from the blocks that hold
    them: ``sources`` is ``[[block index, first kept row, [record batch lengths]], ...]``."""
    writer = job.writer()
    opened: dict[int, pa.ipc.RecordBatchFileReader] = {}
    for index, start, end in shards:
        pieces = []
        for block, first, lengths in sources:
            pos = first
            for k, n in enumerate(lengths):
                lo, hi = max(start, pos), min(end, pos + n)
                if hi > lo:
                    if block not in opened:
                        opened.clear()  # blocks are visited in order
                        opened[block] = _open_block(job, block)
                    pieces.append(opened[block].get_batch(k).column(0).slice(lo - pos, hi - lo))
                pos += n
        arr = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0] if pieces else pa.array([], pa.binary())
        offsets, data = array_buffers(arr)
        storage.write_bytes(join(job.work, shard_name(index)), writer.shard_bytes(offsets, data, 0, len(arr)))
    return {"shards": len(shards)}


def _open_block(job: Job, index: int) -> pa.ipc.RecordBatchFileReader:
    path = block_path(job, index, "arrow")
    if storage.is_s3(path):
        return pa.ipc.open_file(pa.PythonFile(storage.open_read(path, seekable=True), mode="r"))
    return pa.ipc.open_file(pa.memory_map(path))


def shard_nbytes(writer: ArrowMDSWriter, samples: int, size_sum: int) -> int:
    """A shard file's size from its samples' sizes (encoded bytes + 4 each)."""
    return 4 + 4 * (samples + 1) + len(writer.config_data) + size_sum - 4 * samples
