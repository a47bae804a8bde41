"""Streaming a prepared mixture: steps, determinism, world sizes, resumption, bad samples, S3."""

from __future__ import annotations

import itertools
import os
import shutil

import pytest

from lavida_data import LavidaDataError, validate_file
from lavida_data.prepare.local import prepare
from lavida_data.stream.loader import build_dataloader, build_dataset
from lavida_data.stream.order import global_batches, global_order

from tests.support import EXAMPLES

DEMO = "demo.yaml"
FACTORS = "batch_sizes: {t2i: 0.5, und: 0.25}\n"  # with per-device 4: t2i 2, und 1, others 4


def ids_of(loader, batches=None):
    out = []
    for k, batch in enumerate(loader):
        if batches is not None and k >= batches:
            break
        out.append(list(batch["ids"]))
    return out


def loader_for(demo, *, workers=0, batch_size=4, process=None, loader=None, seed=None, world_size=1, rank=0):
    report, prepared, _ = demo
    ds = build_dataset(report, prepared, batch_size=batch_size, seed=seed, world_size=world_size, rank=rank,
                       process=process or {"decode_images": False}, loader=loader)
    return build_dataloader(ds, num_workers=workers)


def test_steps_are_the_same_for_0_1_and_2_workers_and_match_the_order_command(factors):
    report, prepared, _ = factors
    expected = global_batches(report.mixture, report.plans, prepared, batch_size=4)
    sizes = {"t2i": 2, "und": 1}
    assert {b["group"] for b in expected} >= {"t2i", "und", "edit"}
    for workers in (0, 1, 2):
        loader = loader_for(factors, workers=workers)
        assert len(loader) == len(expected)
        got = [(b["step"], b["group"], b["ids"], b["samples"]) for b in loader]
        assert [(s, g, i) for s, g, i, _ in got] == [(b["step"], b["group"], b["ids"]) for b in expected], workers
        for step, group, ids, samples in got:
            assert len(ids) == sizes.get(group, 4)
            first = sum(sizes.get(b["group"], 4) for b in expected[:step])
            assert [s["position"] for s in samples] == list(range(first, first + len(ids)))
    flat = global_order(report.mixture, report.plans, prepared, batch_size=4)
    assert flat == [i for b in expected for i in b["ids"]]


