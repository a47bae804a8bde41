"""Model parity with upstream LaViDa-O's own model code (golden fixtures in tests/golden/model/).

``scripts/golden/make_model.py`` built upstream's model (commit e3a80df) at tiny size with fixed
random weights and recorded its state dict in the released layout (``release/``: safetensors
shards and their index) and its outputs for fixed inputs (``outputs.safetensors``,
``cases.json``), and the names and shapes of upstream's full-size model (``full_size_names.json``).
Here our model loads that release strictly and reproduces every recorded output to 1e-5, and a
few training steps start from upstream's loss on the first batch.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from lavida_train.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from lavida_train.composer_model import LavidaComposerModel  # noqa: E402
from lavida_train.model.config import ModelConfig, SiglipConfig, VQConfig  # noqa: E402
from lavida_train.model.gen import embed_image_ids, predict_image_logits  # noqa: E402
from lavida_train.model.lavida import LavidaO  # noqa: E402
from lavida_train.model.mapping import map_key  # noqa: E402
from lavida_train.model.vision import encode_crops, infer_grid  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "model"
TOL = dict(rtol=1e-5, atol=1e-5)
DRAW_KEYS = ("t_text", "u_text", "u_prompt", "u_enc", "u_keep", "t_img", "u_img")


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((GOLDEN / "cases.json").read_text())


@pytest.fixture(scope="module")
def out() -> dict:
    return safetensors_torch.load_file(str(GOLDEN / "outputs.safetensors"))


def unpack_release(dst: Path) -> Path:
    """The release folder as published: the gzipped shards unpacked next to their index."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in (GOLDEN / "release").iterdir():
        if f.suffix == ".gz":
            with gzip.open(f) as z, open(dst / f.stem, "wb") as o:
                shutil.copyfileobj(z, o)
        else:
            shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return unpack_release(tmp_path_factory.mktemp("release"))


def upstream_config(meta: dict) -> ModelConfig:
    """Our settings for upstream's tiny model (cases.json ``tiny``)."""
    t = meta["tiny"]
    return ModelConfig(
        d_model=t["d_model"], n_heads=t["n_heads"], n_layers=t["n_layers"], mlp_hidden=t["mlp_hidden_size"],
        dual_tower_layers=t["dual_tower_layers"], gen_width=t["d_model_gen"], gen_mlp_hidden=t["mlp_hidden_size_gen"],
        vocab_size=t["vocab_size"],
        siglip=SiglipConfig(**t["siglip"], image_size=t["crop"], patch_size=t["patch"]),
        vq=VQConfig(codebook_size=t["vq"]["codebook_size"], latent_channels=t["vq"]["latent_channels"],
                    block_out_channels=t["vq"]["block_out_channels"], layers_per_block=t["vq"]["layers_per_block"]),
    )


def build(meta: dict, seed: int = 0) -> LavidaO:
    """Our model with upstream's geometry: its anyres pinpoints are read at 384 px whatever the tower."""
    pins = [tuple(p) for p in meta["tiny"]["pinpoints"]]
    return LavidaO.from_config(upstream_config(meta), seed=seed, anyres_grid=pins, anyres_tile=384)


@pytest.fixture(scope="module")
def model(meta, release):
    m = build(meta)
    load_checkpoint(m, release)
    return m.eval()


def composer(model: LavidaO, meta: dict) -> LavidaComposerModel:
    ids = meta["ids"]
    train = SimpleNamespace(time_policy="uniform", prompt_drop=meta["prompt_drop"],
                            edit_source_drop=meta["edit_source_drop"], plan_unmasked_prob=meta["plan_unmasked_prob"],
                            text_loss=True, edit_reweight=True, min_mask=1e-3)
    return LavidaComposerModel(model, text_mask_id=ids["mask"], train=train, eos_id=ids["eos"],
                               infill_id=ids["infill"])


