"""Regenerate tests/golden/images/: upstream LaViDa-O's image outputs on small generated inputs.

Not run by the tests. Needs an upstream checkout (adobe-research/LaVida-O at e3a80df) and
diffusers (upstream's VaeImageProcessor):

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/golden/make_images.py /path/to/LaVida-O

Upstream draws crop offsets with ``random.randint`` and keeps LUMINANCE / CONTRAST when
``np.random.random() < 0.5``; this script patches both to chosen values and stores them with
each case (``draws``), so a test can feed the same values to our functions.

Pixels are stored as PNG files named by the hash of their content, under ``out/``: generation
images as their uint8 values (upstream's float x equals k / 255: k = round(255 x)), SigLIP crops
de-normalised (k = round(255 (0.5 x + 0.5))), stacked vertically ([n * 384, 384, 3]).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import PIL
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "golden", "images")
GRID = [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]


# ------------------------------------------------------------------ inputs


def _canvas(w: int, h: int, seed: int) -> np.ndarray:
    """A smooth two-way gradient with a few flat rectangles and a small noisy patch (so that the
    resize filters differ visibly, yet the PNGs of upscaled outputs stay small)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(w + h - 2, 1)], -1)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, w - 4)), int(rng.integers(0, h - 4))
        arr[y0 : y0 + int(rng.integers(3, max(4, h // 2))), x0 : x0 + int(rng.integers(3, max(4, w // 2)))] = \
            rng.integers(0, 256, 3)
    px, py = int(rng.integers(0, w - 6)), int(rng.integers(0, h - 6))
    arr[py : py + 6, px : px + 6] = rng.integers(0, 256, (6, 6, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_inputs() -> dict[str, dict]:
    """The input files (odd sizes; landscape / portrait / square; RGB / RGBA / L; a JPEG), and an
    edit pair (target = source with a changed rectangle)."""
    os.makedirs(os.path.join(OUT, "inputs"), exist_ok=True)
    imgs: dict[str, tuple[Image.Image, str]] = {}
    imgs["land"] = (Image.fromarray(_canvas(53, 30, 1)), "png")  # 23 px difference: round(11.5) = 12 != 11
    rgba = np.dstack([_canvas(28, 47, 2), np.linspace(0, 255, 28 * 47).reshape(47, 28).astype(np.uint8)])
    imgs["port"] = (Image.fromarray(rgba), "png")  # 19 px difference: round(9.5) = 10 != 9
    imgs["square"] = (Image.fromarray(_canvas(40, 40, 3)).convert("L"), "png")
    imgs["photo"] = (Image.fromarray(_canvas(61, 45, 4)), "jpg")
    imgs["wide"] = (Image.fromarray(_canvas(800, 300, 5)).resize((800, 300)), "png")
    imgs["tall"] = (Image.fromarray(_canvas(40, 41, 7)), "png")  # crop range [0, 0] x [0, 6]: enumerable
    src = _canvas(70, 52, 6)
    tgt = np.clip(src.astype(int) * 9 // 10 + 14, 0, 255).astype(np.uint8)  # small changes everywhere
    tgt[10:40, 20:50] = 255 - tgt[10:40, 20:50]  # and a large one in a rectangle
    imgs["edit_src"], imgs["edit_tgt"] = (Image.fromarray(src), "png"), (Image.fromarray(tgt), "png")
    out = {}
    for name, (img, ext) in imgs.items():
        rel = f"inputs/{name}.{ext}"
        kw = {"quality": 90} if ext == "jpg" else {"optimize": True}
        img.save(os.path.join(OUT, rel), **kw)
        out[name] = {"file": rel, "mode": img.mode, "size": list(img.size)}
    return out


def load(name: str, inputs: dict) -> Image.Image:
    """As upstream's loader: the file converted to RGB."""
    return Image.open(os.path.join(OUT, inputs[name]["file"])).convert("RGB")


# ------------------------------------------------------------------ outputs


def save_png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", optimize=True)
    data = buf.getvalue()
    rel = f"out/{hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]}.png"
    os.makedirs(os.path.join(OUT, "out"), exist_ok=True)
    with open(os.path.join(OUT, rel), "wb") as f:
        f.write(data)
    return rel


def gen_png(t: torch.Tensor) -> str:
    """A [1, 3, H, W] (or [3, H, W]) float image in [0, 1] as its uint8 PNG."""
    t = t.reshape(-1, *t.shape[-2:])
    k = (t * 255).round()
    assert torch.equal(k / 255, t.float()) or float((k / 255 - t).abs().max()) < 1e-6
    return save_png(k.to(torch.uint8).permute(1, 2, 0).numpy())


def siglip_png(t: torch.Tensor) -> str:
    """[n, 3, S, S] (or [3, S, S]) SigLIP crops, de-normalised, stacked vertically."""
    t = t.reshape(-1, *t.shape[-3:])
    k = ((t.double() * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)
    return save_png(torch.cat(list(k), dim=1).permute(1, 2, 0).numpy())


@contextmanager
def draws(offsets: list[float], uniforms: list[float]) -> Iterator[list]:
    """Patch random.randint (offset = a + round(f * (b - a)) for the next fraction f) and
    np.random.random (the next value); yields the log of (value, a, b) of each randint call."""
    offs, unis, log = list(offsets), list(uniforms), []
    old_randint, old_random = random.randint, np.random.random

    def randint(a: int, b: int) -> int:
        v = a + round(offs.pop(0) * (b - a))
        log.append([v, a, b])
        return v

    random.randint, np.random.random = randint, lambda *a: unis.pop(0)
    try:
        yield log
    finally:
        random.randint, np.random.random = old_randint, old_random
    assert not offs and not unis, f"unused draws: {offs} {unis}"


# ------------------------------------------------------------------ cases


def gen_cases(mm: Any, vae: Any, inputs: dict) -> list[dict]:
    cases = []
    keeps = [[0.3, 0.7], [0.7, 0.3], [0.1, 0.2], [0.9, 0.6]]  # (lum, con): kept, dropped, both, neither
    plan = [("land", 256, [0.0, 0.0], keeps), ("land", 256, [1.0, 0.0], keeps[:1]),
            ("land", 256, [0.37, 0.0], keeps[2:3]), ("port", 256, [0.0, 1.0], keeps[1:2]),
            ("port", 256, [0.0, 0.5], keeps[:1]), ("square", 256, [0.0, 0.0], keeps[2:3]),
            ("photo", 256, [0.8, 0.0], keeps[2:3]), ("wide", 256, [0.61, 0.0], keeps[:2]),
            ("land", 1024, [0.5, 0.0], keeps[2:3])]
    for name, size, offs, keep_list in plan:
        for keep in keep_list:
            with draws(offs, keep) as log:
                d = mm.resize_and_random_crop(load(name, inputs), size)
            px = vae.preprocess(d["image"])
            cases.append({"kind": "random_crop", "input": name, "size": size, "left": log[0][0], "top": log[1][0],
                          "ranges": [log[0][2], log[1][2]], "keep": [keep[0] < 0.5, keep[1] < 0.5],
                          "texts": d["micro_conds_text"], "pixels": gen_png(px), "shape": list(px.shape[1:])})
    for name, size in [("land", 256), ("port", 256), ("square", 256), ("photo", 256), ("edit_src", 256),
                       ("port", 1024)]:
        px = vae.preprocess(mm.pad_to_square_and_resize(load(name, inputs), size))
        cases.append({"kind": "pad", "input": name, "size": size, "pixels": gen_png(px), "shape": list(px.shape[1:])})
    photo_w = int(1024 * 61 / 45)
    for name, parms, keep in [("photo", [photo_w, 1024, 182, 0, 182 + 1024, 1024], [0.1, 0.2]),
                              ("land", [1100, 1024, 100, 0, 1124, 1024], [0.7, 0.3]),  # 24 columns past the edge
                              ("square", [1024, 1500, 0, 300, 1024, 1324], [0.9, 0.9])]:  # stretched
        with draws([], keep):
            d = mm.resize_and_crop(load(name, inputs), parms)
        px = vae.preprocess(d["image"])
        cases.append({"kind": "crop_parms", "input": name, "size": 1024, "crop_parms": [parms],
                      "keep": [keep[0] < 0.5, keep[1] < 0.5], "texts": d["micro_conds_text"], "pixels": gen_png(px),
                      "shape": list(px.shape[1:])})
    return cases


def enumerate_crops(mm: Any, vae: Any, inputs: dict, name: str = "tall", size: int = 256) -> dict:
    """Every output of a random crop of ``name``: each offset in upstream's range with each
    keep / drop of LUMINANCE and CONTRAST (the set our draws must stay in and reach)."""
    with draws([0.0, 0.0], [0.9, 0.9]) as log:
        mm.resize_and_random_crop(load(name, inputs), size)
    (_, _, max_left), (_, _, max_top) = log
    outputs = []
    for left in range(max_left + 1):
        for top in range(max_top + 1):
            for keep in ([0.1, 0.1], [0.1, 0.9], [0.9, 0.1], [0.9, 0.9]):
                fl, ft = left / max(max_left, 1), top / max(max_top, 1)
                with draws([fl, ft], keep):
                    d = mm.resize_and_random_crop(load(name, inputs), size)
                outputs.append({"left": left, "top": top, "text": "; ".join(d["micro_conds_text"]),
                                "pixels": gen_png(vae.preprocess(d["image"]))})
    return {"input": name, "size": size, "ranges": [max_left, max_top], "outputs": outputs}


def und_cases(mm: Any, ds: Any, proc: Any, inputs: dict) -> list[dict]:
    cases = []
    for name in ["land", "port", "square", "photo", "wide", "edit_src"]:
        img = load(name, inputs)
        t = mm.process_anyres_image(img, proc, GRID)
        cases.append({"kind": "anyres", "input": name, "best": list(mm.select_best_resolution(img.size, GRID)),
                      "shape": list(t.shape), "pixels": siglip_png(t)})
        mm.DEBUG_FIX_PADDING = "1"  # base.sh exports DEBUG_FIX_PADDING=1 (s1, s2-1024, s3)
        try:
            t = mm.process_anyres_image(img, proc, GRID)
        finally:
            mm.DEBUG_FIX_PADDING = False
        cases.append({"kind": "anyres_pad_base", "input": name, "shape": list(t.shape), "pixels": siglip_png(t)})
        t, size, _ = ds.process_image(os.path.join(OUT, inputs[name]["file"]), "pad")
        cases.append({"kind": "pad", "input": name, "shape": list(t.shape), "size": list(size),
                      "pixels": siglip_png(t)})
    return cases


def best_resolutions(mm: Any) -> list[dict]:
    sizes = [(1000, 400), (400, 1000), (500, 500), (800, 450), (2000, 1000), (300, 600), (100, 100), (53, 30),
             (28, 47), (1152, 384), (1153, 384), (700, 699), (1920, 1080), (1080, 1920), (384, 384), (3000, 200)]
    return [{"size": list(s), "best": list(mm.select_best_resolution(s, GRID))} for s in sizes]


def sample_cases(D: Any, data_args: Any, inputs: dict) -> list[dict]:
    """Whole samples through upstream's ``_get_item`` (tokenization stubbed: the conversations and
    micro-condition texts handed to ``preprocess_multimodal`` are recorded)."""
    def p(name: str) -> str:
        return os.path.join(OUT, inputs[name]["file"])

    t2i = [{"from": "human", "value": "Generate an image with the caption: a cat [[micro_conds_texts]]"},
           {"from": "gpt", "value": "Sure <image_gen>"}]
    edit = [{"from": "human", "value": "<image> <image_gen_enc> make it blue"}, {"from": "gpt", "value": "<image_gen>"}]
    plan = [
        ("t2i_random", {"image_gen": p("land"), "gen_score": [6.12345], "hpsv2": [0.28765]}, t2i,
         [1.0, 0.0], [0.3, 0.7]),
        ("t2i_two_targets", {"image_gen": [p("port"), p("square")], "gen_score": [5.0, 4.5555]}, t2i,
         [0.0, 0.4, 0.0, 0.0], [0.7, 0.3, 0.2, 0.1]),
        ("t2i_crop_parms", {"image_gen": p("photo"), "crop_parms": [[int(1024 * 61 / 45), 1024, 182, 0, 1206, 1024]],
                            "hpsv2": [0.31]}, t2i, [], [0.1, 0.2]),
        ("t2i_pad_image_none", {"image_gen": p("port"), "pad_image_gen": True, "gen_score": [7], "image": None},
         t2i, [], []),
        ("edit_reweight", {"image": [p("edit_src")], "image_gen_enc": [p("edit_src")], "image_gen": p("edit_tgt"),
                           "pad_image_gen": True, "pixel_diff": True, "reweight": True, "hpsv2": [0.25]}, edit, [], []),
        ("edit_no_reweight", {"image": [p("edit_src")], "image_gen_enc": [p("edit_src")], "image_gen": p("edit_tgt"),
                              "pad_image_gen": True, "pixel_diff": False, "reweight": False}, edit, [], []),
        ("und_two_images", {"image": [p("land"), p("port")]},
         [{"from": "human", "value": "<image> <image> compare"}, {"from": "gpt", "value": "same"}], [], []),
        ("und_one_image", {"image": p("wide")},
         [{"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "a"}], [], []),
        ("raises_reweight_without_gen", {"image": [p("land")], "image_gen": None, "image_gen_enc": None,
                                         "reweight": False}, edit, [], []),
        ("raises_gen_score_none", {"image_gen": p("land"), "gen_score": None}, t2i, [0.0, 0.0], [0.3, 0.3]),
    ]
    out = []
    for size in (256, 1024):
        data_args.image_gen_size = size
        for name, payload, conv, offs, unis in plan:
            if size == 1024 and name not in ("t2i_crop_parms", "edit_reweight"):
                continue
            payload = {"id": name, **payload, "conversations": conv}
            seen: dict = {}

            def fake_pm(sources, data_args, micro_conds_texts=None, _seen=seen):
                _seen["conversations"], _seen["micro"] = copy.deepcopy(sources[0]), micro_conds_texts
                return sources

            D.preprocess_multimodal = fake_pm
            D.preprocess = lambda sources, tokenizer, has_image: {"input_ids": [torch.zeros(1)],
                                                                  "labels": [torch.zeros(1)]}
            ds = D.LazySupervisedDataset("golden", None, data_args, list_data=[copy.deepcopy(payload)])
            case = {"name": name, "gen_size": size, "payload": _relative(payload), "offsets": offs, "uniforms": unis}
            try:
                with draws(offs, unis) as log:
                    got = ds._get_item(0)
            except Exception as e:  # upstream fails the row
                case["raises"] = type(e).__name__
                out.append(case)
                continue
            case["randint"] = log
            case["micro_conds_texts"] = seen.get("micro")
            case["conversations"] = seen.get("conversations")
            case["gen_pixels"] = [gen_png(t) for t in got["image_gen"] or []]
            case["gen_enc_pixels"] = [gen_png(t) for t in got["image_gen_enc"] or []]
            und = [x for x in got.get("image") or [] if x[2] != "text"]  # not the no-image placeholder
            case["und_pixels"] = [siglip_png(x[0]) for x in und or []]
            case["und_shapes"] = [list(x[0].reshape(-1, 3, 384, 384).shape) for x in und or []]
            case["und_sizes"] = [list(x[1]) for x in und or []]
            w = got["image_gen_weight"]
            case["gen_weight"] = None if w is None else [x.reshape(x.shape[-2:]).tolist() for x in w]
            out.append(case)
    return out


def _relative(payload: dict) -> dict:
    """The payload with image paths relative to the fixture folder."""
    def rel(v: Any) -> Any:
        if isinstance(v, str) and v.startswith(OUT):
            return os.path.relpath(v, OUT)
        if isinstance(v, list):
            return [rel(x) for x in v]
        return v

    return {k: (rel(v) if k in ("image", "image_gen", "image_gen_enc") else v) for k, v in payload.items()}


def edit_pairs(gm: Any, mm: Any, vae: Any, inputs: dict) -> list[dict]:
    out = []
    for size in (256, 1024):
        src = vae.preprocess(mm.pad_to_square_and_resize(load("edit_src", inputs), size))
        tgt = vae.preprocess(mm.pad_to_square_and_resize(load("edit_tgt", inputs), size))
        for a, b, names in [(src, tgt, ["edit_src", "edit_tgt"]), (tgt, src, ["edit_tgt", "edit_src"])]:
            out.append({"size": size, "source": names[0], "target": names[1],
                        "pixel_diff": float(gm.comput_pixel_diff(a, b, 0.15)),
                        "pixel_diff_text": f"{gm.comput_pixel_diff(a, b, 0.15):.3f}",
                        "mask": gm.diff_mask(a, b).reshape(size // 16, size // 16).int().tolist()})
    return out


def main(checkout: str) -> None:
    sys.path.insert(0, HERE)
    from upstream_env import load_upstream

    load_upstream(checkout)
    from diffusers.image_processor import VaeImageProcessor

    import llava.mm_utils as mm
    import llava.train.data.datasets as D
    import llava.train.data.get_mask as gm
    from llava.model.multimodal_encoder.siglip_encoder import SigLipImageProcessor

    vae = VaeImageProcessor(vae_scale_factor=16, do_normalize=False)
    proc = SigLipImageProcessor()

    class DataArgs:
        image_folder = ""
        image_processor = proc
        image_processor_gen = vae
        image_aspect_ratio = "anyres"
        image_grid_pinpoints = GRID
        image_gen_size = 256
        mm_edit_area_weight = 5.0
        is_multimodal = True
        early_mix_text = False

    data_args = DataArgs()
    ds = D.LazySupervisedDataset("golden", None, data_args, list_data=[])
    inputs = make_inputs()
    fixture = {
        "upstream": "adobe-research/LaVida-O@e3a80df",
        "pillow": PIL.__version__,
        "inputs": inputs,
        "gen": gen_cases(mm, vae, inputs),
        "crop_set": enumerate_crops(mm, vae, inputs),
        "und": und_cases(mm, ds, proc, inputs),
        "best_resolution": best_resolutions(mm),
        "edit_pairs": edit_pairs(gm, mm, vae, inputs),
        "samples": sample_cases(D, data_args, inputs),
    }
    with open(os.path.join(OUT, "images.json"), "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/up")
