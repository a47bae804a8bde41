"""The prepared form of one dataset: MDS shards of its kept rows, a row map and a manifest.

Layout of ``{prepared}/{dataset}/``::

    index.json, shard.00000.mds, ...   MDS shards (streaming's format); columns below
    rows.npy                            int64: source row index of each kept row, in shard order
    manifest.json                       what was read and kept, and the fingerprint (written last)

Columns: ``row_index`` (int64); one column per needed table column, ``c.<name>``, stored
natively (``str``, ``int64``, ``float64``, ``uint8`` for booleans) or as JSON text for nested
values; ``nulls`` (a bitmap of the null values, a bit per table column); and with embedded images
``images`` (bytes: a JSON header ``{path: [offset, length]}`` then the image files). The manifest
records each column's kind, so a reader decodes rows without guessing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from dataclasses import asdict
from typing import Any

import numpy as np

from lavida_data import io as storage
from lavida_data.io.tables import encode_json, is_json_field, source_info
from lavida_data.spec.plan import DatasetPlan

KIND_ENCODING = {"str": "str", "int64": "int64", "float64": "float64", "bool": "uint8", "json": "str"}
MANIFEST = "manifest.json"
ROWS = "rows.npy"
INDEX = "index.json"


join = storage.join


def column_kinds(schema, columns: list[str], fmt: str, numeric: list[str]) -> dict[str, str]:
    """How each table column is stored: from the parquet schema; csv columns are text but the
    numeric ones; json/jsonl values (whose types may vary by batch) as JSON text."""
    import pyarrow as pa

    kinds = {}
    for name in columns:
        if fmt == "csv":
            kinds[name] = "float64" if name in numeric else "str"
            continue
        if fmt != "parquet":
            kinds[name] = "json"
            continue
        t = schema.field(name).type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            kinds[name] = "str"
        elif pa.types.is_boolean(t):
            kinds[name] = "bool"
        elif pa.types.is_integer(t) and t != pa.uint64():
            kinds[name] = "int64"
        elif pa.types.is_floating(t):
            kinds[name] = "float64"
        else:
            kinds[name] = "json"
    return kinds


class RowCodec:
    """Table rows <-> MDS columns, vectorised with Arrow (JSON text only for nested values)."""

    def __init__(self, kinds: dict[str, str], embed: bool = False):
        if len(kinds) > 64:
            raise ValueError("at most 64 table columns can be prepared")
        self.kinds = dict(kinds)
        self.names = list(kinds)
        self.embed = embed

    @classmethod
    def from_manifest(cls, manifest: dict) -> "RowCodec":
        return cls(dict(manifest["row_columns"]), manifest.get("embed_images", False))

    def columns(self) -> dict[str, str]:
        cols = {"row_index": "int64", "nulls": "uint64"}
        cols.update({f"c.{n}": KIND_ENCODING[k] for n, k in self.kinds.items()})
        if self.embed:
            cols["images"] = "bytes"
        return cols

    def encode(self, batch, row_index, images: list[bytes] | None = None):
        """An Arrow table of MDS columns for ``batch`` (the table's columns)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        nulls = np.zeros(n, np.uint64)
        out = {"row_index": row_index}
        for bit, name in enumerate(self.names):
            col = batch.column(name)
            if col.null_count:
                nulls |= col.is_null().to_numpy(zero_copy_only=False).astype(np.uint64) << np.uint64(bit)
            kind = self.kinds[name]
            if kind == "json" and is_json_field(batch.schema.field(name)):  # already each value's JSON text
                out[f"c.{name}"] = pc.fill_null(col, "")
            elif kind == "json":
                values = col.to_pylist()
                out[f"c.{name}"] = pa.array(["" if v is None else encode_json(v) for v in values], pa.string())
            elif kind == "str":
                out[f"c.{name}"] = pc.fill_null(col.cast(pa.string()), "")
            elif kind == "bool":
                out[f"c.{name}"] = pc.fill_null(col, False).cast(pa.uint8())
            elif kind == "int64":
                out[f"c.{name}"] = pc.fill_null(col.cast(pa.int64()), 0)
            else:
                out[f"c.{name}"] = pc.fill_null(col.cast(pa.float64(), safe=False), 0.0)
        out["nulls"] = pa.array(nulls)
        if self.embed:
            out["images"] = pa.array(images if images is not None else [b""] * n, pa.binary())
        return pa.table(out)

    def decode(self, sample: dict) -> dict:
        """One MDS sample back to the table row (without ``row_index``)."""
        nulls = int(sample["nulls"])
        row = {}
        for bit, name in enumerate(self.names):
            if nulls >> bit & 1:
                row[name] = None
                continue
            v = sample[f"c.{name}"]
            kind = self.kinds[name]
            if kind == "json":
                row[name] = json.loads(v)
            elif kind == "bool":
                row[name] = bool(v)
            elif kind == "int64":
                row[name] = int(v)
            elif kind == "float64":
                row[name] = float(v)
            else:
                row[name] = v
        return row


def pack_images(images: dict[str, bytes]) -> bytes:
    header: dict[str, list[int]] = {}
    offset = 0
    for path, data in images.items():
        header[path] = [offset, len(data)]
        offset += len(data)
    head = json.dumps(header).encode()
    return struct.pack("<I", len(head)) + head + b"".join(images.values())


def unpack_images(blob: bytes) -> dict[str, bytes]:
    if not blob:
        return {}
    (n,) = struct.unpack_from("<I", blob)
    header = json.loads(blob[4 : 4 + n])
    base = 4 + n
    return {p: blob[base + o : base + o + size] for p, (o, size) in header.items()}


def read_text(path: str) -> str | None:
    """A small file's text, or ``None`` when it does not exist (local or S3)."""
    return storage.read_text(path, missing_ok=True)


def read_manifest(folder: str) -> dict | None:
    text = read_text(join(folder, MANIFEST))
    return json.loads(text) if text else None


def read_rows(folder: str) -> np.ndarray:
    """The source row index of each prepared sample, in shard order."""
    return np.load(io.BytesIO(storage.read_bytes(join(folder, ROWS))), allow_pickle=False)


def read_index(folder: str) -> dict | None:
    """streaming's MDS index of a prepared dataset (local or S3), or ``None`` when it is missing."""
    text = read_text(join(folder, INDEX))
    return json.loads(text) if text else None


def shard_sizes(folder: str) -> list[int]:
    """Samples per shard, from the MDS index."""
    index = read_index(folder)
    if index is None:
        raise FileNotFoundError(f"{folder}: no {INDEX}; run `lavida-data prepare` first")
    return [int(s["samples"]) for s in index["shards"]]


FORMAT_VERSION = 3  # 3: json/jsonl values stored exactly as they were (mixed columns no longer quoted twice)


def fingerprint(plan: DatasetPlan, schema: list[str], embed: bool, shard_size: int) -> tuple[str, dict]:
    """What the shards depend on, and its hash."""
    info = source_info(plan.table)
    what = {
        "format": FORMAT_VERSION,
        "table": plan.table,
        "size": info["size"],
        "version": info["etag"] or info["mtime"],
        "columns": plan.read_columns(schema),
        "filters": asdict(plan.filters),
        "shard_size": shard_size,
        "embed": embed,
    }
    if embed:  # which images are embedded depends on how the converter resolves them
        what["images"] = {"converter": plan.converter.name, "options": plan.options.model_dump(mode="json"),
                          "image_root": plan.image_root}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return digest, what


def write_manifest(folder: str, manifest: dict) -> None:
    """``manifest.json`` into a local work folder (committed with the shards)."""
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)


