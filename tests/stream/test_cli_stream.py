"""``lavida-data order`` and ``lavida-data stream`` as a user runs them."""

from __future__ import annotations

import json

from lavida_data.stream.order import global_order

from .test_loader import demo  # noqa: F401


def test_order_json_slices_the_global_order(demo, cli):  # noqa: F811
    report, prepared, _ = demo
    full = global_order(report.mixture, report.plans, prepared, batch_size=8, world_size=2)
    out = json.loads(cli("order", report.file, "--prepared", prepared, "--batch-size", "8", "--world-size", "2",
                         "--start", "8", "-n", "16", "--json", check_rc=0).stdout)
    assert out == full[8:24]
    text = cli("order", report.file, "--prepared", prepared, "--batch-size", "8", "-n", "9", check_rc=0).stdout
    lines = [line.split("\t") for line in text.strip().splitlines()]
    assert [int(r[0]) for r in lines] == list(range(9)) and [int(r[1]) for r in lines] == [0] * 8 + [1]
    seeded = json.loads(cli("order", report.file, "--prepared", prepared, "--seed", "5", "--json", check_rc=0).stdout)
    assert seeded == global_order(report.mixture, report.plans, prepared, batch_size=1, seed=5)
    assert seeded != global_order(report.mixture, report.plans, prepared, batch_size=1)


def test_order_refuses_an_indivisible_batch(demo, cli):  # noqa: F811
    report, prepared, _ = demo
    proc = cli("order", report.file, "--prepared", prepared, "--batch-size", "6", "--world-size", "4", check_rc=2)
    assert "not divisible by the world size" in proc.stderr


def test_stream_reports_throughput_and_bad_counts(demo, cli):  # noqa: F811
    report, prepared, _ = demo
    out = json.loads(cli("stream", report.file, "--prepared", prepared, "--tiny-tokenizer", "-n", "80",
                         "--batch-size", "4", "--workers", "2", "--json", check_rc=0).stdout)
    assert {"samples", "seconds", "samples_per_s", "first_batch_s", "bad"} <= set(out)
    assert out["samples"] >= 80  # more than one epoch of the demo: the loader goes on into the next
    assert out["bad"] == {} and out["tokenized"] is True
    assert 0 < out["first_batch_s"] <= out["seconds"] and out["samples_per_s"] > 0
