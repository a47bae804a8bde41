"""A vectorised Arrow-to-MDS shard writer: the same files as streaming's ``MDSWriter``, with
columns encoded in bulk by Arrow and numpy instead of one Python call per sample.

Supported column encodings: ``str``, ``bytes``, ``int8`` .. ``int64``, ``uint8`` .. ``uint64``,
``float16`` .. ``float64`` (fixed size, little-endian as MDS writes them). Values must not be
null (MDS has no nulls; ``MDSWriter`` fails on them too). The shards, their split points and
``index.json`` are byte-for-byte those ``MDSWriter(columns=..., size_limit=...)`` writes.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_FIXED = {
    "int8": "<i1", "int16": "<i2", "int32": "<i4", "int64": "<i8",
    "uint8": "<u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
    "float16": "<f2", "float32": "<f4", "float64": "<f8",
}
_VARIABLE = ("str", "bytes")


class ArrowMDSWriter:
    """Write Arrow record batches as MDS shards into a local folder.

    Use as a context manager, or call :meth:`finish`; ``shards`` lists the index entries.
    """

    def __init__(self, out: str | None, columns: Mapping[str, str], *, size_limit: int | None = 1 << 26):
        for name, enc in columns.items():
            if enc not in _FIXED and enc not in _VARIABLE:
                raise ValueError(f"column {name!r}: encoding {enc!r} is not supported by the vectorised writer")
        if out is not None:  # None: only encode samples and lay out shards (``shard_bytes``)
            os.makedirs(out, exist_ok=True)
        self.out = out
        self.size_limit = size_limit
        self.names = sorted(columns)
        self.encodings = [columns[n] for n in self.names]
        self.sizes = [np.dtype(_FIXED[e]).itemsize if e in _FIXED else None for e in self.encodings]
        config = {
            "version": 2, "format": "mds", "compression": None, "hashes": [], "size_limit": size_limit,
            "column_names": self.names, "column_encodings": self.encodings, "column_sizes": self.sizes,
        }
        self.config = config
        self.config_data = json.dumps(config, sort_keys=True).encode("utf-8")
        self.extra_per_shard = 4 + 4 + len(self.config_data)
        self.shards: list[dict] = []
        self._pending: list[pa.Array] = []  # encoded samples not yet in a shard
        self._pending_bytes = 0
        self._started = False

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, batch: pa.RecordBatch | pa.Table) -> pa.Array:
        """Every sample of ``batch`` encoded as MDS sample bytes (one binary value per row)."""
        n = batch.num_rows
        parts: list[pa.Array] = []
        lengths = []
        for name, enc in zip(self.names, self.encodings):
            col = batch.column(name)
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            if col.null_count:
                raise ValueError(f"column {name!r} has {col.null_count} null value(s); MDS cannot store nulls")
            if enc in _VARIABLE:
                col = col.cast(pa.large_binary() if pa.types.is_large_string(col.type) or
                               pa.types.is_large_binary(col.type) else pa.binary())
                lengths.append(pc.binary_length(col).to_numpy(zero_copy_only=False).astype("<u4"))
                parts.append(col.cast(pa.binary()))
            else:
                data = np.ascontiguousarray(col.to_numpy(zero_copy_only=False).astype(_FIXED[enc]))
                parts.append(_fixed_binary(data.tobytes(), data.itemsize, n))
        if lengths:
            head = np.ascontiguousarray(np.stack(lengths, axis=1)).tobytes()
            parts.insert(0, _fixed_binary(head, 4 * len(lengths), n))
        if len(parts) == 1:
            return parts[0]
        return pc.binary_join_element_wise(*parts, b"")

    # -- shards -----------------------------------------------------------------------------
    def write_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        encoded = self.encode(batch)
        self._pending.append(encoded)
        self._pending_bytes += _data_size(encoded) + 4 * len(encoded)
        if self.size_limit and self._pending_bytes + self.extra_per_shard > 2 * self.size_limit:
            self._flush(final=False)

    def write_batches(self, batches: Iterable[pa.RecordBatch]) -> None:
        for b in batches:
            self.write_batch(b)

    def _flush(self, final: bool) -> None:
        """Cut the pending samples into shards exactly where ``MDSWriter`` would: a sample opens
        a new shard when the current one would pass ``size_limit`` with it; the sample that opens
        a shard is always taken, and only the very first sample can leave an empty shard behind.
        The pending batches are never joined: a shard is written from slices of their buffers."""
        if not self._pending:
            return
        chunks = [array_buffers(a) for a in self._pending]
        data_sizes = np.concatenate([np.diff(off).astype(np.int64) for off, _ in chunks])
        sizes = data_sizes + 4  # MDS counts 4 bytes of offset per sample
        csum = np.concatenate([[0], np.cumsum(sizes)])
        firsts = np.concatenate([[0], np.cumsum([len(a) for a in self._pending])])
        n, start = len(sizes), 0
        limit, extra = self.size_limit, self.extra_per_shard
        if limit and not self._started and extra + sizes[0] > limit:
            self._write_pieces(chunks, firsts, data_sizes, 0, 0)
        self._started = True
        while start < n:
            end = n if not limit else max(int(np.searchsorted(csum, limit - extra + csum[start], side="right")) - 1,
                                          start + 1)
            if end >= n and not final:
                break  # the last shard may still grow
            self._write_pieces(chunks, firsts, data_sizes, start, end)
            start = end
        rest = []
        for k, arr in enumerate(self._pending):  # what is left: the tail of the batches
            if firsts[k + 1] > start:
                rest.append(arr.slice(max(0, start - int(firsts[k]))))
        self._pending = rest
        self._pending_bytes = sum(_data_size(a) + 4 * len(a) for a in rest)

    def _write_pieces(self, chunks: list, firsts: np.ndarray, data_sizes: np.ndarray, start: int, end: int) -> None:
        """Write samples ``start:end`` of the pending batches (``chunks``: their buffers,
        ``firsts``: the index of each batch's first sample) as the next shard."""
        count = end - start
        rel = np.concatenate([[0], np.cumsum(data_sizes[start:end])])
        table = (rel + 4 + 4 * (count + 1) + len(self.config_data)).astype("<u4")
        parts = [np.uint32(count).tobytes(), table.tobytes(), self.config_data]
        for k, (off, data) in enumerate(chunks):
            lo, hi = max(start, int(firsts[k])), min(end, int(firsts[k + 1]))
            if lo < hi:
                parts.append(data[int(off[lo - firsts[k]]): int(off[hi - firsts[k]])])
        basename = shard_name(len(self.shards))
        with open(os.path.join(self.out, basename), "wb", buffering=0) as f:
            for part in parts:  # each part written from its own buffer: no joined copy of the shard
                f.write(part)
        self.shards.append(self.shard_entry(basename, count, sum(len(p) for p in parts)))

    def shard_bytes(self, offsets: np.ndarray, data: memoryview, start: int, end: int) -> bytes:
        """The shard file holding encoded samples ``start:end`` (``offsets``/``data``: their buffers)."""
        count = end - start
        rel = (offsets[start: end + 1] - offsets[start]).astype(np.int64)
        head = 4 + 4 * (count + 1) + len(self.config_data)
        table = (rel + head).astype("<u4")
        body = data[int(offsets[start]): int(offsets[end])] if count else b""
        return b"".join([np.uint32(count).tobytes(), table.tobytes(), self.config_data, body])

    def shard_entry(self, basename: str, samples: int, nbytes: int) -> dict:
        """The ``index.json`` entry of one shard."""
        entry = {"samples": samples, "raw_data": {"basename": basename, "bytes": nbytes, "hashes": {}},
                 "zip_data": None}
        entry.update(self.config)
        return entry

    def finish(self) -> list[dict]:
        self._flush(final=True)
        with open(os.path.join(self.out, "index.json"), "w") as f:
            json.dump({"version": 2, "shards": self.shards}, f, sort_keys=True)
        return self.shards

    def __enter__(self) -> "ArrowMDSWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()


def shard_name(index: int) -> str:
    return f"shard.{index:05}.mds"


def shard_bounds(sizes: Iterable[np.ndarray], size_limit: int | None, extra: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each shard over a stream of samples, given in chunks of their sizes
    (encoded bytes + 4): exactly where :meth:`ArrowMDSWriter._flush` cuts them, without holding
    the samples. A shard takes samples while it stays within ``size_limit - extra`` bytes (its
    first sample always); only a first sample over the limit alone leaves an empty shard first."""
    room = (size_limit - extra) if size_limit else None
    bounds: list[tuple[int, int]] = []
    start = 0  # first sample of the open shard
    filled = 0  # bytes in the open shard; 0 when no shard is open
    base = 0  # global index of the chunk's first sample
    first = True
    for chunk in sizes:
        chunk = np.asarray(chunk, dtype=np.int64)
        m = len(chunk)
        if not m:
            continue
        if first and room is not None and chunk[0] > room:
            bounds.append((0, 0))
        first = False
        if room is None:
            filled += int(chunk.sum())
            base += m
            continue
        csum = np.concatenate([[0], np.cumsum(chunk)])
        pos = 0
        while pos < m:
            if not filled:  # a new shard takes its first sample whatever its size
                start, filled, pos = base + pos, int(chunk[pos]), pos + 1
                continue
            end = int(np.searchsorted(csum, room - filled + csum[pos], side="right")) - 1
            if end > pos:
                filled += int(csum[end] - csum[pos])
                pos = end
            if pos < m:  # the next sample does not fit: close the shard
                bounds.append((start, base + pos))
                filled = 0
        base += m
    if filled or (room is None and base):
        bounds.append((start, base))
    return bounds


def _fixed_binary(data: bytes, width: int, n: int) -> pa.Array:
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(data)])
    return arr.cast(pa.binary())


def array_buffers(arr: pa.Array) -> tuple[np.ndarray, memoryview]:
    _, off, data = arr.buffers()
    offsets = np.frombuffer(off, dtype=np.int32 if arr.type == pa.binary() else np.int64)
    offsets = offsets[arr.offset: arr.offset + len(arr) + 1]
    return offsets, memoryview(data) if data is not None else memoryview(b"")


def _data_size(arr: pa.Array) -> int:
    offsets, _ = array_buffers(arr)
    return int(offsets[-1] - offsets[0]) if len(offsets) else 0