def und_inputs(out: dict, meta: dict) -> dict:
    crops = out["und.crops"].float().split(meta["und"]["crops"])
    return {"und_pixels": [[c] for c in crops], "und_sizes": [[tuple(s)] for s in meta["und"]["sizes"]]}


def batch(out: dict, name: str, draws: str | None, extra: dict) -> dict:
    """A collated batch of a recorded case (VQ ids given) with its recorded masking draws."""
    ids = out[f"{name}.input_ids"].long()
    b = {"input_ids": ids, "labels": out[f"{name}.labels"].long(), "gen_mask": ids == -300,
         "gen_enc_mask": ids == 126090, **extra}
    prefix = f"{name}.draws." + (f"{draws}." if draws else "")
    b["mask_draws"] = {k: out[prefix + k] for k in DRAW_KEYS}
    for k in ("gen_ids", "enc_ids"):
        if f"{name}.{k}" in out:
            b[k] = out[f"{name}.{k}"].long()
    return b


def rows_of(b: dict, rows: list[int], gen: slice, position: list[int]) -> dict:
    """Some samples of a gen256 batch (their generated images ``gen``; the one edit source is
    sample 1's), with seeded masks instead of the recorded ones."""
    out = {k: b[k][rows] for k in ("input_ids", "labels", "gen_mask", "gen_enc_mask")}
    out.update({k: [b[k][r] for r in rows] for k in ("und_pixels", "und_sizes", "do_not_mask_text")})
    out.update(gen_ids=b["gen_ids"][gen], enc_ids=b["enc_ids"] if 1 in rows else None, position=position)
    return out


def gen256_extra(out: dict) -> dict:
    return {"und_pixels": [[], [out["gen256.crops"].float()], []], "und_sizes": [[], [(640, 480)], []],
            "do_not_mask_text": [False, False, True]}


# ---------------------------------------------------------------------------------- the release


def test_release_loads_strictly(meta, release, model):
    shards = safetensors_torch.load_file(str(release / "model-00002-of-00002.safetensors"))
    shards.update(safetensors_torch.load_file(str(release / "model-00001-of-00002.safetensors")))
    state = model.state_dict()
    assert {map_key(k) for k in shards} == set(state)  # every name, VQ-VAE included
    for k, v in shards.items():
        assert torch.equal(state[map_key(k)], v.float()), k
    n_vq = sum(k.startswith("model.vqvae.") for k in shards)
    report = load_checkpoint(build(meta), release)
    assert report.kind == "release" and report.loaded == report.tensors == len(shards)
    assert report.vq == "loaded" and report.vq_tensors == n_vq > 0 and len(report.files) == 2


def test_release_vq_skipped_by_name(meta, release):
    fresh = build(meta, seed=3)
    before = {k: v.clone() for k, v in fresh.state_dict().items() if k.startswith("vq.")}
    report = load_checkpoint(fresh, release, vq="skip")
    assert report.vq == "skipped" and report.loaded == report.tensors - report.vq_tensors
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in before.items())


def test_broken_release_folders_are_refused(meta, release, tmp_path):
    index = json.loads((release / "model.safetensors.index.json").read_text())
    for name, edit in {
        "lost_shard": lambda d: (d / "model-00002-of-00002.safetensors").unlink(),
        "index_names_more": lambda d: _write_index(d, {**index["weight_map"], "model.extra.weight":
                                                       "model-00001-of-00002.safetensors"}),
        "index_names_less": lambda d: _write_index(d, {k: v for k, v in index["weight_map"].items()
                                                       if k != "model.image_newline"}),
    }.items():
        d = tmp_path / name
        shutil.copytree(release, d)
        edit(d)
        with pytest.raises(CheckpointError):
            load_checkpoint(build(meta), d)


