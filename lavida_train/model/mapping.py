"""Released-checkpoint keys -> our parameters.

Our module names are the released checkpoint's, so the mapping is the identity: LaViDa-O's
checkpoint (``jacklishufan/LaViDa-O-v1.0``: LLaVA's layout on top of LLaDA) names its weights
``model.transformer.*`` (LLaDA's ``transformer`` ModuleDict), ``model.vision_tower.vision_tower.vision_model.*``
(LLaVA's ``SigLipVisionTower`` holding a SigLIP vision model; last layer deleted, no head),
``model.vision_resampler.pool.*`` (the ``spatial_pool`` resampler's conv), ``model.mm_projector.{0,2}.*``,
``model.image_newline``, the generation modules ``model.gen_embedding.*``, ``model.gen_embedding_2.*``,
``model.gen_predictor.*``, ``model.gen_predictor_2.*``, ``model.downsample_gen.downsample.{norm,conv}.*``,
``model.upsample_gen.upsample.{norm,conv}.*``, and the VQ-VAE ``model.vqvae.*`` (a diffusers
``VQModel``, 277 keys), which is ours as ``vq.model.*``. These names were checked against
upstream's own model code built at full size from the release's configuration (see
``tests/golden/model/full_size_names.json``).

:data:`REFERENCE_KEYS` lists the prefixes (reference -> ours); :data:`ALIASES` holds other
spellings of the same weights that we accept: a SigLIP stored without LLaVA's holder level, and
the names this library used before it matched the release (``model.vision_resampler.{weight,bias}``,
``model.downsample_gen.{0,2}.weight``, ``model.upsample_gen.{0,1}.weight``). :data:`VQ_PREFIXES`
maps the VQ-VAE's names; whether the VQ is loaded is the caller's choice (``vq=``).
"""

from __future__ import annotations

from typing import Literal, Mapping, NamedTuple

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

#: whole keys renamed (this library's names before they matched the release) -> ours
RENAMED: dict[str, str] = {
    "model.vision_resampler.weight": "model.vision_resampler.pool.weight",
    "model.vision_resampler.bias": "model.vision_resampler.pool.bias",
    "model.downsample_gen.0.weight": "model.downsample_gen.downsample.norm.weight",
    "model.downsample_gen.2.weight": "model.downsample_gen.downsample.conv.weight",
    "model.upsample_gen.0.weight": "model.upsample_gen.upsample.norm.weight",
    "model.upsample_gen.1.weight": "model.upsample_gen.upsample.conv.weight",
}

#: other spellings of the same weights -> our prefix (applied before :data:`REFERENCE_KEYS`)
ALIASES: dict[str, str] = {
    # a state dict of the HF SiglipVisionModel stored one level up (no LLaVA holder)
    "model.vision_tower.vision_model.": "model.vision_tower.vision_tower.vision_model.",
}

#: the VQ-VAE: the release's prefix and ours -> ours
VQ_PREFIXES: dict[str, str] = {"model.vqvae.": "vq.model.", "vq.model.": "vq.model."}
#: our VQ-VAE's key prefix
OUR_VQ = "vq."
#: kept for callers of earlier versions: our keys that the non-VQ mapping never covers
IGNORED_PREFIXES: tuple[str, ...] = (OUR_VQ,)

VQMode = Literal["auto", "load", "skip"]


class LoadResult(NamedTuple):
    missing: list[str]
    unexpected: list[str]
    #: VQ-VAE tensors loaded (0 when skipped or absent)
    vq_loaded: int = 0
    #: VQ-VAE tensors present in the checkpoint but deliberately not loaded (``vq="skip"``)
    vq_skipped: int = 0


def is_vq_key(key: str) -> bool:
    """Whether a checkpoint key names a VQ-VAE weight (``model.vqvae.*`` or ``vq.model.*``)."""
    return key.startswith(tuple(VQ_PREFIXES))


def map_key(key: str) -> str:
    """Our name for a reference ``key`` (VQ keys -> ``vq.model.*``). Unknown keys pass unchanged."""
    if key in RENAMED:
        return RENAMED[key]
    for table in (VQ_PREFIXES, ALIASES, REFERENCE_KEYS):
        for src, dst in table.items():
            if key.startswith(src):
                return dst + key[len(src):]
    return key


class LoadPlan(NamedTuple):
    """Checkpoint key -> our key for every tensor to copy, and what was left out."""

    keys: dict[str, str]
    missing: list[str]
    unexpected: list[str]
    vq_loaded: int
    vq_skipped: int


