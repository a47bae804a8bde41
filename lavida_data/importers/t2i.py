"""Text-to-image KINDs: ``coyo``, ``relaion``, ``blip3o``, ``reflect-dit``, ``echo-4o``; and the
helpers the archive-based importers share (``edit.py`` uses them too).

SOURCE is always the release as published (or a copy of it), local or ``s3://``: a folder, or a
single file where the layout has only one. What each KIND expects there:

``coyo`` / ``relaion`` -- a folder holding the metadata parquet files (COYO-700M: ``id, url,
text, ..., width, height, aesthetic_score_laion_v2``; Re-LAION: ``url, caption, width, height``
or the older ``URL, TEXT, WIDTH, HEIGHT``) and the img2dataset output for them
(``--output_format files``: ``<shard>/<key>.jpg`` + ``<key>.json`` with ``url``, ``caption``,
``width``, ``height``, ``status``), at any depth. The metadata rows are the table's rows, read
batch by batch, each joined by URL to its downloaded image (an index of the successful downloads
is held in memory, about 200 bytes each); a row whose image was not downloaded is skipped as
``not_downloaded``. The images are URLs only, so the img2dataset output is required. Without
metadata parquet files the sidecars alone give the rows (caption, and COYO's score when
img2dataset kept ``aesthetic_score_laion_v2`` as an additional column). ``intWidth/intHeight``
are the stored image's size (the sidecar's ``width/height``; img2dataset may have resized),
else the metadata's. COYO's ``aesthetic_score_laion_v2`` becomes ``fltLaionAesthScore``;
Re-LAION ships no score, so its table has none.

``blip3o`` -- one set of BLIP3o (a Pretrain set or BLIP3o-60k): a folder of WebDataset tars (any
depth, e.g. 60k's ``dalle3/``, ``geneval_train/``; plain, gzip or split ``.partNNN``), each
sample ``<key>.jpg`` + ``<key>.txt`` (caption); or the same pairs extracted as files. Sizes
come from the image headers. No score is invented (upstream computed its own).

``reflect-dit`` -- a folder with the CSV (``prompt, positive_filename, negative_filename,
negative_reason``, the last three ``XXX``-joined), the generations (a tar, or the folder it
unpacks to) and, optionally, the judge set in LLaVA format (``.json`` array or ``.jsonl`` of
``{image, conversations}``). Images are matched by file name. Three tables: ``t2i`` (every
positive, captioned by its prompt), ``correction`` (positives with their negatives and reasons,
``;``-joined, for ``preproces_text_to_image_generation_s3_loc`` with ``add_feedback``; a ``;``
inside a reason becomes ``,`` and is counted as ``reason_semicolon_replaced``) and ``judge``
(``image, prompts, results`` for ``preprocess_reflection_und``: the prompt is taken from the
human turn ``... based on the following prompt: {prompt} Focus on ...``, the result is the
answer; several judged pairs in one record become JSON lists).

``echo-4o`` -- the release root (or one subset folder): ``<Subset>/<name>.jsonl`` and
``<Subset>/images/*.tar.gz`` (or the extracted images). Images are matched to records by
subset and file name. Records without input images go to ``t2i``; records with them
(``input_images``/``input_image``/``reference_images``: the multi-reference subset, whose layout
is unverified) go to ``multiref``, an edit-style table for ``process_gpt_edit``.

Images inside archives are written under ``--images-to`` as ``<kind>/<path in the release>``
(the archive's folder joined with the member path); without ``--images-to`` such a KIND fails
and says so. Images that are plain files are referenced in place (absolute local path or
``s3://`` URI) unless ``--images-to`` is given, in which case they are copied there too.
Records whose image never appears are counted as ``image_missing``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import posixpath
import re
import sys
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .. import s3
from ..tables import _open
from .base import ImportContext, ImportError_, Part, Row, importer
from .sources import _is_object, image_size, iter_tar, iter_zip, read_bytes, split_parts

# --------------------------------------------------------------------------------- shared helpers

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_ARCHIVE = re.compile(r"\.(tar|tar\.gz|tgz|zip)(\.part\d+|\.\d+)?$", re.I)
_ARCHIVE_EXT = re.compile(r"\.(tar|tar\.gz|tgz|zip)$", re.I)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXT)


def walk(source: str) -> Iterator[str]:
    """Every file under ``source`` (or ``source`` itself when it is a file), streamed: a local
    folder folder by folder (names sorted, links followed), an S3 prefix page by page."""
    if s3.is_s3(source):
        if not source.endswith("/") and _is_object(source):
            yield source
            return
        bucket, prefix = s3.split(source.rstrip("/") + "/")
        for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                if not o["Key"].endswith("/"):
                    yield f"s3://{bucket}/{o['Key']}"
        return
    if os.path.isfile(source):
        yield source
        return
    if not os.path.isdir(source):
        raise ImportError_(f"{source}: no such file or folder")
    for root, dirs, files in os.walk(source, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            yield os.path.join(root, name)


def rel(uri: str, source: str) -> str:
    """``uri``'s path inside the release (``/``-separated)."""
    if s3.is_s3(uri):
        base = source.rstrip("/")
        return uri[len(base) + 1:] if uri.startswith(base + "/") else posixpath.basename(uri)
    if os.path.isfile(source):
        return os.path.basename(uri)
    return os.path.relpath(uri, source).replace(os.sep, "/")


