"""Upstream's mixture files: every feature its four files use, and the rows its loader selects.

The fixtures below are written here (upstream's YAML is not copied): repeated dataset names, a
repeated key, weights for unused groups, comments, converter kwargs, a name with a trailing space,
the aesthetic column read without ``aes_cutoff``. ``tests/golden/mixtures`` holds what upstream's
own ``build_dataset_lazy`` and pandas select (made by ``scripts/golden/make_mixtures.py``).
With ``LAVIDA_UPSTREAM`` set to a LaVida-O checkout, its four files are validated as they are.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from lavida_data import SamplingStrategy, iter_samples, selected_rows, validate_file
from lavida_data.spec.config import Mixture, unique_names
from lavida_data.spec.strategy import upstream_sample

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "mixtures"


def t2i_table(path: Path, n: int = 12, score: bool = True) -> None:
    cols = {"s3_path": [f"s3://b/{i}.jpg" for i in range(n)], "caption": [f"caption {i}" for i in range(n)],
            "intHeight": [512] * n, "intWidth": [512] * n}
    if score:
        cols["fltLaionAesthScore"] = [4.0 + 0.25 * i for i in range(n)]  # 4.0 .. 6.75; 5.0 at row 4
    pq.write_table(pa.table(cols), path)


def grandf_table(path: Path, n: int) -> None:
    pq.write_table(pa.table({"s3_path": [f"s3://b/g{i}.jpg" for i in range(n)],
                             "loc_caption": [f"<p> a cat </p><LOC_BEGIN><LOC_1><LOC_2><LOC_3><LOC_4><LOC_END> {i}"
                                             for i in range(n)]}), path)


# ------------------------------------------------------------------ every feature of upstream's files

UPSTREAM_LIKE = """\
datasets:
  # grounding: the same name three times, as upstream's stage files do
  - name: grand-f
    json_path: g1.parquet
    sampling_strategy: dup:3
    preprocess_fn: preproces_grandf
    length_group:  grounding
    columns: ['s3_path', 'loc_caption']

  - name: grand-f
    json_path: g2.parquet
    sampling_strategy: dup:3 # 100k
    preprocess_fn: preproces_grandf
    length_group:  grounding
    columns: ['s3_path', 'loc_caption']

  - name: grand-f
    json_path: g3.parquet
    sampling_strategy: all
    preprocess_fn: preproces_grandf
    length_group:  grounding
    columns: ['s3_path', 'loc_caption']
    sampling_strategy: first:1

  - name: laion-subset 
    json_path: t.parquet
    sampling_strategy: all
    preprocess_fn: preproces_text_to_image_generation_s3
    columns: ['s3_path', 'caption', 'fltLaionAesthScore','intHeight','intWidth']
    # aes_cutoff: 5.6 # 1M
    process_fn_kwargs: # 50K
      caption_key: caption
      # random_caption_keys: [caption]

weights:
  grounding: 100
  default: 150
  picabanana: 150
batch_sizes:
  grounding: 1
  grounding: 0.5
  mjv6: 1
