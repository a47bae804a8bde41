"""Load-time image transforms: geometry, colours, micro-condition texts, edits, end to end.

Exact parity with upstream's outputs is in test_images_golden.py; these tests pin the rules
with hand-made images."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lavida_data import SampleError
from lavida_data.transforms.images import (
    ImageConfig,
    ImageTransform,
    crop_ranges,
    crop_resize_size,
    edit_mask,
    expand_to_square,
    gen_image,
    gen_weights,
    luminance_contrast,
    micro_conds_texts,
    pad_to_square_and_resize,
    pixel_diff,
    random_crop,
    select_best_resolution,
    siglip_anyres,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def solid(w: int, h: int, color=(200, 30, 60)) -> Image.Image:
    return Image.new("RGB", (w, h), color)


def chw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()


T2I = [{"from": "human", "value": "Generate an image with the caption: a dog [[micro_conds_texts]]"},
       {"from": "gpt", "value": "Sure <image_gen>"}]
EDIT = [{"from": "human", "value": "<image> <image_gen_enc> make it blue"}, {"from": "gpt", "value": "<image_gen>"}]


# ------------------------------------------------------------------ config


def test_config_defaults_and_strictness():
    cfg = ImageConfig()
    assert (cfg.gen_size, cfg.und_size, cfg.stat_keep) == (256, 384, 0.5)
    assert (cfg.gen_dtype, cfg.edit_area_weight, cfg.max_und_images_anyres) == ("uint8", 5.0, 1)
    assert cfg.anyres_grid[3] == (1152, 384) and cfg.mean_color == (127, 127, 127)
    for bad in ({"gen_size": 300}, {"colour": 1}, {"anyres_grid": [(384, 500)]}, {"pad_color": (0, 0, 0)},
                {"micro_cond_drop": 0.3}):
        with pytest.raises(ValueError):
            ImageConfig(**bad)


# ------------------------------------------------------------------ generation images


@pytest.mark.parametrize("w, h, size, want", [
    (400, 300, 128, (170, 128)),  # int(128 * 4 / 3) = 170: truncated, not rounded
    (300, 400, 128, (128, 170)),
    (100, 100, 64, (64, 64)),
    (53, 30, 256, (452, 256)),
    (28, 47, 256, (256, 429)),
])
def test_crop_resize_size_truncates(w, h, size, want):
    assert crop_resize_size(w, h, size) == want
    assert crop_ranges((w, h), size) == (want[0] - size, want[1] - size)


def test_random_crop_is_a_region_of_the_bilinear_resize():
    img = noise(400, 300)
    out = random_crop(img, 128, 17, 0, False, False)
    ref = chw(img.resize((170, 128), Image.Resampling.BILINEAR))[:, :, 17:145]
    assert torch.equal(out.pixels, ref) and out.pixels.dtype == torch.uint8
    assert out.texts == ["ORIGINAL WIDTH : 400", "ORIGINAL HEIGHT : 300", "TOP : 0", "LEFT : 17"]


def test_random_crop_converts_modes_like_the_loader():
    rgba = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 20, 4), dtype=np.uint8))
    a = random_crop(rgba, 32, 0, 3, True, False)
    b = random_crop(rgba.convert("RGB"), 32, 0, 3, True, False)  # alpha dropped, not composited
    assert torch.equal(a.pixels, b.pixels) and a.texts == b.texts


def test_gen_image_draws_offsets_in_range_and_reproducibly():
    img = noise(200, 600)  # -> 64 x 192: top in [0, 128]
    tops = {int(gen_image(img, 64, rng(s)).texts[2].split(" : ")[1]) for s in range(60)}
    assert min(tops) >= 0 and max(tops) <= 128 and len(tops) > 20
    a, b = gen_image(img, 64, rng(7)), gen_image(img, 64, rng(7))
    assert a.texts == b.texts and torch.equal(a.pixels, b.pixels)


def test_statistics_kept_half_of_the_time_each():
    img = noise(40, 40)
    texts = [gen_image(img, 32, rng(s)).texts for s in range(2000)]
    lum = sum(any(t.startswith("LUMINANCE") for t in x) for x in texts) / len(texts)
    con = sum(any(t.startswith("CONTRAST") for t in x) for x in texts) / len(texts)
    both = sum(len(x) == 6 for x in texts) / len(texts)
    assert 0.45 < lum < 0.55 and 0.45 < con < 0.55 and 0.2 < both < 0.3
    always = [gen_image(img, 32, rng(s), stat_keep=1.0).texts for s in range(20)]
    assert all(len(x) == 6 and x[4].startswith("LUMINANCE") and x[5].startswith("CONTRAST") for x in always)


def test_luminance_is_upstreams_float_formula_exactly():
    arr = np.random.default_rng(4).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    arr[:10] = 255
    luma = ((arr.astype(np.float32) / 255.0) * np.array([0.2126, 0.7152, 0.0722]).reshape(1, 1, 3)).sum(-1)
    assert luminance_contrast(Image.fromarray(arr)) == (float(luma.mean()), float(luma.std()))


def test_luminance_weights_and_population_std():
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[:2] = 255
    assert luminance_contrast(Image.fromarray(arr)) == pytest.approx((0.5, 0.5))
    red = luminance_contrast(solid(3, 3, (255, 0, 0)))
    assert red == pytest.approx((0.2126, 0.0), abs=1e-7)
    out = random_crop(solid(20, 20, (0, 255, 0)), 20, 0, 0, True, True)
    assert out.texts[4:] == ["LUMINANCE : 0.715", "CONTRAST : 0.000"]


def test_pad_is_black_and_centred_as_imageops_pad():
    # 23 columns to fill: ImageOps.pad puts round(11.5) = 12 above, expand_to_square 11
    img = solid(53, 30, (255, 255, 255))
    out = pad_to_square_and_resize(img, 53)
    arr = np.array(out)
    rows = np.where(arr[:, 26, 0] == 255)[0]
    assert (rows[0], rows[-1]) == (12, 41) and arr[0, 0].tolist() == [0, 0, 0]
    grey = np.array(expand_to_square(img, (127, 127, 127)))
    rows = np.where(grey[:, 26, 0] == 255)[0]
    assert (rows[0], rows[-1]) == (11, 40) and grey[0, 0].tolist() == [127, 127, 127]


def test_pad_resize_is_bicubic():
    img = noise(50, 50)
    assert np.array_equal(np.array(pad_to_square_and_resize(img, 32)),
                          np.array(img.resize((32, 32), Image.Resampling.BICUBIC)))


def test_padded_gen_image_draws_nothing():
    class NoDraws:
        def integers(self, *a):
            raise AssertionError("drew an offset")

        def random(self):
            raise AssertionError("drew a uniform")

    out = gen_image(noise(30, 20), 32, NoDraws(), pad=True)
    assert out.texts == [] and out.pixels.shape == (3, 32, 32)


# ------------------------------------------------------------------ micro-condition texts


def test_micro_conds_texts_scores_and_join():
    sample = {"gen_score": [6.12345, 5], "hpsv2": [0.28, 0.3]}
    got = micro_conds_texts(sample, [["TOP : 0", "LEFT : 1"], []])
    assert got == ["TOP : 0; LEFT : 1; SCORE : 6.123; HPS : 2.800", "SCORE : 5.000; HPS : 3.000"]
    assert micro_conds_texts({}, [[]]) == [""]


@pytest.mark.parametrize("sample, reason", [
    ({"gen_score": None}, "bad_value:gen_score"),
    ({"gen_score": []}, "bad_value:gen_score"),
    ({"hpsv2": ["high"]}, "bad_value:hpsv2"),
    ({"gen_score": ["6.1"]}, "bad_value:gen_score"),
])
def test_micro_conds_texts_bad_scores(sample, reason):
    with pytest.raises(SampleError) as e:
        micro_conds_texts(sample, [["TOP : 0"]])
    assert e.value.reason == reason


# ------------------------------------------------------------------ edits


def test_pixel_diff_ignores_the_source_padding():
    src = torch.zeros(3, 16, 16, dtype=torch.uint8)
    src[:, :8] = 100  # the other half is black padding
    tgt = src.clone()
    tgt[:, :8] += 10
    tgt[:, 8:] = 255  # differs a lot, but under the source's padding
    assert pixel_diff(src, tgt) == pytest.approx(1000 / 255, abs=1e-4)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("q", [0.15, 0.0, 0.5, 0.999, 1.0])
def test_pixel_diff_is_torch_quantile_of_the_float_values(seed, q):
    """Counting level pairs gives torch.quantile's result on the float32 values, bit for bit."""
    g = torch.Generator().manual_seed(seed)
    side = 7 + 13 * seed
    src = torch.randint(0, 256, (3, side, side), dtype=torch.uint8, generator=g)
    src[:, : side // 3] = seed % 4  # padding levels 0..2 (and 3, which is not padding)
    tgt = (src.int() + torch.randint(-20, 21, src.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    s, t = src.float() / 255, tgt.float() / 255
    want = torch.quantile((s - t).abs()[s > 2 / 255], q) * 100
    assert pixel_diff(src, tgt, q) == float(want)


def test_edit_mask_marks_changed_blocks():
    src = torch.zeros(3, 128, 128, dtype=torch.uint8) + 100
    tgt = src.clone()
    tgt[:, 32:80, 48:96] = 200  # blocks rows 2..4, cols 3..5
    mask = edit_mask(src, tgt)[0, 0]
    assert mask.shape == (8, 8)
    # the 3 x 3 changed blocks; the median drops its corners (4 of 9 set), the max grows the plus
    want = torch.zeros(8, 8)
    want[2:5, 2:7] = 1
    want[1:6, 3:6] = 1
    assert torch.equal(mask, want)
    assert torch.equal(edit_mask(src, src), torch.zeros(1, 1, 8, 8))


def test_gen_weights_rules():
    g = [torch.zeros(3, 64, 64, dtype=torch.uint8)]
    e = [torch.full((3, 64, 64), 255, dtype=torch.uint8)]
    assert gen_weights({}, g, e, 5.0) is None
    assert torch.equal(gen_weights({"reweight": True}, g, e, 5.0)[0], torch.full((1, 1, 4, 4), 5.0))
    assert torch.equal(gen_weights({"reweight": False}, g, e, 5.0)[0], torch.ones(1, 1, 4, 4))
    assert [w.shape for w in gen_weights({"reweight": True}, g * 2, e, 5.0)] == [(1, 1, 4, 4)] * 2
    assert gen_weights({"reweight": True}, [], None, 5.0) is None
    for sample, gen, enc in [({"reweight": False}, None, e), ({"reweight": True}, g, None)]:
        with pytest.raises(SampleError) as err:
            gen_weights(sample, gen, enc, 5.0)
        assert err.value.reason == "bad_value:reweight"


# ------------------------------------------------------------------ SigLIP anyres


@pytest.mark.parametrize(
    "size, best",
    [((1000, 400), (1152, 384)), ((400, 1000), (384, 1152)), ((500, 500), (768, 768)),
     ((800, 450), (768, 768)), ((2000, 1000), (768, 384)), ((300, 600), (384, 768)), ((100, 100), (384, 768))],
)
def test_select_best_resolution(size, best):
    assert select_best_resolution(size, ImageConfig().anyres_grid) == best


def test_anyres_first_crop_is_the_whole_image_resized():
    img = noise(1000, 400)
    t, size = siglip_anyres(img, ImageConfig())
    assert size == (1000, 400) and t.shape == (4, 3, 384, 384) and t.dtype == torch.float32
    first = chw(img.resize((384, 384), Image.Resampling.BICUBIC)).double() / 255
    assert torch.allclose(t[0].double(), (first - 0.5) / 0.5, atol=1e-6)


def test_anyres_tiles_are_row_major_on_black():
    # 400 x 1000, red top half, blue bottom half -> (384, 1152): 3 tiles, 960 rows of image on black
    arr = np.zeros((1000, 400, 3), np.uint8)
    arr[:500] = (255, 0, 0)
    arr[500:] = (0, 0, 255)
    t, _ = siglip_anyres(Image.fromarray(arr), ImageConfig())
    assert t.shape == (4, 3, 384, 384)
    assert torch.allclose(t[1, :, 192, 192], torch.tensor([1.0, -1, -1]), atol=1e-3)
    assert torch.allclose(t[3, :, 192, 192], torch.tensor([-1.0, -1, 1]), atol=1e-3)
    assert torch.allclose(t[1, :, 10, 192], torch.full((3,), -1.0))  # black band above


def test_several_images_one_grey_padded_crop_each():
    t, size = siglip_anyres(solid(768, 384, (255, 255, 255)), ImageConfig(), anyres=False)
    assert size == (768, 384) and t.shape == (1, 3, 384, 384)
    g = (127 / 255 - 0.5) / 0.5
    assert torch.allclose(t[0, :, :90], torch.full_like(t[0, :, :90], g), atol=1e-6)
    assert torch.allclose(t[0, :, 110:270], torch.ones_like(t[0, :, 110:270]))


# ------------------------------------------------------------------ ImageTransform


def test_transform_t2i():
    tf = ImageTransform()
    sample = {"id": "d:1", "conversations": T2I, "image_gen": "t.jpg", "gen_score": [5.5], "hpsv2": [0.25]}
    images = {"t.jpg": noise(512, 300)}
    out = tf(sample, images, rng(3))
    (px,) = out["gen_pixels"]
    assert px.shape == (3, 256, 256) and px.dtype == torch.uint8
    assert out["gen_enc_pixels"] == [] and out["und_pixels"] == [] and out["und_sizes"] == []
    (text,) = out["micro_conds_texts"]
    assert text.startswith("ORIGINAL WIDTH : 512; ORIGINAL HEIGHT : 300; TOP : 0; LEFT : ")
    assert text.endswith("SCORE : 5.500; HPS : 2.500")
    assert out["conversations"] == T2I and out["id"] == "d:1" and "gen_weight" not in out
    again = pickle.loads(pickle.dumps(tf))(sample, images, rng(3))
    assert torch.equal(again["gen_pixels"][0], px) and again["micro_conds_texts"] == out["micro_conds_texts"]
    as_float = ImageTransform(ImageConfig(gen_dtype="float32"))(sample, images, rng(3))
    assert torch.equal(as_float["gen_pixels"][0], px.float() / 255)


def test_transform_no_gen_gives_no_texts():
    out = ImageTransform()({"conversations": T2I, "image": None, "gen_score": [1.0]}, {}, rng())
    assert out["micro_conds_texts"] is None and out["gen_pixels"] == [] and out["und_pixels"] == []


def test_transform_several_targets_share_crop_parms_and_draw_in_order():
    sample = {"conversations": T2I, "image_gen": ["a", "b"], "gen_score": [1, 2]}
    images = {"a": noise(300, 200, 1), "b": noise(200, 300, 2)}
    out = ImageTransform(ImageConfig(gen_size=256))(sample, images, rng(5))
    assert [tuple(p.shape) for p in out["gen_pixels"]] == [(3, 256, 256)] * 2
    r = rng(5)
    first, second = gen_image(images["a"], 256, r), gen_image(images["b"], 256, r)
    assert out["micro_conds_texts"] == ["; ".join(first.texts + ["SCORE : 1.000"]),
                                        "; ".join(second.texts + ["SCORE : 2.000"])]
    with pytest.raises(SampleError, match="1024"):
        ImageTransform()({**sample, "crop_parms": [[300, 256, 0, 0, 256, 256]]}, images, rng())


def test_transform_edit():
    src = noise(300, 200, 4)
    tgt = np.array(src)
    tgt[50:150, 100:200] = 255 - tgt[50:150, 100:200]
    sample = {"conversations": EDIT, "image": ["s.png"], "image_gen_enc": ["s.png"], "image_gen": "o.png",
              "pad_image_gen": True, "pixel_diff": True, "reweight": True, "hpsv2": [0.3]}
    images = {"s.png": src, "o.png": Image.fromarray(tgt)}
    out = ImageTransform()(sample, images, rng())
    assert out["micro_conds_texts"] == ["HPS : 3.000"]
    human = out["conversations"][0]["value"]
    assert human.startswith("<image> <image_gen_enc> make it blue; PIXEL_DIFF : ") and human.endswith(" ;")
    assert sample["conversations"] == EDIT  # not changed in place
    (px,), (enc,) = out["gen_pixels"], out["gen_enc_pixels"]
    assert px[:, 5, 128].tolist() == [0, 0, 0] and enc[:, 5, 128].tolist() == [0, 0, 0]  # black padding
    (w,) = out["gen_weight"]
    assert w.shape == (1, 1, 16, 16) and set(w.unique().tolist()) == {1.0, 5.0}
    # small images: every grid holds the whole image; least waste, first of a tie: (384, 768)
    assert [tuple(t.shape) for t in out["und_pixels"]] == [(3, 3, 384, 384)] and out["und_sizes"] == [(300, 200)]
    plain = ImageTransform()({**sample, "pixel_diff": False, "reweight": False}, images, rng())
    assert plain["conversations"] == EDIT and torch.equal(plain["gen_weight"][0], torch.ones(1, 1, 16, 16))


def test_transform_many_und_images_one_crop_each():
    sample = {"conversations": [{"from": "human", "value": "<image> <image> compare"}], "image": ["a", "b"]}
    out = ImageTransform()(sample, {"a": noise(1000, 400), "b": noise(300, 300)}, rng())
    assert [tuple(t.shape) for t in out["und_pixels"]] == [(1, 3, 384, 384)] * 2
    assert out["und_sizes"] == [(1000, 400), (300, 300)] and out["micro_conds_texts"] is None


def test_transform_reweight_without_target_is_skipped():
    sample = {"conversations": EDIT, "image": ["a"], "image_gen": None, "reweight": False}
    with pytest.raises(SampleError) as e:
        ImageTransform()(sample, {"a": noise(64, 64)}, rng())
    assert e.value.reason == "bad_value:reweight"


@pytest.mark.parametrize("role", ["image", "image_gen_enc", "image_gen"])
def test_transform_image_missing(role):
    sample = {"conversations": T2I, "image_gen": "t.jpg", role: "absent.jpg"}
    with pytest.raises(SampleError) as e:
        ImageTransform()(sample, {"t.jpg": noise(64, 64)}, rng())
    assert e.value.reason == "image_missing" and "absent.jpg" in str(e.value)
