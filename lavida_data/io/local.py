"""The same operations on local files: writes go to a temporary name beside the target and are
renamed into place, so a reader never sees half a file."""

from __future__ import annotations

import os
import shutil
import threading
from typing import IO, Iterator

from lavida_data.io.s3 import Info


def _tmp(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"


def stat(path: str) -> Info:
    st = os.stat(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: a folder, not a file")
    return Info(st.st_size, None, st.st_mtime)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_range(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def open_read(path: str) -> IO[bytes]:
    return open(path, "rb")


def write_bytes(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def copy_file(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = _tmp(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def listdir(folder: str) -> dict[str, int]:
    try:
        return {e.name: e.stat().st_size for e in os.scandir(folder) if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def walk(source: str) -> Iterator[tuple[str, Info]]:
    """Every file under ``source`` (or ``source`` itself), folder by folder, names sorted, links followed."""
    if os.path.isfile(source):
        yield source, stat(source)
        return
    for root, dirs, files in os.walk(source, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(root, name)
            st = os.stat(p)
            yield p, Info(st.st_size, None, st.st_mtime)


def delete(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_tree(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
