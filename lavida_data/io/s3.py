"""``s3://bucket/key`` objects with boto3, from AWS or any S3-compatible store: the only module
that imports boto3.

The endpoint comes from ``AWS_ENDPOINT_URL`` or ``S3_ENDPOINT_URL`` (the variable that
mosaicml-streaming reads), so one setting serves both. Every call goes through
:func:`~.policy.retrying`; every body is checked against its ``Content-Length``.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from lavida_data.io.errors import ShortRead
from lavida_data.io.policy import current_policy, retrying

_clients: dict = {}
_lock = threading.Lock()
SINGLE_PUT_MAX = 256 << 20  # larger files go up in parts
SINGLE_COPY_MAX = 5 << 30  # S3's limit for one CopyObject
_UPLOAD_TOKEN = "lavida-upload"


@dataclass(frozen=True)
class Info:
    """Size and change marker of a file or object (``etag`` on S3, ``mtime`` locally)."""

    size: int
    etag: str | None = None
    mtime: float | None = None


def is_s3(path: Any) -> bool:
    return isinstance(path, str) and path.startswith("s3://")


def split(uri: str) -> tuple[str, str]:
    """``(bucket, key)``; the key may be empty only for a prefix ending in ``/``."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not (key or uri.endswith("/")):
        raise ValueError(f"an S3 URI needs a bucket and a key: {uri!r}")
    return bucket, key


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL") or None


def client() -> Any:
    """The boto3 S3 client of this process for the current endpoint and policy (clients are
    thread-safe, not fork-safe: a forked process makes its own)."""
    policy = current_policy()
    key = (os.getpid(), endpoint_url(), policy)
    with _lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": policy.retry_mode, "total_max_attempts": policy.request_attempts},
                            connect_timeout=policy.connect_timeout, read_timeout=policy.read_timeout,
                            max_pool_connections=32)
            _clients[key] = boto3.session.Session().client("s3", endpoint_url=key[1], config=config)
        return _clients[key]


# ------------------------------------------------------------------------------------------ reads


def head(uri: str) -> Info:
    bucket, key = split(uri)

    def once() -> Info:
        r = client().head_object(Bucket=bucket, Key=key)
        if r.get("ContentLength") is None:
            raise ShortRead("an answer without Content-Length")
        return Info(int(r["ContentLength"]), r.get("ETag", "").strip('"') or None, r["LastModified"].timestamp())

    return retrying("HEAD", uri, once)


def get(uri: str, start: int | None = None, end: int | None = None, etag: str | None = None) -> bytes:
    """The object's bytes (``[start, end)`` when given), read whole and checked against the
    answer's ``Content-Length`` (and the range asked for): a short body is retried."""
    bucket, key = split(uri)
    kwargs: dict[str, Any] = {}
    if start is not None:
        kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
    if etag:
        kwargs["IfMatch"] = f'"{etag}"'

    def once() -> bytes:
        r = client().get_object(Bucket=bucket, Key=key, **kwargs)
        return read_body(r, start, end)

    return retrying("GET", uri, once)


def read_body(r: dict, start: int | None = None, end: int | None = None) -> bytes:
    body = r["Body"]
    try:
        data = body.read()
    finally:
        body.close()
    expected = r.get("ContentLength")
    if expected is None or len(data) != int(expected):
        raise ShortRead(f"{len(data)} of {expected} bytes")
    if start is not None and end is not None:
        total = _total(r)
        if len(data) != max(0, min(end, total if total is not None else end) - start):
            raise ShortRead(f"{len(data)} bytes for the range {start}-{end}")
    return data


def _total(r: dict) -> int | None:
    """The object's size from a ranged answer's ``Content-Range: bytes a-b/total``."""
    cr = r.get("ContentRange") or ""
    tail = cr.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def open_body(uri: str, start: int = 0, etag: str | None = None) -> dict:
    """A GET answer whose body the caller reads (from ``start``; only while the ETag is ``etag``)."""
    bucket, key = split(uri)
    kwargs: dict[str, Any] = {}
    if start:
        kwargs["Range"] = f"bytes={start}-"
    if etag:
        kwargs["IfMatch"] = f'"{etag}"'
    return retrying("GET", uri, lambda: client().get_object(Bucket=bucket, Key=key, **kwargs))


