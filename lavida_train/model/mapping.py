"""Released-checkpoint keys -> our parameters.

Our module names were chosen so that the mapping is the identity: a LaViDa-O checkpoint (LLaVA
layout on top of HF LLaDA) names its weights ``model.transformer.*`` (LLaDA's ``LLaDAModel``
keeps its layers in a ``transformer`` ModuleDict), ``model.vision_tower.vision_tower.vision_model.*``
(LLaVA's ``SigLipVisionTower`` holds the HF ``SiglipVisionModel`` as ``vision_tower``; last layer
deleted, head replaced by ``Identity``), ``model.vision_resampler.*``, ``model.mm_projector.{0,2}.*``,
``model.image_newline`` and ``model.gen_*`` / ``model.*_gen`` for the generation modules, and our
:class:`~lavida_train.model.lavida.LavidaO` has exactly these keys. :data:`REFERENCE_KEYS` lists
the prefixes (reference -> ours); :data:`ALIASES` holds the renames for other spellings of the same
weights that we accept. The VQ-VAE (``vq.*``) is never mapped: it loads from ``VQConfig.path``.

Uncertain names (the reference document does not spell them out; LLaVA's conventions or the
brief's module layout were assumed): the SigLIP holder level and its contents (26 of 27 layers,
``post_layernorm`` kept, no ``head``), ``model.vision_resampler.{weight,bias}`` (a bare conv) and
the index layout of the generation ``Sequential`` s (``downsample_gen.{0,2}``: the pad is index 1;
``upsample_gen.{0,1}``). If a released checkpoint differs, add an entry to :data:`ALIASES` (and a
prefix to :data:`IGNORED_PREFIXES` for weights we do not have).
"""

from __future__ import annotations

import glob
import os
from typing import Mapping, NamedTuple

import torch
from torch import nn

from .config import ModelConfig

#: reference key prefix -> our key prefix (identity: our names are the reference's)
REFERENCE_KEYS: dict[str, str] = {
    p: p
    for p in (
        "model.transformer.",
        "model.vision_tower.vision_tower.",
        "model.vision_resampler.",
        "model.mm_projector.",
        "model.image_newline",
        "model.gen_embedding.",
        "model.downsample_gen.",
        "model.gen_embedding_2.",
        "model.gen_predictor_2.",
        "model.upsample_gen.",
        "model.gen_predictor.",
    )
}

#: other spellings of the same weights -> our prefix (applied before :data:`REFERENCE_KEYS`)
ALIASES: dict[str, str] = {
    # a state dict of the HF SiglipVisionModel stored one level up (no LLaVA holder)
    "model.vision_tower.vision_model.": "model.vision_tower.vision_tower.vision_model.",
}

#: key prefixes never loaded from a reference checkpoint (the frozen VQ-VAE)
IGNORED_PREFIXES: tuple[str, ...] = ("vq.",)


class LoadResult(NamedTuple):
    missing: list[str]
    unexpected: list[str]


def map_key(key: str) -> str | None:
    """Our name for a reference ``key``; None when it is ignored (VQ). Unknown keys pass unchanged."""
    if key.startswith(IGNORED_PREFIXES):
        return None
    for table in (ALIASES, REFERENCE_KEYS):
        for src, dst in table.items():
            if key.startswith(src):
                return dst + key[len(src):]
    return key


def load_reference_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> LoadResult:
    """Load a reference-named ``state_dict`` into ``model`` (a ``LavidaO``), VQ excluded.

    Keys are mapped by :func:`map_key`. With ``strict`` any missing or unexpected key (outside
    ``vq.*``) raises ``KeyError`` before anything is copied; a shape mismatch always raises
    ``ValueError``. Returns the missing and unexpected names (empty when strict).
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        ours = map_key(key)
        if ours is None:
            continue
        if ours in mapped:
            raise KeyError(f"two checkpoint keys map onto {ours!r}")
        mapped[ours] = value
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(IGNORED_PREFIXES)}
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    if strict and (missing or unexpected):
        raise KeyError(
            f"checkpoint does not match the model: {len(missing)} missing {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, {len(unexpected)} unexpected {unexpected[:8]}"
            f"{'...' if len(unexpected) > 8 else ''}"
        )
    bad = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad:
        raise ValueError(f"shape mismatch for {len(bad)} key(s): " + "; ".join(bad[:8]))
    model.load_state_dict({k: v for k, v in mapped.items() if k in own}, strict=False)
    return LoadResult(missing, unexpected)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` / ``.pt`` / ``.bin`` file or a folder of ``*.safetensors`` shards."""
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {path!r}")
    else:
        files = [path]
    out: dict[str, torch.Tensor] = {}
    for f in files:
        if f.endswith(".safetensors"):
            from safetensors.torch import load_file

            out.update(load_file(f))
        else:
            out.update(torch.load(f, map_location="cpu", weights_only=True))
    return out


