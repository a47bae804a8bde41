"""Reference checkpoint names -> our parameters, and the checkpoint formats ``model.checkpoint`` takes:
shapes, strict loading, the VQ-VAE by name, failures."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from lavida_train.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, read_state_dict  # noqa: E402
from lavida_train.model.config import ModelConfig  # noqa: E402
from lavida_train.model.mapping import (  # noqa: E402
    REFERENCE_KEYS,
    RENAMED,
    load_reference_state_dict,
    map_key,
    reference_shapes,
)
from lavida_train.model.presets import tiny_model  # noqa: E402


@pytest.fixture()
def fresh(tok_dir):
    return tiny_model(tok_dir, seed=0)


def _reference_state(cfg, seed=123):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in reference_shapes(cfg).items()}


def _release_state(model, cfg, seed=123) -> dict[str, torch.Tensor]:
    """A full checkpoint in the released naming: reference names plus the VQ-VAE as model.vqvae.*."""
    g = torch.Generator().manual_seed(seed + 1)
    vq = {"model.vqvae." + k[len("vq.model."):]: torch.randn(v.shape, generator=g)
          for k, v in model.state_dict().items() if k.startswith("vq.")}
    return {**_reference_state(cfg, seed), **vq}


def _same(model, state) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[map_key(k)], v.to(own[map_key(k)].dtype)) for k, v in state.items())


def test_our_names_and_shapes_are_the_reference(fresh):
    model, cfg = fresh
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("vq.")}
    assert ours == reference_shapes(cfg)
    assert all(map_key(k) == k for k in ours)  # identity mapping
    assert all(src == dst for src, dst in REFERENCE_KEYS.items())
    assert map_key("model.vqvae.encoder.conv_in.weight") == "vq.model.encoder.conv_in.weight"


def test_load_reference_state_dict_strict(fresh):
    model, cfg = fresh
    ref = _reference_state(cfg)
    vq_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("vq.")}
    result = load_reference_state_dict(model, {**ref, "model.vqvae.quant_conv.weight": torch.zeros(1)})
    assert result.missing == [] and result.unexpected == [] and result.vq_skipped == 1 and result.vq_loaded == 0
    state = model.state_dict()
    for k, v in ref.items():
        assert torch.equal(state[k], v), k
    assert all(torch.equal(state[k], v) for k, v in vq_before.items())  # skipped by name: untouched
    with torch.no_grad():  # and the model runs with the loaded weights
        out = model(torch.tensor([[1, 2, 3]]))
    assert out["text_logits"].shape == (1, 3, cfg.vocab_size)


def test_vq_loaded_by_name(fresh):
    model, cfg = fresh
    full = _release_state(model, cfg)
    result = load_reference_state_dict(model, full, vq="load")
    assert result.vq_loaded == sum(k.startswith("model.vqvae.") for k in full) > 0
    assert _same(model, full)
    with pytest.raises(KeyError, match="no VQ-VAE"):
        load_reference_state_dict(model, _reference_state(cfg), vq="load")
    partial = {k: v for k, v in full.items() if k != "model.vqvae.quant_conv.weight"}
    with pytest.raises(KeyError, match="1 missing.*vq.model.quant_conv.weight"):
        load_reference_state_dict(model, partial, vq="auto")


def test_missing_unexpected_and_shape_errors(fresh):
    model, cfg = fresh
    ref = _reference_state(cfg)
    before = model.state_dict()["model.transformer.wte.weight"].clone()

    missing = dict(ref)
    del missing["model.transformer.blocks.1.ff_out_vision.weight"]
    with pytest.raises(KeyError, match="1 missing.*ff_out_vision"):
        load_reference_state_dict(model, missing)

    extra = {**ref, "model.transformer.blocks.0.bias_that_does_not_exist": torch.zeros(1)}
    with pytest.raises(KeyError, match="1 unexpected"):
        load_reference_state_dict(model, extra)
    # the full SigLIP's last layer is not part of the model
    last = cfg.siglip.num_hidden_layers - 1
    layer_key = f"model.vision_tower.vision_tower.vision_model.encoder.layers.{last}.mlp.fc1.bias"
    with pytest.raises(KeyError, match="unexpected"):
        load_reference_state_dict(model, {**ref, layer_key: torch.zeros(1)})

    wrong = {**ref, "model.gen_predictor.2.weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match="shape mismatch"):
        load_reference_state_dict(model, wrong)
    assert torch.equal(model.state_dict()["model.transformer.wte.weight"], before)  # nothing copied

    result = load_reference_state_dict(model, missing, strict=False)
    assert result.missing == ["model.transformer.blocks.1.ff_out_vision.weight"]


def test_aliases_and_earlier_names(fresh):
    model, cfg = fresh
    ref = _reference_state(cfg, seed=5)
    old = "model.vision_tower.vision_tower.vision_model."
    aliased = {(("model.vision_tower.vision_model." + k[len(old):]) if k.startswith(old) else k): v
               for k, v in ref.items()}
    earlier = {new: old_name for old_name, new in RENAMED.items()}
    aliased = {earlier.get(k, k): v for k, v in aliased.items()}
    assert "model.vision_resampler.weight" in aliased and "model.upsample_gen.1.weight" in aliased
    load_reference_state_dict(model, aliased)
    assert _same(model, ref)


# ---------------------------------------------------------------------------------- formats


def test_release_folder_single_files_and_composer(fresh, tmp_path):
    """The release folder (shards + index), a folder of shards, one .safetensors, one .pt, and a
    Composer checkpoint all load the same weights strictly, the VQ-VAE included."""
    model, cfg = fresh
    full = _release_state(model, cfg, seed=7)
    bf16 = {k: v.to(torch.bfloat16) for k, v in full.items()}  # the release's dtype

    release = tmp_path / "release"
    release.mkdir()
    names = sorted(bf16)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for fname, keys in shards.items():
        safetensors_torch.save_file({k: bf16[k] for k in keys}, str(release / fname))
    (release / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}))
    (release / "config.json").write_text("{}")

    shards_only = tmp_path / "shards"
    shards_only.mkdir()
    for fname in shards:
        (shards_only / fname).write_bytes((release / fname).read_bytes())
    single = tmp_path / "model.safetensors"
    safetensors_torch.save_file(bf16, str(single))
    pt = tmp_path / "model.pt"
    torch.save(bf16, pt)
    composer = tmp_path / "ep0-ba1-rank0.pt"  # what the trainer writes: model. + our names
    ours = {map_key(k): v for k, v in bf16.items()}
    torch.save({"state": {"model": {"model." + k: v for k, v in ours.items()}, "run": SimpleNamespace(name="s1")},
                "rng": [{"python": 0}]}, composer)  # an object weights_only refuses, as Composer's own

    for path, kind in ((release, "release"), (shards_only, "shards"), (single, "safetensors"), (pt, "torch"),
                       (composer, "composer")):
        fresh_model, _ = tiny_model(str(cfg.tokenizer), seed=1)
        report = load_checkpoint(fresh_model, path)
        assert report.kind == kind and report.vq == "loaded" and report.loaded == report.tensors == len(full)
        assert _same(fresh_model, bf16), kind
    assert set(read_state_dict(str(release))) == set(full)
    assert read_checkpoint(release).files == [str(release / f) for f in shards]


def test_bad_checkpoints_are_refused(fresh, tmp_path):
    model, cfg = fresh
    ref = _reference_state(cfg)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="without"):
        load_checkpoint(model, empty)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(model, tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(model, junk)
    odd = tmp_path / "odd.pt"
    torch.save({"weights": [1, 2]}, odd)
    with pytest.raises(CheckpointError, match="neither"):
        load_checkpoint(model, odd)
    pt = tmp_path / "no_vq.pt"
    torch.save(ref, pt)
    with pytest.raises(KeyError, match="no VQ-VAE"):
        load_checkpoint(model, pt, vq="load")
    assert load_checkpoint(model, pt).vq == "absent"  # auto: the model keeps its own VQ-VAE


def test_full_size_reference_shapes():
    shapes = reference_shapes(ModelConfig())
    t = "model.transformer."
    assert shapes[t + "wte.weight"] == (127378, 4096) and shapes[t + "ff_out.weight"] == (127378, 4096)
    assert shapes[t + "blocks.31.q_proj_vision.weight"] == (4096, 2048)
    assert shapes[t + "blocks.31.ff_proj_vision.weight"] == (8192, 2048)
    assert shapes[t + "blocks.31.ff_out_vision.weight"] == (2048, 8192)
    assert shapes[t + "blocks.0.ff_proj.weight"] == (12288, 4096)
    assert t + "blocks.32.q_proj.weight" not in shapes
    v = "model.vision_tower.vision_tower.vision_model."
    assert shapes[v + "embeddings.position_embedding.weight"] == (729, 1152)
    assert v + "encoder.layers.25.mlp.fc1.weight" in shapes and v + "encoder.layers.26.mlp.fc1.weight" not in shapes
    assert shapes["model.mm_projector.0.weight"] == (4096, 1152)
    assert shapes["model.vision_resampler.pool.weight"] == (1152, 1152, 2, 2)
    assert shapes["model.downsample_gen.downsample.conv.weight"] == (2048, 2048, 2, 2)
    assert shapes["model.upsample_gen.upsample.norm.weight"] == (2048,)
    assert shapes["model.gen_embedding.0.weight"] == (8192 + 256, 2048)
    assert shapes["model.gen_predictor.2.weight"] == (8192, 2048)
    assert len(shapes) == 989
    n = lambda pre, skip=(): sum(  # noqa: E731
        math_prod(s) for k, s in shapes.items() if k.startswith(pre) and not any(x in k for x in skip))
    llada = n(t, skip=("_vision",))
    assert 8.0e9 < llada < 8.1e9  # LLaDA-8B
    assert 2.3e9 < n(t) - llada < 2.5e9  # the image tower


def math_prod(shape):
    out = 1
    for s in shape:
        out *= s
    return out
