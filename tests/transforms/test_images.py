"""Load-time image transforms: targets, micro-conditions, edit sources, SigLIP anyres, end to end."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lavida_data import SampleError
from lavida_data.converters.common import EDIT_SOURCE, T2I_GPT, T2I_HUMAN
from lavida_data.transforms.images import (
    MICRO,
    ImageConfig,
    ImageTransform,
    edit_source,
    fill_micro_conditions,
    gen_target,
    micro_conditions,
    select_best_resolution,
    shorter_side_size,
    siglip_anyres,
)

GREY = 127 / 255


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr)


def solid(w: int, h: int, color=(200, 30, 60)) -> Image.Image:
    return Image.new("RGB", (w, h), color)


def as_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


INFO = {"orig_w": 640, "orig_h": 480, "top": 3, "left": 5}


# ------------------------------------------------------------------ config


def test_config_defaults_and_strictness():
    cfg = ImageConfig()
    assert (cfg.gen_size, cfg.und_size, cfg.micro_cond_drop, cfg.stat_keep) == (256, 384, 0.3, 0.5)
    assert cfg.anyres_grid[3] == (1152, 384) and cfg.pad_color == (127, 127, 127)
    with pytest.raises(ValueError):
        ImageConfig(gen_size=300)
    with pytest.raises(ValueError):
        ImageConfig(colour=1)
    with pytest.raises(ValueError):
        ImageConfig(anyres_grid=[(384, 500)])


# ------------------------------------------------------------------ generation targets


def test_crop_is_a_region_of_the_resized_image():
    img = noise(400, 300)
    px, info = gen_target(img, "crop", 128, rng(1))
    assert px.shape == (3, 128, 128) and px.dtype == torch.float32
    assert 0 <= float(px.min()) and float(px.max()) <= 1
    assert (info["orig_w"], info["orig_h"]) == (400, 300)
    rw, rh = shorter_side_size(400, 300, 128)
    assert (rw, rh) == (171, 128)
    assert info["top"] == 0 and 0 <= info["left"] <= rw - 128
    ref = as_tensor(img.resize((rw, rh), Image.Resampling.BICUBIC))
    t, l = info["top"], info["left"]
    # resized by torch's uint8 bicubic kernel: PIL's filter, so PIL's pixels up to the rounding of
    # the filter weights (at most one level of 255, and rarely)
    diff = (px - ref[:, t : t + 128, l : l + 128]).abs()
    assert float(diff.max()) <= 1 / 255 + 1e-6
    assert float((diff > 0).float().mean()) < 0.05


def test_crop_of_a_reduced_decode_reports_the_file_size():
    """A JPEG decoded at a reduced scale (draft mode) keeps its file size for the micro-conditions,
    and its crop is taken from the same place of the picture as a full decode's."""
    from lavida_data.transforms.images import ORIGINAL_SIZE

    full = noise(400, 300)
    small = full.resize((200, 150), Image.Resampling.BICUBIC)
    small.info[ORIGINAL_SIZE] = (400, 300)
    a, ia = gen_target(full, "crop", 64, rng(3))
    b, ib = gen_target(small, "crop", 64, rng(3))
    assert ia == ib and (ib["orig_w"], ib["orig_h"]) == (400, 300)
    assert a.shape == b.shape == (3, 64, 64)
    with pytest.raises(SampleError, match="full size"):
        gen_target(small, "fixed_crop", 32, rng(), crop=[0, 0, 100, 100])


def test_crop_positions_vary_and_are_reproducible():
    img = noise(200, 600)
    lefts_tops = [gen_target(img, "crop", 64, rng(s))[1]["top"] for s in range(20)]
    assert len(set(lefts_tops)) > 5
    a, ia = gen_target(img, "crop", 64, rng(7))
    b, ib = gen_target(img, "crop", 64, rng(7))
    assert ia == ib and torch.equal(a, b)
    assert ia["left"] == 0 and 0 <= ia["top"] <= 192 - 64


def test_pad_keeps_the_whole_image():
    # 200 x 100 red image with a 2-pixel blue border: padded to 200 x 200, resized to 100
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:] = (0, 0, 255)
    arr[2:-2, 2:-2] = (255, 0, 0)
    px, info = gen_target(Image.fromarray(arr), "pad", 100, rng())
    assert px.shape == (3, 100, 100) and info == {"orig_w": 200, "orig_h": 100, "top": 0, "left": 0}
    grey = torch.full((3, 20, 100), GREY)
    assert torch.allclose(px[:, :20], grey, atol=1e-6)  # top band
    assert torch.allclose(px[:, -20:], grey, atol=1e-6)  # bottom band
    centre = px[:, 30:70, 10:90]
    assert torch.allclose(centre, torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand_as(centre), atol=1e-6)
    # content reaches the left/right edges: the blue border is still there
    assert float(px[2, 50, 0]) > 0.5 and float(px[0, 50, 0]) < 0.5


