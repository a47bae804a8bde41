"""Understanding tables: MAmmoTH-VL-Instruct and VisualWebInstruct (LLaVA-style conversations).

Both tables hold image paths relative to an image root, which the printed mixture entry carries
as ``process_fn_kwargs.s3_prefix`` (the converters join it onto each path): ``<--images-to>/<kind>``
when the images were written there (``<kind>/<path in the release>``), else the folder of the
source where they already are.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zipfile
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from lavida_data.importers.base import ImportContext, Part, Row, importer
from lavida_data.importers.boxes import Malformed
from lavida_data.importers.errors import ImportError_
from lavida_data.importers.jsonstream import iter_json_top, read_records
from lavida_data.importers.sources import (
    KeyIndex,
    exists,
    folder_of,
    index_prefix,
    is_dir,
    iter_members,
    join,
    location,
    open_binary,
    read_bytes,
    split_parts,
    walk,
)
from lavida_data.io import is_s3

MAMMOTH_SCHEMA = pa.schema([("image", pa.string()), ("conversations", pa.string())])
TURN = pa.struct([("from", pa.string()), ("value", pa.string())])
VW_SCHEMA = pa.schema([("conversations", pa.list_(TURN)), ("image", pa.list_(pa.string()))])


# ---------------------------------------------------------------------------------- helpers


def _turns(v: Any) -> list[dict]:
    """LLaVA turns ``[{from, value}, ...]`` from a list or a JSON string; other keys dropped."""
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise Malformed("bad_conversations", "conversations is a string but not JSON") from None
    if not v:
        raise Malformed("missing_conversations", "no conversations")
    if not isinstance(v, (list, tuple)):
        raise Malformed("bad_conversations", "conversations must be a list of turns")
    turns = []
    for t in v:
        if not isinstance(t, dict) or not isinstance(t.get("from"), str) or not isinstance(t.get("value"), str):
            raise Malformed("bad_conversations", "each turn must be an object with string 'from' and 'value'")
        turns.append({"from": t["from"], "value": t["value"]})
    return turns


def _rel(p: Any) -> str:
    """An image path of a record, relative and tidy (``./a/b.jpg`` and ``/a/b.jpg`` are ``a/b.jpg``)."""
    if not isinstance(p, str) or not p.strip():
        raise Malformed("bad_image", f"an image path must be a non-empty string, got {str(p)[:60]!r}")
    p = p.strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    p = p.lstrip("/")
    if not p or ".." in p.split("/"):
        raise Malformed("bad_image", f"image path {p!r} leaves the image folder")
    return p


def _image_list(v: Any) -> list[str]:
    if v is None or v == "" or (isinstance(v, (list, tuple)) and not v):
        return []
    if isinstance(v, str):
        return [_rel(v)]
    if isinstance(v, (list, tuple)):
        return [_rel(p) for p in v]
    raise Malformed("bad_image", f"image must be a path or a list of paths, got {type(v).__name__}")


class _ImageSource:
    """Where the images of a run are found (``find``: a record path -> the key under the image
    root, or None) and how they reach the table's image root (``store``)."""

    def __init__(self, prefix: str, find: Callable[[str], str | None],
                 store: Callable[[str], None] = lambda key: None):
        self.prefix = prefix
        self.find = find
        self.store = store

    def keys(self, paths: list[str]) -> list[str]:
        keys = []
        for p in paths:
            k = self.find(p)
            if k is None:
                raise Malformed("missing_image", f"image {p!r} is not in the source")
            keys.append(k)
        for k in keys:
            self.store(k)
        return keys


def _folder_images(ctx: ImportContext, root: str, candidates: Callable[[str], list[str]]) -> _ImageSource:
    """Images in an unpacked folder: referenced in place, or copied under ``--images-to``
    (``<images-to>/<kind>/<path>``)."""
    root = location(root)
    if is_s3(root):
        idx = index_prefix(root)

        def find(p: str) -> str | None:
            return next((c for c in candidates(p) if c in idx), None)
    else:
        def find(p: str) -> str | None:
            return next((c for c in candidates(p) if os.path.isfile(os.path.join(root, c))), None)

    if ctx.images is None:
        return _ImageSource(root, find)
    stored: set[str] = set()

    def store(key: str) -> None:
        if key not in stored:
            stored.add(key)
            src = join(root, key)
            ctx.image(f"{ctx.kind}/{key}", lambda src=src: read_bytes(src))

    return _ImageSource(f"{ctx.images.root}/{ctx.kind}", find, store)


