"""Parameters a step does not use: every trainable parameter gets a gradient in every step (a zero
one where the step did not use it), the used ones' gradients untouched, so DDP (without
``find_unused_parameters``) and FSDP train every kind of step on every rank.

The choice (see README, "Several processes"): the model's zero anchor, a term ``0 * sum(first
element of each trainable parameter outside the LLaDA blocks)`` added to the loss inside the
model's forward, and an all-skipped micro-batch still running the model (on a one-token stand-in,
its loss times 0). ``find_unused_parameters`` was not taken: it leaves a parameter unused on
every rank without a gradient, so AdamW skips it where one process (and upstream's DeepSpeed
ZeRO-2) steps it with a zero gradient, and it does nothing for FSDP, whose units must run on
every rank. Grouping steps (one length group per step, as the loader does) does not decide what
a step uses either: the prompt drop masks a step's understanding images, one rank's share can
be all bad. ``benchmarks/unused_params.py`` measures the cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import STAGE_DIR, plan_batches

ROOT = Path(__file__).resolve().parents[2]


def recipe_for(stage: str, prepared: Path, folder: Path, *extra: str):
    from lavida_train.config import load_stage
    from lavida_train.train import Recipe

    cfg = load_stage(STAGE_DIR / f"{stage}.yaml", ["model.preset=tiny", f"data.prepared={prepared}",
                                                   f"save_folder={folder}", "data.num_workers=0", "init_from=null",
                                                   *extra])
    recipe = Recipe(cfg)
    recipe.setup()
    return recipe


def grads(model) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def run(cm, batch) -> dict[str, torch.Tensor | None]:
    cm.zero_grad(set_to_none=True)
    cm.loss(cm(batch), batch).backward()
    return grads(cm)


@pytest.fixture(scope="module")
def s3_recipe(prepared, tmp_path_factory):
    """s3-unified (everything but the VQ trains) on one process, and a seed whose first 6 steps of
    2 hold a generation, an editing, an understanding and a plan-only (text) step."""
    from .conftest import S3_KIND

    mixture = STAGE_DIR / "mixtures" / "s3-unified.yaml"
    for seed in range(3000):
        groups = [b["group"] for b in plan_batches(mixture, prepared / "s3-unified", seed=seed, per_device=2, world=1,
                                                   steps=6)]
        if {S3_KIND[g] for g in groups} == {"generation", "editing", "understanding", "plan"}:
            break
    return recipe_for("s3-unified", prepared / "s3-unified", tmp_path_factory.mktemp("s3"), f"seed={seed}")


def empty_step(batch: dict) -> dict:
    return {"ids": [], "skipped": [{"id": "bad:0"}, {"id": "bad:1"}],
            "input_ids": torch.empty((0, 0), dtype=torch.long), "step": batch["step"], "group": batch["group"]}


def test_every_trainable_parameter_gets_a_gradient_and_the_used_ones_are_untouched(s3_recipe, monkeypatch):
    from lavida_train.model.lavida import LavidaO

    cm = s3_recipe.composer_model
    it = iter(s3_recipe.train_data.dataloader)
    batches = [next(it) for _ in range(6)]
    batches.append(empty_step(batches[0]))
    unused_somewhere = set()
    for batch in batches:
        torch.manual_seed(0)
        with_anchor = run(cm, batch)
        with monkeypatch.context() as m:
            m.setattr(LavidaO, "zero_anchor", lambda self: torch.zeros(()))
            without = run(cm, batch)
        assert all(g is not None for g in with_anchor.values()), batch["group"]
        for name, g in without.items():
            if g is None:  # unused: a zero gradient
                unused_somewhere.add(name)
                assert not with_anchor[name].any(), name
            else:  # used: bit for bit the gradient it has without the anchor
                assert torch.equal(with_anchor[name], g), name
        if not batch["ids"]:  # an all-skipped step: every gradient zero, the blocks' included
            assert all(not g.any() for g in with_anchor.values())
    groups = {n.split(".")[2] for n in unused_somewhere}  # model.model.<module>
    assert {"vision_tower", "gen_embedding"} <= groups, groups  # the anchor had work to do


def test_the_anchor_covers_the_parameters_outside_the_blocks_and_fsdp_wraps_each_block(s3_recipe):
    from lavida_train.model.llada import LLaDABlock

    model = s3_recipe.model
    anchored = {id(p) for p in model.anchor_parameters()}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert id(p) not in anchored
        elif ".blocks." in name:
            assert id(p) not in anchored, name  # each block is its own FSDP unit, run in every pass
        elif name.startswith(("model.transformer.wte.", "model.transformer.ln_f.")):
            assert id(p) not in anchored, name  # every position goes through them
        else:
            assert id(p) in anchored, name
    units = [m for m in model.modules() if model.fsdp_wrap_fn(m)]
    assert len(units) == model.config.n_layers and all(isinstance(m, LLaDABlock) for m in units)
    assert [m for m in model.modules() if model.activation_checkpointing_fn(m)] == units
    assert float(model.zero_anchor()) == 0.0


def test_composer_gets_fsdp_without_the_vq_and_non_reentrant_checkpointing(s3_recipe):
    par = s3_recipe.parallelism()
    fsdp = par["fsdp"]
    assert fsdp["ignored_modules"] == [s3_recipe.model.vq]
    assert (fsdp["sharding_strategy"], fsdp["use_orig_params"], fsdp["activation_checkpointing"]) == \
        ("FULL_SHARD", True, True)
    assert fsdp["activation_checkpointing_reentrant"] is False
    from composer.utils.parallelism import FSDPConfig

    FSDPConfig(**fsdp)  # what Composer's Trainer builds from it


@pytest.mark.parametrize("stage", ["s3-unified", "s2-256"])
def test_ddp_and_fsdp_on_two_processes_give_every_step_the_reference_gradient(stage, prepared, s3_seed, tmp_path):
    """Two CPU processes (gloo), through the worker: DDP and FSDP (as Composer wraps it) train the
    real steps (s3: generation, editing, understanding, plan-only; s2-256: the generation branch
    alone, its up / down sampling unused at 256 px) and a step where one rank's share, then
    every share, was skipped as bad; each gives the hand-reduced reference gradient for every
    trainable parameter."""
    data = prepared / ("s3-unified" if stage == "s3-unified" else "s2-256")
    args = ["--out", str(tmp_path), "--stage", stage, "--prepared", str(data)]
    args += ["--seed", str(s3_seed), "--steps", "4"] if stage == "s3-unified" else ["--steps", "1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "train" / "ddp_fsdp_worker.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    reports = [json.loads((tmp_path / f"{stage}-rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["fsdp_units"] == 1 + 2  # the root and the tiny model's two blocks
        steps = report["steps"]
        assert all("ddp_max_abs_diff" in s and "fsdp_max_abs_diff" in s for s in steps)
        assert any(s["unused_without_anchor"] for s in steps)  # steps that leave parameters unused
    made_one, made_all = reports[1]["steps"][-2], reports[1]["steps"][-1]
    assert made_one["kept"] == 0 and reports[0]["steps"][-2]["kept"] > 0  # rank 1's share all bad
    assert made_all["kept"] == 0 and reports[0]["steps"][-1]["kept"] == 0
    if stage == "s2-256":  # 256 px: no 2 x 2 merge, the up / down sampling is unused in every step
        assert all(any("upsample_gen" in n for n in s["unused_without_anchor"]) for s in reports[0]["steps"])
