"""Boxes onto the LOC grid (both frames), COCO RLE decoding (compressed and list counts), polygons."""

from __future__ import annotations

import numpy as np
import pytest

from lavida_data.importers.boxes import (
    BoxError,
    grounded,
    loc_tokens,
    masks_bbox,
    polygons_bbox,
    rle_bbox,
    rle_counts,
    rle_decode,
    rle_size,
    rle_string_to_counts,
    to_grid,
    xywh_to_xyxy,
)

from .helpers import rect_mask, rle_compressed, rle_list, rle_string


def test_xywh_to_xyxy():
    assert xywh_to_xyxy([10, 20, 30, 40]) == (10.0, 20.0, 40.0, 60.0)
    assert xywh_to_xyxy((1.5, 2, 3, 4.25)) == (1.5, 2.0, 4.5, 6.25)
    for bad in ([1, 2, 0, 4], [1, 2, 3, -1], [1, 2, 3], "1,2,3,4", [1, 2, None, 4], [1, 2, float("nan"), 4],
                None, [True, 2, 3, 4]):
        with pytest.raises(BoxError) as e:
            xywh_to_xyxy(bad)
        assert e.value.reason == "bad_box"


def test_padded_square_frame_centres_the_padding():
    # 200x100: side 200, pad_top 50, scale 1024/200 = 5.12
    assert to_grid((20, 10, 120, 60), 200, 100) == (102, 307, 614, 563)
    assert to_grid((20, 10, 120, 60), 200, 100, "padded-square") == (102, 307, 614, 563)
    # tall image: pad_left (200-101)//2 = 49 (expand2square's integer offset)
    assert to_grid((0, 0, 101, 200), 101, 200) == (251, 0, 768, 1024)
    # the whole of a square image is the whole grid
    assert to_grid((0, 0, 640, 640), 640, 640) == (0, 0, 1024, 1024)


def test_per_axis_frame():
    assert to_grid((20, 10, 120, 60), 200, 100, "per-axis") == (102, 102, 614, 614)
    assert to_grid((0, 0, 101, 200), 101, 200, "per-axis") == (0, 0, 1024, 1024)


def test_rounding_is_half_up_and_values_are_clamped():
    assert to_grid((1, 1, 3, 3), 2048, 2048, "per-axis") == (1, 1, 2, 2)  # 0.5 -> 1, 1.5 -> 2
    # within the tolerance a box sticking out is clipped to the image
    assert to_grid((-1.5, -0.5, 201, 101), 200, 100, "per-axis") == (0, 0, 1024, 1024)
    with pytest.raises(BoxError) as e:
        to_grid((10, 10, 260, 50), 200, 100)
    assert e.value.reason == "box_outside_image"
    with pytest.raises(BoxError) as e:
        to_grid((210, 10, 260, 50), 200, 100)
    assert e.value.reason == "box_outside_image"
    with pytest.raises(BoxError) as e:
        to_grid((10, 10, 20, 20), 0, 100)
    assert e.value.reason == "bad_image_size"
    with pytest.raises(ValueError):
        to_grid((10, 10, 20, 20), 100, 100, "stretched")


def test_loc_tokens_and_grounded_phrase():
    assert loc_tokens((0, 12, 1024, 7)) == "<LOC_BEGIN><LOC_0><LOC_12><LOC_1024><LOC_7><LOC_END>"
    assert grounded("a red car", (1, 2, 3, 4)) == (
        "<box_p> a red car </box_p><LOC_BEGIN><LOC_1><LOC_2><LOC_3><LOC_4><LOC_END>")
    for bad in ((0, 0, 1025, 4), (0, 0, 1.5, 4), (0, 0, 1)):
        with pytest.raises(ValueError):
            loc_tokens(bad)


