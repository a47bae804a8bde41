"""Reading native layouts from local files or S3, streaming: listings, archives (tars, plain, gzip
or split in parts, and zips), image sizes from headers, the fingerprint of a source. Memory is
bounded by one listing page or one archive member."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
import zipfile
from array import array
from typing import IO, Callable, Iterable, Iterator

import numpy as np

from lavida_data import io as storage
from lavida_data.importers.errors import ImportError_
from lavida_data.io import StorageUnavailable, is_s3

OnError = Callable[[str, str], None]  # (skip reason, where): ImportContext.skip
Member = tuple[str, Callable[[], bytes]]  # (path in the archive, read its bytes)

# ----------------------------------------------------------------------------------------- paths


join = storage.join  # ``base/part/...`` for a local folder or an S3 prefix


def norm(path: str) -> str:
    """A record's or member's relative path, normalised (``./a//b`` -> ``a/b``, no leading ``/``)."""
    p = posixpath.normpath(str(path).strip().replace("\\", "/")).lstrip("/")
    return "" if p == "." else p


def rel(uri: str, source: str) -> str:
    """``uri``'s path inside ``source`` (``/``-separated); its name when ``source`` is a file."""
    if is_s3(uri):
        base = source.rstrip("/")
        return uri[len(base) + 1:] if uri.startswith(base + "/") else posixpath.basename(uri)
    if os.path.isfile(source):
        return os.path.basename(uri)
    return os.path.relpath(uri, source).replace(os.sep, "/")


def location(uri: str) -> str:
    """Where a table points for a file or folder: its absolute path, or its ``s3://`` URI."""
    return uri.rstrip("/") if is_s3(uri) else os.path.abspath(uri)


def folder_of(source: str) -> str:
    """The folder of a source (:func:`location`): itself when it is a folder, else the one holding it."""
    if is_dir(source):
        return location(source)
    if is_s3(source):
        return source.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(source))


# ------------------------------------------------------------------------------ files and listings


exists = storage.exists  # a transient fault is raised, never taken for a missing file
is_dir = storage.is_dir  # a local folder, or an S3 prefix holding at least one object
read_bytes = storage.read_bytes


open_binary = storage.open_read  # a reader and context manager; ``seekable``: S3 read by byte ranges


def list_objects(uri: str) -> Iterator[dict]:
    """The listing entries (``Key``, ``Size``, ``ETag``, ...) of every S3 object whose key starts
    with ``uri``'s key (end it with ``/`` for a folder), page by page."""
    return storage.list_prefix(uri)


