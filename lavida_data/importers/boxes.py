"""Boxes for the grounding tables: COCO masks and polygons to boxes, boxes onto the 0..1024 LOC grid.

A box is ``(x1, y1, x2, y2)`` in pixels, edges included (a mask whose pixels span columns 3..5
has ``x1 = 3, x2 = 6``, as COCO's ``toBbox``: ``w = 3``). On the grid, two frames:

- ``padded-square`` (default, upstream's demo code): the image is padded to a centred square of
  side ``S = max(W, H)`` (``pad_left = (S - W) // 2``, ``pad_top = (S - H) // 2``, the offsets
  LLaVA's ``expand2square`` pastes at), then ``x' = (x + pad_left) * 1024 / S``;
- ``per-axis``: ``x' = x / W * 1024``, ``y' = y / H * 1024``.

Values are rounded half up and clamped to 0..1024. Malformed inputs raise :class:`BoxError`
(a :class:`Malformed`), whose ``reason`` is the skip label an importer counts.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

GRID = 1024
FRAMES = ("padded-square", "per-axis")
# a box may stick out of its image by this many pixels (annotation rounding) before it is refused
TOLERANCE = 2.0

Box = tuple[float, float, float, float]


class Malformed(ValueError):
    """A record an importer skips: ``reason`` is the stable skip label, the message says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


class BoxError(Malformed):
    """A mask, polygon or box that cannot be turned into a box."""


# ------------------------------------------------------------------------------------ boxes


def xywh_to_xyxy(box: Sequence[Any]) -> Box:
    """``[x, y, w, h]`` -> ``(x1, y1, x2, y2)``; a box that is not four finite numbers, or whose
    width or height is not positive, raises ``bad_box``."""
    x, y, w, h = _four(box)
    if w <= 0 or h <= 0:
        raise BoxError("bad_box", f"box {list(box)!r} has no area")
    return (x, y, x + w, y + h)


def _four(box: Any) -> tuple[float, float, float, float]:
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise BoxError("bad_box", f"expected a box of four numbers, got {box!r}"[:200])
    try:
        vals = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise BoxError("bad_box", f"expected a box of four numbers, got {box!r}"[:200]) from None
    if not all(math.isfinite(v) for v in vals) or any(isinstance(v, bool) for v in box):
        raise BoxError("bad_box", f"expected a box of four numbers, got {box!r}"[:200])
    return vals  # type: ignore[return-value]


def check_box(box: Box, width: float, height: float) -> Box:
    """``box`` clipped to the image; ``bad_image_size`` for a size that is not positive,
    ``bad_box`` for a degenerate box, ``box_outside_image`` for one that leaves the image by
    more than :data:`TOLERANCE` pixels."""
    if not (_positive(width) and _positive(height)):
        raise BoxError("bad_image_size", f"image size {width!r}x{height!r} is not positive")
    x1, y1, x2, y2 = _four(box)
    if x2 <= x1 or y2 <= y1:
        raise BoxError("bad_box", f"box {[x1, y1, x2, y2]} has no area")
    t = TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t or x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        raise BoxError("box_outside_image", f"box {[x1, y1, x2, y2]} is outside the {width:g}x{height:g} image")
    return (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _round(v: float) -> int:
    return min(GRID, max(0, math.floor(v + 0.5)))


def to_grid(box: Box, width: float, height: float, frame: str = "padded-square") -> tuple[int, int, int, int]:
    """A pixel box (xyxy) of a ``width`` x ``height`` image on the 0..1024 grid (see the module doc)."""
    x1, y1, x2, y2 = check_box(box, width, height)
    if frame == "per-axis":
        sx, sy, px, py = GRID / width, GRID / height, 0.0, 0.0
    elif frame == "padded-square":
        side = max(width, height)
        sx = sy = GRID / side
        px, py = float(int(side - width) // 2), float(int(side - height) // 2)
    else:
        raise ValueError(f"unknown box frame {frame!r} (expected one of {', '.join(FRAMES)})")
    return (_round((x1 + px) * sx), _round((y1 + py) * sy), _round((x2 + px) * sx), _round((y2 + py) * sy))


def loc_tokens(box: Sequence[int]) -> str:
    """``<LOC_BEGIN><LOC_x1><LOC_y1><LOC_x2><LOC_y2><LOC_END>`` for a box already on the grid."""
    if len(box) != 4 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= GRID for v in box):
        raise ValueError(f"a grid box is four integers in 0..{GRID}, got {box!r}")
    return "<LOC_BEGIN>" + "".join(f"<LOC_{int(v)}>" for v in box) + "<LOC_END>"


def grounded(phrase: str, box: Sequence[int]) -> str:
    """``<box_p> phrase </box_p>`` followed by the box's LOC tokens."""
    return f"<box_p> {phrase} </box_p>{loc_tokens(box)}"


def union(boxes: Iterable[Box]) -> Box:
    """The smallest box holding every box of ``boxes`` (at least one)."""
    bs = list(boxes)
    if not bs:
        raise BoxError("empty_mask", "no box to merge")
    return (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs))


