"""The four stages on a CPU with the tiny preset, launched as users launch them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lavida_data import validate_file
from lavida_data.prepare import prepare

from ..conftest import ROOT

STAGES = ["s1-gnd", "s2-256", "s2-1024", "s3-unified"]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    for stage in STAGES:
        report = validate_file(ROOT / "examples" / "stages" / "mixtures" / f"{stage}.yaml")
        assert report.valid, report.errors
        prepare(report.plans.values(), str(out / stage))
    return out


def launch(stage: str, prepared: Path, folder: Path, *extra: str, env: dict | None = None, check: bool = True):
    """``composer -n 1 -m lavida_train.train STAGE.yaml overrides`` in a subprocess."""
    cmd = [str(BIN / "composer"), "-n", "1", "-m", "lavida_train.train",
           str(ROOT / "examples" / "stages" / f"{stage}.yaml"),
           "model.preset=tiny", f"data.prepared={prepared / stage}", f"save_folder={folder}",
           "global_train_batch_size=2", "data.num_workers=1", "init_from=null", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=folder.parent,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_trains_through_composers_launcher(stage, prepared, tmp_path):
    folder = tmp_path / stage
    launch(stage, prepared, folder, "max_duration=2ba", "save_interval=2ba")
    lines = metrics(folder)
    assert [m["batch"] for m in lines] == [1, 2]
    for m in lines:
        assert {"batch", "loss", "text_loss", "image_loss", "mask_ratio", "sample_ids"} <= set(m)
        assert len(m["sample_ids"]) + len(m["skipped"]) == 2 and m["loss"] > 0
        assert all(i.split(":")[0] for i in m["sample_ids"])
    assert (folder / "latest-rank0.pt").exists()
    if stage == "s2-256":  # text loss off: the total is the image loss alone
        assert all(abs(m["loss"] - m["image_loss"]) < 1e-6 for m in lines)
    if stage == "s1-gnd":  # understanding and grounding only: no image loss
        assert all(m["image_loss"] == 0 for m in lines)
    if stage == "s2-256":
        check_frozen_parameters(folder)


def check_frozen_parameters(folder: Path) -> None:
    """What s2-256 freezes is bit-identical to the seeded initial model; what it trains moved."""
    from lavida_train.model.lavida import LavidaO
    from lavida_train.model.presets import tokenizer_vocab_size
    from lavida_train.model.config import tiny_config

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
    text = (ROOT / "examples" / "stages" / "mixtures" / "s1-gnd.yaml").read_text()
    text = text.replace("../../data", str(ROOT / "examples" / "data")).replace(
        "weights:", "batch_sizes: {grounding: 0.5}\nweights:", 1)
    (root / "s1f.yaml").write_text(text)
    report = validate_file(root / "s1f.yaml")
    assert report.valid, report.errors
    prepare(report.plans.values(), str(root / "s1-gnd"))
    return root


def test_length_group_batch_sizes_train_and_resume_exactly(with_factors, tmp_path):
    """One length group per step, with its own batch size (grounding: 4 x 0.5 = 2 per device);
    a run killed mid-epoch resumes from Composer's sample count to the same steps and losses."""
    common = ("max_duration=6ba", "save_interval=3ba", "global_train_batch_size=4", "device_train_microbatch_size=4",
              f"data.mixture={with_factors / 's1f.yaml'}")
    whole = tmp_path / "whole"
    launch("s1-gnd", with_factors, whole, *common)
    group_of = {"mammoth-si": "und", "visualwebinstruct": "und", "grandf": "grounding", "refcoco": "grounding"}
    lines = metrics(whole)
    assert {m["group"] for m in lines} == {"und", "grounding"}
    for m in lines:
        ids = m["sample_ids"] + [s["id"] for s in m["skipped"]]
        assert {group_of[i.split(":")[0]] for i in ids} == {m["group"]}
        assert len(ids) == {"und": 4, "grounding": 2}[m["group"]]
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

    cfg = load_stage(ROOT / "examples" / "stages" / "s3-unified.yaml",
                     ["model.preset=tiny", f"data.prepared={prepared / 's3-unified'}", f"save_folder={tmp_path}",
                      "global_train_batch_size=2", "data.num_workers=0", "init_from=null", "train.prompt_drop=0",
                      "train.edit_source_drop=0"])
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