def test_pad_colour_configurable():
    px, _ = gen_target(solid(10, 40), "pad", 40, rng(), pad_color=(0, 255, 0))
    assert torch.allclose(px[:, 20, 0], torch.tensor([0.0, 1.0, 0.0]))


def test_fixed_crop_takes_the_region():
    img = noise(300, 200, seed=3)
    px, info = gen_target(img, "fixed_crop", 64, rng(), crop=[10, 20, 128, 128])
    ref = as_tensor(img.crop((20, 10, 148, 138)).resize((64, 64), Image.Resampling.BICUBIC))
    assert torch.equal(px, ref)
    assert info == {"orig_w": 300, "orig_h": 200, "top": 5, "left": 10}
    # a non-square region is centre-cropped; an out-of-bounds one is clamped
    px2, info2 = gen_target(img, "fixed_crop", 64, rng(), crop=[150, 250, 100, 100])  # -> 50 x 50 at (150, 250)
    ref2 = as_tensor(img.crop((250, 150, 300, 200)).resize((64, 64), Image.Resampling.BICUBIC))
    assert torch.equal(px2, ref2) and px2.shape == (3, 64, 64)
    px3, _ = gen_target(img, "fixed_crop", 32, rng(), crop=[0, 0, 64, 128])  # 128 w x 64 h
    wide = as_tensor(img.crop((0, 0, 128, 64)).resize((64, 32), Image.Resampling.BICUBIC))
    assert torch.equal(px3, wide[:, :, 16:48])


@pytest.mark.parametrize("crop", [None, [0, 0, 0, 10], [500, 0, 10, 10], [1, 2, 3]])
def test_fixed_crop_bad(crop):
    with pytest.raises(SampleError) as e:
        gen_target(noise(50, 50), "fixed_crop", 32, rng(), crop=crop)
    assert e.value.reason == "bad_value:gen_crop"


def test_unknown_mode():
    with pytest.raises(SampleError) as e:
        gen_target(noise(50, 50), "stretch", 32, rng())
    assert e.value.reason == "bad_value:gen_transform"


def test_edit_source_pads():
    px = edit_source(solid(64, 32, (255, 255, 255)), 32)
    assert px.shape == (3, 32, 32)
    assert torch.allclose(px[:, 2, 16], torch.full((3,), GREY)) and torch.allclose(px[:, 16, 16], torch.ones(3))


# ------------------------------------------------------------------ micro-conditions


def _always(**kw) -> ImageConfig:
    return ImageConfig(micro_cond_drop=0.0, stat_keep=1.0, **kw)


def test_micro_condition_exact_text():
    px = as_tensor(solid(16, 16, (127, 127, 127)))
    sample = {"gen_score": 6.12345, "hpsv2": 0.28}
    text = micro_conditions(INFO, px, sample, rng(), _always())
    assert text == (
        "ORIGINAL WIDTH : 640; ORIGINAL HEIGHT : 480; TOP : 3; LEFT : 5; "
        "LUMINANCE : 0.498; CONTRAST : 0.000; SCORE : 6.123; HPS : 2.800"
    )
    assert micro_conditions(INFO, px, {}, rng(), ImageConfig(micro_cond_drop=0.0, stat_keep=0.0)) == (
        "ORIGINAL WIDTH : 640; ORIGINAL HEIGHT : 480; TOP : 3; LEFT : 5"
    )


def test_micro_condition_contrast_of_half_black_half_white():
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[:2] = 255
    text = micro_conditions(INFO, as_tensor(Image.fromarray(arr)), {}, rng(), _always())
    assert text.endswith("LUMINANCE : 0.500; CONTRAST : 0.500")


def test_micro_condition_drop_and_keep_rates():
    px = as_tensor(noise(8, 8))
    cfg = ImageConfig()
    texts = [micro_conditions(INFO, px, {"hpsv2": 0.3}, rng(s), cfg) for s in range(2000)]
    kept = [t for t in texts if t]
    assert 0.25 < 1 - len(kept) / len(texts) < 0.35
    lum = sum("LUMINANCE" in t for t in kept) / len(kept)
    con = sum("CONTRAST" in t for t in kept) / len(kept)
    assert 0.44 < lum < 0.56 and 0.44 < con < 0.56
    both = sum("LUMINANCE" in t and "CONTRAST" in t for t in kept) / len(kept)
    assert 0.18 < both < 0.32  # independent: ~0.25
    assert all(t.endswith("HPS : 3.000") for t in kept)
    assert micro_conditions(INFO, px, {}, rng(5), cfg) == micro_conditions(INFO, px, {}, rng(5), cfg)


