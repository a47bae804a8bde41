"""The batch plan: one length group per step, its batch size, weights, passes, world sizes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavida_data import LavidaDataError, validate_file
from lavida_data.spec.config import Mixture
from lavida_data.prepare.local import prepare
from lavida_data.stream.mixture import BatchPlan, plan_streams, step_uniforms
from lavida_data.stream.order import global_batches

KEPT = {"x": 40, "y": 30, "z": 100, "u": 25}


def mixture(weights=None, batch_sizes=None, seed=3) -> Mixture:
    return Mixture.model_validate({
        "seed": seed, "weights": weights or {"a": 300, "b": 100, "c": 50},
        "batch_sizes": batch_sizes if batch_sizes is not None else {"b": 0.5, "c": 0.3},
        "datasets": [
            {"name": "x", "path": "x.parquet", "preprocess_fn": "t2i", "length_group": "a"},
            {"name": "y", "path": "y.parquet", "preprocess_fn": "t2i", "length_group": "a",
             "sampling_strategy": "dup:3"},
            {"name": "z", "path": "z.parquet", "preprocess_fn": "t2i", "length_group": "b",
             "sampling_strategy": "first:20"},
            {"name": "u", "path": "u.parquet", "preprocess_fn": "t2i", "length_group": "c",
             "sampling_strategy": "random:10"},
        ],
    })


def plan_for(m: Mixture, *, batch_size=4, world_size=1, **kw) -> BatchPlan:
    streams = plan_streams(m, KEPT)
    offsets = np.concatenate([[0], np.cumsum([KEPT[s.name] for s in streams])[:-1]])
    return BatchPlan(m, streams, offsets, seed=m.seed, batch_size=batch_size, world_size=world_size, **kw)


def dataset_of(plan: BatchPlan, ids: np.ndarray) -> list[str]:
    return [plan.streams[s].name for s in plan.stream_of(ids).tolist()]


def test_every_step_is_one_group_with_its_batch_size_on_every_rank():
    plan = plan_for(mixture(), batch_size=4, world_size=3, epoch_steps=200)
    per_device = {g.name: g.per_device for g in plan.groups}
    assert per_device == {"a": 4, "b": 2, "c": 1}  # max(int(4 x factor), 1)
    group_of = {s.name: s.group for s in plan.streams}
    seen = set()
    for step in range(plan.steps_per_epoch):
        gi, ids, first = plan.global_batch(0, step)
        g = plan.groups[gi].name
        seen.add(g)
        assert len(ids) == 3 * per_device[g] and {group_of[d] for d in dataset_of(plan, ids)} == {g}
        ranks = [plan.rank_batch(0, step, r) for r in range(3)]
        assert all(r[0] == gi for r in ranks)  # the same group on every rank
        assert np.concatenate([r[1] for r in ranks]).tolist() == ids.tolist()  # rank r: the r-th slice
        positions = np.concatenate([r[2] for r in ranks])
        assert positions.tolist() == list(range(first, first + len(ids)))
    assert seen == {"a", "b", "c"}
    lay = plan.layout(0)  # positions run on without gaps: each step starts where the last ended
    assert lay.start[0] == 0 and np.all(np.diff(lay.start) == plan.sizes[lay.group])


def test_group_frequencies_follow_the_weights():
    plan = plan_for(mixture(), epoch_steps=20000)
    counts = Counter(plan.layout(0).group.tolist())
    n = plan.steps_per_epoch
    for gi, g in enumerate(plan.groups):
        p = g.weight / 450
        assert abs(counts[gi] / n - p) < 4 * np.sqrt(p * (1 - p) / n), (g.name, counts[gi] / n, p)
    # a group not listed weighs 100; groups are drawn in name order, as upstream sorts them
    plan = plan_for(mixture(weights={"a": 300}), epoch_steps=20000)
    assert [g.name for g in plan.groups] == ["a", "b", "c"] and [g.weight for g in plan.groups] == [300, 100, 100]
    counts = Counter(plan.layout(0).group.tolist())
    assert abs(counts[0] / 20000 - 0.6) < 0.015 and abs(counts[2] / 20000 - 0.2) < 0.015


def test_the_draw_is_a_function_of_seed_epoch_and_step():
    plan = plan_for(mixture(), epoch_steps=500)
    lay = plan.layout(2)
    assert plan.step_groups(2, np.array([7, 300])).tolist() == [lay.group[7], lay.group[300]]
    assert lay.group.tolist() != plan.layout(3).group.tolist()
    assert lay.group.tolist() == plan_for(mixture(), epoch_steps=500).layout(2).group.tolist()
    other = plan_for(mixture(seed=4), epoch_steps=500)
    assert lay.group.tolist() != other.layout(2).group.tolist()
    # a longer epoch starts with the same steps
    assert plan_for(mixture(), epoch_steps=800).layout(2).group[:500].tolist() == lay.group.tolist()
    u = step_uniforms(5, 0, np.arange(100000))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.005


def test_each_selected_row_once_per_pass_in_a_new_order():
    plan = plan_for(mixture(), epoch_steps=2000)
    ga = next(i for i, g in enumerate(plan.groups) if g.name == "a")
    pool = plan.groups[ga].rows
    assert pool == 40 + 30 * 3  # x's 40 rows and y's 30 rows three times (dup:3)
    passes = [plan.group_entries(0, ga, k * pool, pool) for k in range(3)]
    expected = Counter({("x", r): 1 for r in range(40)}) + Counter({("y", r): 3 for r in range(30)})
    for p in passes:
        names = dataset_of(plan, p)
        rows = (p - plan.offsets[plan.stream_of(p)]).tolist()
        assert Counter(zip(names, rows)) == expected
    assert passes[0].tolist() != passes[1].tolist()
    # a step's batch is the next entries of its group's stream, across passes too
    lay = plan.layout(0)
    steps = [s for s in range(plan.steps_per_epoch) if lay.group[s] == ga]
    stream = np.concatenate([plan.global_batch(0, s)[1] for s in steps])
    assert stream[: 3 * pool].tolist() == np.concatenate(passes).tolist()
    # only the selected rows: z's first 20 of 100, u's random 10 of 25
    gb = next(i for i, g in enumerate(plan.groups) if g.name == "b")
    z = plan.group_entries(0, gb, 0, 60)
    assert set((z - plan.offsets[2]).tolist()) == set(range(20))
    gc = next(i for i, g in enumerate(plan.groups) if g.name == "c")
    u = plan.group_entries(0, gc, 0, 30) - plan.offsets[3]
    assert len(set(u.tolist())) == 10 and set(u.tolist()) == set(plan.streams[3].base.tolist())
    # without shuffle: the datasets' order
    flat = plan_for(mixture(), epoch_steps=10, shuffle=False)
    assert flat.group_entries(0, ga, 0, 5).tolist() == [0, 1, 2, 3, 4]


def test_the_same_steps_for_every_world_size_at_one_global_batch():
    m = mixture(batch_sizes={"b": 0.5})  # c: factor 1
    plans = {w: plan_for(m, batch_size=8 // w, world_size=w) for w in (1, 2, 4)}
    assert plans[1].steps_per_epoch == plans[2].steps_per_epoch == plans[4].steps_per_epoch
    for step in range(plans[1].steps_per_epoch):
        ref = plans[1].global_batch(1, step)
        for w in (2, 4):
            gi, ids, first = plans[w].global_batch(1, step)
            assert gi == ref[0] and ids.tolist() == ref[1].tolist() and first == ref[2]
            shares = np.concatenate([plans[w].rank_batch(1, step, r)[1] for r in range(w)])
            assert shares.tolist() == ref[1].tolist()
    # a world size that does not divide int(global batch x factor): upstream's rule, other sizes
    odd = plan_for(mixture(batch_sizes={"b": 0.25}), batch_size=2, world_size=4)
    assert {g.name: g.global_size for g in odd.groups} == {"a": 8, "b": 4, "c": 8}
    assert {g.name: g.global_size for g in plan_for(mixture(batch_sizes={"b": 0.25}), batch_size=8).groups}["b"] == 2


def test_epoch_length():
    natural = 40 + 90 + 20 + 10
    assert plan_for(mixture(), batch_size=4).steps_per_epoch == natural // 4
    assert plan_for(mixture(), batch_size=2, world_size=4).steps_per_epoch == natural // 8
    assert plan_for(mixture(), batch_size=4, epoch_size=1000).steps_per_epoch == 250
    assert plan_for(mixture(), batch_size=4, epoch_steps=7).steps_per_epoch == 7
    with pytest.raises(LavidaDataError, match="holds no step"):
        plan_for(mixture(), batch_size=200)
    assert plan_for(mixture(), batch_size=200, epoch_steps=3).steps_per_epoch == 3


def test_forty_datasets_in_many_groups_realise_the_file(tmp_path):
    rng = np.random.default_rng(0)
    groups = [f"g{i}" for i in range(12)]
    weights = {g: int(w) for g, w in zip(groups, rng.integers(20, 300, len(groups)))}
    lines = ["seed: 11", "weights: {" + ", ".join(f"{g}: {w}" for g, w in weights.items()) + "}",
             "batch_sizes: {g0: 0.5, g1: 0.25}", "datasets:"]
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
    steps = global_batches(report.mixture, report.plans, str(tmp_path / "prepared"), batch_size=4, world_size=2,
                           config={"epoch_steps": 6000})
    group_of = {d.name: d.length_group for d in report.mixture.datasets}
    per_step = Counter()
    for b in steps:
        assert {group_of[i.rsplit(":", 1)[0]] for i in b["ids"]} == {b["group"]}
        assert len(b["ids"]) == 2 * {"g0": 2, "g1": 1}.get(b["group"], 4)
        per_step[b["group"]] += 1
    total_w = sum(weights.values())
    for g, w in weights.items():
        p = w / total_w
        assert abs(per_step[g] / len(steps) - p) < 4 * np.sqrt(p * (1 - p) / len(steps)), g
