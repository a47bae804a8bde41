"""Shared memory left behind by killed runs, cleaned without touching live jobs.

streaming's own ``clean_stale_shared_memory()`` unlinks every streaming block on the machine,
including those of another job that is running there. Here a block is removed only when no live
process maps any block of its prefix (``/proc/*/maps``), which is exactly the state a SIGKILLed
run leaves behind.
"""

from __future__ import annotations

import os
import re

_NAME = re.compile(r"^(\d{6})_[A-Za-z_]+$")
SHM_DIR = "/dev/shm"


def _mapped() -> set[str]:
    names: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
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
