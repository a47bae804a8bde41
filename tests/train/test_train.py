"""The four stages on a CPU with the tiny preset, launched as users launch them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from lavida_data import validate_file
from lavida_data.prepare.local import prepare
from tests.support import ROOT

from .conftest import GLOBAL, STAGE_DIR, STAGES, batch_factors, metrics, overrides, stage_args, steps_of
from .conftest import composer as launch_composer


def composer(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return launch_composer(1, *args, cwd=cwd, env=env)


def launch(stage: str, prepared: Path, folder: Path, *extra: str, env: dict | None = None, check: bool = True):
    """``composer -n 1 -m lavida_train.train STAGE.yaml overrides`` in a subprocess (the global
    batch left to its default: 2 per device, one device)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    proc = composer(*stage_args(stage, prepared, folder, *extra), cwd=folder.parent, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_trains_through_composers_launcher(stage, runs, s1_with_bad_samples, s3_seed):
    """One process, a global batch of 4: each step is 2 forward passes of upstream's per-device 2
    (times the group's factor). These runs are also test_distributed's one-process references."""
    extra = overrides(stage, s1_with_bad_samples, s3_seed)
    run = runs.get(stage, 1, *extra, f"global_train_batch_size={GLOBAL}")
    folder, lines = run.folder, run.metrics
    steps = steps_of(extra)
    assert [m["batch"] for m in lines] == list(range(1, steps + 1))
    factors = batch_factors(stage, extra)
    for m in lines:
        assert {"batch", "loss", "text_loss", "image_loss", "mask_ratio", "grad_norm", "sample_ids"} <= set(m)
        per_pass = max(int(2 * factors.get(m["group"], 1)), 1)
        assert len(m["sample_ids"]) + len(m["skipped"]) == 2 * per_pass
        assert m["passes"] == 2
        assert all(i.split(":")[0] for i in m["sample_ids"])
        assert m["loss"] > 0 or not m["sample_ids"]
    assert (folder / "latest-rank0.pt").exists()
    if stage == "s2-256":  # text loss off: the total is the image loss alone
        assert all(abs(m["loss"] - m["image_loss"]) < 1e-6 for m in lines)
    if stage == "s1-gnd":  # understanding and grounding only: no image loss
        assert all(m["image_loss"] == 0 for m in lines)
    if stage == "s2-256":
        check_frozen_parameters(folder)


def check_frozen_parameters(folder: Path) -> None:
    """What s2-256 freezes is bit-identical to the seeded initial model; what it trains moved."""
    from lavida_train.model.config import tiny_config
    from lavida_train.model.lavida import LavidaO
    from lavida_train.model.presets import tokenizer_vocab_size

    state = torch.load(folder / "latest-rank0.pt", map_location="cpu", weights_only=False)["state"]["model"]
    vocab = tokenizer_vocab_size(str(folder / "tiny-tokenizer"))
    grid = [(w * 56 // 384, h * 56 // 384) for w, h in [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]]
    initial = LavidaO.from_config(tiny_config(), vocab_size=vocab, seed=42, anyres_grid=grid)
    trained_names = set(initial.param_groups()["generation_branch"])
    moved = frozen = 0
    for name, p in initial.named_parameters():
        after = state["model." + name]
        if name in trained_names:
            moved += not torch.equal(after, p.detach())
        else:
            assert torch.equal(after, p.detach()), name
            frozen += 1
    assert frozen > 0 and moved > 0


@pytest.mark.slow  # test_distributed's kill -9 test resumes in the default run
def test_kill_and_resume_equals_an_uninterrupted_run(prepared, tmp_path):
    common = ("max_duration=6ba", "save_interval=3ba")
    whole = tmp_path / "whole"
    launch("s2-256", prepared, whole, *common)
    resumed = tmp_path / "resumed"
    killed = launch("s2-256", prepared, resumed, *common, env={"LAVIDA_DIE_AT_BATCH": "4"}, check=False)
    assert killed.returncode != 0
    assert [m["batch"] for m in metrics(resumed)] == [1, 2, 3, 4]  # died after batch 4, checkpoint at 3
    launch("s2-256", prepared, resumed, *common)  # autoresume from batch 3
    a, b = metrics(whole), metrics(resumed)
    assert [m["batch"] for m in b] == [1, 2, 3, 4, 5, 6]
    assert [m["sample_ids"] for m in a] == [m["sample_ids"] for m in b]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6, abs=1e-7), (x["batch"], x["loss"], y["loss"])


@pytest.fixture(scope="module")
def with_factors(tmp_path_factory):
    """s1-gnd's mixture with ``batch_sizes: {grounding: 0.5}``, prepared."""
    root = tmp_path_factory.mktemp("factors")
    text = (STAGE_DIR / "mixtures" / "s1-gnd.yaml").read_text()
    text = text.replace("../../data", str(ROOT / "examples" / "data")).replace(
        "weights:", "batch_sizes: {grounding: 0.5}\nweights:", 1)
    (root / "s1f.yaml").write_text(text)
    report = validate_file(root / "s1f.yaml")
    assert report.valid, report.errors
    prepare(report.plans.values(), str(root / "s1-gnd"))
    return root


COMMON_FACTORS = ("max_duration=6ba", "save_interval=3ba", "global_train_batch_size=4")


def test_length_group_batch_sizes_accumulate(with_factors, tmp_path):
    """One length group per step, with its own batch size: a global batch of 4 on one device is
    2 forward passes of 2 (upstream's per-device batch) per step, grounding's factor 0.5 making
    it 2 passes of 1."""
    launch("s1-gnd", with_factors, tmp_path / "whole", *COMMON_FACTORS, f"data.mixture={with_factors / 's1f.yaml'}")
    group_of = {"mammoth": "default", "grand-f": "grounding", "refcoco": "grounding"}
    lines = metrics(tmp_path / "whole")
    assert {m["group"] for m in lines} == {"default", "grounding"}
    for m in lines:
        ids = m["sample_ids"] + [s["id"] for s in m["skipped"]]
        assert {group_of[i.split(":")[0]] for i in ids} == {m["group"]}
        assert len(ids) == {"default": 4, "grounding": 2}[m["group"]]
        assert m["passes"] == 2  # 2 + 2, or 1 + 1 (grounding)


@pytest.mark.slow  # resuming exactly runs by default in test_distributed's kill -9 test
def test_length_group_batch_sizes_resume_exactly(with_factors, tmp_path):
    """A run with per-group batch sizes killed mid-epoch resumes from Composer's sample count to
    the same steps and losses."""
    common = (*COMMON_FACTORS, f"data.mixture={with_factors / 's1f.yaml'}")
    whole = tmp_path / "whole"
    launch("s1-gnd", with_factors, whole, *common)
    resumed = tmp_path / "resumed"
    killed = launch("s1-gnd", with_factors, resumed, *common, env={"LAVIDA_DIE_AT_BATCH": "5"}, check=False)
    assert killed.returncode != 0
    launch("s1-gnd", with_factors, resumed, *common)  # autoresume from batch 3
    a, b = metrics(whole), metrics(resumed)
    assert [m["batch"] for m in b] == [1, 2, 3, 4, 5, 6]
    assert [m["sample_ids"] for m in a] == [m["sample_ids"] for m in b]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6, abs=1e-7), (x["batch"], x["loss"], y["loss"])


def test_loss_falls_when_one_batch_repeats(prepared, tmp_path):
    from lavida_train.config import load_stage
    from lavida_train.train import Recipe

    cfg = load_stage(STAGE_DIR / "s3-unified.yaml",
                     ["model.preset=tiny", f"data.prepared={prepared / 's3-unified'}", f"save_folder={tmp_path}",
                      "data.num_workers=0", "init_from=null", "train.prompt_drop=0", "train.edit_source_drop=0",
                      "train.image_size=256"])  # 256 px: the VQ encodes the targets in every one of the 25 steps
    recipe = Recipe(cfg)
    recipe.setup()
    model = recipe.composer_model
    batch = next(iter(recipe.train_data.dataloader))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        torch.manual_seed(0)  # the same masks every step
        loss = model.loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# -- launching: what is checked before anything is built ------------------------------------------


def test_the_stage_command_without_init_from_fails_at_once_saying_what_to_set(prepared, tmp_path):
    """``composer ... s2-256.yaml model.preset=tiny data.prepared=DIR``: s1-gnd's checkpoint is
    not there, so the run stops before building anything, naming s1-gnd and ``init_from=null``."""
    proc = composer(str(STAGE_DIR / "s2-256.yaml"), "model.preset=tiny", f"data.prepared={prepared / 's2-256'}",
                    f"save_folder={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "s2-256.yaml: error [field 'init_from']" in err and "stage s1-gnd's last checkpoint" in err
    assert "init_from=null" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "tiny-tokenizer").exists()  # nothing was built


def stage(name: str, *overrides: str):
    from lavida_train.config import load_stage

    return load_stage(STAGE_DIR / f"{name}.yaml", list(overrides))


def preflight_issues(cfg) -> list:
    from lavida_data.errors import ConfigError
    from lavida_train.train import preflight

    try:
        preflight(cfg)
    except ConfigError as e:
        return e.issues
    return []


def test_preflight_names_the_stage_that_writes_init_from(tmp_path):
    (i,) = preflight_issues(stage("s3-unified", "model.preset=tiny", f"data.prepared={tmp_path}",
                                  f"save_folder={tmp_path / 's3'}"))
    assert i.field == "init_from" and "stage s2-1024's last checkpoint" in i.message
    assert "examples/stages/s2-1024.yaml" in i.message and "init_from=null" in i.message
    # a checkpoint that exists, or an autoresume checkpoint in save_folder, is fine
    ckpt = tmp_path / "prev.pt"
    ckpt.write_bytes(b"")
    assert preflight_issues(stage("s3-unified", "model.preset=tiny", f"data.prepared={tmp_path}",
                                  f"init_from={ckpt}")) == []
    (tmp_path / "s3").mkdir()
    (tmp_path / "s3" / "latest-rank0.pt").write_bytes(b"")
    assert preflight_issues(stage("s3-unified", "model.preset=tiny", f"data.prepared={tmp_path}",
                                  f"save_folder={tmp_path / 's3'}")) == []


def test_preflight_reports_every_missing_file_at_once(tmp_path):
    issues = preflight_issues(stage("s1-gnd", f"model.tokenizer={tmp_path / 'tok'}",
                                    f"model.checkpoint={tmp_path / 'release'}", f"data.prepared={tmp_path / 'prep'}"))
    by_field = {i.field: i.message for i in issues}
    assert set(by_field) == {"model.tokenizer", "model.checkpoint", "data.prepared"}
    assert "safetensors" in by_field["model.checkpoint"] and "lavida-data prepare" in by_field["data.prepared"]
    assert "LOC" in by_field["model.tokenizer"]


def test_a_tokenizer_without_the_release_tokens_is_refused_before_the_model_is_built(tmp_path, monkeypatch, capsys):
    from lavida_data.transforms.tokenizer import build_tiny_tokenizer
    from lavida_train.model.lavida import LavidaO
    from lavida_train.train import main

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(LavidaO, "from_config", no_build)
    no_loc = build_tiny_tokenizer(tmp_path / "no-loc", loc=False)
    args = [str(STAGE_DIR / "s2-256.yaml"), f"model.tokenizer={no_loc}", f"data.prepared={tmp_path}",
            f"save_folder={tmp_path / 'run'}", "init_from=null"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "field 'model.tokenizer'" in err and "lacks the LOC tokens" in err
    # with the LOC tokens but not the release's vocabulary size (127378)
    tiny = build_tiny_tokenizer(tmp_path / "tiny")
    assert main(args[:1] + [f"model.tokenizer={tiny}"] + args[2:]) == 2
    assert "the model's vocabulary (model.vocab_size) is 127378" in capsys.readouterr().err


def test_gradients_are_clipped_at_upstreams_norm(prepared, tmp_path):
    from composer.algorithms import GradientClipping

    from lavida_train.train import Recipe

    recipe = Recipe(stage("s2-256", "model.preset=tiny", f"data.prepared={prepared / 's2-256'}",
                          f"save_folder={tmp_path}", "data.num_workers=0", "init_from=null"))
    recipe.setup()
    (clip,) = recipe.trainer_kwargs()["algorithms"]
    assert isinstance(clip, GradientClipping) and (clip.clipping_type, clip.clipping_threshold) == ("norm", 1.0)
    recipe.cfg = recipe.cfg.model_copy(update={"optimizer": recipe.cfg.optimizer.model_copy(
        update={"max_grad_norm": None})})
    assert recipe.trainer_kwargs()["algorithms"] == []


# -- one step's forward passes ----------------------------------------------------------------------


def step_batch(kept: int, skipped: int) -> dict:
    return {
        "input_ids": torch.arange(kept * 3).view(kept, 3), "lengths": torch.full((kept,), 3),
        "ids": [f"d:{i}" for i in range(kept)], "gen_pixels": [[torch.zeros(1)] for _ in range(kept)],
        "position": list(range(kept)), "skipped": [{"id": f"bad:{i}"} for i in range(skipped)],
        "step": 7, "group": "und",
    }


@pytest.mark.parametrize("kept, skipped, parts, sizes", [
    (4, 0, 1, [4]), (4, 0, 2, [2, 2]), (5, 0, 2, [3, 2]), (2, 0, 4, [1, 1]), (3, 2, 2, [3, 2]), (1, 0, 3, [1]),
    (0, 2, 2, [1, 1]),
])
def test_split_step_forms_the_forward_passes(kept, skipped, parts, sizes):
    from lavida_train.passes import num_samples, split_step

    batch = step_batch(kept, skipped)
    passes = split_step(batch, 2, parts=parts)
    assert [num_samples(p) for p in passes] == sizes
    if parts == 1:
        assert passes == [batch]
    assert [i for p in passes for i in p["ids"]] == batch["ids"]
    assert [s for p in passes for s in p["skipped"]] == batch["skipped"]
    assert torch.equal(torch.cat([p["input_ids"] for p in passes]), batch["input_ids"])
    for p in passes:
        assert len(p["gen_pixels"]) == len(p["position"]) == len(p["ids"]) == p["input_ids"].shape[0]
        assert (p["step"], p["group"]) == (7, "und")
    if skipped and len(passes) > 1:  # spread from the last pass
        assert len(passes[-1]["skipped"]) >= 1


def test_a_pass_is_padded_to_its_own_longest_sample_plus_the_steps_extra_padding():
    """As each rank collates its own share: a pass of one process is the rank's batch."""
    from lavida_train.passes import split_step

    lengths = [3, 7, 2, 4]
    extra = 5
    width = max(lengths) + extra
    batch = {"input_ids": torch.full((4, width), 9), "labels": torch.full((4, width), -100),
             "gen_mask": torch.zeros(4, width, dtype=torch.bool), "lengths": torch.tensor(lengths),
             "n_gen": torch.tensor([1, 0, 1, 0]), "ids": [f"d:{i}" for i in range(4)], "position": [10, 11, 12, 13],
             "skipped": [], "step": 3, "group": "g"}
    for i, n in enumerate(lengths):
        batch["input_ids"][i, :n] = i
    a, b = split_step(batch, parts=2)
    assert a["input_ids"].shape == (2, 7 + extra) and b["input_ids"].shape == (2, 4 + extra)
    assert a["labels"].shape == a["gen_mask"].shape == a["input_ids"].shape
    assert torch.equal(a["input_ids"], batch["input_ids"][:2, :12]) and torch.equal(b["n_gen"], torch.tensor([1, 0]))
    assert (b["ids"], b["position"], b["step"]) == (["d:2", "d:3"], [12, 13], 3)


@pytest.mark.parametrize("bad_at, kept_per_pass, bad_per_pass", [
    ([0, 1], [0, 2], [2, 0]),  # the first rank's share all bad: the first pass is all skipped
    ([2, 3], [2, 0], [0, 2]),
    ([1, 3], [1, 1], [1, 1]),
    ([0], [1, 2], [1, 0]),
])
def test_skipped_samples_stay_in_the_pass_of_their_position(bad_at, kept_per_pass, bad_per_pass):
    """With positions on the skipped records a pass is exactly a rank's share of the step."""
    from lavida_train.passes import split_step

    kept = [i for i in range(4) if i not in bad_at]
    batch = step_batch(len(kept), 0)
    batch["position"] = [100 + i for i in kept]
    batch["ids"] = [f"d:{i}" for i in kept]
    batch["skipped"] = [{"id": f"d:{i}", "position": 100 + i} for i in bad_at]
    passes = split_step(batch, parts=2)
    assert [len(p["ids"]) for p in passes] == kept_per_pass
    assert [len(p["skipped"]) for p in passes] == bad_per_pass
    assert [sorted(p["position"] + [s["position"] for s in p["skipped"]]) for p in passes] == [[100, 101], [102, 103]]


def test_metrics_merge_a_steps_passes_as_composer_weights_them():
    from lavida_train.callbacks import merge_passes

    a = {"loss": 1.0, "text_loss": 2.0, "image_loss": None, "mask_ratio": 0.5, "sample_ids": ["x:0", "x:1"],
         "skipped": [], "group": "und"}
    b = {"loss": 4.0, "text_loss": 5.0, "image_loss": None, "mask_ratio": 0.2, "sample_ids": ["x:2"],
         "skipped": [{"id": "x:3"}], "group": "und"}
    m = merge_passes([a, b])
    assert m["sample_ids"] == ["x:0", "x:1", "x:2"] and m["skipped"] == [{"id": "x:3"}]
    assert (m["group"], m["passes"]) == ("und", 2)
    assert m["loss"] == pytest.approx((2 * 1.0 + 2 * 4.0) / 4) and m["text_loss"] == pytest.approx(3.5)
    assert m["image_loss"] is None and m["mask_ratio"] == pytest.approx(0.35)
