"""The shipped example mixtures: valid, together using every key and converter, and previewable."""

import filecmp
import json
import os

import pyarrow.parquet as pq
import pytest
import yaml

from lavida_data import DatasetSpec, validate_file
from lavida_data import registry
from lavida_data.cli.preview import preview

from tests.support import EXAMPLES

MIXTURES = sorted((EXAMPLES / "mixtures").glob("*.yaml"))


@pytest.mark.parametrize("path", MIXTURES, ids=lambda p: p.name)
def test_example_validates_with_tables(path):
    report = validate_file(path)
    assert report.errors == [] and report.warnings == []
    assert report.valid and set(report.plans) == {d["name"] for d in yaml.safe_load(path.read_text())["datasets"]}


def test_examples_use_every_key_and_every_converter():
    top, keys, converters = set(), set(), set()
    for path in MIXTURES:
        data = yaml.safe_load(path.read_text())
        top |= set(data)
        for d in data["datasets"]:
            keys |= set(d)
            converters.add(registry.get(d["preprocess_fn"]).name)
    assert top == {"datasets", "weights", "batch_sizes", "seed"}
    assert keys == set(DatasetSpec.model_fields) | {"json_path"}
    builtin = {c.name for c in registry if c.source == "builtin"}
    assert len(builtin) == 15 and converters == builtin


@pytest.mark.parametrize("path", MIXTURES, ids=lambda p: p.name)
def test_every_example_dataset_previews(path):
    report = validate_file(path)
    items, stats = preview(report.plans.values(), n=2, seed=report.mixture.seed)
    per = {name: [i for i in items if i.dataset == name] for name in report.plans}
    for name, got in per.items():
        assert got, f"{name} gave no sample: {stats[name].to_json()}"
        assert all(i.id.startswith(f"{name}:") for i in got)
        assert stats[name].skipped == {} or sum(stats[name].skipped.values()) == 0
        for item in got:
            for role in ("image", "image_gen", "image_gen_enc"):
                v = item.sample.get(role)
                for p in [v] if isinstance(v, str) else v or []:
                    assert os.path.isfile(p), p


def test_generator_reproduces_the_shipped_data(tmp_path):
    import runpy

    runpy.run_path(str(EXAMPLES / "make_example_data.py"), run_name="not_main")["write"](str(tmp_path))
    shipped = EXAMPLES / "data"
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert made == sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file())
    for rel in made:
        if rel.endswith(".parquet"):  # compare content: the footer records the writer's version
            assert pq.read_table(tmp_path / rel).equals(pq.read_table(shipped / rel)), rel
        elif not rel.endswith(".jpg"):
            assert filecmp.cmp(tmp_path / rel, shipped / rel, shallow=False), rel


def test_upstream_seed_entry_validates_unmodified(tmp_path):
    """The seed document's example entry, as written for upstream, is accepted as it is."""
    text = """datasets:
  - name: our-dataset
    json_path: /path/to/parquet/data.parquet
    sampling_strategy: all
    preprocess_fn: preproces_text_to_image_generation_s3
    columns: ['s3_path', 'caption', 'fltLaionAesthScore','intHeight','intWidth']
    aes_cutoff: 5.67
    min_size: 512
"""
    (tmp_path / "seed.yaml").write_text(text)
    report = validate_file(tmp_path / "seed.yaml", offline=True)
    assert report.valid, report.errors
    spec = report.mixture.datasets[0]
    assert spec.path == "/path/to/parquet/data.parquet" and spec.aes_cutoff == 5.67 and spec.min_size == 512
    assert json.loads(report.mixture.model_dump_json())["datasets"][0]["sampling_strategy"] == "all"
