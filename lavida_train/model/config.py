"""Model settings: sizes, paths, and the ``tiny`` preset that needs no files."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiglipConfig(Strict):
    """The understanding encoder; ``path`` loads a pretrained SiglipVisionModel from a local folder."""

    path: str | None = None
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    image_size: int = 384
    patch_size: int = 14


class VQConfig(Strict):
    """The frozen VQ-VAE (diffusers VQModel); ``path`` loads pretrained weights from a local folder."""

    path: str | None = None
    codebook_size: int = 8192
    downsample: int = 16
    latent_channels: int = 64
    block_out_channels: list[int] = Field(default_factory=lambda: [128, 256, 256, 512, 768])
    layers_per_block: int = 2


class ModelConfig(Strict):
    """LaViDa-O's sizes (the released model's by default) and where its parts come from."""

    preset: Literal["full", "tiny"] = "full"
    tokenizer: str | None = Field(None, description="tokenizer folder (LLaDA-8B-Instruct's); built for tiny")
    checkpoint: str | None = Field(
        None, description="the base checkpoint: the release as published (a folder of safetensors shards with "
                          "model.safetensors.index.json), one .safetensors / .pt file, or a Composer checkpoint; "
                          "loaded strictly by lavida_train.checkpoint.load_checkpoint")
    checkpoint_vq: Literal["auto", "load", "skip"] = Field(
        "auto", description="the checkpoint's VQ-VAE (the release's model.vqvae.*): 'auto' loads it when present, "
                            "'load' requires it, 'skip' leaves it out by name (the VQ then comes from vq.path)")
    vocab_size: int = 127378
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    mlp_hidden: int = 12288
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5
    dual_tower_layers: int = Field(16, description="layers 0..this (inclusive) attend jointly")
    gen_width: int = 2048
    gen_mlp_hidden: int = 8192
    gen_norm_eps: float = 1e-6
    enc_use_image_branch: bool = True
    siglip: SiglipConfig = Field(default_factory=SiglipConfig)
    vq: VQConfig = Field(default_factory=VQConfig)
    mm_hidden: int | None = Field(None, description="projector input width; default: siglip.hidden_size")
    activation_checkpointing: bool = False

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def image_mask_id(self) -> int:
        return self.vq.codebook_size + 1  # 8193 for the released model

    @property
    def gen_embed_rows(self) -> int:
        return self.vq.codebook_size + 256

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 0 <= self.dual_tower_layers < self.n_layers:
            raise ValueError(f"dual_tower_layers must be in [0, n_layers), got {self.dual_tower_layers}")
        return self


def tiny_config(**overrides) -> ModelConfig:
    """A 2-layer model with both towers, a small SigLIP and a small VQ-VAE: seconds on a CPU."""
    base = dict(
        preset="tiny", vocab_size=0, d_model=64, n_layers=2, n_heads=4, mlp_hidden=128, dual_tower_layers=0,
        gen_width=32, gen_mlp_hidden=64,
        siglip=SiglipConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=56, patch_size=14),
        vq=VQConfig(codebook_size=64, downsample=16, latent_channels=8, block_out_channels=[8, 8, 16, 16, 16],
                    layers_per_block=1),
    )
    base.update(overrides)
    return ModelConfig(**base)