def test_fill_micro_conditions():
    text = T2I_HUMAN.format(caption="a cat")
    assert fill_micro_conditions(text, "TOP : 1") == "Generate an image with the caption: a cat TOP : 1"
    assert fill_micro_conditions(text, "") == "Generate an image with the caption: a cat"
    assert fill_micro_conditions("no marker", "X") == "no marker"
    assert fill_micro_conditions(MICRO + " tail", "") == " tail"


# ------------------------------------------------------------------ SigLIP anyres


@pytest.mark.parametrize(
    "size, best",
    [((1000, 400), (1152, 384)), ((400, 1000), (384, 1152)), ((500, 500), (768, 768)),
     ((800, 450), (768, 768)), ((2000, 1000), (768, 384)), ((300, 600), (384, 768)), ((100, 100), (384, 768))],
)
def test_select_best_resolution(size, best):
    assert select_best_resolution(size, ImageConfig().anyres_grid) == best


def test_anyres_wide_image():
    t, size = siglip_anyres(noise(1000, 400), ImageConfig())
    assert size == (1000, 400)
    assert t.shape == (4, 3, 384, 384) and t.dtype == torch.float32
    assert float(t.min()) >= -1 and float(t.max()) <= 1 and float(t.min()) < -0.9 and float(t.max()) > 0.9


def test_anyres_tiles_and_base_padding():
    # 768 x 384 white image -> grid (768, 384) exactly: two white tiles, base padded top/bottom
    t, size = siglip_anyres(solid(768, 384, (255, 255, 255)), ImageConfig())
    assert size == (768, 384) and t.shape == (3, 3, 384, 384)
    assert torch.allclose(t[1:], torch.ones_like(t[1:]))
    base = t[0]
    g = (127 / 255 - 0.5) / 0.5
    assert torch.allclose(base[:, :90], torch.full_like(base[:, :90], g), atol=1e-6)
    assert torch.allclose(base[:, -90:], torch.full_like(base[:, -90:], g), atol=1e-6)
    assert torch.allclose(base[:, 110:270], torch.ones_like(base[:, 110:270]))


def test_anyres_tiles_are_row_major_and_grid_padded():
    # 400 x 1000 with a red top half, blue bottom half -> (384, 1152): 3 tiles top to bottom
    arr = np.zeros((1000, 400, 3), np.uint8)
    arr[:500] = (255, 0, 0)
    arr[500:] = (0, 0, 255)
    t, _ = siglip_anyres(Image.fromarray(arr), ImageConfig())
    assert t.shape == (4, 3, 384, 384)
    red, blue = t[1, :, 192, 192], t[3, :, 192, 192]
    assert torch.allclose(red, torch.tensor([1.0, -1, -1]), atol=1e-3)
    assert torch.allclose(blue, torch.tensor([-1.0, -1, 1]), atol=1e-3)
    # 1000 * 384/400 = 960 < 1152: grey bands above and below the resized image
    g = (127 / 255 - 0.5) / 0.5
    assert torch.allclose(t[1, :, 10, 192], torch.full((3,), g), atol=1e-6)


def test_anyres_off():
    t, size = siglip_anyres(noise(1000, 400), ImageConfig(), anyres=False)
    assert t.shape == (1, 3, 384, 384) and size == (1000, 400)
    full, _ = siglip_anyres(noise(1000, 400), ImageConfig())
    assert torch.equal(t[0], full[0])


# ------------------------------------------------------------------ ImageTransform


def t2i_sample(**extra) -> dict:
    return {
        "id": "d:1",
        "conversations": [{"from": "human", "value": T2I_HUMAN.format(caption="a dog")},
                          {"from": "gpt", "value": T2I_GPT}],
        "image_gen": "t.jpg",
        "gen_transform": "crop",
        "gen_score": 5.5,
        "hpsv2": 0.25,
        **extra,
    }


def test_transform_t2i_end_to_end():
    tf = ImageTransform(ImageConfig(gen_size=256, micro_cond_drop=0.0, stat_keep=0.0))
    images = {"t.jpg": noise(512, 300)}
    out = tf(t2i_sample(), images, rng(3))
    assert out["gen_pixels"].shape == (3, 256, 256)
    assert out["gen_enc_pixels"] == [] and out["und_pixels"] == [] and out["und_sizes"] == []
    info = out["gen_info"]
    human = out["conversations"][0]["value"]
    assert human == (
        f"Generate an image with the caption: a dog ORIGINAL WIDTH : 512; ORIGINAL HEIGHT : 300; "
        f"TOP : 0; LEFT : {info['left']}; SCORE : 5.500; HPS : 2.500"
    )
    assert out["conversations"][1]["value"] == T2I_GPT and out["id"] == "d:1"
    again = pickle.loads(pickle.dumps(tf))(t2i_sample(), images, rng(3))
    assert torch.equal(again["gen_pixels"], out["gen_pixels"]) and again["conversations"] == out["conversations"]
    dropped = ImageTransform(ImageConfig(micro_cond_drop=1.0))(t2i_sample(), images, rng(3))
    assert dropped["conversations"][0]["value"] == "Generate an image with the caption: a dog"