def location(uri: str) -> str:
    """Where the table points for a plain file: its absolute path, or its ``s3://`` URI."""
    return uri if s3.is_s3(uri) else os.path.abspath(uri)


def norm(path: str) -> str:
    """A record's or member's relative path, normalised (``./a//b`` -> ``a/b``, no leading ``/``)."""
    p = posixpath.normpath(str(path).strip().replace("\\", "/")).lstrip("/")
    return "" if p == "." else p


def suffixes(path: str) -> list[str]:
    """``a/b/c`` -> ``[a/b/c, b/c, c]``."""
    comps = [c for c in path.split("/") if c]
    return ["/".join(comps[i:]) for i in range(len(comps))]


def header_size(uri: str) -> tuple[int, int] | None:
    """(width, height) of an image file from its header (a few KiB read), or None."""
    from PIL import Image

    try:
        with _open(uri, seekable=True) as f, Image.open(f) as im:
            return im.size
    except Exception:
        return None


@dataclass(frozen=True)
class Archive:
    name: str  # the archive's path in the release, without a split suffix
    parts: tuple[str, ...]  # its file(s), in order

    @property
    def dir(self) -> str:
        return posixpath.dirname(self.name)

    @property
    def stem(self) -> str:
        return _ARCHIVE_EXT.sub("", posixpath.basename(self.name))

    @property
    def is_zip(self) -> bool:
        return self.name.lower().endswith(".zip")

    def member_path(self, member: str) -> str:
        """A member's path in the release, as if the archive were unpacked in its folder (a
        member path that already starts with that folder's name is not nested twice)."""
        m = norm(member)
        d = self.dir
        if d and m.split("/", 1)[0] == posixpath.basename(d):
            d = posixpath.dirname(d)
        return norm(posixpath.join(d, m)) if d else m


@dataclass
class Release:
    source: str
    archives: list[Archive]
    files: list[str]  # every other file (URIs)

    def rel(self, uri: str) -> str:
        return rel(uri, self.source)


def scan(source: str) -> Release:
    """The archives (split parts grouped) and the other files of a release."""
    arcs: list[str] = []
    files: list[str] = []
    for uri in walk(source):
        (arcs if _ARCHIVE.search(uri) else files).append(uri)
    archives = [Archive(rel(name, source), tuple(parts)) for name, parts in split_parts(arcs).items()]
    return Release(source, archives, files)


def iter_archive(archive: Archive, ctx: ImportContext) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """The members of an archive: ``(name, read)``; a truncated or corrupt archive is counted."""
    if archive.is_zip:
        if len(archive.parts) > 1:
            raise ImportError_(f"{archive.name}: split zip archives are not supported; join the parts first")
        import zipfile

        try:
            for name, read in iter_zip(archive.parts[0]):
                m = norm(name)
                if m == ".." or m.startswith("../"):
                    ctx.skip("unsafe_member_path", f"{archive.name}:{name}")
                    continue
                yield name, read
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            ctx.skip("truncated_archive", f"{archive.parts[0]}: {type(e).__name__}: {e}")
        return
    for name, read in iter_tar(list(archive.parts), on_error=ctx.skip):
        m = norm(name)
        if m == ".." or m.startswith("../"):  # would land outside the release: never written
            ctx.skip("unsafe_member_path", f"{archive.name}:{name}")
            continue
        yield name, read


def need_images_to(kind: str, archives: list[Archive], what: str = "images") -> ImportError_:
    names = ", ".join(a.name for a in archives[:3]) + (", ..." if len(archives) > 3 else "")
    return ImportError_(
        f"{kind}: the {what} are only inside archives ({names}); pass --images-to DIR_OR_S3_URI "
        "to extract them there (or import a copy with the archives unpacked)"
    )


def skip_n(ctx: ImportContext, reason: str, n: int, detail: str = "") -> None:
    for _ in range(n):
        ctx.skip(reason, detail)


