"""Our image transforms against upstream LaViDa-O's outputs (tests/golden/images, made by
scripts/golden/make_images.py): pixels within one level of 255, texts exact, same draws."""

from __future__ import annotations

import json
import os
from functools import lru_cache

import numpy as np
import pytest
import torch
from PIL import Image

from lavida_data import SampleError
from lavida_data.transforms.images import (
    ImageConfig,
    ImageTransform,
    crop_ranges,
    edit_mask,
    fixed_crop,
    gen_image,
    padded,
    pixel_diff,
    random_crop,
    select_best_resolution,
    siglip_anyres,
)

HERE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", "images")
with open(os.path.join(HERE, "images.json")) as _f:
    GOLD = json.load(_f)
GRID = [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]


def case_id(c: dict) -> str:
    return "-".join(str(c.get(k)) for k in ("kind", "name", "input", "size", "gen_size", "left", "top") if k in c)


@lru_cache(maxsize=None)
def png(rel: str) -> np.ndarray:
    return np.asarray(Image.open(os.path.join(HERE, rel)))


def source(name: str) -> Image.Image:
    """The input as the loader hands it over: opened, in its own mode (RGBA, L, ...)."""
    img = Image.open(os.path.join(HERE, GOLD["inputs"][name]["file"]))
    img.load()
    return img


def assert_gen_close(ours: torch.Tensor, rel: str) -> None:
    """uint8 [3, H, W] within one level of upstream's."""
    want = png(rel)
    assert ours.dtype == torch.uint8 and tuple(ours.shape) == (3, *want.shape[:2])
    diff = np.abs(ours.permute(1, 2, 0).numpy().astype(int) - want.astype(int))
    assert diff.max() <= 1, f"max difference {diff.max()} levels"


def assert_siglip_close(ours: torch.Tensor, rel: str, mean: float = 0.5, std: float = 0.5) -> None:
    """float [n, 3, S, S] SigLIP crops within one level of 255 of upstream's (de-normalised)."""
    want = png(rel).astype(np.float64)  # [n * S, S, 3]
    n, _, s, _ = ours.shape
    got = (ours.double() * std + mean).permute(0, 2, 3, 1).reshape(n * s, s, 3).numpy() * 255
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1 + 1e-6


class Draws:
    """A stand-in for numpy's Generator returning upstream's patched draws: ``integers`` gives the
    logged randint values (checking that the range asked is upstream's), ``random`` the uniforms."""

    def __init__(self, randint: list, uniforms: list):
        self.ints, self.unis = [list(x) for x in randint], list(uniforms)

    def integers(self, low: int, high: int) -> int:
        value, a, b = self.ints.pop(0)
        assert (low, high) == (a, b + 1), f"asked [{low}, {high}), upstream drew in [{a}, {b}]"
        return value

    def random(self) -> float:
        return self.unis.pop(0)

    def done(self) -> bool:
        return not self.ints and not self.unis


# ------------------------------------------------------------------ generation images


@pytest.mark.parametrize("case", [c for c in GOLD["gen"] if c["kind"] == "random_crop"], ids=case_id)
def test_random_crop(case):
    img = source(case["input"])
    assert list(crop_ranges(img.size, case["size"])) == case["ranges"]
    out = random_crop(img, case["size"], case["left"], case["top"], *case["keep"])
    assert out.texts == case["texts"]
    assert_gen_close(out.pixels, case["pixels"])


@pytest.mark.parametrize("case", [c for c in GOLD["gen"] if c["kind"] == "random_crop"][:6], ids=case_id)
def test_gen_image_draws_as_upstream(case):
    """gen_image asks for upstream's ranges and, given upstream's draws, gives its output."""
    uniforms = [0.3 if k else 0.7 for k in case["keep"]]
    rng = Draws([[case["left"], 0, case["ranges"][0]], [case["top"], 0, case["ranges"][1]]], uniforms)
    out = gen_image(source(case["input"]), case["size"], rng)
    assert rng.done() and out.texts == case["texts"]
    assert_gen_close(out.pixels, case["pixels"])


@pytest.mark.parametrize("case", [c for c in GOLD["gen"] if c["kind"] == "pad"], ids=case_id)
def test_pad(case):
    out = padded(source(case["input"]), case["size"])
    assert out.texts == []
    assert_gen_close(out.pixels, case["pixels"])
    rng = Draws([], [])  # padding draws nothing
    assert torch.equal(gen_image(source(case["input"]), case["size"], rng, pad=True).pixels, out.pixels)


@pytest.mark.parametrize("case", [c for c in GOLD["gen"] if c["kind"] == "crop_parms"], ids=case_id)
def test_crop_parms(case):
    out = fixed_crop(source(case["input"]), case["crop_parms"], case["size"], *case["keep"])
    assert out.texts == case["texts"]
    assert_gen_close(out.pixels, case["pixels"])
    rng = Draws([], [0.3 if k else 0.7 for k in case["keep"]])  # crop_parms win over pad
    again = gen_image(source(case["input"]), case["size"], rng, pad=True, crop_parms=case["crop_parms"])
    assert rng.done() and again.texts == out.texts and torch.equal(again.pixels, out.pixels)


