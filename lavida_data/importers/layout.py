"""What the release-based importers share: a release scanned into its archives and its other
files, records joined to the images they name (:class:`Joiner`, :func:`match_images`), and small
value checks.

A release is the dataset as published (or a copy of it), local or ``s3://``. Images inside its
archives are written under ``--images-to`` as ``<kind>/<path in the release>`` (the archive's
folder joined with the member path); without ``--images-to`` such an import fails and says so.
Images that are plain files are referenced in place (absolute local path or ``s3://`` URI)
unless ``--images-to`` is given, in which case they are copied there too.
"""

from __future__ import annotations

import itertools
import math
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from lavida_data.importers.base import ImportContext
from lavida_data.importers.errors import ImportError_
from lavida_data.importers.sources import (
    image_size,
    iter_members,
    location,
    norm,
    read_bytes,
    rel,
    split_parts,
    walk,
)

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_ARCHIVE = re.compile(r"\.(tar|tar\.gz|tgz|zip)(\.part\d+|\.\d+)?$", re.I)
_ARCHIVE_EXT = re.compile(r"\.(tar|tar\.gz|tgz|zip)$", re.I)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXT)


def suffixes(path: str) -> list[str]:
    """``a/b/c`` -> ``[a/b/c, b/c, c]``."""
    comps = [c for c in path.split("/") if c]
    return ["/".join(comps[i:]) for i in range(len(comps))]


def sample_key(path: str) -> tuple[str, str]:
    """WebDataset / img2dataset sample key of a file: (its folder, its name up to the first dot)."""
    d, b = posixpath.split(path)
    return d, b.split(".", 1)[0]


def text_value(v: Any) -> str | None:
    """A non-empty stripped string, else None."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


def string_list(v: Any) -> list[str] | None:
    """One path or a list of paths as a list of non-empty strings; None when malformed."""
    if v is None:
        return []
    if isinstance(v, str):
        return [v.strip()] if v.strip() else []
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return [x.strip() for x in v if x.strip()]
    return None


def skip_n(ctx: ImportContext, reason: str, n: int, detail: str = "") -> None:
    for _ in range(n):
        ctx.skip(reason, detail)


# --------------------------------------------------------------------------------------- release


@dataclass(frozen=True)
class Archive:
    name: str  # the archive's path in the release, without a split suffix
    parts: tuple[str, ...]  # its file(s), in order

    @property
    def dir(self) -> str:
        return posixpath.dirname(self.name)

    @property
    def stem(self) -> str:
        return _ARCHIVE_EXT.sub("", posixpath.basename(self.name))

    def member_path(self, member: str) -> str:
        """A member's path in the release, as if the archive were unpacked in its folder (a
        member path that already starts with that folder's name is not nested twice)."""
        m = norm(member)
        d = self.dir
        if d and m.split("/", 1)[0] == posixpath.basename(d):
            d = posixpath.dirname(d)
        return norm(posixpath.join(d, m)) if d else m


@dataclass
class Release:
    source: str
    archives: list[Archive]
    files: list[str]  # every other file (URIs)

    def rel(self, uri: str) -> str:
        return rel(uri, self.source)


def scan(source: str) -> Release:
    """The archives (split parts grouped) and the other files of a release."""
    arcs: list[str] = []
    files: list[str] = []
    for uri in walk(source):
        (arcs if _ARCHIVE.search(uri) else files).append(uri)
    archives = [Archive(rel(name, source), tuple(parts)) for name, parts in split_parts(arcs).items()]
    return Release(source, archives, files)


def need_images_to(kind: str, archives: list[Archive], what: str = "images") -> ImportError_:
    names = ", ".join(a.name for a in archives[:3]) + (", ..." if len(archives) > 3 else "")
    return ImportError_(
        f"{kind}: the {what} are only inside archives ({names}); pass --images-to DIR_OR_S3_URI "
        "to extract them there (or import a copy with the archives unpacked)"
    )


# ---------------------------------------------------------------------------------------- joiner


