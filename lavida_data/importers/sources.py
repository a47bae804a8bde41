"""Reading native layouts from local files or S3, streaming: listings, tars (split or not), zips,
JSON arrays and JSON lines, image sizes from headers. Memory is bounded by one record or member."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import zipfile
from typing import IO, Callable, Iterable, Iterator

from .. import s3
from ..tables import _open, iter_json_array


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local folder or an S3 prefix."""
    if s3.is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def exists(uri: str) -> bool:
    if s3.is_s3(uri):
        try:
            s3.head(uri)
            return True
        except (FileNotFoundError, PermissionError, OSError):
            return False
    return os.path.exists(uri)


def list_files(source: str, pattern: str = r".*") -> list[str]:
    """Every file under ``source`` (a folder or S3 prefix; or ``source`` itself when it is a file)
    whose path relative to ``source`` matches ``pattern`` (``re.search``), sorted."""
    rx = re.compile(pattern)
    if s3.is_s3(source):
        bucket, prefix = s3.split(source.rstrip("/") + "/") if not _is_object(source) else s3.split(source)
        pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
        base = f"s3://{bucket}/"
        return sorted(base + k for k in keys if rx.search(k[len(prefix):] or os.path.basename(k)))
    if os.path.isfile(source):
        return [source] if rx.search(os.path.basename(source)) else []
    out = []
    for root, dirs, files in os.walk(source):
        dirs.sort()
        for name in files:
            path = os.path.join(root, name)
            if rx.search(os.path.relpath(path, source)):
                out.append(path)
    return sorted(out)


def is_dir(uri: str) -> bool:
    """Whether ``uri`` is a local folder, or an S3 prefix holding at least one object."""
    if s3.is_s3(uri):
        bucket, prefix = s3.split(uri.rstrip("/") + "/")
        return bool(s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))
    return os.path.isdir(uri)


def _is_object(uri: str) -> bool:
    try:
        s3.head(uri)
        return True
    except (FileNotFoundError, PermissionError, OSError, ValueError):
        return False


def read_bytes(uri: str) -> bytes:
    if s3.is_s3(uri):
        return s3.read_bytes(uri)
    with open(uri, "rb") as f:
        return f.read()


@contextlib.contextmanager
def open_binary(uri: str, seekable: bool = False) -> Iterator[IO[bytes]]:
    with _open(uri, seekable=seekable) as f:
        yield f


class _Concat(io.RawIOBase):
    """Several files read as one stream (split archives ``x.tar.gz.part000``, ``part001``, ...)."""

    def __init__(self, uris: list[str]):
        self._uris = list(uris)
        self._stack = contextlib.ExitStack()
        self._cur: IO[bytes] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while True:
            if self._cur is None:
                if not self._uris:
                    return 0
                self._cur = self._stack.enter_context(_open(self._uris.pop(0)))
            n = self._cur.readinto(b)
            if n:
                return n
            self._cur = None

    def close(self) -> None:
        self._stack.close()
        super().close()


def split_parts(uris: Iterable[str]) -> dict[str, list[str]]:
    """Group ``name.partNNN`` / ``name.NNN`` files by ``name``, parts in numeric order; other
    files form a group of their own."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for u in uris:
        m = re.match(r"^(.*?)(?:\.part|\.)(\d+)$", u)
        if m and re.search(r"\.(tar|tgz|gz|zip)$", m.group(1)):
            groups.setdefault(m.group(1), []).append((int(m.group(2)), u))
        else:
            groups.setdefault(u, []).append((0, u))
    return {k: [u for _, u in sorted(v)] for k, v in sorted(groups.items())}


def iter_tar(uris: str | list[str], on_error: Callable[[str, str], None] | None = None
             ) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """The regular files of a tar (plain or gzip; given as one file or as ordered split parts),
    streamed: ``(member name, read)``; ``read()`` must be called before the next member."""
    parts = [uris] if isinstance(uris, str) else list(uris)
    raw = io.BufferedReader(_Concat(parts), buffer_size=1 << 20)
    try:
        with tarfile.open(fileobj=raw, mode="r|*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                f = tar.extractfile(m)
                yield m.name, (lambda f=f: f.read())
    except (tarfile.TarError, EOFError, OSError) as e:
        if on_error is None:
            raise
        on_error("truncated_archive", f"{parts[0]}: {type(e).__name__}: {e}")
    finally:
        raw.close()


def iter_zip(uri: str) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """The files of a zip archive (local, or S3 read by ranges): ``(name, read)``."""
    with _open(uri, seekable=True) as f, zipfile.ZipFile(f) as z:
        for info in z.infolist():
            if not info.is_dir():
                yield info.filename, (lambda info=info: z.read(info))


def iter_jsonl(uri: str, on_error: Callable[[str, str], None]) -> Iterator[dict]:
    """The objects of a JSON-lines file; a bad line is reported (``bad_json`` / ``not_object``)."""
    with _open(uri) as raw:
        for lineno, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                on_error("bad_json", f"{uri}:{lineno}: {e.msg}")
                continue
            if not isinstance(rec, dict):
                on_error("not_object", f"{uri}:{lineno}")
                continue
            yield rec


def iter_json_records(uri: str) -> Iterator[dict]:
    """The objects of a JSON array, parsed incrementally (a 22 GB file in bounded memory)."""
    with _open(uri) as raw:
        yield from iter_json_array(io.TextIOWrapper(raw, encoding="utf-8"), uri)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, or None when it is not a readable image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return None
