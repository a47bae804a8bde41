"""File-like readers over S3 objects that survive faults.

:class:`StreamReader` reads an object front to back and, when the connection drops, stalls or
the body ends early, asks again for the rest (``Range: bytes=<pos>-``, only while the object's
ETag is the one first seen): the caller never sees a fault as the end of the data, and the bytes
it gets add up to the object's size or it gets an error. :class:`RangedReader` is seekable and
fetches byte ranges on demand (a parquet footer costs one GET), each checked for its length.
"""

from __future__ import annotations

import io
from typing import Any

from lavida_data.io import s3
from lavida_data.io.errors import ShortRead
from lavida_data.io.policy import Attempts


class StreamReader(io.RawIOBase):
    def __init__(self, uri: str):
        self.uri = uri
        self.pos = 0
        self.size: int | None = None
        self.etag: str | None = None
        self._body: Any = None
        self._tries = Attempts("GET", uri)

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        r = s3.open_body(self.uri, self.pos, self.etag)
        length = r.get("ContentLength")
        if length is None:
            r["Body"].close()
            raise ShortRead("an answer without Content-Length")
        if self.size is None:
            self.size = int(length)
            self.etag = (r.get("ETag") or "").strip('"') or None
        elif self.pos + int(length) != self.size:
            r["Body"].close()
            raise ShortRead(f"the rest from byte {self.pos} is {length} bytes of {self.size}")
        self._body = r["Body"]

    def _drop(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                pass
            self._body = None

    def readinto(self, b: Any) -> int:
        if len(b) == 0 or (self.size is not None and self.pos >= self.size):
            return 0
        while True:
            try:
                if self._body is None:
                    self._open()
                    if self.pos >= self.size:  # an empty object
                        return 0
                data = self._body.read(min(len(b), self.size - self.pos))
                if not data:
                    raise ShortRead(f"the body ended at byte {self.pos} of {self.size}")
            except Exception as e:  # noqa: BLE001 - classified by the attempts
                self._drop()
                self._tries.failure(e)
                continue
            n = len(data)
            b[:n] = data
            self.pos += n
            self._tries.progressed()
            if self.pos >= self.size:
                self._drop()
            return n

    def close(self) -> None:
        self._drop()
        super().close()


class RangedReader(io.RawIOBase):
    def __init__(self, uri: str):
        self.uri = uri
        info = s3.head(uri)
        self.size, self.etag = info.size, info.etag
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
        end = min(self.pos + len(b), self.size)
        data = s3.get(self.uri, self.pos, end, self.etag)
        n = len(data)
        b[:n] = data
        self.pos += n
        return n


def open_stream(uri: str, buffer_size: int = 1 << 20) -> io.BufferedReader:
    return io.BufferedReader(StreamReader(uri), buffer_size=buffer_size)


def open_ranged(uri: str, buffer_size: int = 4 << 20) -> io.BufferedReader:
    return io.BufferedReader(RangedReader(uri), buffer_size=buffer_size)