def build_manifest(plan: DatasetPlan, digest: str, what: dict, kinds: dict[str, str], stats: Any, n_shards: int,
                   embedded: int, missing: dict[str, int]) -> dict:
    """The ``manifest.json`` of a prepared dataset (the same whichever engine wrote the shards);
    ``stats`` has ``rows_read``, ``rows_kept`` and ``dropped`` (``prepare.rows.Stats``)."""
    return {
        "dataset": plan.name,
        "fingerprint": digest,
        "source": {"path": plan.table, "size": what["size"], "version": what["version"]},
        "columns": what["columns"],
        "row_columns": [[name, kind] for name, kind in kinds.items()],  # in column order
        "filters": what["filters"],
        "embed_images": what["embed"],
        "rows_read": stats.rows_read,
        "rows_kept": stats.rows_kept,
        "dropped": {k: v for k, v in sorted(stats.dropped.items()) if v},
        "shards": n_shards,
        "images_embedded": embedded,
        "images_missing": missing,
    }


def write_rows(folder: str, rows: np.ndarray) -> None:
    """``rows.npy``: the source row index of each kept row, in shard order (no pickle)."""
    np.save(os.path.join(folder, ROWS), rows.astype(np.int64, copy=False), allow_pickle=False)


def write_index(folder: str, entries: list[dict]) -> None:
    """streaming's ``index.json`` over ``entries`` (one per shard), as ``ArrowMDSWriter.finish`` writes it."""
    with open(os.path.join(folder, INDEX), "w") as f:
        json.dump({"version": 2, "shards": entries}, f, sort_keys=True)
