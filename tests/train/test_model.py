"""The tiny LaViDa-O: a forward pass on a real batch, routing, attention masks, norms, rotary,
gradients, the frozen VQ-VAE, the understanding merge, parameter groups and seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from PIL import Image  # noqa: E402

from lavida_data.transforms.collate import collate  # noqa: E402
from lavida_data.transforms.images import ImageConfig, gen_image, siglip_anyres  # noqa: E402
from lavida_data.transforms.tokenize import Tokenize  # noqa: E402
from lavida_train.model.gen import resolve_merge, tokens_per_image  # noqa: E402
from lavida_train.model.layers import RMSNorm, RotaryEmbedding, SwiGLU, apply_rotary  # noqa: E402
from lavida_train.model.llada import LLaDABlock, Routing, build_attention_mask  # noqa: E402
from lavida_train.model.presets import tiny_model  # noqa: E402
from lavida_train.model.vision import infer_grid, merge_anyres, unpad  # noqa: E402

ICFG = ImageConfig(gen_size=256, und_size=56, anyres_grid=[(56, 112), (112, 56), (112, 112)])


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def built(tok_dir):
    model, cfg = tiny_model(tok_dir, seed=0, anyres_grid=ICFG.anyres_grid)
    return model.eval(), cfg


@pytest.fixture(scope="module")
def tokenize(tok_dir):
    return Tokenize(tokenizer=tok_dir, gen_tokens=256, gen_enc_tokens=256)


def _image(w: int, h: int, seed: int) -> Image.Image:
    arr = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def batch(tokenize, built):
    """A text-to-image sample and an understanding sample (anyres, 2 x 2 tiles), collated."""
    model, _ = built
    rng = np.random.default_rng(0)
    t2i = tokenize({"conversations": [
        {"from": "human", "value": "Generate an image: a red bus."}, {"from": "gpt", "value": "<image_gen>"}],
        "image_gen": "bus.png", "micro_conds_texts": [""]}, rng)
    t2i["gen_pixels"] = [gen_image(_image(300, 260, 1), 256, rng).pixels]
    und = tokenize({"conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                      {"from": "gpt", "value": "A cat."}], "image": "cat.png"}, rng)
    pixels, size = siglip_anyres(_image(100, 60, 2), ICFG)
    und["und_pixels"], und["und_sizes"] = [pixels], [size]
    out = collate([t2i, und], tokenize.token_ids.pad)
    out["gen_ids"] = model.vq.encode_ids(out["gen_pixels"][0][0][None])
    return out


def _run(model, batch, **kw):
    args = dict(
        gen_ids=batch["gen_ids"], gen_mask=batch["gen_mask"], und_pixels=batch["und_pixels"],
        und_sizes=batch["und_sizes"],
    )
    args.update(kw)
    return model(batch["input_ids"], **args)


# ---------------------------------------------------------------------------------- forward


def test_forward_real_batch_shapes(built, batch):
    model, cfg = built
    assert batch["gen_ids"].shape == (1, 16, 16) and batch["gen_ids"].dtype == torch.long
    assert int(batch["gen_mask"].sum()) == 256
    assert (batch["input_ids"] == -200).sum() == 1 and batch["und_pixels"][1][0].shape == (5, 3, 56, 56)
    with torch.no_grad():
        out = _run(model, batch)
    b, n = batch["input_ids"].shape
    assert out["text_logits"].shape == (b, n, cfg.vocab_size)
    assert out["image_logits"].shape == (1, 16, 16, cfg.vq.codebook_size)
    assert out["hidden"].shape == (b, n, cfg.d_model)
    assert torch.isfinite(out["text_logits"]).all() and torch.isfinite(out["image_logits"]).all()


def test_batching_and_padding(built, batch):
    """With its padding keys masked, the sample the image expansion makes longest is the same alone
    and in the batch. The rows the expansion appends to a shorter sample are attended, as
    upstream's (it runs without an attention mask), so that sample sees them."""
    model, _ = built
    lengths = batch["lengths"].tolist()
    key = torch.arange(batch["input_ids"].shape[1])[None] < batch["lengths"][:, None]
    with torch.no_grad():
        both = _run(model, batch, attention_mask=key, return_expanded=True)
        n0, n1 = lengths
        alone_t2i = model(batch["input_ids"][:1, :n0], gen_ids=batch["gen_ids"], gen_mask=batch["gen_mask"][:1, :n0])
        alone_und = model(
            batch["input_ids"][1:, :n1], und_pixels=batch["und_pixels"][1:], und_sizes=batch["und_sizes"][1:]
        )
    layout = both["expanded_ids"]
    assert (layout[0] == -100).any() and not (layout[1] == -100).any()  # rows appended to the t2i sample
    torch.testing.assert_close(both["text_logits"][1, :n1], alone_und["text_logits"][0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(both["image_logits"], alone_t2i["image_logits"], rtol=1e-4, atol=1e-4)
    appended = both["expanded_hidden"][0, layout[0] == -100]
    assert appended.abs().sum(-1).gt(0).all()  # zero rows in, attended and updated like any token


def test_understanding_features_matter_and_grid(built, batch):
    model, _ = built
    with torch.no_grad():
        base = _run(model, batch)
        other = [[], [batch["und_pixels"][1][0].flip(-1)]]
        changed = _run(model, batch, und_pixels=other)
    assert not torch.allclose(base["text_logits"][1], changed["text_logits"][1])
    torch.testing.assert_close(base["text_logits"][0], changed["text_logits"][0])  # other sample untouched
    with pytest.raises(ValueError, match="placeholder"):
        _run(model, batch, und_pixels=[[], []])


def test_embed_mask_is_text_mask_embedding(built, batch, tokenize):
    model, _ = built
    mask_id = tokenize.token_ids.mask
    ids = batch["input_ids"]
    drop = torch.zeros_like(ids, dtype=torch.bool)
    drop[0, 1:6] = True  # text positions of the t2i prompt
    with torch.no_grad():
        a = _run(model, batch, embed_mask=drop, text_mask_id=mask_id)
        b = _run(model, {**batch, "input_ids": torch.where(drop, mask_id, ids)})
    torch.testing.assert_close(a["text_logits"], b["text_logits"])
    # a dropped understanding image: its pixels no longer matter
    drop_img = ids == -200
    with torch.no_grad():
        c = _run(model, batch, embed_mask=drop_img, text_mask_id=mask_id)
        d = _run(model, batch, embed_mask=drop_img, text_mask_id=mask_id,
                 und_pixels=[[], [torch.zeros_like(batch["und_pixels"][1][0])]])
    torch.testing.assert_close(c["text_logits"], d["text_logits"])
    with pytest.raises(ValueError, match="gen_mask"):
        _run(model, batch, embed_mask=batch["gen_mask"], text_mask_id=mask_id)
    with pytest.raises(ValueError, match="text_mask_id"):
        _run(model, batch, embed_mask=drop)


def test_edit_source_slots(built, tokenize):
    model, cfg = built
    s = tokenize({"conversations": [
        {"from": "human", "value": "<image_gen_enc> Make the sky blue."}, {"from": "gpt", "value": "<image_gen>"}],
        "image_gen": "b.png", "image_gen_enc": ["a.png"], "micro_conds_texts": [""]}, np.random.default_rng(0))
    b = collate([s], tokenize.token_ids.pad)
    assert int(b["gen_enc_mask"].sum()) == 256 and int(b["gen_mask"].sum()) == 256
    g = torch.full((1, 16, 16), cfg.image_mask_id)
    e1 = torch.randint(0, cfg.vq.codebook_size, (1, 16, 16), generator=torch.Generator().manual_seed(0))
    e2 = (e1 + 1) % cfg.vq.codebook_size
    with torch.no_grad():
        o1 = model(b["input_ids"], gen_ids=g, gen_mask=b["gen_mask"], enc_ids=e1, gen_enc_mask=b["gen_enc_mask"])
        o2 = model(b["input_ids"], gen_ids=g, gen_mask=b["gen_mask"], enc_ids=e2, gen_enc_mask=b["gen_enc_mask"])
    assert o1["image_logits"].shape == (1, 16, 16, cfg.vq.codebook_size)
    assert not torch.allclose(o1["image_logits"], o2["image_logits"])
    with pytest.raises(ValueError, match="gen_enc_mask"):
        model(b["input_ids"], gen_ids=g, gen_mask=b["gen_mask"], gen_enc_mask=b["gen_enc_mask"])


def test_merge_path_and_slot_count_errors(built):
    model, cfg = built
    assert resolve_merge(64, 64) and not resolve_merge(32, 32) and not resolve_merge(16, 16)
    assert tokens_per_image(64, 64) == 1024 and tokens_per_image(16, 16) == 256 and tokens_per_image(8, 8, True) == 16
    ids = torch.randint(0, 100, (2, 40), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, 4:20] = True  # 16 slots: one 8 x 8 grid merged 2 x 2
    mask[1, 10:26] = True
    gen = torch.randint(0, cfg.vq.codebook_size, (2, 8, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(ids, gen_ids=gen, gen_mask=mask, merge=True)
    assert out["image_logits"].shape == (2, 8, 8, cfg.vq.codebook_size)
    with pytest.raises(ValueError, match="exactly 64 slots"):
        model(ids, gen_ids=gen, gen_mask=mask)  # unmerged 8 x 8 needs 64 slots
    bad = mask.clone()
    bad[1, 26] = True
    with pytest.raises(ValueError, match="gen_mask"):
        model(ids, gen_ids=gen, gen_mask=bad, merge=True)


# ---------------------------------------------------------------------------------- attention


def test_attention_mask_helper():
    mod = torch.tensor([[False, True, True, False, False]])
    assert build_attention_mask(mod, joint=True) is None
    sep = build_attention_mask(mod, joint=False)[0, 0]
    for i in range(5):
        for j in range(5):
            assert bool(sep[i, j]) == (bool(mod[0, i]) == bool(mod[0, j]))
    keys = torch.tensor([[True, True, True, True, False]])
    joint = build_attention_mask(mod, joint=True, key_mask=keys)
    assert joint.shape == (1, 1, 5, 5) and not joint[..., 4].any() and joint[..., :4].all()
    both = build_attention_mask(mod, joint=False, key_mask=keys)[0, 0]
    assert both.tolist() == (sep & keys[0][None]).tolist()


def test_joint_layer_carries_image_to_text(built, batch):
    """Layer 0 (dual_tower_layers = 0) is joint: changing the generated image's ids changes text logits."""
    model, cfg = built
    assert cfg.dual_tower_layers == 0 and [b.joint for b in model.model.transformer.blocks] == [True, False]
    other = (batch["gen_ids"] + 1) % cfg.vq.codebook_size
    with torch.no_grad():
        a = _run(model, batch)["text_logits"][0]
        b = _run(model, batch, gen_ids=other)["text_logits"][0]
    text = ~batch["gen_mask"][0]
    assert not torch.allclose(a[text], b[text])


def test_separate_layer_blocks_cross_modal_flow(built):
    model, cfg = built
    blk = model.model.transformer.blocks[1]
    assert isinstance(blk, LLaDABlock) and not blk.joint
    g = torch.Generator().manual_seed(3)
    mod = torch.zeros(1, 12, dtype=torch.bool)
    mod[0, 3:9] = True
    x = torch.randn(1, 12, cfg.d_model, generator=g)
    x[mod] = torch.nn.functional.pad(x[mod][:, : cfg.gen_width], (0, cfg.d_model - cfg.gen_width))
    cos, sin = model.model.transformer.rotary(torch.arange(12))
    cos, sin = cos[None, :, None], sin[None, :, None]
    routing = Routing.from_modality(mod)
    y = x.clone()
    y[0, 5, : cfg.gen_width] += 1.0  # perturb one image token
    with torch.no_grad():
        for joint, expect_text_change in ((False, False), (True, True)):
            mask = build_attention_mask(mod, joint)
            a, b = blk(x, routing, cos, sin, mask), blk(y, routing, cos, sin, mask)
            text_changed = not torch.allclose(a[~mod], b[~mod])
            assert text_changed == expect_text_change
            assert not torch.allclose(a[mod], b[mod])
            assert a[mod][:, cfg.gen_width:].abs().max() == 0  # image rows stay zero-padded


# ---------------------------------------------------------------------------------- layers


def test_rmsnorm_fp32():
    norm = RMSNorm(8, eps=1e-5)
    x = torch.full((2, 8), 300.0, dtype=torch.float16)  # x ** 2 overflows fp16
    x[0, ::2] = -300.0
    y = norm(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), torch.sign(x.float()), rtol=1e-3, atol=1e-3)
    x32 = torch.randn(3, 8)
    ref = x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(norm(x32), ref)
    assert [n for n, _ in norm.named_parameters()] == ["weight"]


def test_rotary_relative_position_and_layout():
    rope = RotaryEmbedding(16, theta=500000.0)
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)

    def rot(v, pos):
        cos, sin = rope(torch.tensor([pos]))
        return apply_rotary(v[None], cos, sin)[0]

    dot = lambda m, n: float(rot(q, m) @ rot(k, n))  # noqa: E731
    assert dot(3, 1) == pytest.approx(dot(10, 8), rel=1e-4, abs=1e-5)
    assert dot(7, 7) == pytest.approx(float(q @ k), rel=1e-4, abs=1e-5)
    # NeoX halves: dims (0, 8) rotate together by pos * theta^0 = pos radians
    e = torch.zeros(16)
    e[0] = 1.0
    r = rot(e, 1)
    assert r[0] == pytest.approx(math.cos(1.0), abs=1e-6) and r[8] == pytest.approx(math.sin(1.0), abs=1e-6)
    assert rope(torch.arange(4))[0].dtype == torch.float32


def test_swiglu():
    mlp = SwiGLU(6, 10)
    x = torch.randn(2, 6)
    want = mlp.ff_out(torch.nn.functional.silu(mlp.ff_proj(x)) * mlp.up_proj(x))
    torch.testing.assert_close(mlp(x), want)
    assert all(m.bias is None for m in (mlp.ff_proj, mlp.up_proj, mlp.ff_out))


# ---------------------------------------------------------------------------------- gradients, VQ


def test_gradients_reach_only_trainable_parts(tok_dir, batch):
    model, _ = tiny_model(tok_dir, seed=0, anyres_grid=ICFG.anyres_grid)
    model.train()
    trainable = set(model.set_trainable(["generation_branch"]))
    out = _run(model, batch)
    (out["image_logits"].float().pow(2).mean() + out["text_logits"].float().pow(2).mean()).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad <= trainable
    unmerged = ("downsample_gen", "upsample_gen")  # 16 x 16 grid: no merge, no gradient
    expect = {n for n in trainable if not any(u in n for u in unmerged)}
    assert expect <= with_grad
    assert all(float(model.get_parameter(n).grad.abs().sum()) > 0 for n in expect)
    # everything trainable: the understanding path learns too; the VQ never does
    model.zero_grad(set_to_none=True)
    model.set_trainable(["all"])
    out = _run(model, batch)
    out["text_logits"].float().pow(2).mean().backward()
    names = {n for n, p in model.named_parameters() if p.grad is not None}
    assert "model.mm_projector.0.weight" in names and "model.vision_resampler.pool.weight" in names
    assert "model.image_newline" in names
    assert any(n.startswith("model.vision_tower.vision_tower.vision_model.encoder.layers.0.") for n in names)
    assert not any(n.startswith("vq.") for n in names)


def test_vq_frozen_and_encodes(built):
    model, cfg = built
    vq = model.vq
    assert all(not p.requires_grad for p in vq.parameters())
    model.train()
    try:
        assert model.training and not vq.training and not any(m.training for m in vq.modules())
    finally:
        model.eval()
    pixels = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    ids = vq.encode_ids(pixels)
    assert ids.shape == (2, 16, 16) and ids.dtype == torch.long
    assert 0 <= int(ids.min()) and int(ids.max()) < cfg.vq.codebook_size
    torch.testing.assert_close(vq.encode_ids(pixels), ids)
    assert vq.decode_ids(ids).shape == (2, 3, 256, 256)
    u8 = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(vq.encode_ids(u8), vq.encode_ids(u8.float() / 255))  # the loader's default
    assert not any(k.startswith("vq.") for g in model.param_groups().values() for k in g)


def test_activation_checkpointing_same_result(tok_dir, batch):
    grads = []
    for ckpt in (False, True):
        model, _ = tiny_model(tok_dir, seed=1, anyres_grid=ICFG.anyres_grid, activation_checkpointing=ckpt)
        model.train()
        out = _run(model, batch)
        loss = out["image_logits"].float().pow(2).mean() + out["text_logits"].float().pow(2).mean()
        loss.backward()
        grads.append((loss.detach(), model.model.transformer.blocks[0].q_proj_vision.weight.grad.clone(),
                      model.model.mm_projector[0].weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- understanding path


def test_vision_tower_drops_last_layer(built):
    """Our features == hidden_states[-2] of the full SigLIP (same weights plus a last layer)."""
    from transformers import SiglipVisionModel

    model, cfg = built
    tower = model.model.vision_tower
    hf = tower.vision_tower
    assert len(hf.vision_model.encoder.layers) == cfg.siglip.num_hidden_layers - 1
    assert not hasattr(hf.vision_model, "head")
    full_cfg = hf.config.__class__(**{**hf.config.to_dict(), "num_hidden_layers": cfg.siglip.num_hidden_layers})
    full = SiglipVisionModel(full_cfg).eval()
    missing = full.load_state_dict(hf.state_dict(), strict=False).missing_keys
    assert missing and all(".layers.%d." % (cfg.siglip.num_hidden_layers - 1) in k for k in missing)
    px = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = full(px, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(tower(px), want)


def test_resampler_is_average_pooling(built):
    model, cfg = built
    res = model.model.vision_resampler
    x = torch.randn(1, cfg.siglip.hidden_size, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(res(x), torch.nn.functional.avg_pool2d(x, 2))


def test_merge_anyres_layout():
    d, t = 3, 2
    newline = torch.full((d,), -1.0)
    feats = torch.arange(5 * t * t * d, dtype=torch.float32).view(5, t, t, d)
    one = merge_anyres(feats[:1], newline)  # one crop: its features, then one newline (upstream's)
    assert one.shape == (t * t + 1, d) and (one[-1] == -1).all() and (one[:-1] != -1).all()
    torch.testing.assert_close(one[:-1], feats[0].reshape(-1, d))
    tok = merge_anyres(feats, newline, grid=(2, 2))  # no size: no unpadding
    assert tok.shape == (t * t + 2 * t * (2 * t + 1), d)
    torch.testing.assert_close(tok[: t * t], feats[0].reshape(-1, d))
    rows = tok[t * t:].view(2 * t, 2 * t + 1, d)
    assert (rows[:, -1] == -1).all()
    torch.testing.assert_close(rows[0, :t], feats[1, 0])  # top-left tile's first row
    torch.testing.assert_close(rows[0, t:2 * t], feats[2, 0])  # then the top-right tile's
    torch.testing.assert_close(rows[t, :t], feats[3, 0])  # second tile row
    # a wide image in a square grid: the padding rows go
    assert unpad(torch.zeros(8, 8, 1), (200, 100)).shape[:2] == (4, 8)
    assert infer_grid(2, (100, 40), ICFG.anyres_grid, 56) == (1, 2)
    assert infer_grid(2, (40, 100), ICFG.anyres_grid, 56) == (2, 1)
    assert infer_grid(4, (100, 60)) == (2, 2)


# ---------------------------------------------------------------------------------- groups, seeds


def test_param_groups(built):
    model, _ = built
    g = model.param_groups()
    names = [n for n, _ in model.named_parameters() if not n.startswith("vq.")]
    main = [g[k] for k in ("vision_tower", "projector", "resampler", "language_model")]
    assert sorted(sum(main, [])) == sorted(names)  # a partition of everything but the VQ
    assert set(g["generation_branch"]) <= set(g["language_model"])
    assert "model.image_newline" in g["language_model"] and "model.transformer.wte.weight" in g["language_model"]
    gen = set(g["generation_branch"])
    assert "model.transformer.blocks.0.q_proj_vision.weight" in gen
    assert "model.downsample_gen.downsample.conv.weight" in gen
    assert "model.gen_embedding_2.1.weight" in gen and "model.gen_predictor.2.weight" in gen
    assert "model.transformer.blocks.0.q_proj.weight" not in gen
    assert "model.transformer.blocks.1.attn_out.weight" not in gen
    assert g["projector"] == [f"model.mm_projector.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    with pytest.raises(ValueError, match="unknown"):
        model.set_trainable(["nope"])


def test_seeded_builds_are_identical(tok_dir):
    state = torch.get_rng_state()
    a, _ = tiny_model(tok_dir, seed=7)
    b, _ = tiny_model(tok_dir, seed=7)
    c, _ = tiny_model(tok_dir, seed=8)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.transformer.wte.weight"], sc["model.transformer.wte.weight"])
    assert not torch.equal(
        sa["model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"],
        sc["model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"],
    )


def test_composer_model_takes_upstreams_token_ids(tok_dir):
    from lavida_data.transforms.tokenize import load_tokenizer
    from lavida_train.composer_model import LavidaComposerModel

    tok, ids = load_tokenizer(str(tok_dir))
    cm = LavidaComposerModel.for_tokenizer(torch.nn.Linear(1, 1), str(tok_dir), train=None)
    assert (cm.text_mask_id, cm.eos_id) == (ids.mask, ids.eos)  # end-of-text (the pad) is a target
    assert tok.convert_ids_to_tokens(cm.infill_id) == "<|reserved_token_1|>"  # never masked nor predicted