# -------------------------------------------------------------------------------------- polygons


def polygons_bbox(segmentation: Any) -> Box:
    """The box of COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (one flat polygon is accepted
    too): the extremes of the vertices. ``bad_polygon`` when there is no usable polygon."""
    polys = segmentation
    if isinstance(polys, (list, tuple)) and polys and all(_number(v) for v in polys):
        polys = [polys]
    if not isinstance(polys, (list, tuple)) or not polys:
        raise BoxError("bad_polygon", f"expected a list of polygons, got {str(segmentation)[:100]}")
    xs: list[float] = []
    ys: list[float] = []
    for poly in polys:
        if (not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2
                or not all(_number(v) for v in poly)):
            raise BoxError("bad_polygon", f"a polygon is an even list of at least 6 numbers, got {str(poly)[:100]}")
        xs.extend(float(v) for v in poly[0::2])
        ys.extend(float(v) for v in poly[1::2])
    box = (min(xs), min(ys), max(xs), max(ys))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise BoxError("bad_polygon", f"polygon without area: box {list(box)}")
    return box


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ------------------------------------------------------------------------------------------- RLE


def rle_string_to_counts(s: str | bytes) -> np.ndarray:
    """The run lengths of COCO's compressed RLE string (``rleFrString``: 5-bit groups with a
    continuation bit, offset by 48; from the third count on, each is a delta to the count two
    before it). ``bad_rle`` when the string is truncated or holds a character out of range."""
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("ascii", errors="replace")
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise BoxError("bad_rle", "the RLE string ends in the middle of a count")
            c = ord(s[p]) - 48
            if c < 0 or c > 63:
                raise BoxError("bad_rle", f"character {s[p]!r} is not part of a COCO RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return np.asarray(counts, dtype=np.int64)


def rle_counts(rle: Any) -> tuple[int, int, np.ndarray]:
    """``(height, width, run lengths)`` of a COCO RLE ``{"size": [h, w], "counts": ...}`` whose
    counts are a compressed string or a list of ints; runs alternate 0s and 1s, starting with
    0s, over the pixels in column-major order. ``bad_rle`` for anything else, negative runs, or
    runs that do not add up to ``h * w``."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise BoxError("bad_rle", f"expected an RLE object with 'size' and 'counts', got {str(rle)[:100]}")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                        and v > 0 for v in size)):
        raise BoxError("bad_rle", f"RLE size must be [height, width], got {size!r}")
    h, w = int(size[0]), int(size[1])
    raw = rle["counts"]
    if isinstance(raw, (str, bytes, bytearray)):
        counts = rle_string_to_counts(raw)
    elif isinstance(raw, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        counts = np.asarray(raw, dtype=np.int64)
    else:
        raise BoxError("bad_rle", "RLE counts must be a string or a list of integers")
    if counts.size and counts.min() < 0:
        raise BoxError("bad_rle", "RLE has a negative run length")
    total = int(counts.sum()) if counts.size else 0
    if total != h * w:
        raise BoxError("bad_rle", f"RLE runs cover {total} pixels, its size {h}x{w} has {h * w}")
    return h, w, counts


def rle_bbox(rle: Any) -> Box | None:
    """The box (xyxy, pixel edges) of a COCO RLE mask, from its runs alone (no mask is built);
    None for an empty mask. Errors as :func:`rle_counts`."""
    h, _, counts = rle_counts(rle)
    ends = np.cumsum(counts)
    starts = ends - counts
    ones = np.arange(counts.size) % 2 == 1
    ones &= counts > 0
    if not ones.any():
        return None
    s, e = starts[ones], ends[ones] - 1  # first and last pixel of each run of 1s
    cs, ce = s // h, e // h
    multi = ce > cs  # a run across a column boundary covers row 0 and row h-1
    y1 = int(np.where(multi, 0, s % h).min())
    y2 = int(np.where(multi, h - 1, e % h).max())
    return (float(cs.min()), float(y1), float(ce.max() + 1), float(y2 + 1))


def rle_decode(rle: Any) -> np.ndarray:
    """The mask of a COCO RLE as a ``(height, width)`` bool array (for checks and tests)."""
    h, w, counts = rle_counts(rle)
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T


def masks_bbox(rles: Any) -> Box:
    """The box of the union of several RLE masks (a phrase grounded by several masks);
    ``empty_mask`` when all are empty, ``bad_rle`` when one is malformed."""
    if isinstance(rles, Mapping):
        rles = [rles]
    if not isinstance(rles, (list, tuple)) or not rles:
        raise BoxError("bad_rle", "expected a list of RLE masks")
    boxes = [b for b in (rle_bbox(r) for r in rles) if b is not None]
    if not boxes:
        raise BoxError("empty_mask", "every mask of the phrase is empty")
    return union(boxes)


def rle_size(rles: Any) -> tuple[int, int] | None:
    """``(width, height)`` from the first RLE's ``size``, or None."""
    first = rles[0] if isinstance(rles, (list, tuple)) and rles else rles
    if isinstance(first, Mapping):
        size = first.get("size")
        if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
            return int(size[1]), int(size[0])
    return None
