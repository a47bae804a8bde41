"""Tables and images on S3, through a real S3-protocol server on loopback (moto server mode)."""

import json
import os

import pytest

from lavida_data import read_schema, validate_file
from lavida_data.cli.preview import preview
from lavida_data.io.tables import iter_batches

from tests.support import EXAMPLES

TABLES = ["t2i.parquet", "t2i_coyo.csv", "t2i_loc.json", "t2i_hash.jsonl"]


def upload_examples(client, bucket):
    data = EXAMPLES / "data"
    for p in data.rglob("*"):
        if p.is_file():
            client.upload_file(str(p), bucket, "data/" + str(p.relative_to(data)))


@pytest.mark.parametrize("name", TABLES)
def test_each_format_reads_the_same_from_s3(s3_bucket, name):
    client, bucket = s3_bucket
    client.upload_file(str(EXAMPLES / "data" / name), bucket, f"tables/{name}")
    uri = f"s3://{bucket}/tables/{name}"
    local = str(EXAMPLES / "data" / name)
    assert read_schema(uri) == read_schema(local)
    cols = read_schema(local)[:2]
    remote_rows = [r for b in iter_batches(uri, cols, batch_size=3) for r in b.to_pylist()]
    local_rows = [r for b in iter_batches(local, cols, batch_size=3) for r in b.to_pylist()]
    assert remote_rows == local_rows and len(local_rows) > 3


def test_s3_endpoint_url_variable_is_honoured(s3_bucket, monkeypatch):
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="t.jsonl", Body=b'{"a": 1}\n')
    url = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("S3_ENDPOINT_URL", url)  # the variable mosaicml-streaming reads
    assert read_schema(f"s3://{bucket}/t.jsonl") == ["a"]


def test_mixture_of_s3_tables_and_images_validates_and_previews(s3_bucket, tmp_path, monkeypatch):
    client, bucket = s3_bucket
    upload_examples(client, bucket)
    text = (EXAMPLES / "mixtures" / "t2i.yaml").read_text().replace("../data", f"s3://{bucket}/data")
    (tmp_path / "s3.yaml").write_text(text)
    report = validate_file(tmp_path / "s3.yaml")
    assert report.valid, report.errors
    items, stats = preview(report.plans.values(), n=2, seed=report.mixture.seed)
    local = validate_file(EXAMPLES / "mixtures" / "t2i.yaml")
    local_items, _ = preview(local.plans.values(), n=2, seed=local.mixture.seed)
    assert [i.id for i in items] == [i.id for i in local_items]
    assert items[0].sample["image_gen"].startswith(f"s3://{bucket}/data/images/")
    # the page embeds images fetched from S3
    from lavida_data.cli.preview import render_html

    page = render_html(items, stats, "s3")
    assert page.count("data:image/jpeg;base64,") >= len(items) and "image not loaded" not in page


def test_missing_s3_table_is_a_validation_error(s3_bucket, tmp_path):
    _, bucket = s3_bucket
    (tmp_path / "m.yaml").write_text(
        f"datasets:\n  - name: d\n    path: s3://{bucket}/nope.parquet\n    preprocess_fn: t2i\n"
    )
    report = validate_file(tmp_path / "m.yaml")
    assert [(e.line, e.field) for e in report.errors] == [(3, "path")]
    assert "not found" in report.errors[0].message and "testing-secret" not in report.errors[0].message


def test_errors_never_show_credentials(s3_endpoint, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    (tmp_path / "m.yaml").write_text("datasets:\n  - name: d\n    path: s3://no-such-bucket/t.csv\n    preprocess_fn: t2i\n")
    proc = cli("validate", tmp_path / "m.yaml", "--json", check_rc=1)
    out = json.loads(proc.stdout)
    assert out["valid"] is False and out["errors"][0]["field"] == "path"
    assert "very-secret-value" not in proc.stdout + proc.stderr
