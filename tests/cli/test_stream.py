"""``lavida-data order`` and ``lavida-data stream`` as a user runs them."""

from __future__ import annotations

import json
import re

import pytest

from lavida_data.stream.order import global_batches, global_order



def test_order_json_slices_the_global_order(factors, cli):  # noqa: F811
    report, prepared, _ = factors
    full = global_order(report.mixture, report.plans, prepared, batch_size=4, world_size=2)
    out = json.loads(cli("order", report.file, "--prepared", prepared, "--batch-size", "4", "--world-size", "2",
                         "--start", "8", "-n", "16", "--json", check_rc=0).stdout)
    assert out == full[8:24]
    steps = global_batches(report.mixture, report.plans, prepared, batch_size=4)
    text = cli("order", report.file, "--prepared", prepared, "--batch-size", "4", "-n", "9", check_rc=0).stdout
    lines = [line.split("\t") for line in text.strip().splitlines()]
    step_of = [b["step"] for b in steps for _ in b["ids"]]
    assert [int(r[0]) for r in lines] == list(range(9)) and [int(r[1]) for r in lines] == step_of[:9]
    assert [r[2] for r in lines] == [i for b in steps for i in b["ids"]][:9]
    seeded = json.loads(cli("order", report.file, "--prepared", prepared, "--seed", "5", "--json", check_rc=0).stdout)
    assert seeded == global_order(report.mixture, report.plans, prepared, batch_size=1, seed=5)
    assert seeded != global_order(report.mixture, report.plans, prepared, batch_size=1)


def test_order_by_batch_lists_each_steps_group_and_global_batch(factors, cli):  # noqa: F811
    report, prepared, _ = factors
    out = json.loads(cli("order", report.file, "--prepared", prepared, "--by-batch", "--batch-size", "2",
                         "--world-size", "2", "--json", check_rc=0).stdout)
    assert out == global_batches(report.mixture, report.plans, prepared, batch_size=2, world_size=2)
    assert [b["step"] for b in out] == list(range(len(out)))
    group_of = {d.name: d.length_group for d in report.mixture.datasets}
    for b in out:  # t2i: 2 x max(int(2 x 0.5), 1); und: 2 x max(int(2 x 0.25), 1); others 2 x 2
        assert {group_of[i.rsplit(":", 1)[0]] for i in b["ids"]} == {b["group"]}
        assert len(b["ids"]) == {"t2i": 2, "und": 2}.get(b["group"], 4)
    part = json.loads(cli("order", report.file, "--prepared", prepared, "--by-batch", "--batch-size", "2",
                          "--world-size", "2", "--start", "3", "-n", "2", "--json", check_rc=0).stdout)
    assert part == out[3:5]
    text = cli("order", report.file, "--prepared", prepared, "--by-batch", "--batch-size", "2", "--world-size", "2",
               "-n", "2", check_rc=0).stdout
    rows = [line.split("\t") for line in text.strip().splitlines()]
    assert [(int(r[0]), r[1], int(r[2]), r[3].split(" ")) for r in rows] == \
        [(b["step"], b["group"], len(b["ids"]), b["ids"]) for b in out[:2]]


def test_order_refuses_a_batch_larger_than_the_epoch(demo, cli):  # noqa: F811
    report, prepared, _ = demo
    proc = cli("order", report.file, "--prepared", prepared, "--batch-size", "600", "--world-size", "4", check_rc=2)
    assert "holds no step" in proc.stderr


