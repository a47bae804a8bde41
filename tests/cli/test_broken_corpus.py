"""A corpus of broken mixture files, each checked for its precise errors.

Every file in ``tests/cli/broken/`` states in its header what validation must report, written from
the file's content (not from the validator's output)::

    # mode: schema        (optional: validate against the tiny tables built below, not offline)
    # mode: strict        (optional: what upstream accepts silently; validated offline with
    #                      strict=True the ``expect`` lines are the errors, without it the same
    #                      issues are the file's only warnings and it is valid)
    # expect: line=7 col=5 dataset=laion field=aes_cutof message="unknown key ..."
    # warn: line=4 col=5 dataset=laion field=aes_cutoff message="..."

One ``expect`` line per error: the errors of the file are exactly these (no more, no fewer).
``dataset=-`` / ``field=-`` mean "none"; ``message`` is a substring and may be repeated (all must
occur). In ``schema`` files an ``expect`` with ``offline=1`` is also expected when the file is
validated offline; the others need the tables. ``warn`` lines list the exact warnings.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavida_data import ConfigError, Issue, load_mixture, validate_file

from tests.support import run_cli

BROKEN = Path(__file__).parent / "broken"
FILES = sorted(BROKEN.glob("*.yaml"))


# -- expectations --------------------------------------------------------------------------------

@dataclass
class Expected:
    kind: str  # "expect" or "warn"
    line: int
    col: int
    dataset: str | None
    field: str | None
    messages: list[str] = field(default_factory=list)
    offline: bool = False

    def matches(self, issue: Issue) -> bool:
        return (
            issue.line == self.line
            and issue.column == self.col
            and issue.dataset == self.dataset
            and issue.field == self.field
            and all(m in issue.message for m in self.messages)
        )

    def __str__(self) -> str:
        return (f"line={self.line} col={self.col} dataset={self.dataset} field={self.field} "
                f"message~{self.messages}")


@dataclass
class Header:
    mode: str = "offline"
    errors: list[Expected] = field(default_factory=list)
    warnings: list[Expected] = field(default_factory=list)


_DIRECTIVE = re.compile(r"^#\s*(expect|warn|mode):\s*(.*)$")


def parse_header(path: Path) -> Header:
    h = Header()
    for raw in path.read_text(encoding="utf-8").splitlines():
        m = _DIRECTIVE.match(raw)
        if not m:
            continue
        kind, rest = m.groups()
        if kind == "mode":
            assert rest.strip() in ("offline", "schema", "strict"), f"{path.name}: bad mode {rest!r}"
            h.mode = rest.strip()
            continue
        fields: dict[str, str] = {}
        messages: list[str] = []
        for tok in shlex.split(rest):
            key, _, value = tok.partition("=")
            if key == "message":
                messages.append(value)
            else:
                assert key not in fields, f"{path.name}: {key} given twice in {raw!r}"
                fields[key] = value
        assert set(fields) <= {"line", "col", "dataset", "field", "offline"}, f"{path.name}: {raw!r}"
        assert {"line", "col", "dataset", "field"} <= set(fields) and messages, f"{path.name}: incomplete {raw!r}"
        none = lambda v: None if v == "-" else v  # noqa: E731
        e = Expected(kind, int(fields["line"]), int(fields["col"]), none(fields["dataset"]),
                     none(fields["field"]), messages, fields.get("offline") == "1")
        (h.errors if kind == "expect" else h.warnings).append(e)
    return h


def check(actual: list[Issue], expected: list[Expected], file: Path, what: str) -> None:
    """``actual`` is exactly ``expected``: same count, and each expectation matched by its own issue."""
    shown = "\n".join(f"  line={i.line} col={i.column} dataset={i.dataset} field={i.field}: {i.message}"
                      for i in actual) or "  (none)"
    left = list(actual)
    for e in expected:
        hit = next((i for i in left if e.matches(i)), None)
        assert hit is not None, f"{file.name}: no {what} matches {e}; got:\n{shown}"
        left.remove(hit)
    assert not left, f"{file.name}: unexpected {what}(s) besides the expected ones; got:\n{shown}"
    for i in actual:
        assert i.file == str(file), f"{file.name}: issue names file {i.file!r}"


# -- tiny tables for the schema cases ------------------------------------------------------------

def build_tables(folder: Path) -> None:
    t = folder / "tables"
    t.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "s3_path": ["s3://b/0.jpg", "s3://b/1.jpg", "s3://b/2.jpg"],
        "caption": ["a cat", "a dog", "a fox"],
        "fltLaionAesthScore": [5.1, 6.2, 7.3],
        "hpsv2": [0.3, 0.2, 0.25],
        "intHeight": [512, 1024, 768],
        "intWidth": [512, 768, 1024],
    }), t / "t2i.parquet")
    pq.write_table(pa.table({
        "s3_path": ["s3://b/0.jpg", "s3://b/1.jpg"],
        "captoin": ["a cat", "a dog"],
        "fltLaionAesthScore": [5.1, 6.2],
    }), t / "t2i_typo.parquet")
    (t / "edit.csv").write_text(
        "input_paths,output_paths,instruction\n"
        "s3://b/in0.jpg,s3://b/out0.jpg,make it red\n"
        '"[""s3://b/in1.jpg"", ""s3://b/in2.jpg""]",s3://b/out1.jpg,merge them\n',
        encoding="utf-8",
    )
    conv = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]
    (t / "mammoth.jsonl").write_text(
        "\n".join(json.dumps({"conversations": json.dumps(conv), "image": f"img/{i}.jpg"}) for i in range(2)) + "\n",
        encoding="utf-8",
    )
    (t / "refcoco.json").write_text(json.dumps([
        {"s3_path": "s3://b/r0.jpg", "label": "the left cat",
         "loc_string": "<LOC_BEGIN><LOC_1><LOC_2><LOC_30><LOC_40><LOC_END>"},
        {"s3_path": "s3://b/r1.jpg", "label": "the dog",
         "loc_string": "<LOC_BEGIN><LOC_5><LOC_6><LOC_70><LOC_80><LOC_END>"},
    ]), encoding="utf-8")


VALID = """\
seed: 42
datasets:
  - name: laion
    path: tables/t2i.parquet
    preprocess_fn: t2i
    aes_cutoff: 5.67
    min_size: 512
    sampling_strategy: random:3
    length_group: t2i
  - name: gpt_edit
    json_path: tables/edit.csv
    preprocess_fn: process_gpt_edit
    max_enc_images: {column: input_paths, value: 2}
    sampling_strategy: dup:2
    length_group: edit
  - name: mammoth
    path: tables/mammoth.jsonl
    preprocess_fn: preproces_und_mammoth_si_10M
    sampling_strategy: first:50%
    length_group: und
  - name: refcoco
    path: tables/refcoco.json
    preprocess_fn: preproces_refcoco_rec
    columns: [s3_path, label, loc_string]
    length_group: und