def test_transform_fixed_crop_t2i():
    tf = ImageTransform(ImageConfig(micro_cond_drop=0.0, stat_keep=0.0))
    out = tf(t2i_sample(gen_transform="fixed_crop", gen_crop=[0, 0, 512, 512]), {"t.jpg": noise(1024, 768)}, rng())
    assert out["gen_pixels"].shape == (3, 256, 256)
    assert "ORIGINAL WIDTH : 1024; ORIGINAL HEIGHT : 768; TOP : 0; LEFT : 0" in out["conversations"][0]["value"]


def test_transform_edit_end_to_end():
    sample = {
        "conversations": [{"from": "human", "value": EDIT_SOURCE + "make it blue " + MICRO},
                          {"from": "gpt", "value": T2I_GPT}],
        "image": ["s.png"], "image_gen_enc": ["s.png"], "image_gen": "o.png",
        "gen_transform": "pad", "hpsv2": 0.3,
    }
    images = {"s.png": noise(1000, 400), "o.png": solid(200, 100, (0, 0, 255))}
    out = ImageTransform(ImageConfig(micro_cond_drop=0.0))(sample, images, rng())
    assert out["conversations"][0]["value"] == "<image> <image_gen_enc> make it blue"
    assert out["gen_pixels"].shape == (3, 256, 256)
    assert out["gen_pixels"].dtype == torch.uint8  # the default: a quarter of the bytes of float32
    assert out["gen_pixels"][:, 5, 128].tolist() == [127, 127, 127]  # padded, not cropped
    assert len(out["gen_enc_pixels"]) == 1 and out["gen_enc_pixels"][0].shape == (3, 256, 256)
    assert out["gen_enc_pixels"][0].dtype == torch.uint8
    as_float = ImageTransform(ImageConfig(micro_cond_drop=0.0, gen_dtype="float32"))(sample, images, rng())
    assert as_float["gen_pixels"].dtype == torch.float32
    assert torch.equal(as_float["gen_pixels"], out["gen_pixels"].float() / 255)
    assert torch.equal(as_float["gen_enc_pixels"][0], out["gen_enc_pixels"][0].float() / 255)
    assert [t.shape for t in out["und_pixels"]] == [(4, 3, 384, 384)] and out["und_sizes"] == [(1000, 400)]


def test_transform_many_und_images_one_crop_each():
    sample = {"conversations": [{"from": "human", "value": "<image> <image> compare"}], "image": ["a", "b"]}
    out = ImageTransform()(sample, {"a": noise(1000, 400), "b": noise(300, 300)}, rng())
    assert [tuple(t.shape) for t in out["und_pixels"]] == [(1, 3, 384, 384)] * 2
    assert out["und_sizes"] == [(1000, 400), (300, 300)] and "gen_pixels" not in out
    assert out["conversations"][0]["value"] == "<image> <image> compare"


@pytest.mark.parametrize("role", ["image", "image_gen_enc", "image_gen"])
def test_transform_image_missing(role):
    sample = t2i_sample(**{role: "absent.jpg"})
    with pytest.raises(SampleError) as e:
        ImageTransform()(sample, {"t.jpg": noise(64, 64)}, rng())
    assert e.value.reason == "image_missing" and "absent.jpg" in str(e.value)


def test_luminance_stats_agree_on_uint8_and_float_pixels():
    from lavida_data.transforms.images import luminance_stats

    arr = np.random.default_rng(4).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    arr[:10] = 255  # a bright band, so the std is far from zero
    mean_u8, std_u8 = luminance_stats(torch.from_numpy(arr).permute(2, 0, 1).contiguous())  # uint8 [3, H, W]
    mean_f, std_f = luminance_stats(torch.from_numpy(arr).permute(2, 0, 1).double() / 255)
    luma = (arr.astype(np.float64) / 255) @ np.array([0.299, 0.587, 0.114])
    assert mean_u8 == pytest.approx(luma.mean(), abs=1e-12) and std_u8 == pytest.approx(luma.std(), abs=1e-12)
    assert mean_f == pytest.approx(mean_u8, abs=1e-12) and std_f == pytest.approx(std_u8, abs=1e-12)