def _natural(uri: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", uri)]


# --------------------------------------------------------------------------------- MAmmoTH-VL


def _mammoth_images(source: str, ctx: ImportContext, files: list[str]) -> _ImageSource:
    folder = folder_of(source)
    shard_root = join(folder, "single_image_data")
    shards = []
    if is_dir(shard_root):
        groups = split_parts(walk(shard_root, r"\.(tar|tgz|tar\.gz)(\.part\d+|\.\d+)?$"))
        shards = [groups[k] for k in sorted(groups, key=_natural)]
    if ctx.images is not None and shards:
        idx = KeyIndex()
        for parts in shards:
            for key, read in iter_members(parts, ctx.skip):
                ctx.image(f"{ctx.kind}/{key}", read())  # read now: a streamed tar cannot come back to a member
                idx.add(key)
        return _ImageSource(f"{ctx.images.root}/{ctx.kind}", idx.resolve)
    first = _first_image(files)
    candidates = [join(folder, "images"), shard_root, folder]
    if first is None:
        return _folder_images(ctx, folder, lambda p: [p])
    for root in candidates:
        if exists(join(root, first)):
            return _folder_images(ctx, root, lambda p: [p])
    if shards:
        raise ImportError_(f"mammoth-vl: the images are in tar shards ({shard_root}/shard_N.tar.gz): give "
                           "--images-to DIR_OR_S3_URI to unpack them there, or unpack them in that folder first")
    raise ImportError_(f"mammoth-vl: image {first!r} of the first record with an image is in none of "
                       f"{', '.join(candidates)}: expected the tar shards single_image_data/shard_N.tar.gz "
                       "(with --images-to), or the images unpacked in one of these folders")


def _mammoth_records(uri: str) -> Iterator[Any]:
    for key, rec, _ in iter_json_top(uri):
        if key is not None:
            raise ImportError_(f"mammoth-vl: {uri} is a JSON object: expected a JSON array of records "
                               "{id, image, conversations}")
        yield rec


def _first_image(files: list[str], limit: int = 100_000) -> str | None:
    """The first image path among the first ``limit`` records (to find where the images are)."""
    n = 0
    for uri in files:
        for rec in _mammoth_records(uri):
            n += 1
            if n > limit:
                return None
            try:
                paths = _image_list(rec.get("image")) if isinstance(rec, dict) else []
            except Malformed:
                continue
            if paths:
                return paths[0]
    return None


@importer("mammoth-vl", parts={"main": Part(MAMMOTH_SCHEMA, "preproces_und_mammoth_si_10M",
                                            entry={"length_group": "und"})})
def import_mammoth(source: str, ctx: ImportContext) -> Iterator[Row]:
    """MAmmoTH-VL-Instruct (``mammoth_si_10M.json``, a JSON array read incrementally). SOURCE:
    the annotation JSON, or a folder whose top-level ``*.json`` files are all read. Images: the
    tar shards ``single_image_data/shard_N.tar.gz`` are unpacked under ``--images-to``; without
    it, images are referenced in place under ``images/``, ``single_image_data/`` or the folder
    itself (the first that holds the first record's image). Writes ``image`` (the path relative
    to the image root, a JSON list for several, null for text-only) and ``conversations`` (JSON);
    the root is the entry's ``s3_prefix``."""
    files = sorted(walk(source, r"^[^/]+\.json$")) if is_dir(source) else [source]
    if not files:
        raise ImportError_(f"mammoth-vl: no annotation file in {source}: expected mammoth_si_10M.json "
                           "(a JSON array of {id, image, conversations})")
    images = _mammoth_images(source, ctx, files)
    for uri in files:
        n = 0
        for rec in _mammoth_records(uri):
            n += 1
            ctx.progress(1)
            try:
                if not isinstance(rec, dict):
                    raise Malformed("not_object", f"a {type(rec).__name__}, not an object")
                turns = _turns(rec.get("conversations"))
                keys = images.keys(_image_list(rec.get("image")))
            except Malformed as e:
                rid = rec.get("id") if isinstance(rec, dict) else None
                ctx.skip(e.reason, f"{uri}: record {n - 1} (id {rid}): {e}")
                continue
            image = None if not keys else keys[0] if len(keys) == 1 else json.dumps(keys)
            yield Row("main", {"image": image, "conversations": json.dumps(turns, ensure_ascii=False)})
    ctx.entry_options["main"] = {"s3_prefix": images.prefix}


# -------------------------------------------------------------------------- VisualWebInstruct


def _vw_files(source: str) -> list[str]:
    if not is_dir(source):
        return [source]
    by_stem: dict[str, str] = {}
    for uri in walk(source, r"^[^/]+\.(jsonl|parquet|json)$"):
        stem, ext = uri.rsplit(".", 1)
        if stem not in by_stem or ext == "parquet":  # the same annotations in two formats: read one
            by_stem[stem] = uri
    return sorted(by_stem.values())


def _vw_records(uri: str, ctx: ImportContext) -> Iterator[dict]:
    if uri.endswith(".parquet"):
        with open_binary(uri, seekable=True) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                yield from batch.to_pylist()
    elif uri.endswith(".jsonl"):
        yield from read_records(uri, ctx.skip)
    else:
        for _, rec, _ in iter_json_top(uri):
            if isinstance(rec, dict):
                yield rec
            else:
                ctx.skip("not_object", f"{uri}: a {type(rec).__name__}, not an object")


def _vw_candidates(p: str) -> list[str]:
    return [p] if p.startswith("imgs/") else [f"imgs/{p}", p]


@importer("visualwebinstruct", parts={"main": Part(VW_SCHEMA, "preproces_vw_instruct", entry={
    "length_group": "und", "max_enc_images": {"column": "image", "value": 1}})})
def import_visualwebinstruct(source: str, ctx: ImportContext) -> Iterator[Row]:
    """VisualWebInstruct (``visualwebinstruct_conversation`` / ``mixed_conversation``, jsonl or
    parquet). SOURCE: an annotation file, or a folder whose top-level annotation files are all
    read (one format per name, parquet preferred). Images: ``imgs/`` unpacked beside the
    annotations (referenced in place, or copied under ``--images-to``), else ``images.zip``
    (written under ``--images-to``). Every record with at least one image is kept, ``image``
    written as a list of paths under the image root (the entry's ``s3_prefix``); the printed entry
    keeps single-image samples only (``max_enc_images: 1``), as upstream: drop that key to train on
    all. Records without an image are skipped (``no_image``)."""
    folder = folder_of(source)
    files = _vw_files(source)
    if not files:
        raise ImportError_(f"visualwebinstruct: no annotation file in {source}: expected "
                           "visualwebinstruct_conversation.jsonl / .parquet or mixed_conversation.jsonl / .parquet")
    zip_uri = join(folder, "images.zip")
    with_zip = False
    if is_dir(join(folder, "imgs")):
        images = _folder_images(ctx, folder, _vw_candidates)
    elif exists(zip_uri):
        if ctx.images is None:
            raise ImportError_(f"visualwebinstruct: the images are in {zip_uri}: give --images-to DIR_OR_S3_URI "
                               "to unpack them there, or unzip it beside the annotations (imgs/...)")
        with_zip = True
    else:
        raise ImportError_(f"visualwebinstruct: no images beside the annotations: expected {zip_uri} or an "
                           f"unpacked {join(folder, 'imgs')}/ folder")
    with contextlib.ExitStack() as stack:
        if with_zip:
            zf = stack.enter_context(zipfile.ZipFile(stack.enter_context(open_binary(zip_uri, seekable=True))))
            names = {i.filename for i in zf.infolist() if not i.is_dir()}
            stored: set[str] = set()

            def store(key: str) -> None:
                if key not in stored:
                    stored.add(key)
                    ctx.image(f"{ctx.kind}/{key}", zf.read(key))  # read now: the archive closes with the import

            def find(p: str) -> str | None:
                return next((c for c in _vw_candidates(p) if c in names), None)

            images = _ImageSource(f"{ctx.images.root}/{ctx.kind}", find, store)
        for uri in files:
            n = 0
            for rec in _vw_records(uri, ctx):
                n += 1
                ctx.progress(1)
                try:
                    v = rec.get("image")
                    if v is None or (isinstance(v, (list, str)) and not v):
                        v = rec.get("images")
                    paths = _image_list(v)
                    if not paths:
                        raise Malformed("no_image", "the record has no image (image / images)")
                    turns = _turns(rec.get("conversations"))
                    keys = images.keys(paths)
                except Malformed as e:
                    ctx.skip(e.reason, f"{uri}: record {n - 1} (id {rec.get('id')}): {e}")
                    continue
                yield Row("main", {"conversations": turns, "image": keys})
    ctx.entry_options["main"] = {"s3_prefix": images.prefix}