def list_prefix(uri: str, delimiter: str | None = None) -> Iterator[dict]:
    """The listing entries (``Key``, ``Size``, ``ETag``, ``LastModified``) of every object whose key
    starts with ``uri``'s key, page by page (each page retried on its own)."""
    bucket, prefix = split(uri)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    while True:
        page = retrying("LIST", uri, lambda kw=dict(kwargs): client().list_objects_v2(**kw))
        yield from page.get("Contents", [])
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        kwargs["ContinuationToken"] = token


def any_under(uri: str) -> bool:
    """Whether at least one object's key starts with ``uri``'s key."""
    bucket, prefix = split(uri)
    page = retrying("LIST", uri, lambda: client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1))
    return bool(page.get("KeyCount") or page.get("Contents"))


# ----------------------------------------------------------------------------------------- writes


def put(uri: str, data: bytes) -> None:
    """One object, whole (S3 never shows half of it)."""
    bucket, key = split(uri)
    retrying("PUT", uri, lambda: client().put_object(Bucket=bucket, Key=key, Body=data))


def upload(path: str, uri: str) -> None:
    """A local file as one object: one PUT up to 256 MiB (retried whole), else a multipart upload
    marked with a token, so that an upload whose completion answer was lost is recognised."""
    bucket, key = split(uri)
    size = os.path.getsize(path)
    if size <= SINGLE_PUT_MAX:
        def once() -> None:
            with open(path, "rb") as f:
                client().put_object(Bucket=bucket, Key=key, Body=f)

        retrying("PUT", uri, once)
        return
    from boto3.s3.transfer import TransferConfig

    token = uuid.uuid4().hex

    def parts() -> None:
        try:
            client().upload_file(path, bucket, key, ExtraArgs={"Metadata": {_UPLOAD_TOKEN: token}},
                                 Config=TransferConfig(multipart_threshold=SINGLE_PUT_MAX, use_threads=True))
        except Exception:
            if _has_token(bucket, key, token, size):  # done, only the answer was lost
                return
            raise

    retrying("PUT", uri, parts)


def _has_token(bucket: str, key: str, token: str, size: int) -> bool:
    """Whether the object is the one this upload (``token``) wrote, whole."""
    try:
        r = retrying("HEAD", f"s3://{bucket}/{key}", lambda: client().head_object(Bucket=bucket, Key=key))
    except FileNotFoundError:
        return False
    return r.get("Metadata", {}).get(_UPLOAD_TOKEN) == token and r.get("ContentLength") == size


def copy(src: str, dst: str) -> None:
    """A server-side copy (one request up to 5 GiB, else in parts)."""
    sb, sk = split(src)
    db, dk = split(dst)
    size = head(src).size
    if size <= SINGLE_COPY_MAX:
        retrying("COPY", dst, lambda: client().copy_object(CopySource={"Bucket": sb, "Key": sk}, Bucket=db, Key=dk))
    else:
        retrying("COPY", dst, lambda: client().copy({"Bucket": sb, "Key": sk}, db, dk))


def delete(uri: str) -> None:
    """Remove an object (nothing when it is not there)."""
    bucket, key = split(uri)
    retrying("DELETE", uri, lambda: client().delete_object(Bucket=bucket, Key=key))


def delete_keys(bucket: str, keys: list[str]) -> None:
    """Remove objects, 1000 per request; keys the store failed to remove are tried again."""
    for i in range(0, len(keys), 1000):
        todo = keys[i:i + 1000]

        def once(todo: list[str] = todo) -> None:
            r = client().delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in todo], "Quiet": True})
            failed = [e for e in r.get("Errors", []) if e.get("Code") not in ("NoSuchKey",)]
            if failed:
                todo[:] = [e["Key"] for e in failed]
                from botocore.exceptions import ClientError

                raise ClientError({"Error": {"Code": failed[0].get("Code", "InternalError"),
                                             "Message": failed[0].get("Message", "")}}, "DeleteObjects")

        retrying("DELETE", f"s3://{bucket}/{todo[0]}", once)
