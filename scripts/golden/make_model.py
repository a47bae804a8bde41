"""Golden fixtures of upstream LaViDa-O's *model* (tests/golden/model/), from upstream's own code.

Not run by the tests; upstream's code never enters this repository (only its outputs do).

    python scripts/golden/make_model.py /path/to/LaVida-O [--out tests/golden/model]

Builds upstream's ``LlavaLladaForMaskedDiffusion`` (commit e3a80df) at tiny size in a scratch
folder (:func:`load_upstream_model`: upstream_env's data modules plus upstream's ``llava/model``;
flash-attn stubbed by PyTorch attention with the same padding mask, hub downloads off; see
:func:`install_stubs`), gives it fixed random weights (rounded to bfloat16, the release's dtype)
and records:

* ``release/``: its state dict in the released naming, as two safetensors shards with
  ``model.safetensors.index.json`` (the shards gzipped: the LLaDA vocabulary makes them large but
  mostly zero), and upstream's ``config.json``;
* ``outputs.safetensors`` + ``cases.json``: inputs and upstream's outputs for fixed inputs -- the
  VQ-VAE's ids, the SigLIP path (tower, resampler + projector) and the anyres token layout for one
  and several crops, backbone hidden states and LM logits, the generation embeddings and image
  logits at 256 and 1024 px, and whole masked-diffusion losses for batches with fixed masks (every
  random number upstream's forward draws is replaced, in its order, by stored values);
* ``full_size_names.json``: every parameter name and shape of upstream's model built on the meta
  device from the release's configuration (``Demo.ipynb`` prints it).

Tiny sizes: LLaDA d_model 64, 4 heads, 3 layers (0-1 joint, 2 split), MLP 128; image tower width
16 (MLP 32); SigLIP width 32, 3 layers (2 kept), 54-px crops of 2-px patches (27 x 27 = 729
patches, the count upstream's tower asserts); VQ-VAE as ours at tiny size but with 8192 codes
(upstream hard-codes the image mask id 8193) and LLaDA's real token ids (upstream hard-codes the
mask, end-of-text and slot ids), so the vocabulary is 126464: rows outside [0, 512) and
[126080, 126400) are zero in ``wte`` and ``ff_out``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import shutil
import sys
import tempfile
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from upstream_env import load_upstream  # noqa: E402

VOCAB = 126464
BOS, EOS, SH, EH, EOT, MASK = 126080, 126081, 126346, 126347, 126348, 126336
ENC, IMG, GEN = 126090, -200, -300
ACTIVE = [(0, 512), (126080, 126400)]  # wte / ff_out rows with weights
PINPOINTS = [[384, 768], [768, 384], [768, 768], [1152, 384], [384, 1152]]
CROP, PATCH = 54, 2
SIGLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2)
VQ = dict(block_out_channels=[8, 8, 16, 16, 16], layers_per_block=1, latent_channels=8, codebook_size=8192)
#: the release's configuration (Demo.ipynb's printout), the fields the model reads
RELEASE = dict(
    d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288, d_model_gen=2048,
    mlp_hidden_size_gen=8192, dual_tower_layers=16, vocab_size=127378, embedding_size=127378, mm_hidden_size=1152,
    mm_spatial_pool_out_channels=1152,
)
TINY = dict(d_model=64, n_heads=4, n_kv_heads=4, n_layers=3, mlp_hidden_size=128, d_model_gen=16,
            mlp_hidden_size_gen=32, dual_tower_layers=1, vocab_size=VOCAB, embedding_size=VOCAB,
            mm_hidden_size=32, mm_spatial_pool_out_channels=32)
COMMON = dict(
    mlp_ratio=4, activation_type="silu", block_type="llama", block_group_size=1, alibi=False, rope=True,
    rope_full_precision=True, rope_theta=500000.0, flash_attention=False, attention_dropout=0.0, residual_dropout=0.0,
    embedding_dropout=0.0, attention_layer_norm=False, input_emb_norm=False, layer_norm_type="rms",
    layer_norm_with_affine=True, rms_norm_eps=1e-5, bias_for_layer_norm=False, include_bias=False,
    include_qkv_bias=False, scale_logits=False, weight_tying=False, eos_token_id=EOS, pad_token_id=EOS,
    mask_token_id=MASK, max_sequence_length=4096, init_device="cpu", init_fn="mitchell", init_std=0.02,
    dual_tower=True, downsample=True, enc_use_image_branch=True, gen_mlp_type="dit2", prompt_drop_rate=0.1,
    image_enc_drop_rate=0.5, mm_projector_type="mlp2x_gelu", mm_resampler_type="spatial_pool",
    mm_spatial_pool_mode="conv", mm_spatial_pool_stride=2, mm_patch_merge_type="spatial_unpad",
    image_aspect_ratio="anyres", image_grid_pinpoints=PINPOINTS, mm_vision_select_layer=-2,
    mm_vision_select_feature="patch", mm_newline_position="grid", use_mm_proj=True, tokenizer_model_max_length=8192,
    tokenizer_padding_side="right", use_pos_skipping=False, use_cache=False,
)


# ------------------------------------------------------------------------------------ scratch env

UTILS_EXTRA = '''
def rank_print(*args, **kwargs):
    pass
'''


def _unavailable(*args, **kwargs):
    raise RuntimeError("stubbed: not used by the released LaViDa-O configuration")


def rearrange(x, pattern: str, **sizes):
    """``einops.rearrange`` for flat or one-level grouped axes (``'n (h w) d -> n d h w'``)."""
    left, right = (side.strip() for side in pattern.split("->"))

    def groups(side: str) -> list[list[str]]:
        return [g[1:-1].split() if g.startswith("(") else [g] for g in re.findall(r"\([^)]*\)|\S+", side)]

    lg, rg = groups(left), groups(right)
    if len(lg) != x.dim():
        raise ValueError(f"{pattern!r} does not fit a {x.dim()}-d tensor")
    dims: dict[str, int] = dict(sizes)
    for g, n in zip(lg, x.shape):
        unknown = [a for a in g if a not in dims]
        known = 1
        for a in g:
            known *= dims.get(a, 1)
        if len(unknown) > 1:
            raise ValueError(f"cannot infer {unknown} in {pattern!r}")
        if unknown:
            dims[unknown[0]] = n // known
    flat_left = [a for g in lg for a in g]
    flat_right = [a for g in rg for a in g]
    y = x.reshape([dims[a] for a in flat_left]).permute([flat_left.index(a) for a in flat_right])
    out_shape = []
    for g in rg:
        n = 1
        for a in g:
            n *= dims[a]
        out_shape.append(n)
    return y.reshape(out_shape)


def flash_attention_forward(query_states, key_states, value_states, attention_mask, query_length, dropout=0.0,
                            softmax_scale=None):
    """Upstream's ``test_flash.flash_attention_forward`` in PyTorch: [B, L, H, D] in and out,
    ``attention_mask`` [B, L] True on real rows; keys of padded rows are never attended and padded
    query rows are zero."""
    import torch
    import torch.nn.functional as F

    m = attention_mask.bool()
    out = F.scaled_dot_product_attention(
        query_states.transpose(1, 2), key_states.transpose(1, 2), value_states.transpose(1, 2),
        attn_mask=m[:, None, None, :], dropout_p=dropout, scale=softmax_scale,
    ).transpose(1, 2)
    return torch.where(m[:, :, None, None], out, torch.zeros_like(out))


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def install_stubs() -> None:
    # import the real libraries first: their availability checks must not see the stubs
    import diffusers.models  # noqa: F401
    import torch._dynamo  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    fa = _module("flash_attn", flash_attn_func=_unavailable, flash_attn_varlen_func=_unavailable)
    fa.bert_padding = _module("flash_attn.bert_padding", index_first_axis=_unavailable, pad_input=_unavailable,
                              unpad_input=_unavailable)
    ds = _module("deepspeed")
    ds.checkpointing = _module("deepspeed.checkpointing", checkpoint=lambda fn, *args: fn(*args))
    _module("einops", rearrange=rearrange, repeat=_unavailable)
    acc = _module("accelerate")
    acc.utils = _module("accelerate.utils", reduce=lambda x, *a, **k: x)
    _module("llava.model.language_model.llada.test_flash", flash_attention_forward=flash_attention_forward)
    _module("llava.model.multimodal_encoder.unitok", build_unitok=_unavailable, UniTokEmbeddings=_unavailable,
            UnitokImageProcessor=_unavailable)
    _module("llava.model.dit.dit_blocks", LightDiTHead=_unavailable)
    # needs transformers < 4.57 (apply_chunking_to_forward); not the released resampler
    _module("llava.model.multimodal_resampler.qformer", Qformer=_unavailable)


def load_upstream_model(checkout: str, scratch: str | None = None) -> str:
    """Copy upstream's data and model modules into ``scratch`` (see the module doc), install the
    stubs and return the folder (first on ``sys.path``). Call before importing ``llava``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("NOT_ALWASY_DO_2DPOOL", "1")  # base.sh: features are not 2-d pooled again
    os.environ.setdefault("SKIP_COMPLEMENTARY_MASKING", "1")  # every released stage's script sets it
    scratch = load_upstream(checkout, scratch)
    src = os.path.join(checkout, "llava", "model")
    for root, _, files in os.walk(src):
        rel = os.path.relpath(root, src)
        for f in files:
            if not f.endswith(".py") or (rel == "." and f == "__init__.py"):
                continue  # llava/model/__init__.py would import every language model
            dst = os.path.join(scratch, "llava", "model", rel, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(root, f), dst)
    with open(os.path.join(scratch, "llava", "utils.py"), "a") as f:
        f.write(UTILS_EXTRA)
    install_stubs()
    return scratch


