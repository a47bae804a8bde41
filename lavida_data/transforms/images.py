"""Load-time image transforms: generation targets, micro-conditions, edit sources, SigLIP anyres.

Every random choice comes from the numpy ``Generator`` passed in (see
:func:`lavida_data.rng.sample_np_rng`); nothing here touches global random state, so a sample's
pixels and text are reproducible from (seed, epoch, position).

Pixel conventions:

* generation targets and edit sources (VQ-VAE inputs): ``[3, S, S]``, uint8 by default (the model
  divides by 255 on its device), or float32 in ``[0, 1]`` (``ImageConfig.gen_dtype``);
* understanding images (SigLIP): float ``[n, 3, und_size, und_size]``, ``(x / 255 - mean) / std``,
  so in ``[-1, 1]`` with the default mean = std = 0.5.

All resizes are bicubic and antialiased when shrinking (PIL's filter; generation targets cropped
at random are resized by torch's uint8 kernel, which computes the same filter several times faster).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import SampleError

MICRO = "[[micro_conds_texts]]"
GREY: tuple[int, int, int] = (127, 127, 127)
GEN_TRANSFORMS = ("crop", "pad", "fixed_crop")
_MICRO_WITH_SPACE = re.compile(r"[ \t]*" + re.escape(MICRO))
_LUMA = (0.299, 0.587, 0.114)
ORIGINAL_SIZE = "lavida.original_size"  # img.info key: (w, h) of the file when decoded at a reduced scale

Size = tuple[int, int]  # (width, height)


class ImageConfig(BaseModel):
    """Settings of the load-time image transforms."""

    model_config = ConfigDict(extra="forbid")

    gen_size: Literal[256, 512, 1024] = Field(256, description="side of the square generation target")
    und_size: int = Field(384, gt=0, description="side of one SigLIP crop")
    anyres_grid: list[tuple[int, int]] = Field(
        [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)],
        min_length=1,
        description="anyres pinpoints (W, H), each a multiple of und_size",
    )
    gen_dtype: Literal["uint8", "float32"] = Field(
        "uint8", description="generation targets and edit sources as uint8 [0, 255] (a quarter of the "
        "bytes; the model divides by 255 on its device) or float32 [0, 1]")
    micro_cond_drop: float = Field(0.3, ge=0, le=1, description="probability of an empty micro-condition text")
    stat_keep: float = Field(0.5, ge=0, le=1, description="probability of keeping LUMINANCE, and of CONTRAST")
    pad_color: tuple[int, int, int] = Field(GREY, description="RGB fill of padded borders")
    mean: float = Field(0.5, description="SigLIP normalisation mean (all channels)")
    std: float = Field(0.5, gt=0, description="SigLIP normalisation std (all channels)")
    max_und_images_anyres: int = Field(
        1, ge=0, description="samples with more understanding images than this get one crop each, no tiling"
    )

    @model_validator(mode="after")
    def _grid_multiple(self) -> "ImageConfig":
        for w, h in self.anyres_grid:
            if w <= 0 or h <= 0 or w % self.und_size or h % self.und_size:
                raise ValueError(f"anyres_grid entry {(w, h)} is not a positive multiple of und_size {self.und_size}")
        return self


# --------------------------------------------------------------------------------------------
# small pixel helpers


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` in RGB mode (converted when it is not)."""
    return img if img.mode == "RGB" else img.convert("RGB")


def to_unit_tensor(img: Image.Image | torch.Tensor) -> torch.Tensor:
    """An RGB image (or a uint8 ``[3, H, W]`` tensor) as a float ``[3, H, W]`` tensor in ``[0, 1]``."""
    if not isinstance(img, torch.Tensor):
        img = torch.from_numpy(np.array(to_rgb(img), dtype=np.uint8)).permute(2, 0, 1)
    return img.float().div_(255.0)  # .float() copies


def to_chw_uint8(img: Image.Image) -> torch.Tensor:
    """An RGB image as a contiguous uint8 ``[3, H, W]`` tensor."""
    arr = np.array(to_rgb(img), dtype=np.uint8)  # its own copy: torch shares it
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def original_size(img: Image.Image) -> Size:
    """The size of the image as stored in its file, also when it was decoded at a reduced scale
    (JPEG draft mode): the loader records it under :data:`ORIGINAL_SIZE` in ``img.info``."""
    size = img.info.get(ORIGINAL_SIZE)
    return (int(size[0]), int(size[1])) if size else img.size


