"""Two processes (``composer -n 2``, DDP over gloo on this CPU) train every stage file with the
tiny preset as one process does at the same global batch, and resume exactly after ``kill -9`` of
the launcher.

Why losses and gradients are comparable here. Both runs have the global batch of 4 (2 per rank
and forward pass, upstream's per-device batch). One process splits each step into 2 forward
passes (``split_step``) that are exactly the two ranks' shares: the same samples, padded to their
own longest sample plus the step's extra padding (each rank collates its own share), so the
same masks (drawn from the passes' sample positions). A pass's loss is upstream's mean over its
masked tokens, which depends on what is in the pass, so the passes must match for losses to
match; they do. Composer scales each pass's loss by its samples (kept + skipped) over the mean
per rank, and DDP averages the ranks' gradients: both give the sample-weighted mean of the two
passes' gradients, so gradients (``grad_norm``, before clipping), clipping, AdamW steps and the
weights after them agree up to the order of floating-point sums. The metrics lines weight the
passes' (ranks') losses the same way.

Where they are not: when a step has samples skipped as bad, one process can place them in the
ranks' passes only if the skipped records carry their positions; without, it puts the kept
samples first, and a pass can then hold other samples than a rank's share (different mean,
different masks): such a step is compared on ids only (:func:`comparable`). The bad-sample run
(s1-gnd) takes a seed whose passes are the ranks' shares even so, and every step is compared.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from .conftest import (
    BIN,
    MIXTURE,
    S3_KIND,
    STAGE_DIR,
    GLOBAL,
    STAGES,
    batch_factors,
    composer,
    composer_env,
    metrics,
    overrides,
    passes_are_shares,
    plan_batches,
    stage_args,
    steps_of,
)

def comparable(line: dict, global_ids: list[str]) -> bool:
    """Whether one process's passes of this step hold the ranks' kept samples (see the module doc)."""
    return passes_are_shares(global_ids, {s["id"] for s in line["skipped"]}, line["skipped"])


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    state = torch.load(folder / "latest-rank0.pt", map_location="cpu", weights_only=False)["state"]["model"]
    return {k.removeprefix("module."): v for k, v in state.items()}


@pytest.mark.parametrize("stage", STAGES)
def test_two_processes_train_each_stage_as_one_process_does(stage, runs, prepared, s1_with_bad_samples, s3_seed):
    extra = overrides(stage, s1_with_bad_samples, s3_seed)
    two = runs.get(stage, 2, *extra)
    one = runs.get(stage, 1, *extra, f"global_train_batch_size={GLOBAL}")
    a, b = one.metrics, two.metrics
    steps = steps_of(extra)
    # rank 0 wrote one line per step, each with the whole global batch
    assert [m["batch"] for m in b] == list(range(1, steps + 1))
    factors = batch_factors(stage, extra)
    for m in b:
        assert len(m["sample_ids"]) + len(m["skipped"]) == 2 * max(int(2 * factors.get(m["group"], 1)), 1)
        assert m["passes"] == 2  # one per rank, upstream's per-device batch: no accumulation
    # the same samples, step by step, as one process at the same global batch ...
    for x, y in zip(a, b):
        assert (x["group"], x["sample_ids"], [s["id"] for s in x["skipped"]]) == \
               (y["group"], y["sample_ids"], [s["id"] for s in y["skipped"]]), x["batch"]
    # ... which is the loader's plan for one rank of 4 (bad samples left out of sample_ids)
    mixture, data = _mixture(stage, extra, prepared)
    seed = int(next((o.split("=")[1] for o in extra if o.startswith("seed=")), 42))
    plan = plan_batches(mixture, data, seed=seed, per_device=GLOBAL, world=1, steps=steps)
    for p, m in zip(plan, b):
        bad = [s["id"] for s in m["skipped"]]
        assert p["group"] == m["group"] and sorted(p["ids"]) == sorted(m["sample_ids"] + bad)
        assert [i for i in p["ids"] if i not in bad] == m["sample_ids"]
    # losses and gradients agree where the passes are the ranks' shares (the module doc)
    same = [comparable(x, p["ids"]) for x, p in zip(a, plan)]
    for x, y, ok in zip(a, b, same):
        if ok:
            for k in ("loss", "text_loss", "image_loss", "grad_norm"):
                assert y[k] == pytest.approx(x[k], rel=1e-5, abs=1e-6), (x["batch"], k, x[k], y[k])
    assert all(same)  # every step compared (the seeds are chosen so): the weights after the run agree too
    wa, wb = final_weights(one.folder), final_weights(two.folder)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6, msg=k)
    _stage_specifics(stage, b)


def _mixture(stage: str, extra, prepared: Path) -> tuple[Path, Path]:
    get = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in extra}
    mixture = Path(get.get("data.mixture", STAGE_DIR / "mixtures" / f"{MIXTURE[stage]}.yaml"))
    return mixture, Path(get.get("data.prepared", prepared / MIXTURE[stage]))


def _stage_specifics(stage: str, lines: list[dict]) -> None:
    if stage == "s1-gnd":  # every sample of a step bad; every sample of one rank's share bad; none bad
        all_bad = [m for m in lines if not m["sample_ids"]]
        assert all_bad and all(m["loss"] == 0 and m["grad_norm"] == 0 for m in all_bad)
        assert any(m["skipped"] and m["sample_ids"] for m in lines)
        assert any(not m["skipped"] for m in lines)
        assert all(m["image_loss"] == 0 for m in lines)  # understanding and grounding only
    if stage == "s3-unified":
        assert {S3_KIND[m["group"]] for m in lines} == {"generation", "editing", "understanding", "plan"}
        assert all(m["grad_norm"] > 0 for m in lines if m["sample_ids"])
    if stage == "s2-256":  # text loss off: the total is the image loss alone
        assert all(m["loss"] == pytest.approx(m["image_loss"]) for m in lines)


# -- kill -9 of the launcher, then the same command --------------------------------------------------


def group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    alive = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(pid))
    return alive


def test_kill_9_of_the_launcher_then_the_same_command_resumes_exactly(runs, prepared, s1_with_bad_samples,
                                                                    s3_seed, tmp_path):
    """s3-unified on 2 processes, 4 steps, a checkpoint every 2: every rank stops at the end of
    step 3 (LAVIDA_HANG_AT_BATCH), the launcher gets SIGKILL, its ranks die with it, and the same
    command again resumes from the checkpoint of step 2: steps 3 and 4 hold the ids and losses
    of an uninterrupted two-process run."""
    extra = overrides("s3-unified", s1_with_bad_samples, s3_seed)
    whole = runs.get("s3-unified", 2, *extra).metrics
    folder = tmp_path / "resumed"
    cmd = [str(BIN / "composer"), "-n", "2", "-m", "lavida_train.train",
           *stage_args("s3-unified", prepared, folder, *extra)]
    log = open(tmp_path / "killed.log", "w")
    launcher = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=composer_env(2, {"LAVIDA_HANG_AT_BATCH": "3"}))
    try:
        deadline = time.monotonic() + 300
        while not ((folder / "metrics.jsonl").exists() and 3 in [m["batch"] for m in metrics(folder)]):
            assert launcher.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "step 3 never came"
            time.sleep(0.5)
        ranks = [p for p in group_alive(launcher.pid) if p != launcher.pid]
        assert len(ranks) >= 2  # the two ranks (and their loader workers), stopped at step 3
        os.kill(launcher.pid, signal.SIGKILL)  # kill -9 of the launcher, nothing else
        launcher.wait(30)
        deadline = time.monotonic() + 60
        while group_alive(launcher.pid):  # the ranks die with their launcher
            assert time.monotonic() < deadline, f"ranks outlived the launcher: {group_alive(launcher.pid)}"
            time.sleep(0.2)
    finally:
        if launcher.poll() is None or group_alive(launcher.pid):
            os.killpg(launcher.pid, signal.SIGKILL)
        log.close()
    assert [m["batch"] for m in metrics(folder)] == [1, 2, 3]
    assert (folder / "latest-rank0.pt").exists()
    again = composer(2, *stage_args("s3-unified", prepared, folder, *extra), cwd=tmp_path)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-6000:]
    assert "continuing after batch 2" in out  # resumed from the checkpoint of step 2, not from scratch
    resumed = metrics(folder)
    assert [m["batch"] for m in resumed] == [1, 2, 3, 4]
    for x, y in zip(whole, resumed):
        assert (x["group"], x["sample_ids"]) == (y["group"], y["sample_ids"]), x["batch"]
        for k in ("loss", "text_loss", "image_loss", "grad_norm"):
            assert y[k] == pytest.approx(x[k], rel=1e-6, abs=1e-7), (x["batch"], k, x[k], y[k])


def test_the_tiny_tokenizer_is_built_beside_its_folder_and_renamed_into_place(tmp_path):
    """Each node's local rank 0 builds it when it is missing (the other ranks wait at a barrier);
    nodes sharing one save folder may build at once: each writes its own folder and renames it
    into place, the first rename wins, and nobody reads a half-written tokenizer."""
    import threading

    from tokenizers import Tokenizer  # noqa: F401  imported once here: transformers' lazy imports race in threads
    from transformers import PreTrainedTokenizerFast  # noqa: F401

    from lavida_data.transforms.tokenizer import build_tiny_tokenizer_once

    path = tmp_path / "run" / "tiny-tokenizer"
    errors = []

    def build():
        try:
            assert build_tiny_tokenizer_once(str(path)) == str(path)
            assert (path / "tokenizer.json").exists()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["tiny-tokenizer"]  # no leftovers
    before = (path / "tokenizer.json").stat().st_mtime_ns
    build_tiny_tokenizer_once(str(path))  # there: not built again
    assert (path / "tokenizer.json").stat().st_mtime_ns == before