def test_one_group_per_step_on_every_rank_and_the_same_batches_for_world_sizes_1_and_2(factors):
    cfg = {"epoch_steps": 24}
    one = [b for b in loader_for(factors, batch_size=8, loader=cfg)]
    ranks = [[b for b in loader_for(factors, batch_size=4, world_size=2, rank=r, workers=1, loader=cfg)]
             for r in (0, 1)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 24
    assert {b["group"] for b in one} >= {"t2i", "und", "edit"}
    for a, r0, r1 in zip(one, *ranks):
        assert a["group"] == r0["group"] == r1["group"]  # one length group per step, on every rank
        assert len(r0["ids"]) == len(r1["ids"]) == max(int(4 * {"t2i": 0.5, "und": 0.25}.get(a["group"], 1)), 1)
        assert r0["ids"] + r1["ids"] == a["ids"]  # rank r: the r-th slice of the same global batch
        assert [s["position"] for s in r0["samples"] + r1["samples"]] == [s["position"] for s in a["samples"]]


def test_world_size_and_rank_come_from_the_launchers_environment(monkeypatch):
    from lavida_data.stream.dataset import detect_world

    assert detect_world() == (1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert detect_world() == (4, 3) and detect_world(2, 1) == (2, 1)
    with pytest.raises(LavidaDataError, match="rank 4 is not in a world of 4"):
        detect_world(rank=4)


def test_epochs_differ_and_runs_repeat(demo):
    report, prepared, _ = demo
    e0 = global_order(report.mixture, report.plans, prepared, batch_size=4, epoch=0)
    e1 = global_order(report.mixture, report.plans, prepared, batch_size=4, epoch=1)
    assert e0 != e1 and e0 and len(e0) == len(e1)
    assert e0 == global_order(report.mixture, report.plans, prepared, batch_size=4, epoch=0)
    assert e0 != global_order(report.mixture, report.plans, prepared, batch_size=4, seed=99)
    loader = loader_for(demo)
    first, second = ids_of(loader), ids_of(loader)  # a loader goes on into the next epoch
    assert [i for b in first for i in b] == e0 and [i for b in second for i in b] == e1


def test_selections_hold_and_steps_follow_the_weights(demo):
    report, prepared, _ = demo
    steps = global_batches(report.mixture, report.plans, prepared, batch_size=1, config={"epoch_steps": 4000})
    group_of = {d.name: d.length_group for d in report.mixture.datasets}
    counts = {}
    for b in steps:
        assert [group_of[i.rsplit(":", 1)[0]] for i in b["ids"]] == [b["group"]]
        counts[b["group"]] = counts.get(b["group"], 0) + 1
    weights = report.mixture.weights
    total = sum(weights.values())
    for g, w in weights.items():
        assert abs(counts[g] / len(steps) - w / total) < 0.03, (g, counts[g] / len(steps), w / total)
    # random:50% of refcoco's 8 rows: the same 4 rows in every epoch
    refcoco = {i for b in steps for i in b["ids"] if i.startswith("refcoco:")}
    e1 = global_batches(report.mixture, report.plans, prepared, batch_size=1, epoch=1, config={"epoch_steps": 4000})
    assert len(refcoco) == 4 and refcoco == {i for b in e1 for i in b["ids"] if i.startswith("refcoco:")}


@pytest.mark.parametrize("stop", [1, 3, 5])
def test_resume_mid_epoch_is_exact(factors, stop):
    full = [(b["step"], b["ids"]) for b in loader_for(factors, workers=2)]
    first = loader_for(factors, workers=2)
    seen = []
    for k, batch in enumerate(first):
        seen.append((batch["step"], batch["ids"]))
        if k + 1 == stop:
            break
    state = first.state_dict()
    assert state["epoch"] == 0 and state["step"] == stop
    assert state["sample_in_epoch"] == sum(len(ids) for _, ids in seen)  # world 1: global = per-device
    second = loader_for(factors, workers=2)
    second.load_state_dict(state)
    rest = [(b["step"], b["ids"]) for b in second]
    assert seen + rest == full  # nothing lost, nothing twice
    again = [(b["step"], b["ids"]) for b in second]  # and then the next epoch, from its start
    assert again[0][0] == 0 and again != full


def test_composer_resumes_from_the_world_summed_sample_count(factors):
    """Composer calls ``dataset.state_dict(sample_in_epoch, True)`` (samples of all ranks) and,
    in the resumed run, ``dataset.load_state_dict(state)``."""
    full = [[b["ids"] for b in loader_for(factors, batch_size=2, world_size=2, rank=r)] for r in (0, 1)]
    ranks = [loader_for(factors, batch_size=2, world_size=2, rank=r) for r in (0, 1)]
    trained = 0
    its = [iter(loader) for loader in ranks]
    for _ in range(4):
        trained += sum(len(b["ids"]) + len(b["skipped"]) for b in (next(it) for it in its))
    state = ranks[0].dataset.state_dict(trained, True)
    assert state["step"] == 4 and state["sample_in_epoch"] == trained
    for r in (0, 1):
        fresh = loader_for(factors, batch_size=2, world_size=2, rank=r)
        fresh.dataset.load_state_dict(state)
        assert [b["ids"] for b in fresh] == full[r][4:]
    # at an epoch's end Composer's count starts again at 0: the state is the next epoch's start
    # (Composer takes len(loader) batches and does not exhaust the loader)
    ds = ranks[0].dataset
    assert ds.state_dict(trained, True)["epoch"] == 0
    rest = list(itertools.islice(its[0], len(ranks[0]) - 4))
    assert len(rest) == len(full[0]) - 4
    assert ds.state_dict(0, True)["epoch"] == 1 and ds.state_dict(0, True)["step"] == 0
    assert ranks[0].state_dict()["epoch"] == 1
    # a state that only counts samples (no step) resumes at the step those samples end
    fresh = loader_for(factors, batch_size=2, world_size=2, rank=0)
    fresh.load_state_dict({"epoch": 0, "sample_in_epoch": trained})
    assert [b["ids"] for b in fresh] == full[0][4:]


def test_state_loaded_after_iteration_began_is_refused(demo):
    loader = loader_for(demo)
    it = iter(loader)
    next(it)
    with pytest.raises(LavidaDataError, match="after iteration began"):
        loader.load_state_dict({"epoch": 0, "step": 1})
    with pytest.raises(LavidaDataError, match="after iteration began"):
        loader.dataset.load_state_dict({"epoch": 0, "step": 1})
    with pytest.raises(LavidaDataError, match="persistent_workers"):
        build_dataloader(loader.dataset, persistent_workers=True)


def test_batch_size_factors_stream_with_their_sizes(tmp_path):
    shutil.copytree(EXAMPLES / "mixtures", tmp_path / "mixtures")
    shutil.copytree(EXAMPLES / "data", tmp_path / "data")
    report = validate_file(tmp_path / "mixtures" / "und-grounding.yaml")  # und and grounding: 0.5
    prepare(report.plans.values(), str(tmp_path / "prepared"))
    ds = build_dataset(report, str(tmp_path / "prepared"), batch_size=4, process={"decode_images": False})
    batches = list(build_dataloader(ds, num_workers=0))
    assert batches and {len(b["ids"]) + len(b["skipped"]) for b in batches} == {2}
    assert {b["group"] for b in batches} == {"und", "grounding"}


def test_unprepared_or_changed_datasets_are_refused(demo, tmp_path):
    report, prepared, root = demo
    with pytest.raises(LavidaDataError, match="not prepared"):
        build_dataset(report, str(tmp_path / "nothing"), batch_size=2)


def test_tokenized_batches_carry_ids_and_repeats_differ(demo, tokenizer):
    process = {"image": {"gen_size": 256},
               "tokenize": {"tokenizer": tokenizer, "gen_tokens": 256, "max_length": 8192}}
    loader = loader_for(demo, workers=2, process=process)
    seen = {}
    n = 0
    from lavida_data.rng import sample_np_rng
    from lavida_data.transforms.collate import extra_pad

    widened = 0
    for batch in loader:
        n += len(batch["ids"])
        assert batch["input_ids"].shape[0] == len(batch["ids"]) == batch["labels"].shape[0]
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        if batch["ids"]:  # upstream's extra padding, drawn from (seed, epoch, step)
            extra = extra_pad(sample_np_rng(demo[0].mixture.seed, 0, batch["step"], salt="collate"))
            assert batch["input_ids"].shape[1] == int(batch["lengths"].max()) + max(extra, 0)
            assert (batch["labels"][:, int(batch["lengths"].max()):] == -100).all()
            widened += extra > 0
        for i, sid in enumerate(batch["ids"]):
            text = batch["input_ids"][i, : batch["lengths"][i]].tolist()
            seen.setdefault(sid, []).append(text)
    assert n == len(global_order(demo[0].mixture, demo[0].plans, demo[1], batch_size=4))
    # coyo-recap is dup:2 with a caption column drawn per sample: its repeats are transformed apart
    repeats = [v for k, v in seen.items() if k.startswith("coyo-recap:") and len(v) > 1]
    assert repeats and any(a != b for a, b in repeats)
    assert widened > 0
    plain = loader_for(demo, workers=0, process=process, loader={"extra_pad": False})
    batch = next(iter(plain))
    assert batch["input_ids"].shape[1] == int(batch["lengths"].max())


def test_bad_samples_are_skipped_counted_and_limited(demo, tmp_path):
    report, _, root = demo
    shutil.copytree(root / "data", tmp_path / "data")
    shutil.copytree(root / "mixtures", tmp_path / "mixtures")
    os.remove(tmp_path / "data" / "images" / "00-red-circle.jpg")
    (tmp_path / "data" / "images" / "01-red-square.jpg").write_bytes(b"not an image")
    rep = validate_file(tmp_path / "mixtures" / DEMO)
    prepare(rep.plans.values(), str(tmp_path / "prepared"))
    ds = build_dataset(rep, str(tmp_path / "prepared"), batch_size=4, loader={"max_bad_fraction": 1.0})
    loader = build_dataloader(ds, num_workers=2)
    kept, skipped = [], []
    expected = global_batches(rep.mixture, rep.plans, str(tmp_path / "prepared"), batch_size=4)
    for batch, planned in zip(loader, expected):
        assert sorted(batch["ids"] + [s["id"] for s in batch["skipped"]]) == sorted(planned["ids"])  # not replaced
        kept += batch["ids"]
        skipped += batch["skipped"]
    assert skipped and {s["reason"] for s in skipped} == {"image_missing", "image_unreadable"}
    counts = loader.bad_counts()
    assert sum(sum(c.values()) for c in counts.values()) == len(skipped)
    assert all(s["id"] not in kept for s in skipped)
    # a threshold the user sets stops the run with a clear error
    ds = build_dataset(rep, str(tmp_path / "prepared"), batch_size=4,
                       loader={"max_bad_fraction": 0.0, "min_samples_for_bad_check": 1})
    with pytest.raises(Exception, match="samples were bad"):
        for _ in build_dataloader(ds, num_workers=0):
            pass


def test_reference_mode_reads_images_from_s3_in_worker_processes(s3_bucket, tmp_path):
    client, bucket = s3_bucket
    for p in (EXAMPLES / "data").rglob("*"):
        if p.is_file():
            client.upload_file(str(p), bucket, "data/" + str(p.relative_to(EXAMPLES / "data")))
    text = (EXAMPLES / "mixtures" / DEMO).read_text().replace("../data", f"s3://{bucket}/data")
    (tmp_path / "s3.yaml").write_text(text.replace("datasets:", FACTORS + "datasets:", 1))
    report = validate_file(tmp_path / "s3.yaml")
    assert report.valid, report.errors
    out = f"s3://{bucket}/prepared"
    prepare(report.plans.values(), out)
    ds = build_dataset(report, out, batch_size=4, loader={"cache_dir": str(tmp_path / "cache"), "predownload": 2},
                       process={"image": {"gen_size": 256}})
    loader = build_dataloader(ds, num_workers=2)
    got = []
    for batch in loader:
        got.append(batch["ids"])
        assert all(s["gen_pixels"] or s["und_pixels"] for s in batch["samples"])  # images read from S3
    expected = global_batches(report.mixture, report.plans, out, batch_size=4)
    assert got == [b["ids"] for b in expected] and loader.bad_counts() == {}
