"""The understanding path: SigLIP -> conv resampler -> projector, and the anyres merge.

Modules (assembled under ``model.`` by :class:`~lavida_train.model.lavida.LavidaO`):

* ``vision_tower``: :class:`SiglipTower`, a holder whose only child is ``vision_tower``, a
  transformers ``SiglipVisionModel`` -- so the keys read
  ``model.vision_tower.vision_tower.vision_model.*``, the layout of upstream's
  ``SigLipVisionTower`` (checked against upstream's model code; see
  :mod:`lavida_train.model.mapping`). As upstream, the last encoder layer is *removed* (its
  weights are not saved) and there is no pooling head; the features are the output of the
  remaining layers before ``post_layernorm`` (= ``hidden_states[-2]`` of the full model).
  ``post_layernorm`` stays as a (then unused) parameter, as in the release.
* ``vision_resampler``: :class:`SpatialPool`, upstream's ``spatial_pool`` resampler in ``conv``
  mode: its ``pool`` is a ``Conv2d(h, h, 2, stride=2)`` with bias, initialised as 2 x 2 average pooling
  (weight 1/4 on the diagonal channel pairs, bias 0): 27 x 27 patches -> 13 x 13 (keys
  ``vision_resampler.pool.{weight, bias}``).
* ``mm_projector``: ``Sequential(Linear(h, d), GELU(), Linear(d, d))`` (keys ``mm_projector.0``,
  ``mm_projector.2``).
* ``image_newline``: a [d_model] parameter (owned by the assembling module).

Anyres merge (:func:`merge_anyres`, upstream's ``spatial_unpad`` merge): an image of one crop
becomes its t * t features followed by one ``image_newline`` (t * t + 1 tokens: 170 at 384 px).
An image with tiles becomes the base crop's t * t features (no newline), then the tiles laid out
as one (rows * t) x (cols * t) map, unpadded to the original aspect ratio (LLaVA-NeXT's
``unpad_image``, when the original size is known), with ``image_newline`` after every row.
The data side writes one ``-200`` per image whatever its token count (it never counts feature
tokens), so the model alone decides the layout.

The tile grid (rows, cols) is not in the pixels; :func:`infer_grid` recovers it from the number
of tiles, the original size and the anyres pinpoints (LLaVA-NeXT's ``select_best_resolution``
among the pinpoints with that many tiles: the data side's own choice), falling back to the
factorisation closest to the image's aspect ratio; callers that know the grid can pass it.

:data:`ANYRES_TILES` is the reference's pinpoint list in tiles, (W, H) = (384, 768), (768, 384),
(768, 768), (1152, 384), (384, 1152) at 384 px.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .config import SiglipConfig

Size = tuple[int, int]  # (width, height)

#: the reference's anyres pinpoints as (cols, rows) of crops, in its order
ANYRES_TILES: tuple[Size, ...] = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))


class SiglipTower(nn.Module):
    """SigLIP without its last layer and head; ``forward(pixels [n, 3, S, S]) -> [n, P, h]``."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        if cfg.path:
            tower = SiglipVisionModel.from_pretrained(cfg.path, vision_use_head=False, attn_implementation="sdpa")
            got = (tower.config.hidden_size, tower.config.image_size, tower.config.patch_size)
            want = (cfg.hidden_size, cfg.image_size, cfg.patch_size)
            if got != want:
                raise ValueError(
                    f"SigLIP at {cfg.path!r} has (hidden_size, image_size, patch_size) = {got}, the config says {want}"
                )
        else:
            tower = SiglipVisionModel(
                SiglipVisionConfig(
                    hidden_size=cfg.hidden_size,
                    intermediate_size=cfg.intermediate_size,
                    num_hidden_layers=cfg.num_hidden_layers,
                    num_attention_heads=cfg.num_attention_heads,
                    image_size=cfg.image_size,
                    patch_size=cfg.patch_size,
                    vision_use_head=False,
                    attn_implementation="sdpa",
                )
            )
        if len(tower.vision_model.encoder.layers) < 2:
            raise ValueError("SigLIP needs at least 2 layers (the last one is dropped)")
        del tower.vision_model.encoder.layers[-1]
        tower.config.num_hidden_layers = len(tower.vision_model.encoder.layers)
        self.vision_tower = tower
        self.hidden_size = cfg.hidden_size
        self.grid = cfg.image_size // cfg.patch_size

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.vision_model.embeddings.patch_embedding.weight.dtype

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        vm = self.vision_tower.vision_model
        h = vm.embeddings(pixels.to(self.dtype))
        return vm.encoder(inputs_embeds=h).last_hidden_state


def init_avg_pool_(conv: nn.Conv2d) -> nn.Conv2d:
    """Set a square ``Conv2d(c, c, k)`` to k x k average pooling per channel (bias 0)."""
    out_c, in_c, kh, kw = conv.weight.shape
    if out_c != in_c:
        raise ValueError("average-pooling init needs as many input as output channels")
    with torch.no_grad():
        conv.weight.zero_()
        idx = torch.arange(out_c)
        conv.weight[idx, idx] = 1.0 / (kh * kw)
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