# ------------------------------------------------------------------------------------ building


def save_tiny_siglip(folder: str) -> None:
    from llava.model.multimodal_encoder import siglip_encoder as se

    torch.manual_seed(11)
    tower = se.SigLipVisionModel(se.SigLipVisionConfig(**SIGLIP, image_size=CROP, patch_size=PATCH))
    tower.save_pretrained(folder)


def save_tiny_vq(folder: str) -> None:
    from diffusers import VQModel

    torch.manual_seed(12)
    n = len(VQ["block_out_channels"])
    VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(VQ["block_out_channels"]),
            layers_per_block=VQ["layers_per_block"], act_fn="silu", latent_channels=VQ["latent_channels"],
            num_vq_embeddings=VQ["codebook_size"], norm_num_groups=8, norm_type="group",
            mid_block_add_attention=False, lookup_from_codebook=True, force_upcast=False,
            ).save_pretrained(os.path.join(folder, "vqvae"))


def build_tiny(scratch: str):
    from llava.model.language_model.llava_llada import LlavaLladaConfig, LlavaLladaForMaskedDiffusion
    from llava.model.multimodal_encoder import siglip_encoder as se

    siglip_dir = os.path.join(scratch, "tiny-siglip")
    vq_dir = os.path.join(scratch, "tiny-release")
    save_tiny_siglip(siglip_dir)
    save_tiny_vq(vq_dir)
    cfg = LlavaLladaConfig(**COMMON, **TINY, mm_vision_tower=siglip_dir, mm_vqvae=vq_dir)
    # upstream's tower object describes itself by SigLipVisionConfig() (so400m: 384-px crops of
    # 14 px, 27 x 27 patches, width 1152): keep that geometry at the tiny width while building
    original = se.SigLipVisionConfig
    se.SigLipVisionConfig = lambda **kw: original(**{**SIGLIP, **kw})
    try:
        torch.manual_seed(13)
        model = LlavaLladaForMaskedDiffusion(cfg).float().eval()
    finally:
        se.SigLipVisionConfig = original
    fill_weights(model)
    return model, cfg