def reference_shapes(cfg: ModelConfig, vocab_size: int | None = None) -> dict[str, tuple[int, ...]]:
    """Every parameter name of the reference checkpoint (VQ excluded) and its shape at ``cfg``.

    Written out from the reference document (not from our modules), so it can check them.
    ``vocab_size`` overrides ``cfg.vocab_size``.
    """
    vocab = cfg.vocab_size if vocab_size is None else vocab_size
    d, mlp, gw, gmlp = cfg.d_model, cfg.mlp_hidden, cfg.gen_width, cfg.gen_mlp_hidden
    k = cfg.vq.codebook_size
    s = cfg.siglip
    h = s.hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    t = "model.transformer."
    shapes[t + "wte.weight"] = (vocab, d)
    for i in range(cfg.n_layers):
        b = f"{t}blocks.{i}."
        shapes.update({
            b + "attn_norm.weight": (d,),
            b + "q_proj.weight": (d, d),
            b + "k_proj.weight": (d, d),
            b + "v_proj.weight": (d, d),
            b + "attn_out.weight": (d, d),
            b + "ff_norm.weight": (d,),
            b + "ff_proj.weight": (mlp, d),
            b + "up_proj.weight": (mlp, d),
            b + "ff_out.weight": (d, mlp),
            b + "attn_norm_vision.weight": (gw,),
            b + "q_proj_vision.weight": (d, gw),
            b + "k_proj_vision.weight": (d, gw),
            b + "v_proj_vision.weight": (d, gw),
            b + "ff_norm_vision.weight": (gw,),
            b + "ff_proj_vision.weight": (gmlp, gw),
            b + "up_proj_vision.weight": (gmlp, gw),
            b + "ff_out_vision.weight": (gw, gmlp),
        })
    shapes[t + "ln_f.weight"] = (d,)
    shapes[t + "ff_out.weight"] = (vocab, d)

    v = "model.vision_tower.vision_tower.vision_model."
    n_patches = (s.image_size // s.patch_size) ** 2
    shapes[v + "embeddings.patch_embedding.weight"] = (h, 3, s.patch_size, s.patch_size)
    shapes[v + "embeddings.patch_embedding.bias"] = (h,)
    shapes[v + "embeddings.position_embedding.weight"] = (n_patches, h)
    for i in range(s.num_hidden_layers - 1):  # the last layer is dropped
        e = f"{v}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[e + f"self_attn.{proj}.weight"] = (h, h)
            shapes[e + f"self_attn.{proj}.bias"] = (h,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[e + f"{norm}.weight"] = (h,)
            shapes[e + f"{norm}.bias"] = (h,)
        shapes[e + "mlp.fc1.weight"] = (s.intermediate_size, h)
        shapes[e + "mlp.fc1.bias"] = (s.intermediate_size,)
        shapes[e + "mlp.fc2.weight"] = (h, s.intermediate_size)
        shapes[e + "mlp.fc2.bias"] = (h,)
    shapes[v + "post_layernorm.weight"] = (h,)
    shapes[v + "post_layernorm.bias"] = (h,)

    mm = cfg.mm_hidden or h
    shapes.update({
        "model.vision_resampler.weight": (h, h, 2, 2),
        "model.vision_resampler.bias": (h,),
        "model.mm_projector.0.weight": (d, mm),
        "model.mm_projector.0.bias": (d,),
        "model.mm_projector.2.weight": (d, d),
        "model.mm_projector.2.bias": (d,),
        "model.image_newline": (d,),
        "model.gen_embedding.0.weight": (cfg.gen_embed_rows, gw),
        "model.gen_embedding.1.weight": (gw,),
        "model.gen_embedding.2.weight": (gw, gw),
        "model.downsample_gen.0.weight": (gw,),
        "model.downsample_gen.2.weight": (gw, gw, 2, 2),  # Conv2d [out, in, kh, kw]
        "model.gen_embedding_2.0.weight": (gw,),
        "model.gen_embedding_2.1.weight": (gw, gw),
        "model.gen_predictor_2.0.weight": (gw,),
        "model.gen_predictor_2.1.weight": (gw, gw),
        "model.upsample_gen.0.weight": (gw,),
        "model.upsample_gen.1.weight": (gw, gw, 2, 2),  # ConvTranspose2d [in, out, kh, kw]
        "model.gen_predictor.0.weight": (gw, gw),
        "model.gen_predictor.1.weight": (gw,),
        "model.gen_predictor.2.weight": (k, gw),
    })
    return shapes