def plan_load(
    own: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], *, strict: bool = True,
    vq: VQMode = "skip",
) -> LoadPlan:
    """Match checkpoint keys (``found``: name -> shape) with the model's (``own``), without any tensor.

    Keys are mapped by :func:`map_key`. The VQ-VAE's keys (``model.vqvae.*``, ``vq.model.*``) are
    loaded with ``vq="load"`` (then the checkpoint must hold exactly our VQ's keys), loaded when
    present with ``"auto"`` (the model keeps its own VQ when the checkpoint has none), and dropped
    by name with ``"skip"``. With ``strict`` any missing or unexpected key raises ``KeyError``; a
    shape mismatch always raises ``ValueError``.
    """
    if vq not in ("auto", "load", "skip"):
        raise ValueError(f"vq must be 'auto', 'load' or 'skip', not {vq!r}")
    keys: dict[str, str] = {}
    n_vq = 0
    for key in found:
        if is_vq_key(key):
            n_vq += 1
            if vq == "skip":
                continue
        ours = map_key(key)
        if ours in keys.values():
            raise KeyError(f"two checkpoint keys map onto {ours!r}")
        keys[key] = ours
    load_vq = vq == "load" or (vq == "auto" and n_vq > 0)
    wanted = {k for k in own if load_vq or not k.startswith(OUR_VQ)}
    targets = set(keys.values())
    missing = sorted(wanted - targets)
    unexpected = sorted(k for k, o in keys.items() if o not in wanted)
    if strict and (missing or unexpected):
        vq_note = " (the checkpoint has no VQ-VAE: pass vq='skip' and set VQConfig.path)" if (
            load_vq and n_vq == 0) else ""
        raise KeyError(
            f"checkpoint does not match the model: {len(missing)} missing {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, {len(unexpected)} unexpected {unexpected[:8]}"
            f"{'...' if len(unexpected) > 8 else ''}{vq_note}"
        )
    keys = {k: o for k, o in keys.items() if o in wanted}
    bad = [
        f"{k}: checkpoint {tuple(found[k])} vs model {tuple(own[o])}"
        for k, o in keys.items()
        if tuple(found[k]) != tuple(own[o])
    ]
    if bad:
        raise ValueError(f"shape mismatch for {len(bad)} key(s): " + "; ".join(bad[:8]))
    loaded_vq = sum(1 for o in keys.values() if o.startswith(OUR_VQ))
    return LoadPlan(keys, missing, unexpected, loaded_vq, n_vq if vq == "skip" else 0)


def load_reference_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True, vq: VQMode = "skip"
) -> LoadResult:
    """Load a reference-named in-memory ``state_dict`` into ``model`` (a ``LavidaO``); see
    :func:`plan_load` for ``strict`` and ``vq`` (default ``"skip"``: the VQ then comes from
    ``VQConfig.path``). Nothing is copied when a check fails. Files and folders:
    :func:`lavida_train.checkpoint.load_checkpoint`."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    plan = plan_load(own, {k: tuple(v.shape) for k, v in state_dict.items()}, strict=strict, vq=vq)
    model.load_state_dict({o: state_dict[k] for k, o in plan.keys.items()}, strict=False)
    return LoadResult(plan.missing, plan.unexpected, plan.vq_loaded, plan.vq_skipped)


def reference_shapes(cfg: ModelConfig, vocab_size: int | None = None) -> dict[str, tuple[int, ...]]:
    """Every parameter name of the reference checkpoint (VQ excluded) and its shape at ``cfg``.

    Written out from upstream's module layout (not from our modules), so it can check them; the
    full-size names agree with upstream's model built from the release's configuration.
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
        "model.vision_resampler.pool.weight": (h, h, 2, 2),
        "model.vision_resampler.pool.bias": (h,),
        "model.mm_projector.0.weight": (d, mm),
        "model.mm_projector.0.bias": (d,),
        "model.mm_projector.2.weight": (d, d),
        "model.mm_projector.2.bias": (d,),
        "model.image_newline": (d,),
        "model.gen_embedding.0.weight": (cfg.gen_embed_rows, gw),
        "model.gen_embedding.1.weight": (gw,),
        "model.gen_embedding.2.weight": (gw, gw),
        "model.downsample_gen.downsample.norm.weight": (gw,),
        "model.downsample_gen.downsample.conv.weight": (gw, gw, 2, 2),  # Conv2d [out, in, kh, kw]
        "model.gen_embedding_2.0.weight": (gw,),
        "model.gen_embedding_2.1.weight": (gw, gw),
        "model.gen_predictor_2.0.weight": (gw,),
        "model.gen_predictor_2.1.weight": (gw, gw),
        "model.upsample_gen.upsample.norm.weight": (gw,),
        "model.upsample_gen.upsample.conv.weight": (gw, gw, 2, 2),  # ConvTranspose2d [in, out, kh, kw]
        "model.gen_predictor.0.weight": (gw, gw),
        "model.gen_predictor.1.weight": (gw,),
        "model.gen_predictor.2.weight": (k, gw),
    })
    return shapes
