"""Reading ``s3://bucket/key`` objects with boto3, from AWS or any S3-compatible store.

The endpoint comes from ``AWS_ENDPOINT_URL`` or ``S3_ENDPOINT_URL`` (the variable that
mosaicml-streaming reads), so one setting serves both. Error messages name the object, never
credentials.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Any

_clients: dict = {}
_lock = threading.Lock()


def is_s3(path: str) -> bool:
    return isinstance(path, str) and path.startswith("s3://")


def split(uri: str) -> tuple[str, str]:
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"an S3 URI needs a bucket and a key: {uri!r}")
    return bucket, key


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL") or None


def client() -> Any:
    """A boto3 S3 client for this process (clients are thread-safe, not fork-safe)."""
    key = (os.getpid(), endpoint_url())
    with _lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            _clients[key] = boto3.session.Session().client(
                "s3",
                endpoint_url=key[1],
                config=Config(retries={"max_attempts": 5, "mode": "adaptive"}, max_pool_connections=32),
            )
        return _clients[key]


def _translate(e: Exception, uri: str) -> Exception:
    code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
    if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
        return FileNotFoundError(f"{uri}: no such object")
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return PermissionError(f"{uri}: access denied ({code})")
    return OSError(f"{uri}: S3 error {code or type(e).__name__}")


def head(uri: str) -> dict[str, Any]:
    """``{"size", "etag", "mtime"}`` of an object."""
    bucket, key = split(uri)
    try:
        r = client().head_object(Bucket=bucket, Key=key)
    except Exception as e:
        raise _translate(e, uri) from e
    return {"size": r["ContentLength"], "etag": r.get("ETag", "").strip('"'), "mtime": r["LastModified"].timestamp()}


def read_bytes(uri: str) -> bytes:
    bucket, key = split(uri)
    try:
        return client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as e:
        raise _translate(e, uri) from e


def open_stream(uri: str) -> io.BufferedReader:
    """A sequential reader over the object's body."""
    bucket, key = split(uri)
    try:
        body = client().get_object(Bucket=bucket, Key=key)["Body"]
    except Exception as e:
        raise _translate(e, uri) from e
    return io.BufferedReader(_BodyReader(body), buffer_size=1 << 20)


def open_ranged(uri: str, buffer_size: int = 4 << 20) -> io.BufferedReader:
    """A seekable reader that fetches byte ranges on demand (a parquet footer costs one GET)."""
    return io.BufferedReader(_RangedReader(uri), buffer_size=buffer_size)


class _BodyReader(io.RawIOBase):
    def __init__(self, body: Any):
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._body.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()


class _RangedReader(io.RawIOBase):
    def __init__(self, uri: str):
        self.uri = uri
        self.bucket, self.key = split(uri)
        self.size = head(uri)["size"]
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b: Any) -> int:
        if self.pos >= self.size or len(b) == 0:
            return 0
        end = min(self.pos + len(b), self.size) - 1
        try:
            r = client().get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.pos}-{end}")
            data = r["Body"].read()
        except Exception as e:
            raise _translate(e, self.uri) from e
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)