def test_crop_parms_need_1024_and_a_square_box():
    img = source("photo")
    with pytest.raises(SampleError, match="1024") as e:
        fixed_crop(img, [[347, 256, 0, 0, 256, 256]], 256, True, True)
    assert e.value.reason == "bad_value:crop_parms"
    for bad in ([[1388, 1024, 0, 0, 1000, 1024]], [[1388.0, 1024, 0, 0, 1024, 1024]], [[1, 2, 3]], None, []):
        with pytest.raises(SampleError) as e:
            fixed_crop(img, bad, 1024, True, True)
        assert e.value.reason == "bad_value:crop_parms"


def test_random_crops_stay_in_and_reach_upstreams_set():
    """Over many seeds, every (text, pixels) of ours is one of upstream's outputs, and all are reached."""
    spec = GOLD["crop_set"]
    by_text = {o["text"]: o for o in spec["outputs"]}
    sample = {"image_gen": "t.png", "conversations": []}
    tf, img = ImageTransform(ImageConfig(gen_size=spec["size"])), source(spec["input"])
    seen: set[str] = set()
    pixels_checked: set[str] = set()
    for seed in range(400):
        out = tf(sample, {"t.png": img}, np.random.default_rng(seed))
        (text,) = out["micro_conds_texts"]
        assert text in by_text, text
        seen.add(text)
        rel = by_text[text]["pixels"]
        if rel not in pixels_checked:
            assert_gen_close(out["gen_pixels"][0], rel)
            pixels_checked.add(rel)
    assert seen == set(by_text)


# ------------------------------------------------------------------ understanding images


@pytest.mark.parametrize("case", GOLD["best_resolution"], ids=lambda c: "x".join(map(str, c["size"])))
def test_select_best_resolution(case):
    assert list(select_best_resolution(tuple(case["size"]), GRID)) == case["best"]


@pytest.mark.parametrize("case", GOLD["und"], ids=case_id)
def test_siglip(case):
    img = source(case["input"])
    anyres = case["kind"] != "pad"
    t, size = siglip_anyres(img, ImageConfig(anyres_pad_base=case["kind"] == "anyres_pad_base"), anyres=anyres)
    assert list(size) == GOLD["inputs"][case["input"]]["size"]
    assert list(t.shape[-3:]) == case["shape"][-3:] and t.dtype == torch.float32
    assert t.shape[0] == (case["shape"][0] if anyres else 1)
    assert_siglip_close(t, case["pixels"])


# ------------------------------------------------------------------ edits


@pytest.mark.parametrize("case", GOLD["edit_pairs"], ids=lambda c: f"{c['source']}-{c['size']}")
def test_pixel_diff_and_edit_mask(case):
    src = padded(source(case["source"]), case["size"]).pixels
    tgt = padded(source(case["target"]), case["size"]).pixels
    d = pixel_diff(src, tgt)
    assert f"{d:.3f}" == case["pixel_diff_text"] and d == pytest.approx(case["pixel_diff"], abs=1e-6)
    mask = edit_mask(src, tgt)
    assert mask.shape == (1, 1, case["size"] // 16, case["size"] // 16)
    assert mask[0, 0].int().tolist() == case["mask"]


def test_pixel_diff_of_an_all_black_source():
    black = torch.zeros(3, 32, 32, dtype=torch.uint8)
    with pytest.raises(SampleError) as e:
        pixel_diff(black, black + 50)
    assert e.value.reason == "bad_value:pixel_diff"


# ------------------------------------------------------------------ whole samples


def _images(payload: dict) -> tuple[dict, dict]:
    """The payload with paths under the fixture folder, and those paths' images."""
    out, images = dict(payload), {}
    for role in ("image", "image_gen", "image_gen_enc"):
        v = payload.get(role)
        for rel in [v] if isinstance(v, str) else v or []:
            images[rel] = source(next(k for k, i in GOLD["inputs"].items() if i["file"] == rel))
    return out, images


@pytest.mark.parametrize("case", GOLD["samples"], ids=case_id)
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_sample(case, dtype):
    sample, images = _images(case["payload"])
    tf = ImageTransform(ImageConfig(gen_size=case["gen_size"], gen_dtype=dtype))
    if "raises" in case:  # upstream fails the row: ours skips it
        with pytest.raises(SampleError):
            tf(sample, images, np.random.default_rng(0))
        return
    rng = Draws(case["randint"], case["uniforms"])
    out = tf(sample, images, rng)
    assert rng.done()
    assert out["micro_conds_texts"] == case["micro_conds_texts"]
    assert out["conversations"] == case["conversations"]
    assert sample["conversations"] == case["payload"]["conversations"]  # the input is not changed
    for key in ("gen_pixels", "gen_enc_pixels"):
        assert len(out[key]) == len(case[key])
        for ours, rel in zip(out[key], case[key]):
            if dtype == "float32":
                assert ours.dtype == torch.float32
                ours = (ours * 255).round().to(torch.uint8)
            assert_gen_close(ours, rel)
    assert [list(s) for s in out["und_sizes"]] == case["und_sizes"]
    assert [list(t.shape) for t in out["und_pixels"]] == case["und_shapes"]
    for ours, rel in zip(out["und_pixels"], case["und_pixels"]):
        assert_siglip_close(ours, rel)
    if case["gen_weight"] is None:
        assert "gen_weight" not in out
    else:
        assert [w.shape[:2] for w in out["gen_weight"]] == [(1, 1)] * len(case["gen_weight"])
        assert [w[0, 0].tolist() for w in out["gen_weight"]] == case["gen_weight"]
