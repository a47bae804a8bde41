"""Storage: every access to a local path or an ``s3://`` URI goes through these functions.

One retry policy for transient faults (:mod:`.policy`), one meaning for each fault
(:mod:`.errors`): a transient fault is retried and never read as an empty or short object; a
permanent one (a missing object, denied access) is raised at once naming the object. Writes are
atomic: a reader sees the old file or object, or the new one whole. Only :mod:`.s3` imports boto3.
"""

from __future__ import annotations

import os
from typing import IO, Iterable, Iterator

from lavida_data.io import local, s3
from lavida_data.io.errors import ObjectChanged, StorageError, StorageUnavailable
from lavida_data.io.policy import RetryPolicy, current_policy, retrying
from lavida_data.io.s3 import Info, endpoint_url, is_s3, split

__all__ = [
    "Info", "ObjectChanged", "RetryPolicy", "StorageError", "StorageUnavailable", "copy", "current_policy",
    "delete", "delete_many", "download", "endpoint_url", "exists", "is_dir", "is_s3", "join", "list_prefix",
    "listdir", "open_read", "read_bytes", "read_range", "read_text", "remove_tree", "retrying", "size", "split",
    "stat", "upload", "walk", "write_bytes",
]


def _check(path: str) -> str:
    path = os.fspath(path)
    if "://" in path and not is_s3(path):
        raise ValueError(f"{path}: only local paths and s3:// URIs are supported")
    return path


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local folder or an S3 prefix (empty parts are left out)."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])
    return os.path.join(base, *[p for p in parts if p])


# ------------------------------------------------------------------------------------------ reads


def stat(path: str) -> Info:
    """Size and change marker (etag on S3, mtime locally), from the object itself."""
    path = _check(path)
    return s3.head(path) if is_s3(path) else local.stat(path)


def size(path: str) -> int:
    return stat(path).size


def exists(path: str) -> bool:
    """Whether the file or object is there (a transient fault or denied access is raised)."""
    path = _check(path)
    if not is_s3(path):
        return os.path.exists(path)
    try:
        s3.head(path)
    except FileNotFoundError:
        return False
    return True


def is_dir(path: str) -> bool:
    """A local folder, or an S3 prefix holding at least one object."""
    path = _check(path)
    if is_s3(path):
        return s3.any_under(path.rstrip("/") + "/")
    return os.path.isdir(path)


def read_bytes(path: str) -> bytes:
    path = _check(path)
    return s3.get(path) if is_s3(path) else local.read_bytes(path)


def read_text(path: str, missing_ok: bool = False) -> str | None:
    """A small file's text (``None`` when it is not there and ``missing_ok``)."""
    try:
        return read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise


def read_range(path: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` (fewer only where the file ends)."""
    path = _check(path)
    if end <= start:
        return b""
    return s3.get(path, start, end) if is_s3(path) else local.read_range(path, start, end)


def open_read(path: str, seekable: bool = False) -> IO[bytes]:
    """A binary reader (a context manager): on S3 a resuming stream, or byte ranges on demand
    (``seekable``)."""
    path = _check(path)
    if not is_s3(path):
        return local.open_read(path)
    from lavida_data.io.readers import open_ranged, open_stream

    return open_ranged(path) if seekable else open_stream(path)


def download(path: str, dest: str) -> None:
    """A file or object into the local file ``dest``, whole (written aside, then renamed)."""
    path = _check(path)
    if not is_s3(path):
        local.copy_file(path, dest)
        return
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    tmp = f"{dest}.tmp-{os.getpid()}"
    try:
        with open_read(path) as src, open(tmp, "wb") as out:
            while True:
                chunk = src.read(8 << 20)
                if not chunk:
                    break
                out.write(chunk)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def listdir(folder: str) -> dict[str, int]:
    """Name -> size of the files directly in ``folder`` (nothing when it does not exist)."""
    folder = _check(folder)
    if not is_s3(folder):
        return local.listdir(folder)
    prefix = folder.rstrip("/") + "/"
    skip = len(split(prefix)[1])
    return {o["Key"][skip:]: int(o["Size"]) for o in s3.list_prefix(prefix, delimiter="/")}


def walk(source: str) -> Iterator[tuple[str, Info]]:
    """Every file under ``source`` (or ``source`` itself when it is a file or object), with its
    size and change marker: a local folder folder by folder (names sorted, links followed), an
    S3 prefix page by page (key order)."""
    source = _check(source)
    if not is_s3(source):
        yield from local.walk(source)
        return
    if not source.endswith("/") and source[5:].partition("/")[2] and exists(source):
        yield source, stat(source)
        return
    bucket = split(source.rstrip("/") + "/")[0]
    for o in s3.list_prefix(source.rstrip("/") + "/"):
        if not o["Key"].endswith("/"):
            yield (f"s3://{bucket}/{o['Key']}",
                   Info(int(o["Size"]), str(o.get("ETag", "")).strip('"') or None, o["LastModified"].timestamp()))


def list_prefix(uri: str) -> Iterator[dict]:
    """S3 listing entries (``Key``, ``Size``, ``ETag``, ...) of every object whose key starts
    with ``uri``'s key (end it with ``/`` for a folder)."""
    return s3.list_prefix(_check(uri))


# ----------------------------------------------------------------------------------------- writes


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file or object at once (a reader never sees half of it)."""
    path = _check(path)
    if is_s3(path):
        s3.put(path, data)
    else:
        local.write_bytes(path, data)


def upload(src: str, path: str) -> None:
    """The local file ``src`` as the file or object ``path``, whole."""
    path = _check(path)
    if is_s3(path):
        s3.upload(src, path)
    else:
        local.copy_file(src, path)


def copy(src: str, dst: str) -> None:
    """A copy (server-side when both are on S3)."""
    src, dst = _check(src), _check(dst)
    if is_s3(src) and is_s3(dst):
        s3.copy(src, dst)
    elif is_s3(dst):
        s3.upload(src, dst)
    else:
        download(src, dst)


def delete(path: str) -> None:
    """Remove a file or object (nothing when it is not there)."""
    path = _check(path)
    if is_s3(path):
        s3.delete(path)
    else:
        local.delete(path)


def delete_many(paths: Iterable[str]) -> None:
    by_bucket: dict[str, list[str]] = {}
    for p in paths:
        p = _check(p)
        if is_s3(p):
            bucket, key = split(p)
            by_bucket.setdefault(bucket, []).append(key)
        else:
            local.delete(p)
    for bucket, keys in by_bucket.items():
        s3.delete_keys(bucket, keys)


def remove_tree(folder: str) -> None:
    """Remove a folder, or every object under an S3 prefix (``folder/``)."""
    folder = _check(folder)
    if not is_s3(folder):
        local.remove_tree(folder)
        return
    prefix = folder.rstrip("/") + "/"
    bucket = split(prefix)[0]
    keys = [o["Key"] for o in s3.list_prefix(prefix)]
    if keys:
        s3.delete_keys(bucket, keys)
