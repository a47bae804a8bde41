"""Shared memory left behind by killed runs, cleaned without touching live jobs.

streaming's own ``clean_stale_shared_memory()`` unlinks every streaming block on the machine,
including those of another job that is running there. Here a block is removed only when no live
process maps any block of its prefix (``/proc/*/maps``), which is exactly the state a SIGKILLed
run leaves behind.

streaming also leaves a file lock per prefix in the temporary folder
(``{tmp}/NNNNNN_cache_filelock``, ``..._barrier_filelock``) when a run ends, and skips every
prefix that has one: after many runs, opening a dataset stats thousands of them (half a second
here). A lock file is removed when its prefix has no shared memory block at all (a live job
creates its blocks before its locks and keeps them to the end) and no process has it open.
"""

from __future__ import annotations

import os
import re
import tempfile

_NAME = re.compile(r"^(\d{6})_[A-Za-z_]+$")
_LOCK = re.compile(r"^(\d{6})_(?:barrier|cache)_filelock$")
SHM_DIR = "/dev/shm"


def _pids() -> list[str]:
    return [pid for pid in os.listdir("/proc") if pid.isdigit()]


def _mapped() -> set[str]:
    names: set[str] = set()
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    i = line.find(SHM_DIR + "/")
                    if i >= 0:
                        names.add(line[i + len(SHM_DIR) + 1 :].split()[0])
        except OSError:
            continue
    return names


def clean_stale_shared_memory() -> list[str]:
    """Unlink streaming's shared memory blocks of dead jobs; returns what was removed."""
    if not os.path.isdir(SHM_DIR) or not os.path.isdir("/proc"):
        return []
    groups: dict[str, list[str]] = {}
    for name in os.listdir(SHM_DIR):
        m = _NAME.match(name)
        if m:
            groups.setdefault(m.group(1), []).append(name)
    if not groups:
        return []
    live = {n[:6] for n in _mapped() if _NAME.match(n)}
    removed = []
    for prefix, names in groups.items():
        if prefix in live:
            continue
        for name in names:
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def _open_files() -> set[str]:
    paths: set[str] = set()
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                paths.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
    return paths


def clean_stale_filelocks(tmp: str | None = None) -> list[str]:
    """Remove streaming's lock files of prefixes no job uses (see the module doc); returns them."""
    tmp = tmp or tempfile.gettempdir()
    if not os.path.isdir(SHM_DIR) or not os.path.isdir("/proc"):
        return []
    try:
        locks = [n for n in os.listdir(tmp) if _LOCK.match(n)]
    except OSError:
        return []
    if not locks:
        return []
    used = {m.group(1) for m in map(_NAME.match, os.listdir(SHM_DIR)) if m}
    stale = [n for n in locks if n[:6] not in used]
    if not stale:
        return []
    open_now = _open_files()
    removed = []
    for name in stale:
        path = os.path.join(tmp, name)
        if path in open_now:
            continue
        try:
            os.unlink(path)
            removed.append(name)
        except OSError:
            pass
    return removed
