"""Streaming a prepared mixture: order, determinism, resumption, bad samples, S3 in workers."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from lavida_data import LavidaDataError, validate_file
from lavida_data.prepare import prepare
from lavida_data.stream.loader import build_dataloader, build_dataset
from lavida_data.stream.order import global_order

from ..conftest import EXAMPLES

DEMO = "demo.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    shutil.copytree(EXAMPLES / "mixtures", root / "mixtures")
    shutil.copytree(EXAMPLES / "data", root / "data")
    report = validate_file(root / "mixtures" / DEMO)
    prepare(report.plans.values(), str(root / "prepared"))
    return report, str(root / "prepared"), root


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from lavida_data.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok")))


def ids_of(loader, batches=None):
    out = []
    for k, batch in enumerate(loader):
        if batches is not None and k >= batches:
            break
        out.append(list(batch["ids"]))
    return out


def loader_for(demo, *, workers=0, batch_size=4, process=None, loader=None, seed=None):
    report, prepared, _ = demo
    ds = build_dataset(report, prepared, batch_size=batch_size, seed=seed,
                       process=process or {"decode_images": False}, loader=loader)
    return build_dataloader(ds, num_workers=workers)


def test_order_is_the_same_for_0_1_and_4_workers_and_matches_the_order_command(demo):
    report, prepared, _ = demo
    expected = global_order(report.mixture, report.plans, prepared, batch_size=4)
    for workers in (0, 1, 4):
        batches = ids_of(loader_for(demo, workers=workers))
        assert sum(map(len, batches)) == len(expected), workers
        # global batch i holds exactly entries [4i, 4i+4) of the order
        assert [sorted(b) for b in batches] == [sorted(expected[k: k + 4]) for k in range(0, len(expected), 4)]


def test_global_batches_do_not_depend_on_the_world_size(demo):
    report, prepared, _ = demo
    orders = {w: global_order(report.mixture, report.plans, prepared, batch_size=8, world_size=w) for w in (1, 2, 4)}
    full = len(orders[1]) // 8 * 8  # every complete global batch
    assert full >= 48 and orders[1][:full] == orders[2][:full] == orders[4][:full]
    # the last, partial batch: streaming pads it with other samples so that every rank gets as many
    assert set(orders[1][full:]) <= set(orders[4][full:]) and len(orders[4]) % 4 == 0
    assert orders[1] != global_order(report.mixture, report.plans, prepared, batch_size=8, seed=99)


def test_epochs_differ_and_runs_repeat(demo):
    report, prepared, _ = demo
    e0 = global_order(report.mixture, report.plans, prepared, batch_size=4, epoch=0)
    e1 = global_order(report.mixture, report.plans, prepared, batch_size=4, epoch=1)
    assert e0 != e1 and sorted(e0) != [] and len(e0) == len(e1)
    assert e0 == global_order(report.mixture, report.plans, prepared, batch_size=4, epoch=0)


def test_realised_mixture_follows_strategies_and_weights(demo):
    report, prepared, _ = demo
    ids = global_order(report.mixture, report.plans, prepared, batch_size=1)
    by_ds = {}
    for i in ids:
        name, row = i.rsplit(":", 1)
        by_ds.setdefault(name, []).append(int(row))
    groups = {d.name: d.length_group for d in report.mixture.datasets}
    share = {}
    for name, rows in by_ds.items():
        share[groups[name]] = share.get(groups[name], 0) + len(rows) / len(ids)
    weights = report.mixture.weights
    total = sum(weights.values())
    for g, w in weights.items():
        assert abs(share[g] - w / total) <= 1.5 / len(ids), (g, share[g], w / total)
    # random:50% of refcoco's 8 rows: the same 4 rows every epoch
    e1 = global_order(report.mixture, report.plans, prepared, batch_size=1, epoch=1)
    assert {i for i in ids if i.startswith("refcoco:")} == {i for i in e1 if i.startswith("refcoco:")}
    assert len({i for i in ids if i.startswith("refcoco:")}) == 4


@pytest.mark.parametrize("stop", [1, 3, 5])
def test_resume_mid_epoch_is_exact(demo, stop):
    full = ids_of(loader_for(demo, workers=2))
    first = loader_for(demo, workers=2)
    seen = []
    for k, batch in enumerate(first):
        seen.append(list(batch["ids"]))
        if k + 1 == stop:
            break
    state = first.state_dict()
    assert state["sample_in_epoch"] == 4 * stop
    second = loader_for(demo, workers=2)
    second.load_state_dict(state)
    rest = ids_of(second)
    assert seen + rest == full  # nothing lost, nothing twice


def test_state_loaded_after_iteration_began_is_refused(demo):
    loader = loader_for(demo)
    it = iter(loader)
    next(it)
    with pytest.raises(LavidaDataError, match="after iteration began"):
        loader.load_state_dict({"epoch": 0, "sample_in_epoch": 4, "num_canonical_nodes": 1,
                                "shuffle_seed": 2026, "initial_physical_nodes": 1})


def test_batch_size_factors_are_refused_not_ignored(tmp_path):
    shutil.copytree(EXAMPLES / "mixtures", tmp_path / "mixtures")
    shutil.copytree(EXAMPLES / "data", tmp_path / "data")
    report = validate_file(tmp_path / "mixtures" / "und-grounding.yaml")
    prepare(report.plans.values(), str(tmp_path / "prepared"))
    with pytest.raises(LavidaDataError, match="batch_sizes factors"):
        build_dataset(report, str(tmp_path / "prepared"), batch_size=2)


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
    for batch in loader:
        n += len(batch["ids"])
        assert batch["input_ids"].shape[0] == len(batch["ids"]) == batch["labels"].shape[0]
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        for i, sid in enumerate(batch["ids"]):
            text = batch["input_ids"][i, : batch["lengths"][i]].tolist()
            seen.setdefault(sid, []).append(text)
    assert n == len(global_order(demo[0].mixture, demo[0].plans, demo[1], batch_size=4))
    # coyo-recap is dup:2 with a caption column drawn per sample: its repeats are transformed apart
    repeats = [v for k, v in seen.items() if k.startswith("coyo-recap:") and len(v) > 1]
    assert repeats and any(a != b for a, b in repeats)


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
    for batch in loader:
        kept += batch["ids"]
        skipped += batch["skipped"]
    total = len(global_order(rep.mixture, rep.plans, str(tmp_path / "prepared"), batch_size=4))
    assert len(kept) + len(skipped) == total and skipped
    assert {s["reason"] for s in skipped} == {"image_missing", "image_unreadable"}
    counts = loader.bad_counts()
    assert sum(sum(c.values()) for c in counts.values()) == len(skipped)
    assert all(s["id"] not in kept for s in skipped)
    # a threshold the user sets stops the run with a clear error
    ds = build_dataset(rep, str(tmp_path / "prepared"), batch_size=4,
                       loader={"max_bad_fraction": 0.0, "min_samples_for_bad_check": 1})
    with pytest.raises(Exception, match="samples were bad"):
        for _ in build_dataloader(ds, num_workers=0):
            pass


def test_reference_mode_reads_images_from_s3_in_worker_processes(s3_bucket, tmp_path, tokenizer):
    client, bucket = s3_bucket
    for p in (EXAMPLES / "data").rglob("*"):
        if p.is_file():
            client.upload_file(str(p), bucket, "data/" + str(p.relative_to(EXAMPLES / "data")))
    text = (EXAMPLES / "mixtures" / DEMO).read_text().replace("../data", f"s3://{bucket}/data")
    (tmp_path / "s3.yaml").write_text(text)
    report = validate_file(tmp_path / "s3.yaml")
    assert report.valid, report.errors
    out = f"s3://{bucket}/prepared"
    prepare(report.plans.values(), out)
    ds = build_dataset(report, out, batch_size=4, loader={"cache_dir": str(tmp_path / "cache")},
                       process={"tokenize": {"tokenizer": tokenizer, "max_length": 8192}})
    loader = build_dataloader(ds, num_workers=2)
    got = [i for b in ids_of(loader) for i in b]
    expected = global_order(report.mixture, report.plans, out, batch_size=4)
    assert sorted(got) == sorted(expected) and loader.bad_counts() == {}


def test_reduced_jpeg_decode_keeps_the_file_size_in_micro_conditions(tmp_path):
    """Generation targets are decoded at a reduced scale (JPEG draft mode); the micro-conditions
    still give the file's own size, and the target is the one a full decode gives (to rounding)."""
    import io

    import numpy as np
    from PIL import Image

    from lavida_data.rng import sample_np_rng
    from lavida_data.stream.process import ProcessConfig, SampleProcessor
    from lavida_data.transforms.images import ImageConfig, gen_target

    arr = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).resize((1024, 768), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=95)
    sample = {"image_gen": "x.jpg", "conversations": [
        {"from": "human", "value": "Generate an image with the caption: a [[micro_conds_texts]]"},
        {"from": "gpt", "value": "Sure <image_gen>"}]}
    cfg = ImageConfig(gen_size=256, micro_cond_drop=0.0, stat_keep=1.0)
    proc = SampleProcessor({}, seed=0, config=ProcessConfig(image=cfg))
    images = proc.load_images(sample, {"x.jpg": buf.getvalue()})
    assert images["x.jpg"].size == (512, 384)  # decoded at half scale: still covers 256
    out = proc.transform(sample, images, sample_np_rng(0, 0, 7))
    text = out["conversations"][0]["value"]
    assert "ORIGINAL WIDTH : 1024; ORIGINAL HEIGHT : 768" in text
    full, info = gen_target(Image.open(io.BytesIO(buf.getvalue())), "crop", 256, sample_np_rng(0, 0, 7))
    assert info == out["gen_info"]
    assert float((full - out["gen_pixels"].float() / 255).abs().mean()) < 0.02  # same place of the picture
