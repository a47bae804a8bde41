"""Shared by the training tests: prepared stage data, crafted mixtures, and training runs launched
once per session through Composer's launcher (``composer -n N -m lavida_train.train``), as users
launch them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT

STAGES = ["s1-gnd", "s2-256", "s2-1024", "s3-unified"]
MIXTURE = {"s1-gnd": "s1-gnd", "s2-256": "s2-256", "s2-1024": "s2-256", "s3-unified": "s3-unified"}
STAGE_DIR = ROOT / "examples" / "stages"
DATA = ROOT / "examples" / "data"
BIN = Path(sys.executable).parent


def prepare_mixture(path: Path, out: Path) -> None:
    from lavida_data import validate_file
    from lavida_data.prepare.local import prepare

    report = validate_file(path)
    assert report.valid, report.errors
    prepare(report.plans.values(), str(out))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """Each stage mixture prepared into ``<out>/<mixture>`` (s2-1024 reads s2-256's)."""
    out = tmp_path_factory.mktemp("prepared")
    for mixture in sorted(set(MIXTURE.values())):
        prepare_mixture(STAGE_DIR / "mixtures" / f"{mixture}.yaml", out / mixture)
    return out


def composer_env(nproc: int, env: dict | None = None) -> dict:
    """The environment of a launch: several ranks share this machine's cores, one thread each."""
    return {**os.environ, **({"OMP_NUM_THREADS": "1"} if nproc > 1 else {}), **(env or {})}


def composer(nproc: int, *args: str, cwd: Path, env: dict | None = None, timeout: int = 600
             ) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "composer"), "-n", str(nproc), "-m", "lavida_train.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=composer_env(nproc, env))


def stage_args(stage: str, prepared: Path, folder: Path, *extra: str) -> list[str]:
    """The stage file and the overrides of a CPU run: tiny preset, prepared data, save folder,
    no init_from, one loader worker; ``extra`` last (it may replace data.prepared)."""
    return [str(STAGE_DIR / f"{stage}.yaml"), "model.preset=tiny", f"data.prepared={prepared / MIXTURE[stage]}",
            f"save_folder={folder}", "data.num_workers=1", "init_from=null", *extra]


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


@dataclass
class Run:
    folder: Path
    output: str

    @property
    def metrics(self) -> list[dict]:
        return metrics(self.folder)


class Runs:
    """Training runs by (stage, processes, overrides), each launched once per session."""

    def __init__(self, root: Path, prepared: Path):
        self.root, self.prepared = root, prepared
        self._done: dict[tuple, Run] = {}

    def get(self, stage: str, nproc: int, *extra: str) -> Run:
        key = (stage, nproc, extra)
        if key not in self._done:
            folder = self.root / f"{stage}-n{nproc}-{len(self._done)}"
            folder.parent.mkdir(parents=True, exist_ok=True)
            proc = composer(nproc, *stage_args(stage, self.prepared, folder, *extra), cwd=self.root)
            out = proc.stdout + proc.stderr
            assert proc.returncode == 0, out[-6000:]
            self._done[key] = Run(folder, out)
        return self._done[key]


@pytest.fixture(scope="session")
def runs(tmp_path_factory, prepared) -> Runs:
    return Runs(tmp_path_factory.mktemp("runs"), prepared)


# -- crafted mixtures -------------------------------------------------------------------------------


def plan_batches(mixture: Path, prepared: Path, *, seed: int, per_device: int, world: int, steps: int) -> list[dict]:
    """The loader's steps (``{"step", "group", "ids"}``, the global batch in order) without
    decoding a sample: what ``world`` ranks of ``per_device`` samples train on."""
    from lavida_data import validate_file
    from lavida_data.stream.order import global_batches

    report = validate_file(mixture)
    return global_batches(report.mixture, report.plans, str(prepared), batch_size=per_device, world_size=world,
                          seed=seed, steps=steps)


@dataclass
class Crafted:
    mixture: Path
    prepared: Path
    seed: int
    steps: int

    def overrides(self, *extra: str) -> tuple[str, ...]:
        return (f"data.mixture={self.mixture}", f"data.prepared={self.prepared}", f"seed={self.seed}",
                f"max_duration={self.steps}ba", *extra)


@pytest.fixture(scope="session")
def s1_with_bad_samples(tmp_path_factory) -> Crafted:
    """s1-gnd's mixture with refcoco's images missing (each refcoco sample is skipped as bad at
    load time), and a seed whose first 4 steps on 2 ranks of 2 hold: a step whose samples are
    all bad, a step where one rank's samples are all bad and the other's are not, and steps
    without bad samples."""
    root = tmp_path_factory.mktemp("s1-bad")
    text = (STAGE_DIR / "mixtures" / "s1-gnd.yaml").read_text().replace("../../data", str(DATA))
    anchor = "preprocess_fn: preproces_refcoco_rec\n    length_group: grounding\n    image_root: " + str(DATA)
    assert anchor in text
    text = text.replace(anchor, anchor.replace(str(DATA), str(root / "no-images")))
    (root / "s1-bad.yaml").write_text(text)
    prepare_mixture(root / "s1-bad.yaml", root / "prepared")
    bad = lambda i: i.startswith("refcoco:")  # noqa: E731
    for seed in range(1000):
        batches = plan_batches(root / "s1-bad.yaml", root / "prepared", seed=seed, per_device=2, world=2, steps=4)
        kinds = step_kinds(batches, bad)
        # and one process's passes are the ranks' shares even without the skipped samples' positions
        if {"all bad", "one rank bad", "none bad"} <= set(kinds) and \
                all(passes_are_shares(b["ids"], {i for i in b["ids"] if bad(i)}) for b in batches):
            return Crafted(root / "s1-bad.yaml", root / "prepared", seed, 4)
    raise AssertionError("no seed gives every kind of step")


