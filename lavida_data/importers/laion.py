"""Text-to-image KINDs whose images are URLs: ``coyo`` (COYO-700M) and ``relaion``
(Re-LAION-2B-en-research-safe).

SOURCE is a folder (local or ``s3://``) holding the metadata parquet files (COYO-700M: ``id, url,
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
else the metadata's. Downloads smaller than the originals img2dataset recorded (its sidecar's
``original_width/original_height``: it resized them, by default to 256 px with borders) are
counted and reported as a warning (``resized_downloads``): download with ``--resize_mode no``.
COYO's ``aesthetic_score_laion_v2`` becomes ``fltLaionAesthScore``;
Re-LAION ships no score, so its table has none. The downloaded images are referenced in place,
or copied under ``--images-to`` as ``<kind>/<path in the release>``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from lavida_data.importers.base import ImportContext, Part, Row, importer
from lavida_data.importers.errors import ImportError_
from lavida_data.importers.layout import is_image, sample_key, skip_n, text_value
from lavida_data.importers.sources import location, open_binary, read_bytes, rel, walk
from lavida_data.importers.t2i import T2I, T2I_ENTRY, T2I_SCHEMA

COYO_SCHEMA = pa.schema([("s3_path", pa.string()), ("caption", pa.string()), ("fltLaionAesthScore", pa.float64()),
                         ("intHeight", pa.int64()), ("intWidth", pa.int64())])


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
    for uri in walk(source, r"\.parquet$"):
        try:
            with open_binary(uri, seekable=True) as f:
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


def _downloads(source: str, ctx: ImportContext, quiet_failures: bool) -> Iterator[tuple[str, str, dict]]:
    """img2dataset ``files`` output under ``source``: ``(image URI, its path in the release,
    sidecar)`` for each successful download with its image; anomalies counted."""
    files = (u for u in walk(source) if not u.endswith(".parquet"))
    for (d, key), group in itertools.groupby(files, key=lambda u: sample_key(rel(u, source))):
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
        _check_resized(ctx, img, meta)
        yield img, rel(img, source), meta


def _check_resized(ctx: ImportContext, img: str, meta: dict) -> None:
    """Count a download smaller than the original img2dataset recorded (it was resized)."""
    w, h, ow, oh = (_int(meta.get(k)) for k in ("width", "height", "original_width", "original_height"))
    ctx.notice("downloads", img)
    if w and h and ow and oh and (w < ow or h < oh):
        ctx.notice(RESIZED, f"{img}: {w}x{h} stored, {ow}x{oh} original")


RESIZED = "resized_downloads"


def resized_warning(notices: dict[str, list]) -> str | None:
    """The warning for downloads img2dataset resized, or None."""
    if RESIZED not in notices:
        return None
    n, example = notices[RESIZED]
    total = notices.get("downloads", [n])[0]
    return (f"{n} of {total} downloaded images are smaller than the originals img2dataset recorded (e.g. "
            f"{example}): it resized them (its default is 256 px with borders, useless for 1024-px generation); "
            "download again with img2dataset --resize_mode no")


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
        with open_binary(uri, seekable=True) as f:
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