def _mask_box(m: np.ndarray):
    ys, xs = np.nonzero(m)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def _masks():
    rng = np.random.default_rng(7)
    out = [rect_mask(30, 40, 5, 7, 17, 20), rect_mask(30, 40, 0, 0, 1, 1), rect_mask(30, 40, 39, 29, 40, 30),
           rect_mask(30, 40, 0, 0, 40, 30), rect_mask(1, 1, 0, 0, 1, 1)]
    m = np.zeros((30, 40), bool)
    m[28:, 3] = True
    m[:2, 4] = True  # one run across the column boundary: rows 0 and 29 are both covered
    out.append(m)
    for _ in range(25):
        h, w = rng.integers(1, 60, size=2)
        out.append(rng.random((h, w)) < rng.uniform(0.01, 0.6))
    # large counts exercise multi-group deltas (negative ones too)
    big = np.zeros((700, 900), bool)
    big[650:690, 10:800] = True
    big[3, 899] = True
    out.append(big)
    return [m for m in out if m.any()]


@pytest.mark.parametrize("form", ["list", "compressed"])
def test_rle_box_and_decode_match_the_mask(form):
    for m in _masks():
        rle = rle_list(m) if form == "list" else rle_compressed(m)
        assert rle_bbox(rle) == _mask_box(m)
        assert np.array_equal(rle_decode(rle), m)
        assert rle_size(rle) == (m.shape[1], m.shape[0])


def test_rle_compressed_string_decoding_known_values():
    counts = [0, 5, 3, 40, 2, 100000, 7, 1]
    assert rle_string_to_counts(rle_string(counts)).tolist() == counts
    assert rle_string_to_counts("").tolist() == []
    # a 3x3 mask with its centre pixel set: runs 4, 1, 4 -> "414" (as pycocotools writes it)
    assert rle_string_to_counts("414").tolist() == [4, 1, 4]
    assert rle_string_to_counts(b"414").tolist() == [4, 1, 4]


def test_empty_mask_has_no_box_and_masks_union():
    empty = {"size": [4, 5], "counts": [20]}
    assert rle_bbox(empty) is None
    a = rle_list(rect_mask(30, 40, 2, 3, 10, 12))
    b = rle_compressed(rect_mask(30, 40, 20, 1, 25, 8))
    assert masks_bbox([a, b, empty]) == (2.0, 1.0, 25.0, 12.0)
    assert masks_bbox(a) == (2.0, 3.0, 10.0, 12.0)
    with pytest.raises(BoxError) as e:
        masks_bbox([empty])
    assert e.value.reason == "empty_mask"


@pytest.mark.parametrize("rle", [
    {"size": [3, 3], "counts": [4, 1, 3]},  # 8 pixels for a 9-pixel image
    {"size": [3, 3], "counts": [4, -1, 6]},
    {"size": [3, 3], "counts": "\x7f"},  # out-of-range character
    {"size": [3, 3], "counts": "4P"},  # ends inside a count (continuation bit set)
    {"size": [3], "counts": [9]},
    {"size": [3, 0], "counts": [0]},
    {"counts": [9]},
    {"size": [3, 3], "counts": [4.0, 5]},
    {"size": [3, 3], "counts": None},
    "not an rle",
])
def test_bad_rle_is_refused(rle):
    with pytest.raises(BoxError) as e:
        rle_bbox(rle)
    assert e.value.reason == "bad_rle"


def test_rle_counts_gives_size_and_runs():
    h, w, counts = rle_counts({"size": [2, 3], "counts": [1, 2, 3]})
    assert (h, w, counts.tolist()) == (2, 3, [1, 2, 3])


def test_polygons_bbox():
    assert polygons_bbox([[10, 20, 30, 20, 30, 40], [5, 25, 8, 26, 6, 30]]) == (5.0, 20.0, 30.0, 40.0)
    assert polygons_bbox([10, 20, 30, 20, 30, 40]) == (10.0, 20.0, 30.0, 40.0)  # one flat polygon
    for bad in ([], [[1, 2, 3, 4]], [[1, 2, 3, 4, 5]], [[1, 2, "x", 4, 5, 6]], [[1, 1, 1, 1, 1, 1]], None, "poly"):
        with pytest.raises(BoxError) as e:
            polygons_bbox(bad)
        assert e.value.reason == "bad_polygon"


def test_against_pycocotools_when_installed():
    mask_api = pytest.importorskip("pycocotools.mask")
    for m in _masks():
        enc = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        enc["counts"] = enc["counts"].decode()
        assert enc["counts"] == rle_compressed(m)["counts"]
        x, y, w, h = mask_api.toBbox(enc).tolist()
        assert rle_bbox(enc) == (x, y, x + w, y + h)