def passes_are_shares(global_ids: list[str], bad: set[str], skipped: list[dict] | None = None) -> bool:
    """Whether one process's 2 passes of a step (``split_step``) hold the kept samples of the 2
    ranks' shares (the halves of the global batch): always when the skipped records carry
    positions; without, kept samples fill the passes first (``pass_slices``)."""
    from lavida_train.passes import pass_slices

    skipped = skipped if skipped is not None else [{"id": i} for i in global_ids if i in bad]
    if not skipped or all("position" in s for s in skipped):
        return True
    half = len(global_ids) // 2
    shares = [[i for i in share if i not in bad] for share in (global_ids[:half], global_ids[half:])]
    kept = [i for i in global_ids if i not in bad]
    return [kept[k0:k0 + nk] for (k0, nk), _ in pass_slices({"ids": kept, "skipped": skipped}, 2)] == shares


def step_kinds(batches: list[dict], bad) -> list[str]:
    """Per step on 2 ranks: 'all bad', 'one rank bad' (every sample of one rank's share),
    'some bad' or 'none bad'."""
    out = []
    for b in batches:
        ids = b["ids"]
        half = len(ids) // 2
        flags = [bad(i) for i in ids]
        if all(flags):
            out.append("all bad")
        elif all(flags[:half]) or all(flags[half:]):
            out.append("one rank bad")
        else:
            out.append("some bad" if any(flags) else "none bad")
    return out


#: s3-unified's length groups by what their samples hold (plan: upstream's plan_only samples, text only)
S3_KIND = {"t2i": "generation", "blip60k": "generation", "mj": "generation", "laion_coyo": "generation",
           "reflect_dit_plan_t2i": "generation", "edit": "editing", "edit_gpt": "editing",
           "edit_gpt_reason": "editing", "reflect_dit_plan_feedback_t2i": "editing",
           "reflect_dit_feedback_t2i": "editing", "und": "understanding", "und_vw": "understanding",
           "grounding": "understanding", "reflect_dit_judge": "understanding", "edit_gpt_reason_txt": "plan",
           "reflect_dit_plan_text": "plan", "reflect_dit_plan_feedback_text": "plan"}


@pytest.fixture(scope="session")
def s3_seed(prepared) -> int:
    """A seed whose first 4 steps of s3-unified's own mixture on 2 ranks of 2 are a generation,
    an editing, an understanding and a plan-only step (each kind once at least)."""
    mixture = STAGE_DIR / "mixtures" / "s3-unified.yaml"
    for seed in range(3000):
        groups = [b["group"] for b in plan_batches(mixture, prepared / "s3-unified", seed=seed, per_device=2, world=2,
                                                   steps=4)]
        if {S3_KIND[g] for g in groups} == {"generation", "editing", "understanding", "plan"}:
            return seed
    raise AssertionError("no seed gives every kind of step")


@pytest.fixture(scope="session")
def tok_dir(tiny_tokenizer: str) -> str:
    """The tiny tokenizer's folder (built once per run)."""
    return tiny_tokenizer


# -- the two-process runs and their one-process references (test_distributed, test_train)

GLOBAL = 4  # 2 per rank x 2 ranks (the default on 2 ranks), or 2 passes of 2 on one


def overrides(stage: str, s1_with_bad_samples, s3_seed) -> tuple[str, ...]:
    """Each stage's run: s1-gnd with bad samples (all of a step's, all of one rank's); s3-unified
    with a generation, editing, understanding and plan-only step; both s2 stages as they are."""
    if stage == "s1-gnd":
        return s1_with_bad_samples.overrides("save_interval=4ba")
    if stage == "s3-unified":
        return (f"seed={s3_seed}", "max_duration=4ba", "save_interval=2ba")
    steps = {"s2-256": 3, "s2-1024": 2}[stage]
    return (f"max_duration={steps}ba", f"save_interval={steps}ba")


def steps_of(extra) -> int:
    """The steps of a run: its ``max_duration=Nba``."""
    return int(next(o for o in extra if o.startswith("max_duration=")).split("=")[1][:-2])


def batch_factors(stage: str, extra) -> dict[str, float]:
    """The batch factors of a run's mixture (``data.mixture=`` in ``extra``, else the stage's)."""
    from lavida_data import validate_file

    mixture = next((o.split("=", 1)[1] for o in extra if o.startswith("data.mixture=")), None)
    return validate_file(mixture or STAGE_DIR / "mixtures" / f"{MIXTURE[stage]}.yaml").mixture.batch_sizes