def resize(img: Image.Image, size: Size) -> Image.Image:
    """Bicubic resize to ``size`` = (w, h); a no-op when the size already matches."""
    return img if img.size == tuple(size) else img.resize(tuple(size), Image.Resampling.BICUBIC)


def resize_uint8(img: Image.Image, size: Size) -> torch.Tensor:
    """An RGB image resized to ``size`` = (w, h) as a uint8 ``[3, h, w]`` tensor: bicubic, antialiased
    when shrinking (PIL's filter), computed by torch's uint8 kernel, several times faster than
    PIL's; the two agree to one level of 255 on a few pixels."""
    arr = np.array(img, dtype=np.uint8)  # its own copy: torch shares it
    t = torch.from_numpy(arr).permute(2, 0, 1)  # channels-last strides: the kernel's fast path
    if img.size == tuple(size):
        return t.contiguous()
    return torch.nn.functional.interpolate(t[None], size=(size[1], size[0]), mode="bicubic", antialias=True)[0]


def shorter_side_size(w: int, h: int, size: int) -> Size:
    """(w, h) scaled so that the shorter side is ``size`` (the longer one rounded, never below ``size``)."""
    if w <= h:
        return size, max(size, round(h * size / w))
    return max(size, round(w * size / h)), size


def pad_to_square(img: Image.Image, color: tuple[int, int, int] = GREY) -> tuple[Image.Image, Size]:
    """``img`` centred on a square of side max(w, h) filled with ``color``, and its paste offset (x, y)."""
    w, h = img.size
    side = max(w, h)
    if w == h:
        return img, (0, 0)
    out = Image.new("RGB", (side, side), tuple(color))
    offset = ((side - w) // 2, (side - h) // 2)
    out.paste(to_rgb(img), offset)
    return out, offset


def centre_offset(w: int, h: int, size: int) -> Size:
    """(left, top) of a centred ``size`` square in a ``w`` x ``h`` image."""
    return (w - size) // 2, (h - size) // 2


# --------------------------------------------------------------------------------------------
# generation targets and edit sources


def _info(orig: Size, top: int, left: int) -> dict:
    return {"orig_w": int(orig[0]), "orig_h": int(orig[1]), "top": int(top), "left": int(left)}


def _random_crop(img: Image.Image, size: int, rng: np.random.Generator, orig: Size) -> tuple[torch.Tensor, dict]:
    """The shorter side of the ORIGINAL size resized to ``size`` (``img`` may be a reduced decode of
    it), then a random square of that."""
    rw, rh = shorter_side_size(orig[0], orig[1], size)
    top = int(rng.integers(0, rh - size + 1))
    left = int(rng.integers(0, rw - size + 1))
    resized = resize_uint8(img, (rw, rh))
    return resized[:, top : top + size, left : left + size].contiguous(), _info(orig, top, left)


def clamp_crop(crop: Sequence[int], w: int, h: int) -> tuple[int, int, int, int]:
    """``crop`` = [top, left, height, width] in original pixels, clamped to a ``w`` x ``h`` image.

    Raises ``SampleError("bad_value:gen_crop")`` when it is malformed or leaves no pixel.
    """
    if crop is None or len(crop) != 4:
        raise SampleError("bad_value:gen_crop", f"gen_crop must be [top, left, height, width], got {crop!r}")
    top, left, ch, cw = (int(round(float(v))) for v in crop)
    top, left = max(0, top), max(0, left)
    bottom, right = min(h, top + ch), min(w, left + cw)
    if bottom <= top or right <= left:
        raise SampleError("bad_value:gen_crop", f"gen_crop {list(crop)} leaves no pixel of a {w}x{h} image")
    return top, left, bottom - top, right - left


def _fixed_crop(img: Image.Image, size: int, crop: Sequence[int] | None) -> tuple[Image.Image, dict]:
    w, h = img.size
    top, left, ch, cw = clamp_crop(crop, w, h)
    region = img.crop((left, top, left + cw, top + ch))
    rw, rh = shorter_side_size(cw, ch, size)
    dx, dy = centre_offset(rw, rh, size)
    out = resize(region, (rw, rh)).crop((dx, dy, dx + size, dy + size))
    scale = size / min(cw, ch)
    # position of the output in the whole image scaled by the same factor
    return out, _info((w, h), round(top * scale) + dy, round(left * scale) + dx)


def _pad(img: Image.Image, size: int, color: tuple[int, int, int], orig: Size | None = None) -> tuple[Image.Image, dict]:
    squared, _ = pad_to_square(img, color)
    return resize(squared, (size, size)), _info(orig or img.size, 0, 0)


def gen_target(
    img: Image.Image,
    mode: str,
    size: int,
    rng: np.random.Generator,
    crop: list[int] | None = None,
    *,
    pad_color: tuple[int, int, int] = GREY,
) -> tuple[torch.Tensor, dict]:
    """The generation target of ``img`` as a float ``[3, size, size]`` tensor in ``[0, 1]``.

    ``mode``:

    * ``"crop"``: shorter side resized to ``size``, then a square crop at a position drawn from ``rng``;
    * ``"pad"``: padded to a centred square with ``pad_color``, then resized to ``size``;
    * ``"fixed_crop"``: the region ``crop`` = [top, left, height, width] in ORIGINAL image pixels
      (clamped to the image), shorter side resized to ``size``, centre-cropped.

    The info dict holds ``orig_w``, ``orig_h`` (the original size) and ``top``, ``left`` of the crop
    in pixels of the resized image (0 for ``"pad"``; for ``"fixed_crop"`` the position in the whole
    image scaled by the crop's resize factor).
    """
    chw, info = gen_target_uint8(img, mode, size, rng, crop, pad_color=pad_color)
    return to_unit_tensor(chw), info


def gen_target_uint8(
    img: Image.Image,
    mode: str,
    size: int,
    rng: np.random.Generator,
    crop: list[int] | None = None,
    *,
    pad_color: tuple[int, int, int] = GREY,
) -> tuple[torch.Tensor, dict]:
    """:func:`gen_target` as a uint8 ``[3, size, size]`` tensor (no float conversion)."""
    orig = original_size(img)
    img = to_rgb(img)
    if mode == "crop":
        out, info = _random_crop(img, size, rng, orig)
    elif mode == "pad":
        out, info = _pad(img, size, pad_color, orig)
    elif mode == "fixed_crop":
        if img.size != orig:
            raise SampleError("bad_value:gen_transform", "fixed_crop needs the image at its full size")
        out, info = _fixed_crop(img, size, crop)
    else:
        raise SampleError("bad_value:gen_transform", f"gen_transform {mode!r} is not one of {GEN_TRANSFORMS}")
    return (to_chw_uint8(out) if isinstance(out, Image.Image) else out), info


def edit_source(img: Image.Image, size: int, *, pad_color: tuple[int, int, int] = GREY) -> torch.Tensor:
    """An edit source (or edit target) for the VQ-VAE: padded to square, resized, ``[3, size, size]`` in [0, 1]."""
    return to_unit_tensor(edit_source_uint8(img, size, pad_color=pad_color))


def edit_source_uint8(img: Image.Image, size: int, *, pad_color: tuple[int, int, int] = GREY) -> torch.Tensor:
    """:func:`edit_source` as a uint8 ``[3, size, size]`` tensor."""
    out, _ = _pad(to_rgb(img), size, pad_color)
    return to_chw_uint8(out)


def as_dtype(chw: torch.Tensor, dtype: str) -> torch.Tensor:
    """A uint8 ``[3, H, W]`` tensor as it is (``"uint8"``) or as float32 in [0, 1]."""
    return chw if dtype == "uint8" else to_unit_tensor(chw)


# --------------------------------------------------------------------------------------------
# micro-conditions


def luminance_stats(pixels: torch.Tensor) -> tuple[float, float]:
    """Mean and (population) std of 0.299 R + 0.587 G + 0.114 B, on the [0, 1] scale, of
    ``[3, H, W]`` pixels, uint8 or float in [0, 1] (in float64 either way)."""
    if pixels.dtype == torch.uint8:
        luma = np.asarray(_LUMA) @ pixels.numpy().reshape(3, -1)  # one float64 pass over the uint8 pixels
        return float(luma.mean()) / 255.0, float(luma.std()) / 255.0
    p = pixels.double()
    luma = _LUMA[0] * p[0] + _LUMA[1] * p[1] + _LUMA[2] * p[2]
    return float(luma.mean()), float(luma.std(unbiased=False))


def micro_conditions(
    info: Mapping[str, int], pixels: torch.Tensor, sample: Mapping[str, Any], rng: np.random.Generator,
    cfg: ImageConfig,
) -> str:
    """The micro-condition text of a generation target (``pixels``: see :func:`luminance_stats`),
    ``; ``-joined.

    Three uniforms are always drawn from ``rng`` (drop, keep luminance, keep contrast), so the
    number of draws does not depend on the outcome; the statistics are computed only when kept.
    """
    u_drop, u_lum, u_con = rng.random(3)
    if u_drop < cfg.micro_cond_drop:
        return ""
    parts = [
        f"ORIGINAL WIDTH : {info['orig_w']}",
        f"ORIGINAL HEIGHT : {info['orig_h']}",
        f"TOP : {info['top']}",
        f"LEFT : {info['left']}",
    ]
    lum, con = luminance_stats(pixels) if min(u_lum, u_con) < cfg.stat_keep else (0.0, 0.0)
    if u_lum < cfg.stat_keep:
        parts.append(f"LUMINANCE : {lum:.3f}")
    if u_con < cfg.stat_keep:
        parts.append(f"CONTRAST : {con:.3f}")
    if sample.get("gen_score") is not None:
        parts.append(f"SCORE : {float(sample['gen_score']):.3f}")
    if sample.get("hpsv2") is not None:
        parts.append(f"HPS : {float(sample['hpsv2']) * 10:.3f}")
    return "; ".join(parts)


def fill_micro_conditions(text: str, mc: str) -> str:
    """``text`` with ``[[micro_conds_texts]]`` replaced by ``mc``; when ``mc`` is empty the marker
    goes together with the spaces before it, so no trailing space remains."""
    if mc:
        return text.replace(MICRO, mc)
    return _MICRO_WITH_SPACE.sub("", text)


# --------------------------------------------------------------------------------------------
# understanding images (SigLIP, LLaVA-NeXT anyres)


def select_best_resolution(original: Size, candidates: Sequence[Size]) -> Size:
    """LLaVA-NeXT's choice: the (W, H) maximising the effective resolution of the image fitted
    into it (capped at the original's), then minimising the wasted area; first wins ties."""
    ow, oh = original
    best, best_eff, best_waste = None, 0, math.inf
    for w, h in candidates:
        scale = min(w / ow, h / oh)
        eff = min(int(ow * scale) * int(oh * scale), ow * oh)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (int(w), int(h)), eff, waste
    assert best is not None
    return best


def resize_and_pad(img: Image.Image, target: Size, color: tuple[int, int, int] = GREY) -> Image.Image:
    """``img`` resized to fit ``target`` (W, H) keeping its aspect ratio, centred on ``color`` (LLaVA-NeXT)."""
    ow, oh = img.size
    tw, th = target
    sw, sh = tw / ow, th / oh
    if sw < sh:
        nw, nh = tw, min(math.ceil(oh * sw), th)
    else:
        nw, nh = min(math.ceil(ow * sh), tw), th
    out = Image.new("RGB", (tw, th), tuple(color))
    out.paste(resize(img, (nw, nh)), ((tw - nw) // 2, (th - nh) // 2))
    return out


def tiles(img: Image.Image, side: int) -> list[Image.Image]:
    """``img`` cut into ``side`` x ``side`` tiles, row-major."""
    w, h = img.size
    return [img.crop((x, y, x + side, y + side)) for y in range(0, h, side) for x in range(0, w, side)]


def siglip_normalise(img: Image.Image, cfg: ImageConfig) -> torch.Tensor:
    """SigLIP preprocessing of one crop: bicubic resize to und_size, x / 255, (x - mean) / std."""
    t = to_unit_tensor(resize(img, (cfg.und_size, cfg.und_size)))
    return t.sub_(cfg.mean).div_(cfg.std)


def siglip_anyres(img: Image.Image, cfg: ImageConfig, anyres: bool = True) -> tuple[torch.Tensor, Size]:
    """An understanding image as ``[1 + n_tiles, 3, S, S]`` SigLIP crops and its original (w, h).

    The base image (padded to a square with ``cfg.pad_color``, resized) comes first; with
    ``anyres`` the tiles of the best ``cfg.anyres_grid`` resolution follow, row-major. Without
    ``anyres`` only the base image: ``[1, 3, S, S]``.
    """
    img = to_rgb(img)
    base, _ = pad_to_square(img, cfg.pad_color)
    crops = [base]
    if anyres:
        grid = select_best_resolution(img.size, cfg.anyres_grid)
        crops += tiles(resize_and_pad(img, grid, cfg.pad_color), cfg.und_size)
    return torch.stack([siglip_normalise(c, cfg) for c in crops]), img.size


# --------------------------------------------------------------------------------------------
# the per-sample transform


def _paths(sample: Mapping[str, Any], role: str) -> list[str]:
    v = sample.get(role)
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _lookup(images: Mapping[str, Image.Image], path: str, role: str) -> Image.Image:
    try:
        return images[path]
    except KeyError:
        raise SampleError("image_missing", f"{role} image {path!r} was not loaded", field=role) from None


class ImageTransform:
    """Turns a converted sample and its loaded images into tensors; picklable (holds only ``cfg``).

    Output: the sample's own keys, with ``conversations`` filled (micro-conditions only for a
    ``crop`` / ``fixed_crop`` text-to-image target, otherwise the marker removed) and

    * ``gen_pixels``: ``[3, S, S]``, uint8 or float in [0, 1] by ``cfg.gen_dtype`` (absent without
      ``image_gen``), with ``gen_info``;
    * ``gen_enc_pixels``: list of ``[3, S, S]`` like ``gen_pixels`` (edit sources, padded);
    * ``und_pixels``: list of ``[n_i, 3, und, und]`` SigLIP crops; ``und_sizes``: list of (w, h).

    ``S`` is ``cfg.gen_size``; a sample's own ``gen_size`` key is not used.
    """

    def __init__(self, cfg: ImageConfig | None = None):
        self.cfg = cfg or ImageConfig()

    def __repr__(self) -> str:
        return f"ImageTransform({self.cfg!r})"

    def __call__(self, sample: Mapping[str, Any], images: Mapping[str, Image.Image], rng: np.random.Generator) -> dict:
        cfg = self.cfg
        out = dict(sample)
        und_paths = _paths(sample, "image")
        anyres = len(und_paths) <= cfg.max_und_images_anyres
        und = [siglip_anyres(_lookup(images, p, "image"), cfg, anyres=anyres) for p in und_paths]
        out["und_pixels"] = [t for t, _ in und]
        out["und_sizes"] = [s for _, s in und]
        enc_paths = _paths(sample, "image_gen_enc")
        out["gen_enc_pixels"] = [
            as_dtype(edit_source_uint8(_lookup(images, p, "image_gen_enc"), cfg.gen_size, pad_color=cfg.pad_color),
                     cfg.gen_dtype) for p in enc_paths
        ]
        mc = ""
        gen_paths = _paths(sample, "image_gen")
        if len(gen_paths) > 1:
            raise SampleError("bad_value:image_gen", f"a sample has one generation target, got {len(gen_paths)}")
        if gen_paths:
            mode = sample.get("gen_transform", "crop")
            img = _lookup(images, gen_paths[0], "image_gen")
            chw, info = gen_target_uint8(img, mode, cfg.gen_size, rng, sample.get("gen_crop"),
                                         pad_color=cfg.pad_color)
            out["gen_pixels"], out["gen_info"] = as_dtype(chw, cfg.gen_dtype), info
            if mode in ("crop", "fixed_crop") and not enc_paths:
                mc = micro_conditions(info, chw, sample, rng, cfg)
        out["conversations"] = [
            {**turn, "value": fill_micro_conditions(turn["value"], mc)} for turn in sample.get("conversations", [])
        ]
        return out