weights:
  t2i: 250
  edit: 200
  und: 250
batch_sizes:
  und: 0.5
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mixtures")
    build_tables(d)
    (d / "valid.yaml").write_text(VALID, encoding="utf-8")
    return d


# -- the corpus ----------------------------------------------------------------------------------

def test_corpus_size_and_headers():
    assert len(FILES) >= 35
    for path in FILES:
        h = parse_header(path)
        assert h.errors, f"{path.name} declares no expected error"
        if h.mode == "offline":
            assert not any(e.offline for e in h.errors), f"{path.name}: offline=1 is for schema files"


def test_the_tables_and_a_valid_mixture_pass(workdir):
    report = validate_file(workdir / "valid.yaml")
    assert report.errors == [] and report.warnings == []
    assert sorted(report.plans) == ["gpt_edit", "laion", "mammoth", "refcoco"]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_broken_file(path: Path, workdir: Path):
    h = parse_header(path)
    if h.mode == "schema":
        target = workdir / path.name  # next to tables/, so its relative paths resolve
        shutil.copyfile(path, target)
        report = validate_file(target, offline=False)
        check(report.errors, h.errors, target, "error")
        check(report.warnings, h.warnings, target, "warning")
        offline = validate_file(target, offline=True)
        check(offline.errors, [e for e in h.errors if e.offline], target, "offline error")
        check(offline.warnings, [], target, "offline warning")
    elif h.mode == "strict":
        assert not h.warnings, f"{path.name}: a strict file's warnings are its `expect` lines"
        loose = validate_file(path, offline=True)
        check(loose.errors, [], path, "error without strict")
        check(loose.warnings, h.errors, path, "warning without strict")
        assert loose.valid and loose.mixture is not None
        report = validate_file(path, offline=True, strict=True)
        check(report.errors, h.errors, path, "error")
        check(report.warnings, [], path, "warning")
        assert {i.severity for i in report.errors} == {"error"}
        with pytest.raises(ConfigError) as info:
            load_mixture(path, offline=True, strict=True)
        assert info.value.issues == report.errors
    else:
        report = validate_file(path, offline=True)
        check(report.errors, h.errors, path, "error")
        check(report.warnings, h.warnings, path, "warning")
        with pytest.raises(ConfigError) as info:
            load_mixture(path, offline=True)
        assert info.value.issues == report.errors
    assert not report.valid
    assert report.mixture is None