def text_value(v: Any) -> str | None:
    """A non-empty stripped string, else None."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


def string_list(v: Any) -> list[str] | None:
    """One path or a list of paths as a list of non-empty strings; None when malformed."""
    if v is None:
        return []
    if isinstance(v, str):
        return [v.strip()] if v.strip() else []
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return [x.strip() for x in v if x.strip()]
    return None


class Joiner:
    """Records waiting for their images, matched by key; memory holds the records, never images.

    A record has slots, each a list of alternative keys (the first image found fills it). An
    image found fills every slot waiting for its key. Images may also be remembered (key ->
    value) for records read later, when metadata is stored after its images.
    """

    def __init__(self) -> None:
        self.want: dict[str, list[tuple[int, int]]] = {}
        self.recs: dict[int, list] = {}  # id -> [payload, values, missing]
        self.seen: dict[str, Any] = {}  # remembered images
        self.used: set[str] = set()  # remembered images some record took
        self._ids = itertools.count()

    def add(self, payload: Any, slots: list[list[str]]) -> tuple[Any, list] | None:
        """Register a record; ``(payload, values)`` at once when every image is already known."""
        values: list = [None] * len(slots)
        rid = next(self._ids)
        missing = 0
        for i, alts in enumerate(slots):
            hit = next((k for k in alts if k in self.seen), None)
            if hit is not None:
                values[i] = self.seen[hit]
                self.used.add(hit)
                continue
            missing += 1
            for k in dict.fromkeys(alts):
                self.want.setdefault(k, []).append((rid, i))
        if not missing:
            return payload, values
        self.recs[rid] = [payload, values, missing]
        return None

    def wanted(self, keys: Iterable[str], remember: bool = False) -> str | None:
        """The first of ``keys`` a record waits for; remembering, else the first key."""
        keys = list(keys)
        hit = next((k for k in keys if k in self.want), None)
        return hit if hit is not None or not remember else (keys[0] if keys else None)

    def fill(self, key: str, value: Any, remember: bool = False) -> list[tuple[Any, list]]:
        """Give ``key`` its value (kept for later records when ``remember``): the records it completes."""
        waiting = self.want.pop(key, ())
        if remember:
            self.seen.setdefault(key, value)
            if waiting:
                self.used.add(key)
        ready = []
        for rid, i in waiting:
            rec = self.recs.get(rid)
            if rec is None or rec[1][i] is not None:
                continue
            rec[1][i] = value
            rec[2] -= 1
            if rec[2] == 0:
                del self.recs[rid]
                ready.append((rec[0], rec[1]))
        return ready

    @property
    def pending(self) -> int:
        return len(self.recs)

    def leftovers(self) -> Iterator[tuple[Any, list]]:
        """The incomplete records (``None`` where an image never appeared), in order."""
        recs, self.recs, self.want = self.recs, {}, {}
        for rid in sorted(recs):
            yield recs[rid][0], recs[rid][1]


# --- JSON records, tolerant: a bad record is counted, never fatal


def _array_records(text: IO[str], name: str, ctx: ImportContext, chunk: int = 1 << 20) -> Iterator[dict]:
    """The objects of a JSON array whose ``[`` was consumed, parsed incrementally."""
    dec = json.JSONDecoder()
    buf, pos, eof, index = "", 0, False, 0

    def fill() -> bool:
        nonlocal buf, pos, eof
        more = text.read(chunk)
        if not more:
            eof = True
            return False
        buf, pos = buf[pos:] + more, 0
        return True

    def ws() -> None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf) or not fill():
                return

    ws()
    if pos < len(buf) and buf[pos] == "]":
        return
    while True:
        ws()
        while True:
            try:
                rec, end = dec.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as e:
                if eof or not fill():
                    ctx.skip("bad_json", f"{name}: record {index}: {e.msg} (the rest of the file is unreadable)")
                    return
        pos = end
        if isinstance(rec, dict):
            yield rec
        else:
            ctx.skip("not_object", f"{name}: record {index} is a {type(rec).__name__}")
        index += 1
        ws()
        if pos >= len(buf):
            ctx.skip("bad_json", f"{name}: the JSON array is not closed")
            return
        if buf[pos] == ",":
            pos += 1
        elif buf[pos] == "]":
            return
        else:
            ctx.skip("bad_json", f"{name}: expected ',' or ']' after record {index - 1}")
            return


def _mapping_records(obj: Any, name: str, ctx: ImportContext) -> Iterator[dict]:
    if isinstance(obj, dict) and obj and all(isinstance(v, dict) for v in obj.values()):
        for k, v in obj.items():  # {id: record, ...}
            yield {"id": k, **v}
    elif isinstance(obj, dict):
        yield obj
    else:
        ctx.skip("not_object", f"{name}: a {type(obj).__name__}")


def read_records(raw: IO[bytes], name: str, ctx: ImportContext, fields: tuple[str, ...] = ()) -> Iterator[dict]:
    """The records of a JSON file read as a stream: a JSON array (incremental), JSON lines, or one
    object mapping ids to records (``fields``: keys a record has, to tell one from a mapping)."""
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace")
    first = ""
    while not first:
        c = text.read(1)
        if not c:
            return
        if not c.isspace():
            first = c
    if first == "[":
        yield from _array_records(text, name, ctx)
        return
    if first != "{":
        ctx.skip("bad_json", f"{name}: expected a JSON array, JSON lines or an object, found {first!r}")
        return
    line = first + text.readline()
    try:
        head = json.loads(line)
    except json.JSONDecodeError:
        try:  # one pretty-printed object
            obj = json.loads(line + text.read())
        except json.JSONDecodeError as e:
            ctx.skip("bad_json", f"{name}: {e.msg} at line {e.lineno}")
            return
        yield from _mapping_records(obj, name, ctx)
        return
    if fields and isinstance(head, dict) and not any(f in head for f in fields) and head \
            and all(isinstance(v, dict) for v in head.values()):
        yield from _mapping_records(head, name, ctx)  # a one-line mapping
        return
    yield head
    for lineno, line in enumerate(text, 2):  # JSON lines
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            ctx.skip("bad_json", f"{name}:{lineno}: {e.msg}")
            continue
        if isinstance(rec, dict):
            yield rec
        else:
            ctx.skip("not_object", f"{name}:{lineno}")


def read_records_uri(uri: str, ctx: ImportContext, fields: tuple[str, ...] = ()) -> Iterator[dict]:
    with _open(uri) as raw:
        yield from read_records(raw, uri, ctx, fields)


# ------------------------------------------------------------------------------------------ parts

T2I = "preproces_text_to_image_generation_s3"
T2I_SCHEMA = pa.schema([("s3_path", pa.string()), ("caption", pa.string()),
                        ("intHeight", pa.int64()), ("intWidth", pa.int64())])
COYO_SCHEMA = pa.schema([("s3_path", pa.string()), ("caption", pa.string()), ("fltLaionAesthScore", pa.float64()),
                         ("intHeight", pa.int64()), ("intWidth", pa.int64())])
CORRECTION_SCHEMA = pa.schema([("s3_path", pa.string()), ("caption", pa.string()),
                               ("negatives", pa.string()), ("negative_reasons", pa.string())])
JUDGE_SCHEMA = pa.schema([("image", pa.string()), ("prompts", pa.string()), ("results", pa.string())])
MULTIREF_SCHEMA = pa.schema([("input_paths", pa.list_(pa.string())), ("output_paths", pa.string()),
                             ("instruction", pa.string())])
T2I_ENTRY = {"length_group": "t2i"}


def t2i_row(path: str, caption: str, size: tuple[int, int] | None, part: str = "main") -> Row:
    w, h = size if size else (None, None)
    return Row(part, {"s3_path": path, "caption": caption, "intHeight": h, "intWidth": w})


# ------------------------------------------------------------------------- COYO / Re-LAION (URLs)


@dataclass(frozen=True)
class _UrlLayout:
    kind: str
    url: tuple[str, ...]
    caption: tuple[str, ...]
    width: tuple[str, ...]
    height: tuple[str, ...]
    score: tuple[str, ...] = ()  # metadata column of the aesthetic score (COYO)
    expected: str = ""


_RELAION = _UrlLayout("relaion", ("url", "URL"), ("caption", "TEXT", "text"), ("width", "WIDTH"),
                      ("height", "HEIGHT"), (),
                      "Re-LAION metadata: url, caption (or the older URL, TEXT), optionally width/height "
                      "(WIDTH/HEIGHT)")
_COYO = _UrlLayout("coyo", ("url",), ("text",), ("width",), ("height",), ("aesthetic_score_laion_v2",),
                   "COYO-700M metadata: id, url, text, ..., width, height, aesthetic_score_laion_v2")


def _pick(names: list[str], wanted: tuple[str, ...]) -> str | None:
    return next((w for w in wanted if w in names), None)


def _url_key(url: str) -> bytes:
    return hashlib.blake2b(url.strip().encode("utf-8", "replace"), digest_size=8).digest()


def _metadata_files(source: str, lay: _UrlLayout) -> list[tuple[str, dict[str, str | None]]]:
    """The metadata parquet files under ``source`` with their column mapping; img2dataset's own
    per-shard parquet files (``key``, ``status``) and imported tables are not metadata."""
    out = []
    for uri in walk(source):
        if not uri.endswith(".parquet"):
            continue
        try:
            with _open(uri, seekable=True) as f:
                names = list(pq.ParquetFile(f).schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as e:
            raise ImportError_(f"{uri}: not a readable parquet file ({e}); expected {lay.expected}") from e
        if {"key", "status"} <= set(names) or "s3_path" in names:
            continue
        cols = {"url": _pick(names, lay.url), "caption": _pick(names, lay.caption),
                "width": _pick(names, lay.width), "height": _pick(names, lay.height),
                "score": _pick(names, lay.score) if lay.score else None}
        if cols["url"] is None or cols["caption"] is None:
            raise ImportError_(f"{uri}: expected {lay.expected}; this file has: {', '.join(names)}")
        out.append((uri, cols))
    return out


def _sample_key(path: str) -> tuple[str, str]:
    """WebDataset / img2dataset sample key of a file: (its folder, its name up to the first dot)."""
    d, b = posixpath.split(path)
    return d, b.split(".", 1)[0]


def _downloads(source: str, ctx: ImportContext, quiet_failures: bool) -> Iterator[tuple[str, str, dict]]:
    """img2dataset ``files`` output under ``source``: ``(image URI, its path in the release,
    sidecar)`` for each successful download with its image; anomalies counted."""
    files = (u for u in walk(source) if not u.endswith(".parquet"))
    for (d, key), group in itertools.groupby(files, key=lambda u: _sample_key(rel(u, source))):
        group = list(group)
        side = next((u for u in group if u.endswith(".json") and not u.endswith("_stats.json")), None)
        img = next((u for u in group if is_image(u)), None)
        if side is None:
            if img is not None:
                ctx.skip("no_sidecar", f"{img}: an image without its img2dataset <key>.json")
            continue
        try:
            meta = json.loads(read_bytes(side))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if img is not None:
                ctx.skip("bad_sidecar", f"{side}: {e}")
            continue
        if not isinstance(meta, dict) or not text_value(meta.get("url")):
            if img is not None:  # else some other JSON file, not a sidecar
                ctx.skip("bad_sidecar", f"{side}: expected img2dataset's object with 'url', 'caption', 'status', ...")
            continue
        status = meta.get("status", "success")
        if status != "success":
            if not quiet_failures:
                ctx.skip("download_failed", f"{side}: status {status!r}")
            continue
        if img is None:
            ctx.skip("image_missing", f"{side}: status success but no <key>.jpg beside it")
            continue
        yield img, rel(img, source), meta


def _int(v: Any) -> int | None:
    try:
        i = int(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return i if i > 0 else None


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _url_import(source: str, ctx: ImportContext, lay: _UrlLayout) -> Iterator[Row]:
    metadata = _metadata_files(source, lay)
    coyo = lay.kind == "coyo"

    def row(img: str, relpath: str, caption: str, w: Any, h: Any, score: Any) -> Row:
        path = ctx.image(f"{lay.kind}/{relpath}", lambda u=img: read_bytes(u), fallback=location(img))
        values = {"s3_path": path, "caption": caption, "intHeight": _int(h), "intWidth": _int(w)}
        if coyo:
            values["fltLaionAesthScore"] = _float(score)
        return Row("main", values)

    if not metadata:  # the img2dataset output alone
        found = False
        for img, relpath, meta in _downloads(source, ctx, quiet_failures=False):
            found = True
            caption = text_value(meta.get("caption"))
            ctx.progress()
            if caption is None:
                ctx.skip("missing_caption", f"{img}: the sidecar has no caption")
                continue
            yield row(img, relpath, caption, meta.get("width"), meta.get("height"),
                      meta.get("aesthetic_score_laion_v2"))
        if not found and not ctx.skipped:
            raise ImportError_(f"{source}: found neither {lay.kind} metadata parquet files nor img2dataset "
                               "output (<key>.jpg + <key>.json)")
        return

    index: dict[bytes, list] = {}
    for img, relpath, meta in _downloads(source, ctx, quiet_failures=True):
        index[_url_key(str(meta["url"]))] = [img, relpath, meta.get("width"), meta.get("height"), False]
    if not index:
        raise ImportError_(
            f"{source}: the {lay.kind} metadata holds image URLs only, and no img2dataset output "
            "(<shard>/<key>.jpg + <key>.json, img2dataset --output_format files) was found beside it: "
            "download the images first (e.g. img2dataset --input_format parquet --url_col url "
            f"--caption_col {'text' if coyo else 'caption'} --output_format files) into a folder under SOURCE"
        )
    for uri, cols in metadata:
        wanted = [c for c in cols.values() if c]
        with _open(uri, seekable=True) as f:
            pf = pq.ParquetFile(f)
            n = 0
            for batch in pf.iter_batches(batch_size=65536, columns=list(dict.fromkeys(wanted))):
                for r in batch.to_pylist():
                    n += 1
                    ctx.progress()
                    url = text_value(r[cols["url"]])
                    if url is None:
                        ctx.skip("missing_url", f"{uri}: row {n - 1}")
                        continue
                    hit = index.get(_url_key(url))
                    if hit is not None:
                        hit[4] = True  # the download has its row, even if the row is skipped
                    caption = text_value(r[cols["caption"]])
                    if caption is None:
                        ctx.skip("missing_caption", f"{uri}: row {n - 1}")
                        continue
                    if hit is None:
                        ctx.skip("not_downloaded", f"{uri}: row {n - 1} ({url})")
                        continue
                    w = hit[2] if _int(hit[2]) else (r[cols["width"]] if cols["width"] else None)
                    h = hit[3] if _int(hit[3]) else (r[cols["height"]] if cols["height"] else None)
                    yield row(hit[0], hit[1], caption, w, h, r[cols["score"]] if cols["score"] else None)
    unused = [v for v in index.values() if not v[4]]
    if unused:
        skip_n(ctx, "not_in_metadata", len(unused), f"{unused[0][0]}: a download whose URL no metadata row has")


@importer("relaion", parts={"main": Part(T2I_SCHEMA, T2I, entry=T2I_ENTRY)})
def relaion(source: str, ctx: ImportContext) -> Iterator[Row]:
    """Re-LAION-2B-en-research-safe: a folder with the metadata parquet (url, caption, width,
    height; or URL, TEXT, WIDTH, HEIGHT) and the img2dataset output (<key>.jpg + <key>.json)."""
    yield from _url_import(source, ctx, _RELAION)


@importer("coyo", parts={"main": Part(COYO_SCHEMA, T2I, entry={"aes_cutoff": 5.5, "length_group": "t2i"})})
def coyo(source: str, ctx: ImportContext) -> Iterator[Row]:
    """COYO-700M: a folder with the metadata parquet (text, aesthetic_score_laion_v2, width,
    height, ...) and the img2dataset output (<key>.jpg + <key>.json). aes_cutoff 5.5 as upstream."""
    yield from _url_import(source, ctx, _COYO)


# ------------------------------------------------------------------------------------- BLIP3o


@importer("blip3o", parts={"main": Part(T2I_SCHEMA, T2I, entry=T2I_ENTRY)})
def blip3o(source: str, ctx: ImportContext) -> Iterator[Row]:
    """BLIP3o (Pretrain-Long/Short-Caption, Pretrain-JourneyDB, BLIP3o-60k): a folder of
    WebDataset tars (<key>.jpg + <key>.txt), or of the extracted pairs."""
    rel_ = scan(source)
    loose = [u for u in rel_.files if is_image(u) or u.endswith(".txt")]
    if not rel_.archives and not any(is_image(u) for u in loose):
        raise ImportError_(f"{source}: expected BLIP3o WebDataset shards (*.tar with <key>.jpg + <key>.txt) "
                           "or extracted <key>.jpg + <key>.txt files; found neither")
    if rel_.archives and ctx.images is None:
        raise need_images_to("blip3o", rel_.archives)

    def sample(where: str, image: tuple[str, Any] | None, caption: bytes | None) -> Row | None:
        ctx.progress()
        if image is None:
            ctx.skip("image_missing", f"{where}: a caption without its <key>.jpg")
            return None
        if caption is None:
            ctx.skip("missing_caption", f"{where}: an image without its <key>.txt")
            return None
        try:
            text = caption.decode("utf-8").strip()
        except UnicodeDecodeError:
            ctx.skip("bad_caption", f"{where}: the caption is not UTF-8")
            return None
        if not text:
            ctx.skip("missing_caption", f"{where}: empty caption")
            return None
        relpath, data = image
        if isinstance(data, bytes):  # an archive member
            size = image_size(data)
            if size is None:
                ctx.skip("bad_image", f"{where}: not a readable image")
                return None
            return t2i_row(ctx.image(f"blip3o/{relpath}", data), text, size)
        size = header_size(data)
        if size is None:
            ctx.skip("bad_image", f"{where}: not a readable image")
            return None
        return t2i_row(ctx.image(f"blip3o/{relpath}", lambda u=data: read_bytes(u), fallback=location(data)),
                       text, size)

    for key, group in itertools.groupby(loose, key=lambda u: _sample_key(rel_.rel(u))):
        group = list(group)
        img = next((u for u in group if is_image(u)), None)
        txt = next((u for u in group if u.endswith(".txt")), None)
        r = sample("/".join(key), (rel_.rel(img), img) if img else None, read_bytes(txt) if txt else None)
        if r is not None:
            yield r
    for arc in rel_.archives:
        cur: tuple[str, str] | None = None
        image: tuple[str, bytes] | None = None
        caption: bytes | None = None
        for member, read in iter_archive(arc, ctx):
            key = _sample_key(norm(member))
            if key != cur:
                if cur is not None and (image or caption is not None):
                    r = sample(f"{arc.name}:{'/'.join(cur)}", image, caption)
                    if r is not None:
                        yield r
                cur, image, caption = key, None, None
            if is_image(member) and image is None:
                image = (arc.member_path(member), read())
            elif member.endswith(".txt"):
                caption = read()
        if cur is not None and (image or caption is not None):
            r = sample(f"{arc.name}:{'/'.join(cur)}", image, caption)
            if r is not None:
                yield r


# ----------------------------------------------------------------------------------- Reflect-DiT

_CSV_COLUMNS = {
    "prompt": ("prompt", "prompts", "caption"),
    "positive": ("positive_filename", "positive_filenames", "positive"),
    "negative": ("negative_filename", "negative_filenames", "negative"),
    "reason": ("negative_reason", "negative_reasons", "reason"),
}
_SEP = "XXX"
_JUDGE_PROMPT = re.compile(r"prompt\s*:\s*(?P<p>.+?)\s*(?:Focus on[^\n]*)?\s*$", re.S | re.I)


def _csv_columns(fieldnames: list[str] | None, uri: str) -> dict[str, str | None]:
    names = {n.strip().lower(): n for n in fieldnames or []}
    cols = {k: next((names[a] for a in alts if a in names), None) for k, alts in _CSV_COLUMNS.items()}
    if cols["prompt"] is None or cols["positive"] is None or (cols["negative"] is None) != (cols["reason"] is None):
        raise ImportError_(f"{uri}: expected the Reflect-DiT CSV columns prompt, positive_filename, "
                           f"negative_filename, negative_reason (XXX-joined); it has: {', '.join(fieldnames or [])}")
    return cols


def _split(v: Any) -> list[str]:
    return [s.strip() for s in str(v or "").split(_SEP)]


def _judge_pairs(rec: dict) -> list[tuple[str, str]] | None:
    turns = rec.get("conversations")
    if not isinstance(turns, list):
        return None
    pairs = []
    for a, b in zip(turns, turns[1:]):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            continue
        if a.get("from") in ("human", "user") and b.get("from") in ("gpt", "assistant"):
            m = _JUDGE_PROMPT.search(str(a.get("value", "")).replace("<image>", ""))
            result = text_value(b.get("value"))
            if m and result:
                pairs.append((m.group("p").strip(), result))
    return pairs


@importer("reflect-dit", parts={
    "t2i": Part(T2I_SCHEMA, T2I, entry=T2I_ENTRY),
    "correction": Part(CORRECTION_SCHEMA, "preproces_text_to_image_generation_s3_loc",
                       options={"no_plan": True, "add_feedback": True}, entry={"length_group": "plan"}),
    "judge": Part(JUDGE_SCHEMA, "preprocess_reflection_und", entry={"length_group": "und"}),
})
def reflect_dit(source: str, ctx: ImportContext) -> Iterator[Row]:
    """Reflect-DiT: a folder with the CSV (prompt, positive_filename, negative_filename,
    negative_reason; XXX-joined), the generations (a tar or its folder) and the LLaVA judge set."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rel_ = scan(source)
    csvs = [u for u in rel_.files if u.lower().endswith(".csv")]
    if not csvs:
        raise ImportError_(f"{source}: expected the Reflect-DiT CSV (prompt, positive_filename, "
                           "negative_filename, negative_reason) in this folder; found no .csv file")
    joiner = Joiner()

    for uri in csvs:
        with _open(uri) as raw:
            reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline="", errors="replace"))
            cols = _csv_columns(reader.fieldnames, uri)
            for n, r in enumerate(reader, 2):
                where = f"{uri}:{n}"
                prompt = text_value(r.get(cols["prompt"]))
                positives = [p for p in _split(r.get(cols["positive"])) if p]
                if prompt is None:
                    ctx.skip("missing_prompt", where)
                    continue
                if not positives:
                    ctx.skip("missing_positive", where)
                    continue
                negatives = [p for p in _split(r.get(cols["negative"])) if p] if cols["negative"] else []
                reasons = _split(r.get(cols["reason"])) if negatives else []
                if negatives and len(reasons) != len(negatives):
                    ctx.skip("negative_reason_mismatch",
                             f"{where}: {len(negatives)} negatives but {len(reasons)} reasons")
                    negatives, reasons = [], []  # the positives are still text-to-image rows
                slots = [[posixpath.basename(norm(p))] for p in positives + negatives]
                joiner.add(("csv", where, prompt, len(positives), reasons), slots)
    for uri in rel_.files:
        if not uri.lower().endswith((".json", ".jsonl")):
            continue
        for i, rec in enumerate(read_records_uri(uri, ctx, fields=("conversations", "image"))):
            where = f"{uri}: record {i}"
            image = rec.get("image")
            if isinstance(image, list) and len(image) == 1:
                image = image[0]
            if not isinstance(image, str) or not image.strip():
                ctx.skip("judge_missing_image", where)
                continue
            pairs = _judge_pairs(rec)
            if pairs is None:
                ctx.skip("judge_missing_conversations", where)
                continue
            if not pairs:
                ctx.skip("unexpected_judge_prompt", f"{where}: expected a human turn '<image>\\nPlease evaluate this "
                         "generated image based on the following prompt: {prompt} Focus on ...' and an answer")
                continue
            joiner.add(("judge", where, pairs), [[posixpath.basename(norm(image))]])

    def rows(payload: tuple, values: list) -> Iterator[Row]:
        ctx.progress()
        if payload[0] == "judge":
            _, where, pairs = payload
            if values[0] is None:
                ctx.skip("image_missing", f"{where}: its image is in no archive or folder of the release")
                return
            prompts = [p for p, _ in pairs]
            results = [r for _, r in pairs]
            yield Row("judge", {"image": values[0][0],
                                "prompts": prompts[0] if len(pairs) == 1 else json.dumps(prompts, ensure_ascii=False),
                                "results": results[0] if len(pairs) == 1 else json.dumps(results, ensure_ascii=False)})
            return
        _, where, prompt, npos, reasons = payload
        pos, neg = values[:npos], values[npos:]
        if any(v is None for v in pos):
            skip_n(ctx, "image_missing", sum(v is None for v in pos), f"{where}: a positive image is missing")
        pairs = []
        for v, reason in zip(neg, reasons):
            if v is None:
                ctx.skip("negative_image_missing", f"{where}: a negative image is missing (pair dropped)")
                continue
            if ";" in reason:
                ctx.skip("reason_semicolon_replaced", f"{where}: {reason[:80]!r}")
                reason = re.sub(r"\s*;\s*", ", ", reason).strip(", ")
            if not reason:
                ctx.skip("empty_negative_reason", f"{where}: a negative without a reason (pair dropped)")
                continue
            if ";" in v[0]:
                ctx.skip("semicolon_in_path", f"{where}: {v[0]} (pair dropped)")
                continue
            pairs.append((v[0], reason))
        for v in pos:
            if v is None:
                continue
            yield t2i_row(v[0], prompt, v[1], "t2i")
            if pairs:
                yield Row("correction", {"s3_path": v[0], "caption": prompt,
                                         "negatives": ";".join(p for p, _ in pairs),
                                         "negative_reasons": ";".join(r for _, r in pairs)})

    def found(uri_in_table: str, size: tuple[int, int] | None, key: str) -> Iterator[Row]:
        for payload, values in joiner.fill(key, (uri_in_table, size)):
            yield from rows(payload, values)

    for uri in rel_.files:
        if not joiner.pending:
            break
        if is_image(uri) and (key := joiner.wanted([posixpath.basename(uri)])):
            relpath = rel_.rel(uri)
            path = ctx.image(f"reflect-dit/{relpath}", lambda u=uri: read_bytes(u), fallback=location(uri))
            yield from found(path, header_size(uri), key)
    if joiner.pending and rel_.archives:
        if ctx.images is None:
            raise need_images_to("reflect-dit", rel_.archives, "generations")
        for arc in rel_.archives:
            for member, read in iter_archive(arc, ctx):
                if not joiner.pending:
                    break
                if is_image(member) and (key := joiner.wanted([posixpath.basename(member)])):
                    data = read()
                    path = ctx.image(f"reflect-dit/{arc.member_path(member)}", data)
                    yield from found(path, image_size(data), key)
    for payload, values in joiner.leftovers():
        yield from rows(payload, values)