"""


@pytest.fixture
def upstream_like(tmp_path) -> Path:
    for k, n in ((1, 3), (2, 2), (3, 4)):
        grandf_table(tmp_path / f"g{k}.parquet", n)
    t2i_table(tmp_path / "t.parquet")
    f = tmp_path / "stage.yaml"
    f.write_text(UPSTREAM_LIKE, encoding="utf-8")
    return f


def by_line(issues) -> dict:
    return {(i.line, i.field): i for i in issues}


def test_upstream_like_file_is_valid_with_warnings(upstream_like):
    report = validate_file(upstream_like)
    assert report.errors == []
    w = by_line(report.warnings)
    assert sorted(w) == [(10, "name"), (17, "name"), (23, "sampling_strategy"), (25, "aes_cutoff"),
                         (38, "weights.picabanana"), (41, "batch_sizes.grounding"), (42, "batch_sizes.mjv6")]
    assert w[(10, "name")].dataset == "grand-f~2" and "already used by datasets[0] (line 3)" in w[(10, "name")].message
    assert w[(17, "name")].dataset == "grand-f~3" and "'grand-f~3:<row>'" in w[(17, "name")].message
    assert "first given on line 19, again on line 23" in w[(23, "sampling_strategy")].message
    assert w[(23, "sampling_strategy")].dataset == "grand-f~3"
    assert "first given on line 40, again on line 41" in w[(41, "batch_sizes.grounding")].message
    assert "keeping rows with fltLaionAesthScore > 5" in w[(25, "aes_cutoff")].message
    assert w[(25, "aes_cutoff")].dataset == "laion-subset"
    assert "which no dataset uses" in w[(38, "weights.picabanana")].message
    assert all(i.severity == "warning" for i in report.warnings)


def test_repeated_names_are_unique_everywhere(upstream_like):
    report = validate_file(upstream_like)
    m = report.mixture
    assert [d.name for d in m.datasets] == ["grand-f", "grand-f~2", "grand-f~3", "laion-subset"]
    assert [d.declared_name for d in m.datasets] == ["grand-f", "grand-f", "grand-f", "laion-subset"]
    assert list(report.plans) == ["grand-f", "grand-f~2", "grand-f~3", "laion-subset"]
    assert m.dataset("grand-f~2").path == "g2.parquet"
    ids = {name: [s["id"] for s in iter_samples(plan, 0)] for name, plan in report.plans.items() if "grand" in name}
    # the last value of the repeated key counts: grand-f~3 takes first:1
    assert ids == {"grand-f": ["grand-f:0", "grand-f:1", "grand-f:2"], "grand-f~2": ["grand-f~2:0", "grand-f~2:1"],
                   "grand-f~3": ["grand-f~3:0"]}
    assert str(m.dataset("grand-f~3").sampling_strategy) == "first:1"
    assert m.batch_sizes == {"grounding": 0.5, "mjv6": 1.0}  # the last value of the repeated key
    assert m.weights == {"grounding": 100, "default": 150, "picabanana": 150}
    assert report.plans["laion-subset"].options.caption_key == "caption"


def test_repeated_names_prepare_into_their_own_folders(upstream_like, tmp_path):
    from lavida_data.prepare.local import prepare

    report = validate_file(upstream_like)
    grand = [p for n, p in report.plans.items() if n.startswith("grand-f")]
    out = tmp_path / "prepared"
    results = prepare(grand, str(out))
    assert sorted(results) == ["grand-f", "grand-f~2", "grand-f~3"]
    assert sorted(p.name for p in out.iterdir()) == ["grand-f", "grand-f~2", "grand-f~3"]
    assert [results[n].rows_kept for n in ("grand-f", "grand-f~2", "grand-f~3")] == [3, 2, 4]
    assert json.loads((out / "grand-f~2" / "manifest.json").read_text())["dataset"] == "grand-f~2"


def test_strict_turns_every_warning_into_an_error(upstream_like):
    loose = validate_file(upstream_like)
    strict = validate_file(upstream_like, strict=True)
    assert not strict.valid and strict.warnings == [] and strict.mixture is None and strict.plans == {}
    assert [(i.line, i.column, i.field, i.message) for i in strict.errors] == \
        [(i.line, i.column, i.field, i.message) for i in loose.warnings]
    assert {i.severity for i in strict.errors} == {"error"}


def test_hidden_aesthetic_filter_applies_and_null_turns_it_off(upstream_like):
    report = validate_file(upstream_like)
    plan = report.plans["laion-subset"]
    assert plan.filters.aes_cutoff == 5.0 and plan.spec.aes_cutoff == 5.0
    assert selected_rows(plan, 0).tolist() == list(range(5, 12))  # 4.0 + 0.25 i > 5 (not 5.0 itself)
    off = upstream_like.read_text().replace("    # aes_cutoff: 5.6 # 1M\n", "    aes_cutoff: null\n")
    upstream_like.write_text(off)
    report = validate_file(upstream_like)
    assert (23 + 2, "aes_cutoff") not in by_line(report.warnings)
    plan = report.plans["laion-subset"]
    assert plan.filters.aes_cutoff is None and selected_rows(plan, 0).tolist() == list(range(12))


@pytest.mark.parametrize("columns, has_score, filtered, warned", [
    (None, True, True, True),  # upstream reads every column: the table's score column filters
    (None, False, False, False),
    ("[s3_path, caption]", True, False, False),  # `columns` leaves the score out: no filter
])
def test_hidden_filter_follows_the_columns_upstream_reads(tmp_path, columns, has_score, filtered, warned):
    t2i_table(tmp_path / "t.parquet", score=has_score)
    text = "datasets:\n  - name: d\n    path: t.parquet\n    preprocess_fn: preproces_grandf\n"
    text = text.replace("preproces_grandf", "t2i")
    if columns:
        text += f"    columns: {columns}\n"
    (tmp_path / "m.yaml").write_text(text)
    report = validate_file(tmp_path / "m.yaml")
    assert report.valid, report.errors
    assert bool(report.warnings) == warned
    assert (report.plans["d"].filters.aes_cutoff == 5.0) == filtered
    assert len(selected_rows(report.plans["d"], 0)) == (7 if filtered else 12)
    # validated offline, the plan decides on the table when it is first read: the same rows
    offline = validate_file(tmp_path / "m.yaml", offline=True)
    assert selected_rows(offline.plans["d"], 0).tolist() == selected_rows(report.plans["d"], 0).tolist()


def test_unique_names_skip_names_the_file_already_has():
    assert unique_names(["a", "a", "a~2", "b", "a", None]) == ["a", "a~3", "a~2", "b", "a~4", None]
    m = Mixture.model_validate({"datasets": [{"name": "x", "path": "t.parquet", "preprocess_fn": "t2i"}] * 2})
    assert [d.name for d in m.datasets] == ["x", "x~2"]
    again = Mixture.model_validate(m.model_dump())  # already unique: unchanged
    assert [d.name for d in again.datasets] == ["x", "x~2"]


# ------------------------------------------------------------------ golden: upstream's selections

def test_random_picks_the_rows_pandas_sample_picks():
    data = json.loads((GOLDEN / "random_selection.json").read_text())
    assert len(data["cases"]) >= 5
    for case in data["cases"]:
        rows, n, want = case["rows"], case["n"], case["positions"]
        assert upstream_sample(rows, n).tolist() == want
        s = SamplingStrategy.parse(f"random:{n}")
        got = s.select(rows, seed=123, dataset="any")
        assert got.tolist() == sorted(want)
        assert s.select(rows, seed=7, dataset="other").tolist() == got.tolist()  # fixed, as upstream


SELECTION = json.loads((GOLDEN / "selection.json").read_text())


@pytest.fixture(scope="module")
def golden_table(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("golden")
    pq.write_table(pa.Table.from_pylist(SELECTION["rows"]), d / "t.parquet")
    return d


def ours(folder: Path, name: str, entry: dict):
    entry = {"name": name, "json_path": "t.parquet", "preprocess_fn": "t2i", **entry}
    f = folder / f"{name}.yaml"
    f.write_text(yaml.safe_dump({"datasets": [entry]}))
    return validate_file(f)


def expanded(report, name: str) -> list[int]:
    plan = report.plans[name]
    return sorted(np.repeat(selected_rows(plan, 99), plan.spec.sampling_strategy.repeat).tolist())


#: cases where upstream fails, and what ours does instead (a validation error or the rows kept)
UPSTREAM_FAILS = {
    "aes_null": ("rows", list(range(40))),  # upstream's `> None` drops every row; here null is no filter
    "first_0": ("error", "N must be at least 1"),  # upstream: an empty dataset, which it fails to read
    "random_41": ("error", "asks for 41 rows but the table has 40"),
    "random_12_5pct": ("rows", "random_5"),  # upstream's int('12.5') fails; here ceil(12.5% of 40) = 5 rows
}


@pytest.mark.parametrize("name", sorted(SELECTION["cases"]))
def test_rows_selected_as_upstream(golden_table, name):
    case = SELECTION["cases"][name]
    report = ours(golden_table, name, case["entry"])
    if "rids" in case:
        assert report.valid, report.errors
        assert expanded(report, name) == sorted(case["rids"])
        assert Counter(expanded(report, name)) == Counter(case["rids"])
        return
    kind, what = UPSTREAM_FAILS[name]
    if kind == "error":
        assert not report.valid and any(what in e.message for e in report.errors), report.errors
    else:
        want = sorted(SELECTION["cases"][what]["rids"]) if isinstance(what, str) else what
        assert report.valid and expanded(report, name) == want


def test_every_failing_upstream_case_is_accounted_for():
    failing = {n for n, c in SELECTION["cases"].items() if "error" in c}
    assert failing == set(UPSTREAM_FAILS)


# ------------------------------------------------------------------ upstream's own files

UPSTREAM = os.environ.get("LAVIDA_UPSTREAM")


@pytest.mark.skipif(not UPSTREAM, reason="set LAVIDA_UPSTREAM to a LaVida-O checkout")
@pytest.mark.parametrize("stem", ["debug_dataset", "s1_und_gnd_data", "s2_t2i_pretrain", "s3_interleaved"])
def test_upstream_files_validate_unmodified(stem):
    path = Path(UPSTREAM) / "config" / "data" / f"{stem}.yaml"
    report = validate_file(path, offline=True)  # their tables are on upstream's machines
    assert report.errors == [], "\n".join(map(str, report.errors))
    names = [d.name for d in report.mixture.datasets]
    assert len(set(names)) == len(names)
    assert sorted(report.plans) == sorted(names)
    strict = validate_file(path, offline=True, strict=True)
    assert len(strict.errors) == len(report.warnings) and strict.valid == (report.warnings == [])
