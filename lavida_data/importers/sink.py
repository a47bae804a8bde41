"""Where an import writes the images it finds: a folder or S3 prefix (``--images-to``), each image
under a stable key, concurrently (a bounded number of writes in flight), resumably (a key already
there is not written again) and never half-written under its final name."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from lavida_data import io as storage
from lavida_data.importers.sources import list_objects


class ImageSink:
    """Writes images under a folder or S3 prefix with stable keys; skips keys already there."""

    def __init__(self, root: str, workers: int = 16, max_pending: int = 256):
        self.is_s3 = storage.is_s3(root)
        self.root = root.rstrip("/") if self.is_s3 else os.path.abspath(root)  # tables hold absolute paths
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._sem = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()
        self._pending: list[Future] = []
        self._existing: set[str] | None = None
        self.written = 0
        self.reused = 0
        self.errors: dict[str, int] = {}

    def uri(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _exists(self, key: str) -> bool:
        if not self.is_s3:
            return os.path.isfile(self.uri(key)) and os.path.getsize(self.uri(key)) > 0
        if self._existing is None:  # one listing instead of a HEAD per image
            prefix = storage.split(self.root + "/")[1]
            self._existing = {o["Key"][len(prefix):] for o in list_objects(self.root + "/")}
        return key in self._existing

    def _put(self, key: str, data: bytes | Callable[[], bytes]) -> None:
        try:
            blob = data() if callable(data) else data
            storage.write_bytes(self.uri(key), blob)  # never a half-written image under the final name
            with self._lock:
                self.written += 1
        except Exception as e:
            with self._lock:
                self.errors[type(e).__name__] = self.errors.get(type(e).__name__, 0) + 1
            raise
        finally:
            self._sem.release()

    def put(self, key: str, data: bytes | Callable[[], bytes]) -> str:
        """Store ``data`` (or what ``data()`` returns) under ``key`` unless it is there; its URI."""
        key = key.lstrip("/")
        if ".." in key.split("/"):
            raise ValueError(f"image key {key!r} leaves the image folder")
        with self._lock:
            exists = self._exists(key)
        if exists:
            self.reused += 1
            return self.uri(key)
        self._sem.acquire()
        self._pending.append(self._pool.submit(self._put, key, data))
        if len(self._pending) > 4096:
            self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        return self.uri(key)

    def close(self) -> None:
        """Wait for every write; the first failure is raised (the table is then not committed)."""
        self._pool.shutdown(wait=True)
        for f in self._pending:
            if f.exception() is not None:
                raise f.exception()