def _write_index(folder: Path, weight_map: dict) -> None:
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_full_size_names_and_shapes_are_upstreams():
    """Our full-size model (the release's sizes) on the meta device has exactly the names and
    shapes of upstream's model built from the release's configuration (11.09B parameters)."""
    recorded = json.loads((GOLDEN / "full_size_names.json").read_text())
    theirs = {map_key(k): tuple(v) for k, v in recorded["shapes"].items()}
    with torch.device("meta"):
        ours = LavidaO(ModelConfig(), vocab_size=127378)
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs
    assert sum(k.startswith("vq.") for k in mine) == recorded["vq_tensors"] == 277
    assert len(mine) - 277 == 989
    total = sum(torch.Size(s).numel() for s in theirs.values())
    assert 11.09e9 < total < 11.10e9


# ---------------------------------------------------------------------------------- outputs


def test_vq_ids(model, out):
    ids = model.vq.encode_ids(out["vq.pixels"])
    assert torch.equal(ids, out["vq.ids"].long())


def test_siglip_path(model, out):
    crops = out["und.crops"].float()
    m = model.model
    with torch.no_grad():
        torch.testing.assert_close(m.vision_tower(crops)[:, ::5], out["und.tower"], **TOL)
        projected = encode_crops(m.vision_tower, m.vision_resampler, m.mm_projector, crops)
    torch.testing.assert_close(projected.flatten(1, 2)[:, ::4], out["und.projected"], **TOL)


def test_anyres_token_layout(model, out, meta):
    """One crop: 13 x 13 features + one newline (170); tiles: base + unpadded map with a newline
    per row (466 for 2 x 1 tiles of a 700 x 300 image, 709 for 2 x 2 of 900 x 700)."""
    und = meta["und"]
    assert und["image_tokens"] == [170, 466, 709]
    for size, n, (cols, rows) in zip(und["sizes"], und["crops"], und["grids_cols_rows"]):
        if n > 1:
            assert infer_grid(n - 1, tuple(size), model.anyres_grid, 384) == (rows, cols)
    with torch.no_grad():
        res = model(out["und.input_ids"].long(), **und_inputs(out, meta), return_expanded=True)
    assert torch.equal(res["expanded_ids"], out["und.layout"].long())


def test_backbone_hidden_states_and_lm_logits(model, out, meta):
    with torch.no_grad():
        res = model(out["und.input_ids"].long(), **und_inputs(out, meta), return_expanded=True,
                    compute_text_logits=False)
        hidden = res["expanded_hidden"]
        torch.testing.assert_close(hidden[:, out["und.hidden_rows"].long()], out["und.hidden"], **TOL)
        logits = model.model.transformer.logits(hidden[:, out["und.logit_rows"].long()])
    torch.testing.assert_close(logits[..., out["und.vocab_probe"].long()], out["und.logits"], **TOL)
    torch.testing.assert_close(torch.logsumexp(logits, -1), out["und.logits_lse"], **TOL)


@pytest.mark.parametrize("name,merge", [("gen256", False), ("gen1024", True)])
def test_generation_embeddings(model, out, name, merge):
    with torch.no_grad():
        for kind in ("gen", "enc"):
            got = embed_image_ids(model.model, out[f"{name}.{kind}_ids"].long(), merge)
            torch.testing.assert_close(got, out[f"{name}.{kind}_embeds"], **TOL)


def test_image_head_at_1024_px(model, out):
    """upsample_gen, then gen_predictor_2, then gen_predictor (upstream's order)."""
    with torch.no_grad():
        logits = predict_image_logits(model.model, out["head1024.hidden"][None], (64, 64), True).reshape(4096, -1)
    torch.testing.assert_close(torch.logsumexp(logits, -1), out["head1024.lse"], **TOL)
    torch.testing.assert_close(logits[::64, :128], out["head1024.logits"], **TOL)
    assert torch.equal(logits.argmax(-1), out["head1024.argmax"].long())


CASES = [("und", None), ("gen256", "a"), ("gen256", "b"), ("gen1024", "a")]


