"""Fetching referenced images: local paths and ``s3://`` URIs."""

from __future__ import annotations

import io

from PIL import Image

from lavida_data import io as storage


def read_image_bytes(path: str) -> bytes:
    """The file's bytes, through the storage layer: transient faults retried (one that lasts
    raises :class:`~lavida_data.io.StorageUnavailable`); a missing file is ``FileNotFoundError``,
    a URL other than ``s3://`` a ``ValueError``."""
    return storage.read_bytes(path)


def open_image(path: str) -> Image.Image:
    """The image at ``path``, decoded and converted to RGB."""
    img = Image.open(io.BytesIO(read_image_bytes(path)))
    img.load()
    return img.convert("RGB")


def thumbnail_jpeg(path: str, size: int = 320) -> tuple[bytes, tuple[int, int]]:
    """A JPEG thumbnail of the image and its original (width, height)."""
    img = open_image(path)
    original = img.size
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue(), original