class Joiner:
    """Records waiting for their images, matched by key; memory holds the records, never images.

    A record has slots, each a list of alternative keys (the first image found fills it). An
    image found fills every slot waiting for its key. Images may also be remembered (key ->
    value) for records read later, when metadata is stored after its images.
    """

    def __init__(self) -> None:
        self.want: dict[str, list[tuple[int, int]]] = {}
        self.recs: dict[int, list] = {}  # id -> [payload, values, missing]
        self.seen: dict[str, Any] = {}  # remembered images
        self.used: set[str] = set()  # remembered images some record took
        self._ids = itertools.count()

    def add(self, payload: Any, slots: list[list[str]]) -> tuple[Any, list] | None:
        """Register a record; ``(payload, values)`` at once when every image is already known."""
        values: list = [None] * len(slots)
        rid = next(self._ids)
        missing = 0
        for i, alts in enumerate(slots):
            hit = next((k for k in alts if k in self.seen), None)
            if hit is not None:
                values[i] = self.seen[hit]
                self.used.add(hit)
                continue
            missing += 1
            for k in dict.fromkeys(alts):
                self.want.setdefault(k, []).append((rid, i))
        if not missing:
            return payload, values
        self.recs[rid] = [payload, values, missing]
        return None

    def wanted(self, keys: Iterable[str], remember: bool = False) -> str | None:
        """The first of ``keys`` a record waits for; remembering, else the first key."""
        keys = list(keys)
        hit = next((k for k in keys if k in self.want), None)
        return hit if hit is not None or not remember else (keys[0] if keys else None)

    def fill(self, key: str, value: Any, remember: bool = False) -> list[tuple[Any, list]]:
        """Give ``key`` its value (kept for later records when ``remember``): the records it completes."""
        waiting = self.want.pop(key, ())
        if remember:
            self.seen.setdefault(key, value)
            if waiting:
                self.used.add(key)
        ready = []
        for rid, i in waiting:
            rec = self.recs.get(rid)
            if rec is None or rec[1][i] is not None:
                continue
            rec[1][i] = value
            rec[2] -= 1
            if rec[2] == 0:
                del self.recs[rid]
                ready.append((rec[0], rec[1]))
        return ready

    @property
    def pending(self) -> int:
        return len(self.recs)

    def leftovers(self) -> Iterator[tuple[Any, list]]:
        """The incomplete records (``None`` where an image never appeared), in order."""
        recs, self.recs, self.want = self.recs, {}, {}
        for rid in sorted(recs):
            yield recs[rid][0], recs[rid][1]


def complete(ctx: ImportContext, where: str, values: list) -> bool:
    """Whether a joined record found every image it names; one that did not is counted
    (``image_missing``). Either way it is one more record done (progress)."""
    ctx.progress()
    missing = sum(v is None for v in values)
    if missing:
        ctx.skip("image_missing", f"{where}: {missing} of its images are in no archive or folder of the release")
    return not missing


def match_images(release: Release, ctx: ImportContext, joiner: Joiner, keys: Callable[[list[str]], list[str]],
                 what: str = "images", store_by_key: bool = False) -> Iterator[tuple[Any, list]]:
    """The records of ``joiner`` (``(payload, values)``) as their images turn up in ``release``:
    its plain image files first, then, while records still wait, the image members of its
    archives (which need ``--images-to``); last the records left incomplete (``None`` where an
    image never appeared). A value is ``(path in the table, (width, height) or None)``.

    ``keys(paths)``: the keys an image may fill, best first, from its possible paths in the
    release (its path; for an archive member also the path with the archive's name as a
    folder). An image is stored as ``<kind>/<its path>``, or ``<kind>/<the key it filled>``
    when ``store_by_key``."""
    for uri in release.files:
        if not joiner.pending:
            break
        relpath = release.rel(uri)
        if is_image(uri) and (key := joiner.wanted(keys([relpath]))):
            path = ctx.image(f"{ctx.kind}/{key if store_by_key else relpath}", lambda u=uri: read_bytes(u),
                             fallback=location(uri))
            yield from joiner.fill(key, (path, image_size(uri)))
    if joiner.pending and release.archives:
        if ctx.images is None:
            raise need_images_to(ctx.kind, release.archives, what)
        for arc in release.archives:
            if not joiner.pending:
                break
            for member, read in iter_members(arc.parts, ctx.skip):
                if not joiner.pending:
                    break
                if not is_image(member):
                    continue
                relpath = arc.member_path(member)
                if key := joiner.wanted(keys([relpath, norm(posixpath.join(arc.dir, arc.stem, member))])):
                    data = read()
                    path = ctx.image(f"{ctx.kind}/{key if store_by_key else relpath}", data)
                    yield from joiner.fill(key, (path, image_size(data)))
    yield from joiner.leftovers()