@pytest.mark.parametrize("name,draws", CASES)
def test_masked_diffusion_loss_with_upstreams_masks(model, out, meta, name, draws):
    """The whole loss of a batch with fixed masks: understanding (a prompt drop), text-to-image +
    edit + plan at 256 px (a prompt drop and a kept plan; a dropped edit source), an edit at 1024 px."""
    extra = und_inputs(out, meta) if name == "und" else gen256_extra(out) if name == "gen256" else {}
    b = batch(out, name, draws, extra)
    cm = composer(model, meta)
    with torch.no_grad():
        outputs = cm(b)
        loss = cm.loss(outputs, b)
    want = meta[name] if draws is None else meta[name]["draws"][draws]
    assert float(loss) == pytest.approx(want["loss"], rel=1e-5, abs=1e-5)
    assert int(outputs["text_masked"].sum()) == want["text_targets"]
    if draws is not None:
        assert cm.last["text_loss"] == pytest.approx(want["text_loss"], rel=1e-5, abs=1e-5)
        assert cm.last["image_loss"] == pytest.approx(want["image_loss"], rel=1e-5, abs=1e-5)
        assert int(outputs["image_masked"].sum()) == want["image_targets"]
        lse = torch.logsumexp(outputs["image_logits"].flatten(1, 2), -1)
        torch.testing.assert_close(lse, out[f"{name}.draws.{draws}.image_lse"], **TOL)


# ---------------------------------------------------------------------------------- training


def test_trains_from_the_upstream_checkpoint(meta, out, release, tmp_path):
    """Composer trains the tiny model loaded from the upstream-layout release for a few steps of
    varying batch size (3, 1, 2 samples): the first step's loss is upstream's recorded loss (its
    masks given), each step's loss is its batch's own mean, the weights move, and the checkpoint it
    writes loads back."""
    from composer import Trainer
    from composer.core import Callback, DataSpec

    model = build(meta, seed=5)
    load_checkpoint(model, release)
    cm = composer(model, meta)
    first = batch(out, "gen256", "a", gen256_extra(out))
    single = rows_of(first, [1], gen=slice(1, 2), position=[1])  # the edit sample; seeded masks
    two = rows_of(first, [0, 1], gen=slice(0, 2), position=[7, 8])
    batches = [first, single, two]

    class Record(Callback):
        def __init__(self):
            self.losses, self.sizes, self.own = [], [], []

        def after_train_batch(self, state, logger):
            self.losses.append(float(state.loss))
            self.sizes.append(len(state.batch["input_ids"]))
            self.own.append(cm.last["loss"])

    record = Record()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
    trainer = Trainer(
        model=cm, train_dataloader=DataSpec(loader, get_num_samples_in_batch=lambda b: len(b["input_ids"]),
                                            split_batch=lambda b, n: [b]),
        optimizers=torch.optim.AdamW([p for p in cm.parameters() if p.requires_grad], lr=1e-3),
        max_duration="3ba", device="cpu", precision="fp32", device_train_microbatch_size=4,
        save_folder=str(tmp_path), save_interval="3ba", save_weights_only=True, loggers=[], progress_bar=False,
        log_to_console=False, callbacks=[record], seed=0,
    )
    trainer.fit()
    trainer.close()
    assert record.sizes == [3, 1, 2]
    assert record.losses[0] == pytest.approx(meta["gen256"]["draws"]["a"]["loss"], rel=1e-5, abs=1e-5)
    assert record.losses == pytest.approx(record.own, rel=1e-6)  # Composer does not rescale by batch size
    assert all(x == x and 0 < x < 100 for x in record.losses)
    state = model.state_dict()
    assert not torch.equal(state["model.gen_predictor.2.weight"], before["model.gen_predictor.2.weight"])
    assert all(torch.equal(state[k], v) for k, v in before.items() if k.startswith("vq."))
    # the Composer checkpoint it wrote is a base checkpoint too
    again = build(meta, seed=6)
    report = load_checkpoint(again, tmp_path / "ep0-ba3-rank0.pt")
    assert report.kind == "composer" and report.vq == "loaded"
    assert all(torch.equal(again.state_dict()[k], v) for k, v in state.items())