def _h(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class KeyIndex:
    """A set of file keys held as 8-byte hashes (10M keys in 80 MB), to match record paths
    against the files of archives or listings; a key may sit under one more leading folder
    (``<top>/<record path>``), tried for the first ``MAX_TOPS`` distinct top folders."""

    MAX_TOPS = 256

    def __init__(self):
        self._buf = array("Q")
        self._arr: np.ndarray | None = None
        self.tops: list[str] = []
        self._top_set: set[str] = set()

    def add(self, key: str) -> None:
        self._buf.append(_h(key))
        self._arr = None
        if "/" in key:
            top = key.split("/", 1)[0]
            if top not in self._top_set and len(self.tops) < self.MAX_TOPS:
                self._top_set.add(top)
                self.tops.append(top)

    def __len__(self) -> int:
        return len(self._buf)

    def __contains__(self, key: str) -> bool:
        if self._arr is None:
            self._arr = np.sort(np.frombuffer(self._buf, dtype=np.uint64)) if len(self._buf) else np.zeros(0, np.uint64)
        h = np.uint64(_h(key))
        i = int(np.searchsorted(self._arr, h))
        return i < len(self._arr) and self._arr[i] == h

    def resolve(self, path: str) -> str | None:
        """The key of ``path``: itself, or ``<top>/path`` (the last top that matched is tried first)."""
        if path in self:
            return path
        for i, top in enumerate(self.tops):
            cand = f"{top}/{path}"
            if cand in self:
                if i:
                    self.tops.insert(0, self.tops.pop(i))
                return cand
        return None


def index_prefix(root: str) -> KeyIndex:
    """Every object key under an S3 prefix, relative to it (one listing, no per-image request)."""
    prefix = storage.split(root.rstrip("/") + "/")[1]
    idx = KeyIndex()
    for o in list_objects(root.rstrip("/") + "/"):
        idx.add(o["Key"][len(prefix):])
    return idx


def walk(source: str, pattern: str | None = None) -> Iterator[str]:
    """Every file under ``source`` (or ``source`` itself when it is a file) whose path relative to
    ``source`` (:func:`rel`) matches ``pattern`` (``re.search``; every file when None), streamed:
    a local folder folder by folder (names sorted, links followed), an S3 prefix page by page."""
    rx = re.compile(pattern) if pattern is not None else None
    for uri in _walk(source):
        if rx is None or rx.search(rel(uri, source)):
            yield uri


def _walk(source: str) -> Iterator[str]:
    if not is_s3(source) and not os.path.exists(source):
        raise ImportError_(f"{source}: no such file or folder")
    for uri, _ in storage.walk(source):
        yield uri


def source_fingerprint(source: str) -> dict:
    """Size and mtime (or etag) of a source file, or of every file under a source folder."""
    if is_s3(source):  # an object, or every object under a prefix
        key = storage.split(source)[1].rstrip("/")  # the object itself, or those under key/ (not key2/)
        items = sorted((o["Key"], o["Size"], o.get("ETag", "")) for o in list_objects(source)
                       if o["Key"] == key or o["Key"].startswith(key + "/"))
    else:
        if not os.path.exists(source):
            raise ImportError_(f"{source}: no such file or folder")
        items = sorted((rel(p, source), info.size, int(info.mtime or 0)) for p, info in storage.walk(source))
    digest = hashlib.sha256(json.dumps(items).encode()).hexdigest()[:32]
    return {"files": len(items), "digest": digest}


# -------------------------------------------------------------------------------------- archives


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
                self._cur = self._stack.enter_context(storage.open_read(self._uris.pop(0)))
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


def iter_members(parts: str | list[str] | tuple[str, ...], on_error: OnError) -> Iterator[Member]:
    """The files of an archive, streamed: a tar (plain or gzip; one file or its split parts in
    order) or a zip (local, or S3 read by ranges). Yields ``(path, read)``, the path normalised
    (:func:`norm`); ``read()`` must be called before the next member. A member whose path leaves
    the archive (``../x``) is never yielded (``unsafe_member_path``); a truncated or corrupt
    archive ends early (``truncated_archive``)."""
    parts = [parts] if isinstance(parts, str) else list(parts)
    is_zip = re.search(r"\.zip(\.part\d+|\.\d+)?$", parts[0], re.I) is not None
    if is_zip and len(parts) > 1:
        raise ImportError_(f"{parts[0]}: split zip archives are not supported; join the parts first")
    try:
        for name, read in (_zip_members(parts[0]) if is_zip else _tar_members(parts)):
            path = norm(name)
            if not path or path == ".." or path.startswith("../"):  # would land outside the release
                on_error("unsafe_member_path", f"{parts[0]}:{name}")
                continue
            yield path, read
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:  # not StorageUnavailable: raised
        on_error("truncated_archive", f"{parts[0]}: {type(e).__name__}: {e}")


def _tar_members(parts: list[str]) -> Iterator[Member]:
    raw = io.BufferedReader(_Concat(parts), buffer_size=1 << 20)
    try:
        with tarfile.open(fileobj=raw, mode="r|*") as tar:
            for m in tar:
                if m.isfile():
                    f = tar.extractfile(m)
                    yield m.name, (lambda f=f: f.read())
    finally:
        raw.close()


def _zip_members(uri: str) -> Iterator[Member]:
    with storage.open_read(uri, seekable=True) as f, zipfile.ZipFile(f) as z:
        for info in z.infolist():
            if not info.is_dir():
                yield info.filename, (lambda info=info: z.read(info))


# ---------------------------------------------------------------------------------------- images


def image_size(image: bytes | str) -> tuple[int, int] | None:
    """(width, height) from an image's header: of ``image``'s bytes, or of the file at ``image`` (a
    URI: a few KiB read, by ranges on S3); None when it is not a readable image."""
    from PIL import Image

    try:
        if isinstance(image, (bytes, bytearray)):
            with Image.open(io.BytesIO(image)) as im:
                return im.size
        with storage.open_read(image, seekable=True) as f, Image.open(f) as im:
            return im.size
    except StorageUnavailable:  # a transient fault is not a bad image
        raise
    except Exception:
        return None