def test_stream_reports_throughput_steps_and_bad_counts(factors, cli):  # noqa: F811
    report, prepared, _ = factors
    out = json.loads(cli("stream", report.file, "--prepared", prepared, "--tiny-tokenizer", "-n", "80",
                         "--batch-size", "4", "--workers", "2", "--json", check_rc=0).stdout)
    assert {"samples", "steps", "seconds", "samples_per_s", "first_batch_s", "bad", "groups"} <= set(out)
    assert out["samples"] >= 80  # more than one epoch of the demo: the loader goes on into the next
    assert out["bad"] == {} and out["tokenized"] is True
    assert 0 < out["first_batch_s"] <= out["seconds"] and out["samples_per_s"] > 0
    assert sum(g["steps"] for g in out["groups"].values()) == out["steps"]
    for name, g in out["groups"].items():  # per-device sizes: t2i 2, und 1, others 4
        assert g["samples"] == g["steps"] * {"t2i": 2, "und": 1}.get(name, 4)


SEED_MIX = """seed: 11
datasets:
  - {name: laion-aes, path: ../data/t2i.parquet, preprocess_fn: t2i, image_root: ../data, sampling_strategy: "random:6"}
  - {name: gpt-edit, path: ../data/edit_gpt.parquet, preprocess_fn: edit, image_root: ../data,
     sampling_strategy: "random:50%"}
  - {name: coyo, path: ../data/t2i_coyo.csv, preprocess_fn: t2i, image_root: ../data, sampling_strategy: "first:3"}
"""