# -- the score-column warning --------------------------------------------------------------------

SCORE_NO_CUTOFF = """\
datasets:
  - name: refcoco
    path: tables/refcoco.json
    preprocess_fn: preproces_refcoco_rec
  - name: laion
    path: tables/t2i.parquet
    preprocess_fn: t2i
    length_group: t2i
"""


def test_score_column_without_cutoff_warns(workdir):
    f = workdir / "score_warn.yaml"
    f.write_text(SCORE_NO_CUTOFF, encoding="utf-8")
    report = validate_file(f)
    assert report.valid and report.errors == []
    [w] = report.warnings
    assert (w.line, w.column, w.dataset, w.field, w.severity) == (5, 5, "laion", "aes_cutoff", "warning")
    assert "'fltLaionAesthScore' is read but `aes_cutoff` is not set" in w.message
    assert "keeping rows with fltLaionAesthScore > 5" in w.message
    assert validate_file(f).plans["laion"].filters.aes_cutoff == 5.0  # upstream's hidden filter applies
    # listed in `columns`: the same warning, offline too (upstream reads exactly `columns`)
    f.write_text(SCORE_NO_CUTOFF + "    columns: [s3_path, caption, fltLaionAesthScore]\n", encoding="utf-8")
    [w] = validate_file(f).warnings
    assert (w.line, w.dataset) == (5, "laion")
    assert validate_file(f, offline=True).warnings == [w]
    assert not validate_file(f, strict=True).valid
    # with a cutoff, `aes_cutoff: null`, or without reading the score column: no warning
    f.write_text(SCORE_NO_CUTOFF + "    aes_cutoff: 5.0\n", encoding="utf-8")
    assert validate_file(f).warnings == []
    f.write_text(SCORE_NO_CUTOFF + "    aes_cutoff: null\n", encoding="utf-8")
    assert validate_file(f).warnings == [] and validate_file(f).plans["laion"].filters.aes_cutoff is None
    f.write_text(SCORE_NO_CUTOFF + "    columns: [s3_path, caption]\n", encoding="utf-8")
    assert validate_file(f).warnings == []


# -- the command line ----------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=60)


def test_cli_json_broken_then_valid(workdir):
    path = BROKEN / "schema_multi.yaml"
    target = workdir / "cli_multi.yaml"
    shutil.copyfile(path, target)
    h = parse_header(path)

    res = _cli("validate", str(target), "--json")
    assert res.returncode == 1, res.stderr
    out = json.loads(res.stdout)
    assert set(out) == {"valid", "errors", "warnings"} and out["valid"] is False
    keys = {"file", "line", "column", "dataset", "field", "message"}
    assert all(set(e) == keys for e in out["errors"] + out["warnings"])
    assert [(e["line"], e["column"], e["dataset"], e["field"]) for e in out["errors"]] == \
        [(e.line, e.col, e.dataset, e.field) for e in sorted(h.errors, key=lambda e: (e.line, e.col))]
    assert all(e["file"] == str(target) for e in out["errors"])
    for got, want in zip(out["errors"], sorted(h.errors, key=lambda e: (e.line, e.col))):
        assert all(m in got["message"] for m in want.messages)
    assert [(w["line"], w["field"]) for w in out["warnings"]] == [(w.line, w.field) for w in h.warnings]

    res = _cli("validate", str(workdir / "valid.yaml"), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout) == {"valid": True, "errors": [], "warnings": []}
