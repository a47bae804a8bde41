"""Reading a dataset straight from its table: filters, strategies, ids and seeded conversion."""

import json
import random

import numpy as np

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavida_data import iter_rows, iter_samples, selected_rows, validate_file

LONG = "One sentence here. Two sentences here. Three sentences here. Four sentences here, and it goes on " * 2


def mixture(tmp_path, entry: str, rows: list[dict], fmt="parquet", seed=5) -> dict:
    """A one-dataset mixture; without ``aes_cutoff`` in ``entry`` upstream's hidden score filter is
    switched off (``aes_cutoff: null``), so that the rows are the strategy's alone."""
    if "aes_cutoff" not in entry:
        entry += "    aes_cutoff: null\n"
    table = tmp_path / f"t.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), table, row_group_size=4)
    else:
        table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m.yaml").write_text(f"seed: {seed}\ndatasets:\n  - name: d\n    path: t.{fmt}\n{entry}")
    report = validate_file(tmp_path / "m.yaml")
    assert report.valid, report.errors
    return report


def rows(n=20):
    return [{"s3_path": f"/img/{i}.jpg", "caption": f"{LONG} #{i}", "fltLaionAesthScore": float(i % 10),
             "intHeight": 512, "intWidth": 512} for i in range(n)]


def test_ids_count_source_rows_before_filters(tmp_path):
    r = mixture(tmp_path, "    preprocess_fn: t2i\n    aes_cutoff: 6\n", rows())
    got = [s["id"] for s in iter_samples(r.plans["d"], 5)]
    assert got == [f"d:{i}" for i in range(20) if i % 10 > 6]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize(
    "strategy, expected",
    [("all", list(range(20))), ("first:3", [0, 1, 2]), ("end:2", [18, 19]), ("first:10%", [0, 1]),
     ("end:12.5%", [17, 18, 19]), ("dup:2", list(range(20)))],
)
def test_strategies_select_rows(tmp_path, fmt, strategy, expected):
    r = mixture(tmp_path, f"    preprocess_fn: t2i\n    sampling_strategy: '{strategy}'\n", rows(), fmt)
    assert [i for i, _ in iter_rows(r.plans["d"], 5)] == expected
    assert selected_rows(r.plans["d"], 5).tolist() == expected


def test_strategy_applies_after_filters(tmp_path):
    r = mixture(tmp_path, "    preprocess_fn: t2i\n    aes_cutoff: 4\n    sampling_strategy: end:3\n", rows())
    assert [i for i, _ in iter_rows(r.plans["d"], 5)] == [17, 18, 19]
    r = mixture(tmp_path, "    preprocess_fn: t2i\n    aes_cutoff: 8\n    sampling_strategy: first:3\n", rows())
    assert [i for i, _ in iter_rows(r.plans["d"], 5)] == [9, 19]


def test_random_subset_is_upstreams_fixed_subset(tmp_path):
    # upstream's DataFrame.sample(n=5, random_state=42) on the kept rows: the same for every seed
    entry = "    preprocess_fn: t2i\n    sampling_strategy: random:5\n"
    a = mixture(tmp_path, entry, rows(), seed=1)
    random.seed(123)
    first = [i for i, _ in iter_rows(a.plans["d"], 1)]
    random.seed(456)
    assert [i for i, _ in iter_rows(a.plans["d"], 1)] == first
    assert first == sorted(np.random.RandomState(42).permutation(20)[:5].tolist())
    assert [i for i, _ in iter_rows(a.plans["d"], 2)] == first
    # after a filter, positions among the kept rows (scores i % 10 > 3: 12 of 20 rows)
    f = mixture(tmp_path, entry + "    aes_cutoff: 3\n", rows(), seed=1)
    kept = [i for i in range(20) if i % 10 > 3]
    want = sorted(kept[p] for p in np.random.RandomState(42).permutation(12)[:5])
    assert [i for i, _ in iter_rows(f.plans["d"], 9)] == want == selected_rows(f.plans["d"], 0).tolist()


def test_hidden_score_filter_without_aes_cutoff(tmp_path):
    # upstream keeps fltLaionAesthScore > 5 when the entry reads the score and gives no aes_cutoff
    table = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows()), table)
    (tmp_path / "m.yaml").write_text("datasets:\n  - {name: d, path: t.parquet, preprocess_fn: t2i}\n")
    report = validate_file(tmp_path / "m.yaml")
    assert report.valid and [w.field for w in report.warnings] == ["aes_cutoff"]
    from lavida_data import Stats

    st = Stats()
    got = [s["id"] for s in iter_samples(report.plans["d"], 0, stats=st)]
    assert got == [f"d:{i}" for i in range(20) if i % 10 > 5]
    assert dict(+st.dropped) == {"aes_cutoff": 12}


def test_conversion_is_seeded_by_position_and_epoch(tmp_path):
    r = mixture(tmp_path, "    preprocess_fn: t2i\n    process_fn_kwargs: {truncate_prob: 0.5}\n", rows())
    plan = r.plans["d"]
    a = [s["conversations"][0]["value"] for s in iter_samples(plan, 5)]
    b = [s["conversations"][0]["value"] for s in iter_samples(plan, 5)]
    assert a == b
    c = [s["conversations"][0]["value"] for s in iter_samples(plan, 5, epoch=1)]
    assert a != c  # the same rows in another epoch are transformed differently
    d = [s["conversations"][0]["value"] for s in iter_samples(plan, 6)]
    assert a != d


def test_bad_rows_are_skipped_and_counted(tmp_path):
    data = rows(6)
    data[1]["caption"] = None  # an empty caption is a caption (upstream renders it); a null is not
    data[4]["s3_path"] = None
    r = mixture(tmp_path, "    preprocess_fn: t2i\n", data)
    from lavida_data import Stats

    st = Stats()
    got = [s["id"] for s in iter_samples(r.plans["d"], 5, stats=st)]
    assert got == ["d:0", "d:2", "d:3", "d:5"]
    assert dict(st.skipped) == {"missing:caption": 1, "missing:s3_path": 1}
    assert st.rows_read == 6 and st.rows_kept == 6
