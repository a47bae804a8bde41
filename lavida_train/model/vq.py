"""The frozen VQ-VAE that turns generation targets and edit sources into codebook ids.

:class:`FrozenVQ` wraps a diffusers ``VQModel`` (as ``.model``) with Meissonic's / aMUSEd's
architecture: ``len(block_out_channels)`` ``DownEncoderBlock2D`` / ``UpDecoderBlock2D`` stages
(downsampling 2 ** (stages - 1) = 16), SiLU, group norm (32 groups, fewer when the channels are
narrow, as in the tiny preset), no mid-block attention, codebook lookup on decode. With
``VQConfig.path`` the weights (and their own config) come from ``VQModel.from_pretrained`` -- a
model folder, or a pipeline folder with a ``vqvae`` subfolder.

Pixels: this VQ-VAE takes RGB in [0, 1] (Meissonic's image processor does not normalise), which
is what :mod:`lavida_data.transforms.images` produces, so no rescaling happens here.

The module never trains: every parameter has ``requires_grad=False``, ``train()`` keeps it in
eval mode, :meth:`encode_ids` runs under ``no_grad`` with autocast off (in the module's own
dtype, fp32 unless cast). Its keys (``vq.model.*``) are the release's ``model.vqvae.*`` (277
tensors at full size), which :func:`lavida_train.checkpoint.load_checkpoint` loads by name (or
skips by name: ``ModelConfig.checkpoint_vq``).
"""

from __future__ import annotations

import math
import os
import warnings

import torch
from torch import nn

from .config import VQConfig


def build_vqmodel(cfg: VQConfig) -> nn.Module:
    """A randomly initialised diffusers ``VQModel`` with ``cfg``'s sizes (or the one at ``cfg.path``)."""
    with warnings.catch_warnings():  # diffusers' import warns about CUDA autocast on CPU-only hosts
        warnings.simplefilter("ignore", UserWarning)
        from diffusers import VQModel

    if cfg.path:
        sub = "vqvae" if not os.path.isfile(os.path.join(cfg.path, "config.json")) and os.path.isdir(
            os.path.join(cfg.path, "vqvae")
        ) else None
        model = VQModel.from_pretrained(cfg.path, subfolder=sub) if sub else VQModel.from_pretrained(cfg.path)
        if model.config.num_vq_embeddings != cfg.codebook_size:
            raise ValueError(
                f"VQ at {cfg.path!r} has {model.config.num_vq_embeddings} codes, the config says {cfg.codebook_size}"
            )
        return model
    stages = len(cfg.block_out_channels)
    if 2 ** (stages - 1) != cfg.downsample:
        raise ValueError(f"{stages} VQ stages downsample by {2 ** (stages - 1)}, the config says {cfg.downsample}")
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * stages,
        up_block_types=("UpDecoderBlock2D",) * stages,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        act_fn="silu",
        latent_channels=cfg.latent_channels,
        num_vq_embeddings=cfg.codebook_size,
        norm_num_groups=min(32, math.gcd(*cfg.block_out_channels)),
        norm_type="group",
        mid_block_add_attention=False,
        lookup_from_codebook=True,
        force_upcast=False,
    )


class FrozenVQ(nn.Module):
    """The VQ-VAE, frozen: :meth:`encode_ids` pixels -> ids, :meth:`decode_ids` ids -> pixels."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.config = cfg
        self.model = build_vqmodel(cfg)
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> "FrozenVQ":
        """Stays in eval mode whatever ``mode`` is."""
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    @torch.no_grad()
    def encode_ids(self, pixels: torch.Tensor) -> torch.Tensor:
        """RGB ``pixels`` [N, 3, S, S], float in [0, 1] or uint8 (divided by 255 on the model's
        device: the loader hands over a quarter of the bytes) -> codebook ids, LongTensor [N, S / 16, S / 16]."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels [N, 3, S, S], got {tuple(pixels.shape)}")
        if pixels.dtype == torch.uint8:
            x = pixels.to(device=self.device).to(self.dtype).div_(255.0)
        else:
            x = pixels.to(device=self.device, dtype=self.dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            latents = self.model.encode(x).latents
            _, _, (_, _, idx) = self.model.quantize(latents)
        n, _, h, w = latents.shape
        return idx.reshape(n, h, w).long()

    @torch.no_grad()
    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Codebook ids [N, h, w] -> RGB pixels [N, 3, 16 h, 16 w] clamped to [0, 1]."""
        n, h, w = ids.shape
        shape = (n, h, w, self.model.config.vq_embed_dim or self.model.config.latent_channels)
        with torch.autocast(device_type=ids.device.type, enabled=False):
            out = self.model.decode(ids.to(self.device).reshape(-1), force_not_quantize=True, shape=shape).sample
        return out.float().clamp_(0, 1)