def test_preview_order_and_training_pick_the_same_random_rows_for_any_seed(demo, cli, tmp_path):  # noqa: F811
    """One seed rule: ``random:N`` is pandas' ``DataFrame.sample(n=N, random_state=42)`` of the kept
    rows, whatever the seed, in ``preview``, ``order``, the loader (training) alike."""
    import pandas as pd

    from lavida_data import validate_file
    from lavida_data.prepare.local import prepare
    from lavida_data.stream.loader import build_dataloader, build_dataset

    _, _, root = demo
    mix = root / "mixtures" / "seeds.yaml"
    mix.write_text(SEED_MIX)
    report = validate_file(mix)
    assert report.valid, report.errors
    prepared = str(tmp_path / "prepared")
    prepare(report.plans.values(), prepared)
    laion = pd.read_parquet(root / "data" / "t2i.parquet")
    laion = laion[laion.fltLaionAesthScore > 5]  # upstream's implicit aes filter on tables with a score
    edit = pd.read_parquet(root / "data" / "edit_gpt.parquet")
    upstream = {  # the rows upstream's loader takes: index labels are the source rows
        "laion-aes": sorted(laion.sample(n=6, random_state=42).index),
        "gpt-edit": sorted(edit.sample(n=-(-len(edit) // 2), random_state=42).index),
        "coyo": [0, 1, 2],
    }

    def rows(ids) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i in ids:
            name, row = i.rsplit(":", 1)
            out.setdefault(name, []).append(int(row))
        return {k: sorted(v) for k, v in sorted(out.items())}

    for seed in (None, 0, 99):
        args = [] if seed is None else ["--seed", str(seed)]
        preview = json.loads(cli("preview", mix, "--json", "-n", "1000", *args, check_rc=0).stdout)
        order = json.loads(cli("order", mix, "--prepared", prepared, "--json", *args, check_rc=0).stdout)
        loader = build_dataloader(build_dataset(report, prepared, batch_size=1, seed=seed,
                                                process={"decode_images": False}), num_workers=0)
        trained = [i for batch in loader for i in batch["ids"]]
        assert rows(i["id"] for i in preview) == rows(order) == rows(trained) == dict(sorted(upstream.items())), seed
        assert len(order) == len(set(order)) == 6 + len(upstream["gpt-edit"]) + 3
        assert 0 < len(laion) - 6 and len(upstream["gpt-edit"]) < len(edit)  # a real choice was made


def _bad_images_mixture(tmp_path, rows: int = 480):
    """A t2i table of ``rows`` rows over the example images, two of the 16 images deleted: 1/8 bad."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lavida_data import validate_file
    from lavida_data.prepare.local import prepare

    from tests.support import EXAMPLES

    images = sorted((EXAMPLES / "data" / "images").glob("*.jpg"))[:16]
    shutil.copytree(EXAMPLES / "data" / "images", tmp_path / "images")
    for gone in images[3:5]:
        (tmp_path / "images" / gone.name).unlink()
    pq.write_table(pa.table({"s3_path": [f"images/{images[i % 16].name}" for i in range(rows)],
                             "caption": [f"caption {i}" for i in range(rows)]}), tmp_path / "t.parquet")
    mix = tmp_path / "bad.yaml"
    mix.write_text("datasets:\n  - {name: t2i, path: t.parquet, preprocess_fn: t2i, image_root: .}\n")
    prepare(validate_file(mix).plans.values(), str(tmp_path / "prepared"))
    return mix, str(tmp_path / "prepared"), [str(tmp_path / "images" / g.name) for g in images[3:5]]


def test_stream_reports_bad_samples_with_examples_and_stops_at_max_bad_fraction(tmp_path, cli):
    mix, prepared, gone = _bad_images_mixture(tmp_path)
    common = ("stream", mix, "--prepared", prepared, "--batch-size", "8", "--workers", "2", "--json")

    # the loader's default limit (5%): 1/8 bad stops the run; what was seen is reported all the same
    proc = cli(*common, "-n", "480", check_rc=1)
    out = json.loads(proc.stdout)
    assert out["stopped"].startswith("TooManyBadSamples: dataset 't2i': ") and "limit 5.0%" in out["stopped"]
    assert "image_missing" in out["stopped"] and "Traceback" not in out["stopped"]
    assert set(out["bad"]) <= {"t2i"} and out["samples"] < 480

    # --max-bad-fraction 0.2: the whole epoch, every bad sample counted, a few examples of each reason
    out = json.loads(cli(*common, "-n", "480", "--max-bad-fraction", "0.2", check_rc=0).stdout)
    assert out["stopped"] is None and out["samples"] == 480 and out["kept"] == 420
    assert out["bad"] == {"t2i": {"image_missing": 60}}
    examples = out["bad_examples"]["t2i"]["image_missing"]
    assert len(examples) == 3
    for ex in examples:
        row = int(ex["id"].split(":")[1])
        assert ex["id"].startswith("t2i:") and row % 16 in (3, 4)
        assert ex["path"] == gone[row % 16 - 3] and ex["path"] in ex["error"] and "No such file" in ex["error"]

    # and in words, with the examples
    text = cli(*common[:-1], "-n", "480", "--max-bad-fraction", "1", check_rc=0).stderr
    assert "bad: {'t2i': {'image_missing': 60}}" in text
    assert len(re.findall(rf"\n  t2i image_missing: t2i:\d+ ({'|'.join(map(re.escape, gone))}): ", text)) == 3
    assert cli(*common, "--max-bad-fraction", "1.5").returncode == 2  # not a fraction


def test_the_bad_sample_limit_in_the_loader_names_counts_and_examples(tmp_path):
    from lavida_data.errors import TooManyBadSamples
    from lavida_data.stream.loader import build_dataloader, build_dataset

    mix, prepared, gone = _bad_images_mixture(tmp_path, rows=64)
    ds = build_dataset(mix, prepared, batch_size=8, loader={"max_bad_fraction": 0.1, "min_samples_for_bad_check": 16})
    with pytest.raises(TooManyBadSamples, match=r"dataset 't2i': \d+ of \d+ samples were bad .*limit 10.0%") as info:
        list(build_dataloader(ds, num_workers=0))
    assert re.search(rf"image_missing: t2i:\d+ ({'|'.join(map(re.escape, gone))}): ", str(info.value))
    batches = list(build_dataloader(build_dataset(mix, prepared, batch_size=8, loader={"max_bad_fraction": 0.2}),
                                    num_workers=0))
    skipped = [s for b in batches for s in b["skipped"]]
    assert len(skipped) == 8 and set(skipped[0]) == {"id", "dataset", "reason", "position", "path", "error"}
    assert {s["path"] for s in skipped} == set(gone)
