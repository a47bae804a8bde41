"""``lavida-data order`` and ``lavida-data stream`` as a user runs them."""

from __future__ import annotations

import json

from lavida_data.stream.order import global_batches, global_order

from .test_loader import demo, factors  # noqa: F401


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
