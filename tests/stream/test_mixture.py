"""Mixture arithmetic and the realised proportions of a large mixture."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavida_data import validate_file
from lavida_data.prepare import prepare
from lavida_data.stream.mixture import epoch_positions, plan_streams
from lavida_data.stream.order import global_order


def test_counts_are_exact_and_weighted():
    from lavida_data.config import Mixture

    m = Mixture.model_validate({
        "seed": 3, "weights": {"a": 300, "b": 100},
        "datasets": [
            {"name": "x", "path": "x.parquet", "preprocess_fn": "t2i", "length_group": "a"},
            {"name": "y", "path": "y.parquet", "preprocess_fn": "t2i", "length_group": "a", "sampling_strategy": "dup:3"},
            {"name": "z", "path": "z.parquet", "preprocess_fn": "t2i", "length_group": "b", "sampling_strategy": "first:5"},
        ],
    })
    plans = plan_streams(m, {"x": 10, "y": 10, "z": 100})
    counts = {p.name: p.count for p in plans}
    total = 10 + 30 + 5
    assert sum(counts.values()) == total
    assert counts["z"] == round(total * 0.25)  # group b: 100 / 400 of the epoch
    assert counts["x"] * 3 == pytest.approx(counts["y"], abs=3)  # within a group, by selection size
    z = next(p for p in plans if p.name == "z")
    runs = epoch_positions(z, 3, 0)
    assert np.concatenate(runs).tolist().count(0) >= 2 and set(np.concatenate(runs)) <= set(range(5))
    # a partial repeat is drawn per epoch
    partial = {tuple(epoch_positions(z, 3, e)[-1].tolist()) for e in range(10)}
    assert len(partial) > 1 and all(len(p) == 1 for p in partial)
    assert epoch_positions(z, 3, 4)[-1].tolist() == epoch_positions(z, 3, 4)[-1].tolist()


def test_forty_datasets_in_many_groups_realise_the_file(tmp_path):
    rng = np.random.default_rng(0)
    groups = [f"g{i}" for i in range(12)]
    weights = {g: int(w) for g, w in zip(groups, rng.integers(20, 300, len(groups)))}
    lines = ["seed: 11", "weights: {" + ", ".join(f"{g}: {w}" for g, w in weights.items()) + "}", "datasets:"]
    for i in range(40):
        n = int(rng.integers(5, 120))
        pq.write_table(pa.table({"s3_path": [f"/img/{i}/{k}.jpg" for k in range(n)],
                                 "caption": [f"caption {i} {k}" for k in range(n)]}), tmp_path / f"t{i}.parquet")
        strategy = ["all", "dup:2", "random:50%", "first:10", "end:30%"][i % 5]
        lines.append(f"  - {{name: d{i}, path: t{i}.parquet, preprocess_fn: t2i, sampling_strategy: '{strategy}', "
                     f"length_group: {groups[i % len(groups)]}}}")
    (tmp_path / "m.yaml").write_text("\n".join(lines) + "\n")
    report = validate_file(tmp_path / "m.yaml")
    assert report.valid, report.errors
    prepare(report.plans.values(), str(tmp_path / "prepared"))
    ids = global_order(report.mixture, report.plans, str(tmp_path / "prepared"), batch_size=16)
    group_of = {d.name: d.length_group for d in report.mixture.datasets}
    share = {}
    for i in ids:
        g = group_of[i.rsplit(":", 1)[0]]
        share[g] = share.get(g, 0) + 1
    total_w = sum(weights.values())
    for g, w in weights.items():
        assert abs(share[g] / len(ids) - w / total_w) < 0.01, g
    # and in every window of 512 samples too (the shuffle mixes groups), within a loose tolerance
    window = ids[:512]
    for g, w in weights.items():
        got = sum(group_of[i.rsplit(":", 1)[0]] == g for i in window) / len(window)
        assert abs(got - w / total_w) < 0.06, g