class SpatialPool(nn.Module):
    """``vision_resampler``: ``pool``, a 2 x 2 stride-2 conv with bias (upstream's ``SpatialPool``
    in ``conv`` mode); ``forward`` maps [n, h, H, W] -> [n, h, H // 2, W // 2]."""

    def __init__(self, hidden: int):
        super().__init__()
        self.pool = init_avg_pool_(nn.Conv2d(hidden, hidden, kernel_size=2, stride=2, bias=True))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.pool(grid)


def build_resampler(hidden: int) -> SpatialPool:
    """``vision_resampler``, initialised as 2 x 2 average pooling."""
    return SpatialPool(hidden)


def build_projector(mm_hidden: int, d_model: int) -> nn.Sequential:
    """``mm_projector``: Linear(mm_hidden, d) - GELU - Linear(d, d), with biases."""
    return nn.Sequential(nn.Linear(mm_hidden, d_model), nn.GELU(), nn.Linear(d_model, d_model))


def encode_crops(
    tower: SiglipTower, resampler: SpatialPool, projector: nn.Module, pixels: torch.Tensor
) -> torch.Tensor:
    """SigLIP crops [n, 3, S, S] -> projected features [n, t, t, d_model] (t = (S / patch) // 2)."""
    feats = tower(pixels)  # [n, P, h]
    n, p, h = feats.shape
    side = math.isqrt(p)
    if side * side != p:
        raise ValueError(f"SigLIP gave {p} patches, not a square grid")
    grid = feats.transpose(1, 2).reshape(n, h, side, side)
    pooled = resampler(grid.to(resampler.pool.weight.dtype))  # [n, h, t, t]
    return projector(pooled.permute(0, 2, 3, 1))


def infer_grid(
    n_tiles: int,
    size: Size | None,
    pinpoints: Sequence[Size] | None = None,
    tile: int | None = None,
) -> tuple[int, int]:
    """(rows, cols) of ``n_tiles`` anyres tiles of an image of ``size`` = (w, h).

    With ``pinpoints`` ((W, H) in pixels, multiples of ``tile``): LLaVA-NeXT's
    ``select_best_resolution`` among the pinpoints holding ``n_tiles`` tiles -- the data side's
    choice whenever its pinpoints are these (or a subset, in the same order). Otherwise, or
    when no pinpoint fits: among rows * cols == n_tiles the closest cols / rows to w / h (log
    scale), ties to the squarer grid, then to more rows.
    """
    if n_tiles < 1:
        raise ValueError(f"need at least one tile, got {n_tiles}")
    if pinpoints and tile and size:
        fits = [(int(w), int(h)) for w, h in pinpoints if (w // tile) * (h // tile) == n_tiles]
        if fits:
            from lavida_data.transforms.images import select_best_resolution

            w, h = select_best_resolution(size, fits)
            return h // tile, w // tile
    aspect = math.log(size[0] / size[1]) if size else 0.0
    best = None
    for rows in range(n_tiles, 0, -1):  # more rows first: wins exact ties
        if n_tiles % rows:
            continue
        cols = n_tiles // rows
        key = (round(abs(math.log(cols / rows) - aspect), 9), max(rows, cols))
        if best is None or key < best[0]:
            best = (key, (rows, cols))
    assert best is not None
    return best[1]


def unpad(features: torch.Tensor, size: Size) -> torch.Tensor:
    """LLaVA-NeXT's ``unpad_image`` on a [H, W, d] map: drop the rows / columns that only cover
    the padding added when an image of ``size`` = (w, h) was fitted into the tile grid."""
    ow, oh = size
    ch, cw = features.shape[:2]
    if ow / oh > cw / ch:
        new_h = int(oh * (cw / ow))
        pad = (ch - new_h) // 2
        return features[pad : ch - pad]
    new_w = int(ow * (ch / oh))
    pad = (cw - new_w) // 2
    return features[:, pad : cw - pad]


def with_newlines(features: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """[H, W, d] map -> [H * (W + 1), d] tokens, ``newline`` after each row."""
    h, _, d = features.shape
    nl = newline.to(features.dtype).view(1, 1, d).expand(h, 1, d)
    return torch.cat((features, nl), dim=1).reshape(-1, d)


def merge_anyres(
    features: torch.Tensor,
    newline: torch.Tensor,
    size: Size | None = None,
    grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """One image's crop features [n, t, t, d] (base first, then tiles row-major) -> tokens [T, d].

    One crop: its features flat, then one newline. Several: base features flat, then the tile map
    (unpadded when ``size`` is known) with newline rows. ``grid`` = (rows, cols); default
    :func:`infer_grid` without pinpoints (the caller that knows them passes the grid).
    """
    n, t, t2, d = features.shape
    if n == 1:
        return torch.cat((features[0].reshape(-1, d), newline.to(features.dtype).view(1, d)), dim=0)
    rows, cols = grid if grid is not None else infer_grid(n - 1, size)
    if rows * cols != n - 1:
        raise ValueError(f"grid {rows}x{cols} does not hold {n - 1} tiles")
    tiles = features[1:].view(rows, cols, t, t2, d).permute(0, 2, 1, 3, 4).reshape(rows * t, cols * t2, d)
    if size is not None:
        tiles = unpad(tiles, size)
    return torch.cat((features[0].reshape(-1, d), with_newlines(tiles, newline)), dim=0)
