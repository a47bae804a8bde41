"""Reference checkpoint names -> our parameters: shapes, strict loading, failures."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from lavida_data.tokenizer import build_tiny_tokenizer  # noqa: E402
from lavida_train.model.config import ModelConfig  # noqa: E402
from lavida_train.model.mapping import (  # noqa: E402
    REFERENCE_KEYS,
    load_reference_state_dict,
    map_key,
    read_state_dict,
    reference_shapes,
)
from lavida_train.model.presets import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture()
def fresh(tok_dir):
    return tiny_model(tok_dir, seed=0)


def _reference_state(cfg, seed=123):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in reference_shapes(cfg).items()}


def test_our_names_and_shapes_are_the_reference(fresh):
    model, cfg = fresh
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("vq.")}
    assert ours == reference_shapes(cfg)
    assert all(map_key(k) == k for k in ours)  # identity mapping
    assert all(src == dst for src, dst in REFERENCE_KEYS.items())


def test_load_reference_state_dict_strict(fresh):
    model, cfg = fresh
    ref = _reference_state(cfg)
    vq_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("vq.")}
    result = load_reference_state_dict(model, {**ref, "vq.model.quant_conv.weight": torch.zeros(1)})
    assert result.missing == [] and result.unexpected == []
    state = model.state_dict()
    for k, v in ref.items():
        assert torch.equal(state[k], v), k
    assert all(torch.equal(state[k], v) for k, v in vq_before.items())  # the VQ is never loaded
    with torch.no_grad():  # and the model runs with the loaded weights
        out = model(torch.tensor([[1, 2, 3]]))
    assert out["text_logits"].shape == (1, 3, cfg.vocab_size)


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
    extra_layer = {**ref, layer_key: torch.zeros(1)}
    with pytest.raises(KeyError, match="unexpected"):
        load_reference_state_dict(model, extra_layer)

    wrong = {**ref, "model.gen_predictor.2.weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match="shape mismatch"):
        load_reference_state_dict(model, wrong)
    assert torch.equal(model.state_dict()["model.transformer.wte.weight"], before)  # nothing copied

    result = load_reference_state_dict(model, missing, strict=False)
    assert result.missing == ["model.transformer.blocks.1.ff_out_vision.weight"]


def test_alias_and_file_round_trip(fresh, tmp_path):
    model, cfg = fresh
    ref = _reference_state(cfg, seed=5)
    old = "model.vision_tower.vision_tower.vision_model."
    aliased = {(("model.vision_tower.vision_model." + k[len(old):]) if k.startswith(old) else k): v
               for k, v in ref.items()}
    path = tmp_path / "ckpt.pt"
    torch.save(aliased, path)
    load_reference_state_dict(model, read_state_dict(str(path)))
    key = old + "embeddings.patch_embedding.weight"
    assert torch.equal(model.state_dict()[key], ref[key])
    assert map_key("vq.model.encoder.conv_in.weight") is None


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
    assert shapes["model.vision_resampler.weight"] == (1152, 1152, 2, 2)
    assert shapes["model.gen_embedding.0.weight"] == (8192 + 256, 2048)
    assert shapes["model.gen_predictor.2.weight"] == (8192, 2048)
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
