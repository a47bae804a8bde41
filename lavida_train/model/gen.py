"""The generation modules: VQ ids -> image-token embeddings, image hidden states -> VQ logits.

Names and structure are the released checkpoint's (width gen_width, no biases, RMSNorm eps
gen_norm_eps = 1e-6; upstream's ``gen_mlp_type: dit2`` with ``downsample: true``):

* ``gen_embedding`` = Sequential(Embedding(codebook + 256, gw), RMSNorm, Linear(gw, gw))
* ``downsample_gen.downsample.{norm, conv}``: RMSNorm over channels, zero pad right / bottom by
  one, Conv2d(gw, gw, 2, stride 2) (diffusers' ``Downsample2D`` with ``padding=0``, as upstream's
  ``Simple_UVitBlock``)
* ``gen_embedding_2`` = Sequential(RMSNorm, Linear(gw, gw))
* ``gen_predictor_2`` = Sequential(RMSNorm, Linear(gw, gw))
* ``upsample_gen.upsample.{norm, conv}``: RMSNorm over channels, ConvTranspose2d(gw, gw, 2, stride 2)
  (diffusers' ``Upsample2D`` with ``use_conv_transpose``)
* ``gen_predictor`` = Sequential(Linear(gw, gw), RMSNorm, Linear(gw, codebook))

Embedding: ``gen_embedding`` per id -> (merge: ``downsample_gen`` on the [gw, h, w] map, h x w ->
h/2 x w/2) -> flatten row-major -> ``gen_embedding_2``. Prediction, as upstream's
``call_gen_predictor``: (merge: ``upsample_gen`` on the [gw, h/2, w/2] map, back to h x w) ->
``gen_predictor_2`` -> ``gen_predictor``.

The merge flag. Upstream merges whenever the model has ``downsample`` and the run does not set
``SKIP_DOWN_SAMPLE`` (set only by the 256-px stage). ``merge=None`` here means "merge when the id
grid's longer side exceeds 32", which gives the same choice in every released stage: 1024 px
(64 x 64 ids -> 1024 tokens) merges, 256 px (16 x 16 -> 256 tokens) does not. ``merge=True`` /
``False`` forces the path (any even grid can be merged). :func:`resolve_merge` applies the rule
and :func:`tokens_per_image` gives the resulting sequence slots per image. ``downsample_gen`` and
``upsample_gen`` exist whatever the resolution (so every checkpoint loads), and get no gradient
when nothing is merged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import ChannelRMSNorm, RMSNorm

#: the longest unmerged id-grid side (the default merge rule: merge when a side exceeds it)
MERGE_ABOVE = 32

GEN_MODULES = ("gen_embedding", "downsample_gen", "gen_embedding_2", "gen_predictor_2", "upsample_gen", "gen_predictor")


class _Resample(nn.Module):
    """``norm`` (RMSNorm over channels) then ``conv``; ``pad`` right / bottom by one first when set."""

    def __init__(self, conv: nn.Module, width: int, eps: float, pad: bool):
        super().__init__()
        self.norm = ChannelRMSNorm(width, eps)
        self.conv = conv
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.pad:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class GenDownsample(nn.Module):
    """``downsample_gen``: [N, gw, h, w] -> [N, gw, h / 2, w / 2] (keys ``downsample.{norm, conv}``)."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.downsample = _Resample(nn.Conv2d(width, width, 2, stride=2, bias=False), width, eps, pad=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x)


class GenUpsample(nn.Module):
    """``upsample_gen``: [N, gw, h / 2, w / 2] -> [N, gw, h, w] (keys ``upsample.{norm, conv}``)."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.upsample = _Resample(nn.ConvTranspose2d(width, width, 2, stride=2, bias=False), width, eps, pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


def build_gen_modules(cfg: ModelConfig) -> dict[str, nn.Module]:
    """The six generation modules, by reference name."""
    gw, eps = cfg.gen_width, cfg.gen_norm_eps
    return {
        "gen_embedding": nn.Sequential(
            nn.Embedding(cfg.gen_embed_rows, gw), RMSNorm(gw, eps), nn.Linear(gw, gw, bias=False)
        ),
        "downsample_gen": GenDownsample(gw, eps),
        "gen_embedding_2": nn.Sequential(RMSNorm(gw, eps), nn.Linear(gw, gw, bias=False)),
        "gen_predictor_2": nn.Sequential(RMSNorm(gw, eps), nn.Linear(gw, gw, bias=False)),
        "upsample_gen": GenUpsample(gw, eps),
        "gen_predictor": nn.Sequential(
            nn.Linear(gw, gw, bias=False), RMSNorm(gw, eps), nn.Linear(gw, cfg.vq.codebook_size, bias=False)
        ),
    }


def resolve_merge(h: int, w: int, merge: bool | None = None) -> bool:
    """Whether an ``h`` x ``w`` id grid is merged 2 x 2 (``merge`` None: side > 32)."""
    m = max(h, w) > MERGE_ABOVE if merge is None else bool(merge)
    if m and (h % 2 or w % 2):
        raise ValueError(f"a {h}x{w} VQ grid cannot be merged 2x2 (odd side)")
    return m


def tokens_per_image(h: int, w: int, merge: bool | None = None) -> int:
    """Sequence slots of one ``h`` x ``w`` id grid: h * w, or (h / 2) * (w / 2) when merged."""
    return (h // 2) * (w // 2) if resolve_merge(h, w, merge) else h * w


def embed_image_ids(m: nn.Module, ids: torch.Tensor, merge: bool) -> torch.Tensor:
    """VQ ids [N, h, w] -> image-token embeddings [N, T, gen_width] (``m`` holds the modules)."""
    x = m.gen_embedding(ids)  # [N, h, w, gw]
    if merge:
        x = m.downsample_gen(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return m.gen_embedding_2(x.reshape(x.shape[0], -1, x.shape[-1]))


def predict_image_logits(m: nn.Module, hidden: torch.Tensor, grid: tuple[int, int], merge: bool) -> torch.Tensor:
    """Image-token hidden states [N, T, gen_width] -> VQ logits [N, h, w, codebook].

    Upstream's order: ``upsample_gen`` (merged grids only), then ``gen_predictor_2``, then
    ``gen_predictor``."""
    n, _, gw = hidden.shape
    h, w = grid
    if merge:
        x = hidden.reshape(n, h // 2, w // 2, gw).permute(0, 3, 1, 2)
        x = m.upsample_gen(x).permute(0, 2, 3, 1)
    else:
        x = hidden.reshape(n, h, w, gw)
    return m.gen_predictor(m.gen_predictor_2(x))
