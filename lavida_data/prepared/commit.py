"""Committing a prepared dataset: a local work folder put in place in one step (a rename), or
uploaded to S3 with its manifest last (the manifest marks completion), objects of an earlier
preparation removed after."""

from __future__ import annotations

import os
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

from lavida_data import io as storage
from lavida_data.prepared.layout import INDEX, MANIFEST, ROWS, join
from lavida_data.prepared.mds import shard_name

KILL_AFTER = "LAVIDA_PREPARE_KILL_AFTER"  # test hook: "commit:manifest" kills a commit to S3 after its manifest


def commit_local(work: str, dest: str) -> None:
    """``work`` becomes ``dest`` (a folder): the old one moved aside, the new one renamed in."""
    old = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.old")
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(dest):
        os.rename(dest, old)
    os.rename(work, dest)
    shutil.rmtree(old, ignore_errors=True)


def commit_s3(work: str, dest: str, copies: Mapping[str, str] | None = None) -> None:
    """Upload shards first, then the index, the row map, and the manifest last; then remove the
    objects of an earlier preparation that this one does not have (a run killed before that
    ends it when it next finds the dataset up to date).

    ``copies`` maps more object names to objects already on S3 (shards that Ray tasks wrote in a
    work prefix): they are copied server-side, with the shards, before the index."""
    storage.delete(join(dest, MANIFEST))  # incomplete until the manifest is back
    copies = dict(copies or {})
    names = sorted(set(os.listdir(work)) | set(copies))
    last = [INDEX, ROWS, MANIFEST]

    def put(name: str) -> None:
        if name in copies:
            storage.copy(copies[name], join(dest, name))
        else:
            storage.upload(os.path.join(work, name), join(dest, name))

    with ThreadPoolExecutor(max_workers=16) as pool:  # the shards, in any order
        list(pool.map(put, [n for n in names if n not in last]))
    for name in last:
        put(name)
    kill_point("commit:manifest")
    remove_stale(dest, set(names))


def committed_names(shards: int) -> set[str]:
    """The objects of a committed dataset of ``shards`` shards."""
    return {INDEX, ROWS, MANIFEST, *(shard_name(k) for k in range(shards))}


def remove_stale(dest: str, keep: set[str]) -> None:
    """Remove the objects directly under ``dest`` that are not in ``keep``."""
    stale = [join(dest, n) for n in storage.listdir(dest) if n not in keep]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(storage.delete, stale))


def kill_point(name: str) -> None:
    if os.environ.get(KILL_AFTER) == name:
        os.kill(os.getpid(), signal.SIGKILL)