@torch.no_grad()
def fill_weights(model, seed: int = 1234) -> None:
    """Fixed random weights of O(1) activations, rounded to bfloat16 (the release's dtype)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if name.startswith("model.vqvae."):
            p.copy_(p.to(torch.bfloat16).float())  # diffusers' seeded init
            continue
        shape = p.shape
        if p.dim() == 1:
            is_norm = "norm" in name or name.endswith("ln_f.weight")
            v = 1 + 0.1 * torch.randn(shape, generator=g) if is_norm else 0.1 * torch.randn(shape, generator=g)
            if name.endswith("image_newline"):
                v = torch.randn(shape, generator=g)
        elif "wte" in name or "gen_embedding.0" in name or "position_embedding" in name:
            v = torch.randn(shape, generator=g)
        else:
            v = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        if name.endswith(("transformer.wte.weight", "transformer.ff_out.weight")):
            keep = torch.zeros(shape[0], dtype=torch.bool)
            for lo, hi in ACTIVE:
                keep[lo:hi] = True
            v[~keep] = 0
        p.copy_(v.to(torch.bfloat16).float())


class ForceMeta(torch.overrides.TorchFunctionMode):
    """Every tensor factory call lands on the meta device, whatever device it names."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        from torch.utils._device import _device_constructors

        kwargs = dict(kwargs or {})
        if func in _device_constructors():
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def full_size_names() -> dict[str, list[int]]:
    """Upstream's model at full size on the meta device: name -> shape. SigLIP is so400m (the
    tower's own default configuration); the VQ-VAE is built as ours (Meissonic's layout: 277
    tensors, as the release's ``model.vqvae.*``), since its config.json is not in the repository."""
    from diffusers import VQModel

    from llava.model import llava_arch
    from llava.model.language_model.llava_llada import LlavaLladaConfig, LlavaLladaForMaskedDiffusion
    from llava.model.multimodal_encoder import siglip_encoder as se

    class MetaVQ:
        @staticmethod
        def from_pretrained(*a, **k):
            return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 5,
                           up_block_types=("UpDecoderBlock2D",) * 5, block_out_channels=(128, 256, 256, 512, 768),
                           layers_per_block=2, act_fn="silu", latent_channels=64, num_vq_embeddings=8192,
                           norm_num_groups=32, norm_type="group", mid_block_add_attention=False,
                           lookup_from_codebook=True, force_upcast=False)

    original = se.SigLipVisionModel

    class MetaSiglip(original):
        @classmethod
        def from_pretrained(cls, *a, **k):
            return original(se.SigLipVisionConfig())

    from llava.model.language_model.llada import modeling_llada as ml

    saved = (llava_arch.VQModel, se.SigLipVisionModel, ml.RotaryEmbedding.get_rotary_embedding)
    llava_arch.VQModel, se.SigLipVisionModel = MetaVQ, MetaSiglip
    ml.RotaryEmbedding.get_rotary_embedding = lambda self, n, device: (None, None)  # the tables' warm-up
    try:
        cfg = LlavaLladaConfig(**{**COMMON, **RELEASE, "init_device": "meta"}, mm_vision_tower="google/siglip-so400m",
                               mm_vqvae="release")
        with ForceMeta():  # upstream sets init_device = "cpu" itself: every tensor goes to meta
            model = LlavaLladaForMaskedDiffusion(cfg)
    finally:
        llava_arch.VQModel, se.SigLipVisionModel, ml.RotaryEmbedding.get_rotary_embedding = saved
    return {k: list(v.shape) for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------ inputs


class Draws:
    """Serves upstream's ``torch.rand`` / ``torch.rand_like`` calls from stored tensors, in order."""

    def __init__(self, queue: list[torch.Tensor]):
        self.queue = list(queue)

    def _pop(self, shape) -> torch.Tensor:
        if not self.queue:
            raise AssertionError(f"upstream drew {tuple(shape)} more numbers than stored")
        value = self.queue.pop(0)
        if tuple(value.shape) != tuple(shape):
            raise AssertionError(f"upstream drew {tuple(shape)}, the next stored draw is {tuple(value.shape)}")
        return value.clone()

    def __enter__(self):
        self.saved = (torch.rand, torch.rand_like)

        def rand(*size, device=None, **kw):
            shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
            return self._pop(shape).to(device)

        def rand_like(x, dtype=None, **kw):
            return self._pop(x.shape).to(device=x.device, dtype=dtype or x.dtype)

        torch.rand, torch.rand_like = rand, rand_like
        return self

    def __exit__(self, *exc):
        torch.rand, torch.rand_like = self.saved
        if exc[0] is None and self.queue:
            raise AssertionError(f"{len(self.queue)} stored draws were not used")


def chat(user: list[int], answer: list[int]) -> tuple[list[int], list[int]]:
    """LLaDA's chat layout (ids only): labels on the answer (not on slots) and its end of turn."""
    prefix = [BOS, SH, 10, EH, *user, EOT, SH, 11, EH]
    ids = prefix + answer + [EOT]
    labels = [-100] * len(prefix) + [-100 if a in (GEN, ENC, IMG) else a for a in answer] + [EOT]
    return ids, labels


def collate(samples: list[tuple[list[int], list[int]]], extra: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded with end-of-text (labels -100), ``extra`` more columns: upstream's collator."""
    width = max(len(i) for i, _ in samples) + extra
    ids = torch.full((len(samples), width), EOS)
    labels = torch.full((len(samples), width), -100)
    for r, (i, lab) in enumerate(samples):
        ids[r, : len(i)] = torch.tensor(i)
        labels[r, : len(lab)] = torch.tensor(lab)
    return ids, labels


def words(g: torch.Generator, n: int) -> list[int]:
    return torch.randint(20, 500, (n,), generator=g).tolist()


def crops(g: torch.Generator, n: int) -> torch.Tensor:
    """SigLIP crops in [-1, 1], fp16-exact."""
    return (torch.rand(n, 3, CROP, CROP, generator=g) * 2 - 1).half().float()


def text_layout(up, ids: torch.Tensor, images: list, sizes: list, modalities: list) -> torch.Tensor:
    """Upstream's ``new_input_ids`` for ``ids`` (attention on every position, as its forward sets)."""
    x = ids.clone()
    x[x == GEN] = 126089
    out = up.prepare_inputs_labels_for_multimodal(x, None, torch.ones_like(x, dtype=torch.bool), None,
                                                  torch.full_like(x, -100), images, modalities, sizes,
                                                  return_inputs=True)
    return out[-1]


def expand_u(u: torch.Tensor, ids: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """Our per-position uniforms [B, L] -> upstream's expanded rows [B, L'] (1.0 on image features
    and appended rows; our -200 positions hold 1.0 too, so both rows have the same minimum)."""
    out = torch.ones(layout.shape)
    for r in range(len(ids)):
        ours = (ids[r] != IMG).nonzero().squeeze(1)
        theirs = ((layout[r] != IMG) & (layout[r] != -100)).nonzero().squeeze(1)
        assert len(ours) == len(theirs)
        out[r, theirs] = u[r, ours]
    return out


def draw_set(g: torch.Generator, ids: torch.Tensor, n_img: int, tokens: int, *, u_prompt, u_enc, u_keep) -> dict:
    b, n = ids.shape
    u_text = torch.rand(b, n, generator=g)
    u_text[ids == IMG] = 1.0
    return {
        "t_text": torch.rand(b, generator=g), "u_text": u_text, "u_prompt": torch.tensor(u_prompt),
        "u_enc": torch.tensor(u_enc), "u_keep": torch.tensor(u_keep), "t_img": torch.rand(n_img, generator=g),
        "u_img": torch.rand(n_img, tokens, generator=g),
    }


# ------------------------------------------------------------------------------------ cases


def lse_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.logsumexp(logits.float(), -1), logits.argmax(-1)


def vocab_probe() -> torch.Tensor:
    """The LM-head columns recorded: some content ids, the special block, end-of-text, mask."""
    return torch.tensor(sorted({*range(0, 64), *range(126080, 126112), EOS, MASK, EOT, SH, EH}))


def vq_case(up, out: dict, meta: dict) -> None:
    g = torch.Generator().manual_seed(21)
    px = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g)
    ids, shape = up.encode_image_gen(px.float() / 255)
    out["vq.pixels"] = px
    out["vq.ids"] = ids.view(2, *shape)


def und_case(up, out: dict, meta: dict) -> None:
    """Three understanding samples: one crop, 2 x 1 tiles (+ base), 2 x 2 tiles (+ base)."""
    from llava.mm_utils import get_anyres_image_grid_shape

    g = torch.Generator().manual_seed(31)
    samples = [chat([IMG, *words(g, 5)], words(g, 12)), chat([*words(g, 3), IMG, *words(g, 4)], words(g, 20)),
               chat([IMG, *words(g, 6)], words(g, 9))]
    ids, labels = collate(samples)
    sizes = [(300, 200), (700, 300), (900, 700)]
    px = [crops(g, 1), crops(g, 3), crops(g, 5)]
    modalities = ["image"] * 3
    allc = torch.cat(px)
    m = up.get_model()
    tower = m.get_vision_tower()(allc)
    projected = up.encode_images(allc)
    grids = [list(get_anyres_image_grid_shape(s, PINPOINTS, 384)) for s in sizes]  # (cols, rows)
    x = ids.clone()
    res = up.prepare_inputs_labels_for_multimodal(x, None, torch.ones_like(x, dtype=torch.bool), None,
                                                  labels.clone(), px, modalities, sizes, return_inputs=True)
    embeds, layout = res[4], res[6]
    o = m(None, input_embeddings=embeds, modality_indices=torch.zeros(layout.shape, dtype=torch.bool),
          output_hidden_states=True)
    hidden, logits = o.hidden_states[-1], o.logits
    probe = vocab_probe()
    rows = torch.arange(0, layout.shape[1], 3)
    lrows = torch.arange(0, layout.shape[1], 9)
    out.update({
        "und.input_ids": ids, "und.labels": labels, "und.crops": allc, "und.tower": tower[:, ::5],
        "und.projected": projected[:, ::4], "und.layout": layout, "und.embeds": embeds[:, ::3],
        "und.hidden_rows": rows, "und.hidden": hidden[:, rows], "und.logit_rows": lrows, "und.vocab_probe": probe,
        "und.logits": logits[:, lrows][:, :, probe], "und.logits_lse": torch.logsumexp(logits[:, lrows], -1),
    })
    meta["und"] = {"sizes": sizes, "crops": [len(p) for p in px], "grids_cols_rows": grids,
                   "image_tokens": [int((layout[r] == IMG).sum()) for r in range(len(layout))]}
    # the training forward with fixed masks (text only): a prompt drop on the first sample
    d = draw_set(g, ids, 0, 0, u_prompt=[0.05, 0.5, 0.5], u_enc=[0.9] * 3, u_keep=[0.9] * 3)
    queue = [d["t_text"], expand_u(d["u_text"], ids, layout), d["u_prompt"]]
    with Draws(queue):
        res = up(input_ids=ids.clone(), attention_mask=ids.ne(EOS), labels=labels.clone(), images=px,
                 image_sizes=sizes, modalities=modalities, policy="uniform", dataset_name="golden",
                 do_not_mask_text=[False] * 3)
    meta["und"]["loss"] = float(res.loss)
    meta["und"]["text_targets"] = int((res["labels"] != -100).sum())
    out.update({f"und.draws.{k}": v for k, v in d.items()})


def gen_batch(up, out: dict, meta: dict, name: str, samples, images, sizes, modalities, gen_ids, enc_ids,
              plan: list[bool], draw_sets: dict[str, dict]) -> None:
    """A batch with generation targets (ids given: upstream's VQ encode is replaced by them)."""
    ids, labels = collate(samples)
    m = up.get_model()
    shape = tuple(gen_ids.shape[1:])
    up.encode_image_gen = lambda images, enc=False: ((enc_ids if enc else gen_ids).flatten(1), shape)
    captured = []
    predictor = m.call_gen_predictor

    def capture(*a, **k):
        logits = predictor(*a, **k)
        captured.append(logits.detach())
        return logits

    m.call_gen_predictor = capture
    layout = text_layout(up, ids, images, sizes, modalities)
    dummy = [[torch.zeros(1, 3, 16, 16)] for _ in range(len(gen_ids))]
    dummy_enc = None if enc_ids is None else [[torch.zeros(1, 3, 16, 16)] for _ in range(len(enc_ids))]
    meta[name] = {"sizes": sizes, "plan": plan, "draws": {}}
    try:
        for key, d in draw_sets.items():
            queue = [d["t_text"], expand_u(d["u_text"], ids, layout), d["u_prompt"]]
            if enc_ids is not None:
                queue.append(d["u_enc"])
            if any(plan):
                queue.append(d["u_keep"])
            queue += [d["t_img"], d["u_img"]]
            with Draws(queue):
                res = up(input_ids=ids.clone(), attention_mask=ids.ne(EOS), labels=labels.clone(), images=images,
                         image_sizes=sizes, modalities=modalities, policy="uniform", dataset_name="golden",
                         images_gen=dummy, images_gen_enc=dummy_enc, do_not_mask_text=plan)
            assert not res["skip_batch"]
            lse, top = lse_argmax(captured[-1].view(len(gen_ids), -1, captured[-1].shape[-1]))
            meta[name]["draws"][key] = {"loss": float(res.loss), "text_loss": float(res["und_loss"]),
                                        "image_loss": float(res["gen_loss"]),
                                        "text_targets": int((res["labels"] != -100).sum()),
                                        "image_targets": int(res["gen_x_mask"].sum())}
            out.update({f"{name}.draws.{key}.{k}": v for k, v in d.items()})
            out[f"{name}.draws.{key}.image_lse"] = lse
            out[f"{name}.draws.{key}.image_argmax"] = top
    finally:
        del m.call_gen_predictor
        del up.encode_image_gen
    with torch.no_grad():
        out[f"{name}.gen_embeds"] = m.call_gen_embedding(gen_ids.flatten(1), gen_shape=shape)
        if enc_ids is not None:
            out[f"{name}.enc_embeds"] = m.call_gen_embedding(enc_ids.flatten(1), gen_shape=shape, enc=True)
    out.update({f"{name}.input_ids": ids, f"{name}.labels": labels, f"{name}.gen_ids": gen_ids,
                f"{name}.layout": layout})
    if enc_ids is not None:
        out[f"{name}.enc_ids"] = enc_ids


def gen256_case(up, out: dict, meta: dict) -> None:
    """256 px (SKIP_DOWN_SAMPLE, as s2-256): text-to-image, an edit with an understanding image,
    a plan sample; prompt drop / kept plan (draws a), dropped edit source (draws b)."""
    from llava.model import llava_arch

    g = torch.Generator().manual_seed(41)
    samples = [chat(words(g, 6), [GEN] * 256), chat([IMG, *[ENC] * 256, *words(g, 5)], [GEN] * 256),
               chat(words(g, 4), words(g, 15))]
    images = [torch.zeros(1, 3, CROP, CROP), crops(g, 1), torch.zeros(1, 3, CROP, CROP)]
    out["gen256.crops"] = images[1]
    gen_ids = torch.randint(0, 8192, (2, 16, 16), generator=g)
    enc_ids = torch.randint(0, 8192, (1, 16, 16), generator=g)
    ids, _ = collate(samples)
    sets = {"a": draw_set(g, ids, 2, 256, u_prompt=[0.05, 0.5, 0.5], u_enc=[0.9] * 3, u_keep=[0.5] * 3),
            "b": draw_set(g, ids, 2, 256, u_prompt=[0.5] * 3, u_enc=[0.2] * 3, u_keep=[0.9] * 3)}
    llava_arch.SKIP_DOWN_SAMPLE = "1"
    try:
        gen_batch(up, out, meta, "gen256", samples, images, [(54, 54), (640, 480), (54, 54)],
                  ["text", "image", "text"], gen_ids, enc_ids, [False, False, True], sets)
    finally:
        llava_arch.SKIP_DOWN_SAMPLE = None


def gen1024_case(up, out: dict, meta: dict) -> None:
    """1024 px (merged 2 x 2): an edit sample; and the prediction head alone."""
    g = torch.Generator().manual_seed(51)
    samples = [chat([*[ENC] * 1024, *words(g, 5)], [GEN] * 1024)]
    gen_ids = torch.randint(0, 8192, (1, 64, 64), generator=g)
    enc_ids = torch.randint(0, 8192, (1, 64, 64), generator=g)
    ids, _ = collate(samples)
    sets = {"a": draw_set(g, ids, 1, 4096, u_prompt=[0.5], u_enc=[0.9], u_keep=[0.9])}
    gen_batch(up, out, meta, "gen1024", samples, [torch.zeros(1, 3, CROP, CROP)], [(54, 54)], ["text"], gen_ids,
              enc_ids, [False], sets)
    hidden = torch.randn(1024, TINY["d_model_gen"], generator=g)
    with torch.no_grad():
        logits = up.get_model().call_gen_predictor(hidden, (64, 64))
    lse, top = lse_argmax(logits)
    out.update({"head1024.hidden": hidden, "head1024.lse": lse, "head1024.argmax": top,
                "head1024.logits": logits[::64, :128]})


# ------------------------------------------------------------------------------------ writing


def compact(name: str, v: torch.Tensor) -> torch.Tensor:
    """Integers as int32, the (fp16-exact) crops as fp16; everything else as computed (fp32)."""
    v = v.detach()
    if v.dtype == torch.int64:
        v = v.to(torch.int32)
    elif name.endswith("crops"):
        assert torch.equal(v.half().float(), v)
        v = v.half()
    return v.contiguous()


def write_release(model, cfg, folder: str) -> None:
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    backbone = {k: v for k, v in state.items() if k.startswith("model.transformer.")}
    shards = {"model-00001-of-00002.safetensors": backbone,
              "model-00002-of-00002.safetensors": {k: v for k, v in state.items() if k not in backbone}}
    weight_map, total = {}, 0
    for fname, part in shards.items():
        tmp = os.path.join(folder, fname)
        save_file(part, tmp, metadata={"format": "pt"})
        with open(tmp, "rb") as f, open(tmp + ".gz", "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as z:
            shutil.copyfileobj(f, z)
        os.remove(tmp)
        for k, v in part.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=1)
    config = cfg.to_dict()
    config.update(mm_vision_tower="tiny-siglip (54-px crops, 2-px patches)", mm_vqvae="tiny-release")
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True, default=str)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkout", help="a checkout of adobe-research/LaVida-O (commit e3a80df)")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "golden", "model"))
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    scratch = tempfile.mkdtemp(prefix="lavida-upstream-model-")
    load_upstream_model(args.checkout, scratch)
    names = full_size_names()
    model, cfg = build_tiny(scratch)
    out: dict[str, torch.Tensor] = {}
    meta: dict = {"upstream": "adobe-research/LaVida-O e3a80df", "tiny": {**TINY, "siglip": SIGLIP, "crop": CROP,
                  "patch": PATCH, "vq": VQ, "pinpoints": PINPOINTS}, "ids": {"bos": BOS, "eos": EOS, "mask": MASK,
                  "eot": EOT, "enc_slot": ENC, "infill": 126085}, "prompt_drop": 0.1, "edit_source_drop": 0.5,
                  "plan_unmasked_prob": 0.8}
    with torch.no_grad():
        vq_case(model, out, meta)
        und_case(model, out, meta)
    gen256_case(model, out, meta)
    gen1024_case(model, out, meta)
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    write_release(model, cfg, os.path.join(out_dir, "release"))
    save_file({k: compact(k, v) for k, v in out.items()}, os.path.join(out_dir, "outputs.safetensors"))
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)
    vq_names = [k for k in names if k.startswith("model.vqvae.")]
    with open(os.path.join(out_dir, "full_size_names.json"), "w") as f:
        json.dump({"note": "upstream's LlavaLladaForMaskedDiffusion built on the meta device from the release's "
                           "configuration; model.vqvae.* built as ours (Meissonic's VQ-VAE layout)",
                   "vq_tensors": len(vq_names), "shapes": names}, f, indent=0)
    print(f"wrote {out_dir}: {len(out)} tensors; {len(names)} full-size names ({len(vq_names)} VQ)")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