# ------------------------------------------------------------------------------------- Echo-4o

_INPUT_KEYS = ("input_images", "input_image", "reference_images", "ref_images", "input_paths")


def _subset_of(path: str, subsets: list[str]) -> str:
    """The longest subset folder (one holding a record file) that ``path`` lies in."""
    for s in subsets:  # longest first
        if not s or path == s or path.startswith(s + "/"):
            return s
    return ""


@importer("echo-4o", parts={
    "t2i": Part(T2I_SCHEMA, T2I, entry=T2I_ENTRY),
    "multiref": Part(MULTIREF_SCHEMA, "process_gpt_edit", entry={"length_group": "edit"}),
})
def echo_4o(source: str, ctx: ImportContext) -> Iterator[Row]:
    """Echo-4o-Image: the release root (or one subset): <Subset>/<name>.jsonl records and
    <Subset>/images/*.tar.gz (or extracted images), matched by subset and file name."""
    rel_ = scan(source)
    metas = [u for u in rel_.files if u.lower().endswith((".jsonl", ".json"))]
    if not metas:
        raise ImportError_(f"{source}: expected Echo-4o-Image's <Subset>/<name>.jsonl record files "
                           "(task_type, instruction, output_image) and <Subset>/images/*.tar.gz; found no .jsonl")
    subsets = sorted({posixpath.dirname(rel_.rel(u)) for u in metas}, key=len, reverse=True)
    joiner = Joiner()
    for uri in metas:
        subset = _subset_of(rel_.rel(uri), subsets)
        for i, rec in enumerate(read_records_uri(uri, ctx, fields=("output_image", "instruction"))):
            where = f"{uri}: record {i}"
            instruction = text_value(rec.get("instruction", rec.get("prompt")))
            out = rec.get("output_image")
            inputs = string_list(next((rec[k] for k in _INPUT_KEYS if k in rec), None))
            if instruction is None:
                ctx.skip("missing_instruction", where)
                continue
            if not isinstance(out, str) or not out.strip():
                ctx.skip("missing_output_image", where)
                continue
            if inputs is None:
                ctx.skip("bad_input_images", f"{where}: input images must be a path or a list of paths")
                continue
            slots = [[posixpath.join(subset, posixpath.basename(norm(p)))] for p in [out, *inputs]]
            joiner.add((where, instruction, bool(inputs)), slots)

    def rows(payload: tuple, values: list) -> Iterator[Row]:
        where, instruction, multi = payload
        ctx.progress()
        if any(v is None for v in values):
            ctx.skip("image_missing", f"{where}: {sum(v is None for v in values)} of its images are in no archive")
            return
        if multi:
            yield Row("multiref", {"input_paths": [v[0] for v in values[1:]], "output_paths": values[0][0],
                                   "instruction": instruction})
        else:
            yield t2i_row(values[0][0], instruction, values[0][1], "t2i")

    def key_of(path: str) -> str:
        return posixpath.join(_subset_of(path, subsets), posixpath.basename(path))

    for uri in rel_.files:
        if not joiner.pending:
            break
        relpath = rel_.rel(uri)
        if is_image(uri) and (key := joiner.wanted([key_of(relpath)])):
            path = ctx.image(f"echo-4o/{relpath}", lambda u=uri: read_bytes(u), fallback=location(uri))
            for payload, values in joiner.fill(key, (path, header_size(uri))):
                yield from rows(payload, values)
    if joiner.pending and rel_.archives:
        if ctx.images is None:
            raise need_images_to("echo-4o", rel_.archives)
        for arc in rel_.archives:
            for member, read in iter_archive(arc, ctx):
                if not joiner.pending:
                    break
                if not is_image(member):
                    continue
                relpath = arc.member_path(member)
                if key := joiner.wanted([key_of(relpath)]):
                    data = read()
                    path = ctx.image(f"echo-4o/{relpath}", data)
                    for payload, values in joiner.fill(key, (path, image_size(data))):
                        yield from rows(payload, values)
    for payload, values in joiner.leftovers():
        yield from rows(payload, values)
