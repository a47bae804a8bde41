"""Load-time image transforms, as upstream LaViDa-O's ``LazySupervisedDataset._get_item`` does them.

Every random choice comes from the numpy ``Generator`` passed in (see
:func:`lavida_data.rng.sample_np_rng`); nothing here touches global random state, so a sample's
pixels and texts are reproducible from (seed, epoch, position).

Generation targets (``image_gen``) and edit sources (``image_gen_enc``), VQ-VAE inputs, are
``[3, S, S]`` uint8 (the model divides by 255 on its device; ``gen_dtype="float32"`` gives that
quotient here), S = ``ImageConfig.gen_size``:

* random crop (the default): the shorter side resized to S (PIL bilinear; the longer side
  ``int(S * aspect)``), then an S x S crop at a random (left, top); micro-conditions
  ``ORIGINAL WIDTH / HEIGHT`` (the image's own size), ``TOP``, ``LEFT`` and, each kept with
  probability ``stat_keep``, ``LUMINANCE`` / ``CONTRAST`` (mean / population std of
  0.2126 R + 0.7152 G + 0.0722 B of the crop, on the [0, 1] scale);
* ``pad_image_gen`` (and every edit source): centred on a black square (``PIL.ImageOps.pad``,
  whose offset rounds half to even), resized to S (PIL bicubic); no micro-conditions;
* ``crop_parms`` = ``[[new_w, new_h, left, top, right, bottom]]`` (only at S = 1024): resized to
  (new_w, new_h) (bilinear), cropped to the box; micro-conditions report new_w / new_h as the
  original size, then TOP, LEFT and the kept statistics.

Understanding images (``image``), SigLIP inputs, are float ``[n, 3, 384, 384]``,
``(x / 255 - mean) / std``: one image gets LLaVA-NeXT anyres (the whole image resized to 384 x 384
first, then the 384-pixel tiles of the image fitted on black into the best grid resolution);
several images get one crop each, padded to a square with the mean colour (127, 127, 127).

All resizes are PIL's, so pixels equal upstream's exactly.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lavida_data.errors import SampleError

Size = tuple[int, int]  # (width, height)
BLACK: tuple[int, int, int] = (0, 0, 0)
LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])  # float64, as upstream's factor
PIXEL_DIFF_QUANTILE = 0.15
VAE_DOWNSAMPLE = 16  # one generation token per 16 x 16 pixels


class ImageConfig(BaseModel):
    """Settings of the load-time image transforms; the defaults are upstream's behaviour."""

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
    stat_keep: float = Field(
        0.5, ge=0, le=1,
        description="probability of keeping LUMINANCE, and of CONTRAST (1: upstream's ALWAYS_HAS_COND)")
    mean: float = Field(0.5, description="SigLIP normalisation mean (all channels)")
    std: float = Field(0.5, gt=0, description="SigLIP normalisation std (all channels)")
    anyres_pad_base: bool = Field(
        False, description="pad the whole image to a square (mean colour) before resizing it to the first "
        "anyres crop: upstream's DEBUG_FIX_PADDING=1, which its base.sh exports (s1, s2-1024, s3); off: a plain "
        "resize, upstream's default (s2-256.sh)")
    max_und_images_anyres: int = Field(
        1, ge=0, description="samples with more understanding images than this get one padded crop each")
    edit_area_weight: float = Field(
        5.0, description="token weight inside the edited area of reweight samples (mm_edit_area_weight)")

    @model_validator(mode="after")
    def _grid_multiple(self) -> "ImageConfig":
        for w, h in self.anyres_grid:
            if w <= 0 or h <= 0 or w % self.und_size or h % self.und_size:
                raise ValueError(f"anyres_grid entry {(w, h)} is not a positive multiple of und_size {self.und_size}")
        return self

    @property
    def mean_color(self) -> tuple[int, int, int]:
        """The padding colour of the several-images path: int(mean * 255) per channel."""
        c = int(self.mean * 255)
        return (c, c, c)


