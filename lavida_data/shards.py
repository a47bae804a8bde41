"""The prepared form of one dataset: MDS shards of its kept rows, a row map and a manifest.

Layout of ``{prepared}/{dataset}/``::

    index.json, shard.00000.mds, ...   MDS shards (streaming's format); columns below
    rows.npy                            int64: source row index of each kept row, in shard order
    manifest.json                       what was read and kept, and the fingerprint (written last)

Columns: ``row_index`` (int64), ``row`` (JSON text of the needed columns), and with embedded
images ``images`` (bytes: a JSON header ``{path: [offset, length]}`` then the image files).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Any

import numpy as np

from . import s3

COLUMNS = {"row_index": "int64", "row": "str"}
EMBED_COLUMNS = {**COLUMNS, "images": "bytes"}
MANIFEST = "manifest.json"
ROWS = "rows.npy"
INDEX = "index.json"


def join(base: str, *parts: str) -> str:
    if s3.is_s3(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def _json_default(v: Any) -> Any:
    if isinstance(v, bytes):
        raise TypeError("binary table columns cannot be prepared; store images as files")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def encode_row(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, default=_json_default, separators=(",", ":"))


def decode_row(text: str) -> dict:
    return json.loads(text)


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
    try:
        if s3.is_s3(path):
            return s3.read_bytes(path).decode()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_manifest(folder: str) -> dict | None:
    text = read_text(join(folder, MANIFEST))
    return json.loads(text) if text else None


def read_rows(folder: str) -> np.ndarray:
    """The source row index of each prepared sample, in shard order."""
    if s3.is_s3(folder):
        import io

        return np.load(io.BytesIO(s3.read_bytes(join(folder, ROWS))), allow_pickle=False)
    return np.load(join(folder, ROWS), allow_pickle=False)


def shard_sizes(folder: str) -> list[int]:
    """Samples per shard, from the MDS index."""
    text = read_text(join(folder, INDEX))
    if text is None:
        raise FileNotFoundError(f"{folder}: no {INDEX}; run `lavida-data prepare` first")
    return [int(s["samples"]) for s in json.loads(text)["shards"]]


def local_cache_dir(remote: str, cache_root: str | None = None) -> str:
    """Where streaming keeps its local copy of a remote prepared dataset."""
    import hashlib

    root = cache_root or os.environ.get("LAVIDA_CACHE") or os.path.join(tempfile.gettempdir(), "lavida-cache")
    key = hashlib.blake2b(remote.encode(), digest_size=8).hexdigest()
    return os.path.join(root, key)