# --------------------------------------------------------------------------------------------
# small pixel helpers


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` in RGB mode (``convert("RGB")`` when it is not: alpha is dropped, not composited)."""
    return img if img.mode == "RGB" else img.convert("RGB")


def to_chw_uint8(img: Image.Image) -> torch.Tensor:
    """An RGB image as a contiguous uint8 ``[3, H, W]`` tensor. Transposed by numpy into its own
    copy (torch shares it): torch's permuted copy wakes its thread pool, which outside loader
    workers costs milliseconds per image on a busy machine."""
    arr = np.asarray(to_rgb(img), dtype=np.uint8)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def to_unit(chw: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1] (``x / 255``, as upstream's VAE image processor)."""
    return chw.float().div_(255.0)


def as_dtype(chw: torch.Tensor, dtype: str) -> torch.Tensor:
    """A uint8 ``[3, H, W]`` tensor as it is (``"uint8"``) or as float32 in [0, 1]."""
    return chw if dtype == "uint8" else to_unit(chw)


# --------------------------------------------------------------------------------------------
# generation targets and edit sources


class GenImage(NamedTuple):
    pixels: torch.Tensor  # uint8 [3, S, S]
    texts: list[str]  # micro-condition texts (empty for padded images)


def crop_resize_size(w: int, h: int, size: int) -> Size:
    """(w, h) scaled so that the shorter side is ``size``; the other side truncated (``int``)."""
    aspect = w / h
    return (int(size * aspect), size) if aspect > 1 else (size, int(size / aspect))


def crop_ranges(img_size: Size, size: int) -> Size:
    """(max_left, max_top) of a random crop of an image of ``img_size``: offsets are drawn in
    ``[0, max]``, both ends included."""
    rw, rh = crop_resize_size(img_size[0], img_size[1], size)
    return rw - size, rh - size


#: [256, 3]: level k of channel c as upstream weighs it: float64(float32(k) / 255) * LUMA_WEIGHTS[c]
_LUMA_LUT = (np.arange(256, dtype=np.float32) / 255.0).astype(np.float64)[:, None] * LUMA_WEIGHTS[None, :]


def luminance_contrast(img: Image.Image) -> tuple[float, float]:
    """Mean and population std of 0.2126 R + 0.7152 G + 0.0722 B of an RGB ``img`` on the [0, 1]
    scale: upstream's float32 pixels / 255 weighted in float64, summed R + G + B, looked up per
    level (the same float64 values, five times faster than converting the pixels)."""
    u = np.asarray(img, dtype=np.uint8)
    luma = _LUMA_LUT[u[..., 0], 0] + _LUMA_LUT[u[..., 1], 1] + _LUMA_LUT[u[..., 2], 2]
    return float(luma.mean()), float(luma.std())


def _stat_texts(img: Image.Image, keep_lum: bool, keep_con: bool) -> list[str]:
    if not (keep_lum or keep_con):
        return []
    lum, con = luminance_contrast(img)
    return ([f"LUMINANCE : {lum:.3f}"] if keep_lum else []) + ([f"CONTRAST : {con:.3f}"] if keep_con else [])


def random_crop(img: Image.Image, size: int, left: int, top: int, keep_lum: bool, keep_con: bool) -> GenImage:
    """Upstream's ``resize_and_random_crop`` with its draws given: ``left`` / ``top`` in
    ``[0, crop_ranges(...)]``, whether LUMINANCE / CONTRAST are kept."""
    img = to_rgb(img)
    w, h = img.size
    resized = img.resize(crop_resize_size(w, h, size), Image.Resampling.BILINEAR)
    crop = resized.crop((left, top, left + size, top + size))
    texts = [f"ORIGINAL WIDTH : {w}", f"ORIGINAL HEIGHT : {h}", f"TOP : {top}", f"LEFT : {left}"]
    return GenImage(to_chw_uint8(crop), texts + _stat_texts(crop, keep_lum, keep_con))


def _crop_box(crop_parms: Any) -> tuple[Any, ...]:
    try:
        box = tuple(crop_parms[0])
    except (TypeError, IndexError, KeyError) as e:
        raise SampleError("bad_value:crop_parms", f"crop_parms must be [[new_w, new_h, left, top, right, bottom]], "
                          f"got {crop_parms!r}", field="crop_parms") from e
    numbers = len(box) == 6 and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in box)
    if not numbers or not all(isinstance(v, (int, np.integer)) for v in box[:2]) or min(box[:2]) <= 0:
        raise SampleError("bad_value:crop_parms", f"crop_parms[0] must be [new_w, new_h, left, top, right, bottom] "
                          f"(integer sizes), got {box!r}", field="crop_parms")
    return box


def fixed_crop(img: Image.Image, crop_parms: Any, size: int, keep_lum: bool, keep_con: bool) -> GenImage:
    """Upstream's ``resize_and_crop`` with ``crop_parms[0]`` = [new_w, new_h, left, top, right,
    bottom]: resized to (new_w, new_h) (bilinear), cropped to the box (outside the image: black).
    Upstream asserts a generation size of 1024 and its VAE processor keeps any other box size, so a
    sample at another size or whose box is not ``size`` x ``size`` raises SampleError."""
    if size != 1024:
        raise SampleError("bad_value:crop_parms", f"crop_parms need gen_size 1024 (upstream asserts it), not {size}",
                          field="crop_parms")
    new_w, new_h, left, top, right, bottom = _crop_box(crop_parms)
    resized = to_rgb(img).resize((int(new_w), int(new_h)), Image.Resampling.BILINEAR)
    crop = resized.crop((left, top, right, bottom))
    if crop.size != (size, size):
        raise SampleError("bad_value:crop_parms", f"the crop_parms box gives a {crop.size} image, not {size} x {size}",
                          field="crop_parms")
    texts = [f"ORIGINAL WIDTH : {new_w}", f"ORIGINAL HEIGHT : {new_h}", f"TOP : {top}", f"LEFT : {left}"]
    return GenImage(to_chw_uint8(crop), texts + _stat_texts(crop, keep_lum, keep_con))


def pad_to_square_and_resize(img: Image.Image, size: int) -> Image.Image:
    """Upstream's padded generation image: centred on a black square of side max(w, h) by
    ``ImageOps.pad`` (offset ``round(d / 2)``, half to even), then resized to ``size`` (bicubic,
    Pillow's default filter of ``resize``)."""
    img = to_rgb(img)
    side = max(img.size)
    return ImageOps.pad(img, (side, side), color=BLACK).resize((size, size), Image.Resampling.BICUBIC)


def padded(img: Image.Image, size: int) -> GenImage:
    """A padded generation target or edit source: :func:`pad_to_square_and_resize`, no texts."""
    return GenImage(to_chw_uint8(pad_to_square_and_resize(img, size)), [])


def gen_image(
    img: Image.Image, size: int, rng: np.random.Generator, *, pad: bool = False, crop_parms: Any = None,
    stat_keep: float = 0.5,
) -> GenImage:
    """One generation target as upstream's ``process_image_gen``: ``crop_parms`` (when not None)
    wins over ``pad``; otherwise a random crop. Draws from ``rng``, in this order: left, top
    (random crop only; ``rng.integers(0, max + 1)``), then keep LUMINANCE, keep CONTRAST
    (``rng.random() < stat_keep``; not for padded images)."""
    if crop_parms is None and pad:
        return padded(img, size)
    if crop_parms is not None:
        keep_lum, keep_con = rng.random() < stat_keep, rng.random() < stat_keep
        return fixed_crop(img, crop_parms, size, bool(keep_lum), bool(keep_con))
    max_left, max_top = crop_ranges(img.size, size)
    left, top = int(rng.integers(0, max_left + 1)), int(rng.integers(0, max_top + 1))
    keep_lum, keep_con = rng.random() < stat_keep, rng.random() < stat_keep
    return random_crop(img, size, left, top, bool(keep_lum), bool(keep_con))


# --------------------------------------------------------------------------------------------
# edits: pixel difference text, edit-area token weights (on the uint8 pixels, as upstream's floats)


_LEVELS = torch.arange(256, dtype=torch.float32) / 255  # upstream's float32 pixel values
_PAIR_DIFF = (_LEVELS[:, None] - _LEVELS[None, :]).abs().flatten()  # |s - t| at s * 256 + t
_PAIR_ORDER = torch.argsort(_PAIR_DIFF, stable=True)
_PAIR_SORTED = _PAIR_DIFF[_PAIR_ORDER]


def pixel_diff(source: torch.Tensor, target: torch.Tensor, q: float = PIXEL_DIFF_QUANTILE) -> float:
    """Upstream's ``comput_pixel_diff``: the ``q`` quantile of |source - target| (float32, on
    [0, 1]) over the source's non-padding values (> 2/255, i.e. levels >= 3), times 100 (float32).

    Computed from the counts of the (source, target) level pairs and ``torch.quantile``'s own
    float32 rank arithmetic and interpolation, so it equals upstream's bit for bit without
    sorting millions of values. Raises SampleError when the source is all padding (upstream's
    quantile of nothing raises)."""
    s, t = source.reshape(-1).to(torch.int32), target.reshape(-1).to(torch.int32)
    counts = torch.bincount(s * 256 + t, minlength=256 * 256)
    counts[: 3 * 256] = 0  # source levels 0..2: padding
    cum = torch.cumsum(counts[_PAIR_ORDER], 0)
    n = int(cum[-1])
    if n == 0:
        raise SampleError("bad_value:pixel_diff", "the edit source is all black: no pixel to compare")
    ranks = torch.tensor([q], dtype=torch.float32) * (n - 1)  # as torch.quantile: q in the input's dtype
    below = ranks.to(torch.long)
    weights = ranks - below
    above = ranks.ceil().to(torch.long)
    pick = torch.searchsorted(cum, torch.cat([below, above]), right=True)  # the order statistics
    low, high = _PAIR_SORTED[pick[:1]], _PAIR_SORTED[pick[1:]]
    return float(low.lerp_(high, weights)[0] * 100)


def _median3(mask: torch.Tensor) -> torch.Tensor:
    """3 x 3 median of a [1, 1, h, w] map, zero beyond the border."""
    h, w = mask.shape[-2:]
    windows = F.unfold(mask, 3, padding=1)  # [1, 9, h * w]
    return windows.median(dim=1).values.view(1, 1, h, w)


def edit_mask(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Upstream's ``diff_mask``: [1, 1, H/16, W/16] float of 0 / 1, 1 where over half of a 16 x 16
    block changes by more than 20/255 in some channel, then a 3 x 3 median and a 3 x 3 max."""
    changed = ((to_unit(source) - to_unit(target)).abs().amax(0, keepdim=True) > 20 / 255).float()[None]
    blocks = (F.avg_pool2d(changed, VAE_DOWNSAMPLE) > 0.5).float()
    return F.max_pool2d(_median3(blocks), 3, stride=1, padding=1)


def gen_weights(
    sample: Mapping[str, Any], gen: Sequence[torch.Tensor], enc: Sequence[torch.Tensor] | None, area_weight: float,
) -> list[torch.Tensor] | None:
    """Upstream's ``image_gen_weight``: None without a ``reweight`` key; with a true ``reweight``, one
    target and one source: the edit mask scaled to [1, area_weight]; otherwise ones
    [1, 1, S/16, S/16] per target. Raises SampleError where upstream's code raises."""
    if "reweight" not in sample:
        return None
    if gen is None:
        raise SampleError("bad_value:reweight", "a reweight key on a sample without image_gen", field="reweight")
    if sample["reweight"] and len(gen) == 1:
        if enc is None:
            raise SampleError("bad_value:reweight", "reweight on a sample without image_gen_enc", field="reweight")
        if len(enc) == 1:
            return [edit_mask(enc[0], gen[0]) * (area_weight - 1) + 1]
    weights = [torch.ones(1, 1, g.shape[-1] // VAE_DOWNSAMPLE, g.shape[-1] // VAE_DOWNSAMPLE) for g in gen]
    return weights or None


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


def resize_and_pad(img: Image.Image, target: Size) -> Image.Image:
    """``img`` resized (bicubic) to fit ``target`` (W, H) keeping its aspect ratio (the other side
    rounded up), centred on black (LLaVA-NeXT's ``resize_and_pad_image``)."""
    ow, oh = img.size
    tw, th = target
    sw, sh = tw / ow, th / oh
    if sw < sh:
        nw, nh = tw, min(math.ceil(oh * sw), th)
    else:
        nw, nh = min(math.ceil(ow * sh), tw), th
    out = Image.new("RGB", (tw, th), BLACK)
    out.paste(img.resize((nw, nh), Image.Resampling.BICUBIC), ((tw - nw) // 2, (th - nh) // 2))
    return out


def tiles(img: Image.Image, side: int) -> list[Image.Image]:
    """``img`` cut into ``side`` x ``side`` tiles, row-major."""
    w, h = img.size
    return [img.crop((x, y, x + side, y + side)) for y in range(0, h, side) for x in range(0, w, side)]


def expand_to_square(img: Image.Image, color: tuple[int, int, int]) -> Image.Image:
    """``img`` on a square of side max(w, h) filled with ``color``, offset ``d // 2``."""
    w, h = img.size
    if w == h:
        return img
    out = Image.new(img.mode, (max(w, h), max(w, h)), tuple(color))
    out.paste(img, ((h - w) // 2, 0) if h > w else (0, (w - h) // 2))
    return out


def siglip_crop(img: Image.Image, cfg: ImageConfig) -> torch.Tensor:
    """SigLIP preprocessing of one crop: bicubic resize to und_size (none when it has that size),
    x * (1/255) (in float64, then float32), (x - mean) / std."""
    img = to_rgb(img)
    side = cfg.und_size
    if img.size != (side, side):
        img = img.resize((side, side), Image.Resampling.BICUBIC)
    t = (to_chw_uint8(img).double() * (1 / 255)).float()
    return t.sub_(cfg.mean).div_(cfg.std)


def siglip_anyres(img: Image.Image, cfg: ImageConfig, anyres: bool = True) -> tuple[torch.Tensor, Size]:
    """An understanding image as SigLIP crops and its (w, h).

    With ``anyres`` (upstream's ``process_anyres_image``): ``[1 + n_tiles, 3, S, S]``, the whole
    image resized to S x S first (padded to a square with the mean colour before, with
    ``cfg.anyres_pad_base``: upstream's ``DEBUG_FIX_PADDING``), then the tiles of the best
    ``cfg.anyres_grid`` resolution, row-major. Without (upstream's "pad", for samples with several images): ``[1, 3, S, S]``, the
    image padded to a square with :attr:`ImageConfig.mean_color`.
    """
    img = to_rgb(img)
    if not anyres:
        return siglip_crop(expand_to_square(img, cfg.mean_color), cfg)[None], img.size
    grid = select_best_resolution(img.size, cfg.anyres_grid)
    base = expand_to_square(img, cfg.mean_color) if cfg.anyres_pad_base else img
    crops = [base] + tiles(resize_and_pad(img, grid), cfg.und_size)
    return torch.stack([siglip_crop(c, cfg) for c in crops]), img.size


# --------------------------------------------------------------------------------------------
# the per-sample transform


def _paths(sample: Mapping[str, Any], role: str) -> list[str] | None:
    """The paths of ``role``: None when the key is absent or None (upstream's "no image")."""
    v = sample.get(role)
    if v is None:
        return None
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _lookup(images: Mapping[str, Image.Image], path: str, role: str) -> Image.Image:
    try:
        return images[path]
    except KeyError:
        raise SampleError("image_missing", f"{role} image {path!r} was not loaded", field=role) from None


_SCORES = (("gen_score", "SCORE", 1), ("hpsv2", "HPS", 10))


def micro_conds_texts(sample: Mapping[str, Any], per_image: Sequence[Sequence[str]]) -> list[str]:
    """Each generation image's texts, then ``SCORE : gen_score[i]`` and ``HPS : hpsv2[i] * 10``
    (3 decimals) when the sample has those keys, ``; ``-joined. Raises SampleError where upstream's
    formatting raises (a missing entry, a value that is not a number)."""
    texts = [list(t) for t in per_image]
    for key, label, scale in _SCORES:
        if key not in sample:
            continue
        values = sample[key]
        for i, entry in enumerate(texts):
            try:
                value = values[i] if scale == 1 else values[i] * scale
                entry.append(f"{label} : {value:.3f}")
            except (TypeError, ValueError, IndexError, KeyError) as e:
                raise SampleError(f"bad_value:{key}", f"{key} has no number for generation image {i}: {values!r}",
                                  field=key) from e
    return ["; ".join(t) for t in texts]


def with_pixel_diff(conversations: Sequence[Mapping[str, Any]], diff: float) -> list[dict]:
    """The conversations with ``; PIXEL_DIFF : {diff:.3f} ;`` appended to the first turn."""
    if not conversations:
        raise SampleError("bad_value:conversations", "pixel_diff on a sample without conversations")
    turns = [dict(t) for t in conversations]
    turns[0]["value"] = turns[0]["value"] + f"; PIXEL_DIFF : {diff:.3f} ;"
    return turns


class ImageTransform:
    """Turns a converted sample (upstream's payload) and its loaded images into tensors, as
    upstream's ``_get_item`` does before tokenizing; picklable (holds only ``cfg``).

    Output: the sample's own keys (``conversations`` with the PIXEL_DIFF text appended to the first
    turn when ``pixel_diff`` is set on an edit with one source and one target) and

    * ``gen_pixels``: list, one ``[3, S, S]`` per ``image_gen`` entry (uint8, or float32 in [0, 1]
      by ``cfg.gen_dtype``); ``gen_enc_pixels``: the same for ``image_gen_enc`` (always padded);
    * ``micro_conds_texts``: None without ``image_gen``, else one ``; ``-joined text per entry
      (the 30 % drop happens at tokenization, in ``preprocess_multimodal``);
    * ``und_pixels``: list of float ``[n_i, 3, und, und]`` SigLIP crops; ``und_sizes``: list of (w, h);
    * ``gen_weight``: only when upstream makes token weights (a ``reweight`` key): a list of
      float ``[1, 1, S/16, S/16]``.

    Draws from ``rng``: per generation image in order, see :func:`gen_image`.
    """

    def __init__(self, cfg: ImageConfig | None = None):
        self.cfg = cfg or ImageConfig()

    def __repr__(self) -> str:
        return f"ImageTransform({self.cfg!r})"

    def __call__(self, sample: Mapping[str, Any], images: Mapping[str, Image.Image], rng: np.random.Generator) -> dict:
        cfg, size = self.cfg, self.cfg.gen_size
        out = dict(sample)
        enc_paths = _paths(sample, "image_gen_enc")
        enc = None if enc_paths is None else [
            padded(_lookup(images, p, "image_gen_enc"), size).pixels for p in enc_paths]
        gen, texts = None, None
        gen_paths = _paths(sample, "image_gen")
        if gen_paths is not None:
            made = [gen_image(_lookup(images, p, "image_gen"), size, rng, pad=bool(sample.get("pad_image_gen", False)),
                              crop_parms=sample.get("crop_parms"), stat_keep=cfg.stat_keep) for p in gen_paths]
            gen = [m.pixels for m in made]
            texts = micro_conds_texts(sample, [m.texts for m in made])
        und_paths = _paths(sample, "image") or []
        anyres = len(und_paths) <= cfg.max_und_images_anyres
        und = [siglip_anyres(_lookup(images, p, "image"), cfg, anyres=anyres) for p in und_paths]
        if sample.get("pixel_diff", False) and gen is not None and enc is not None and len(gen) == len(enc) == 1:
            out["conversations"] = with_pixel_diff(sample.get("conversations") or [], pixel_diff(enc[0], gen[0]))
        weights = gen_weights(sample, gen, enc, cfg.edit_area_weight)
        if weights is not None:
            out["gen_weight"] = weights
        out["gen_pixels"] = [as_dtype(p, cfg.gen_dtype) for p in gen or []]
        out["gen_enc_pixels"] = [as_dtype(p, cfg.gen_dtype) for p in enc or []]
        out["micro_conds_texts"] = texts
        out["und_pixels"] = [t for t, _ in und]
        out["und_sizes"] = [s for _, s in und]
        return out
