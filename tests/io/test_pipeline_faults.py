"""Every command that touches S3, run twice through the fault-injecting proxy: once without faults,
once with faults on every kind of request (503 SlowDown, resets, stalls past the read timeout,
truncated bodies, incomplete uploads). The two runs must give byte-identical output and identical
counts: ``prepare`` (with and without ``--embed-images``, local and S3 output), ``stream`` with
the images fetched in DataLoader worker processes, and ``import`` from S3 to S3. (The Ray engine's
run is in ``tests/prepare/test_ray.py``.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lavida_data import io as storage
from lavida_data import validate_file
from lavida_data.prepare.local import prepare

from tests.support import EXAMPLES

MIX = """seed: 3
datasets:
  - {name: laion-aes, path: DATA/t2i.parquet, preprocess_fn: t2i, aes_cutoff: 5.0, min_size: 64, image_root: DATA}
  - {name: coyo, path: DATA/t2i_coyo.csv, preprocess_fn: t2i, image_root: DATA}
  - {name: gpt-edit, path: DATA/edit_gpt.parquet, preprocess_fn: edit, image_root: DATA}
  - {name: gpt-edit-mixed, path: DATA/edit_mixed.jsonl, preprocess_fn: edit, image_root: DATA,
     sampling_strategy: "random:5"}
"""


def _mixed_edit_rows() -> str:
    """GPT-Image-Edit's shape: ``input_paths`` a string in some rows, a list in others."""
    imgs = sorted(p.name for p in (EXAMPLES / "data" / "images").glob("*.jpg"))
    rows = []
    for i in range(8):
        src = f"images/{imgs[i]}" if i % 2 else [f"images/{imgs[i]}", f"images/{imgs[i + 1]}"]
        rows.append({"input_paths": src, "output_paths": f"images/{imgs[i + 2]}", "instruction": f"edit {i}"})
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def s3_data(s3_bucket, tmp_path):
    """The example tables and images on S3, and a mixture of them."""
    client, bucket = s3_bucket
    data = EXAMPLES / "data"
    for p in [data / "t2i.parquet", data / "t2i_coyo.csv", data / "edit_gpt.parquet", *sorted(data.glob("images/*"))]:
        client.upload_file(str(p), bucket, f"data/{p.relative_to(data).as_posix()}")
    client.put_object(Bucket=bucket, Key="data/edit_mixed.jsonl", Body=_mixed_edit_rows().encode())
    config = tmp_path / "mix.yaml"
    config.write_text(MIX.replace("DATA", f"s3://{bucket}/data"))
    return client, bucket, config


def s3_tree(client, bucket: str, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in sorted(keys)}


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def counts(results) -> dict:
    return {n: {k: v for k, v in r.to_json().items() if k != "path"} for n, r in results.items()}


def assert_faults_everywhere(plan, kinds=("GET", "HEAD", "LIST", "PUT", "DELETE")) -> None:
    summary = plan.summary()
    assert set(kinds) <= set(summary), summary
    assert sum(plan.injected.values()) >= 5, summary


@pytest.mark.parametrize("embed", [False, True], ids=["by-reference", "embed-images"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_prepare_gives_the_same_files_and_counts_with_faults(proxy, s3_data, tmp_path, embed, where):
    client, bucket, config = s3_data
    plans = validate_file(config).plans.values()

    def run(name: str):
        out = f"s3://{bucket}/{name}" if where == "s3" else str(tmp_path / name)
        results = prepare(plans, out, embed=embed, shard_size=2048)
        files = s3_tree(client, bucket, f"{name}/") if where == "s3" else tree(tmp_path / name)
        return results, files

    clean, clean_files = run("clean")
    proxy.plan.enabled = True
    faulty, faulty_files = run("faulty")
    assert counts(faulty) == counts(clean)
    assert list(faulty_files) == list(clean_files) and len(clean_files) > 12
    assert [f for f in clean_files if faulty_files[f] != clean_files[f]] == []
    assert clean["gpt-edit-mixed"].rows_kept == 8  # the mixed column read as it is
    if embed:
        assert all(r.images_missing == {} and r.images_embedded > 0 for r in faulty.values())
    kinds = ["GET", "HEAD"] + (["LIST", "PUT", "DELETE"] if where == "s3" else [])
    assert_faults_everywhere(proxy.plan, kinds)


def _batch_digest(batch: dict) -> dict:
    """A batch's ids, skipped samples and a hash of each sample's pixels."""
    out = {"step": batch["step"], "ids": batch["ids"], "skipped": batch["skipped"], "pixels": []}
    for s in batch["samples"]:
        h = hashlib.sha256()
        for key in ("gen_pixels", "gen_enc_pixels", "und_pixels"):
            for t in s.get(key) or []:
                h.update(t.numpy().tobytes())
        out["pixels"].append(h.hexdigest())
    return out


def test_stream_fetching_images_in_workers_gives_the_same_batches_with_faults(proxy, s3_data, tmp_path, cli):
    from lavida_data.stream.loader import build_dataloader, build_dataset

    client, bucket, config = s3_data
    prepared = f"s3://{bucket}/prepared"
    prepare(validate_file(config).plans.values(), prepared, shard_size=2048)

    def run(name: str) -> list[dict]:
        ds = build_dataset(config, prepared, batch_size=4, process={"image": {"gen_size": 256}},
                           loader={"cache_dir": str(tmp_path / name)})
        return [_batch_digest(b) for b in build_dataloader(ds, num_workers=2)]

    clean = run("clean")
    proxy.plan.enabled = True
    faulty = run("faulty")
    assert faulty == clean and sum(len(b["ids"]) for b in clean) > 20
    assert all(not b["skipped"] for b in clean)
    assert_faults_everywhere(proxy.plan, ["GET", "HEAD"])

    # `lavida-data stream` (in a process of its own, its workers too) reports the same counts
    proxy.plan.enabled = False
    args = ("stream", config, "--prepared", prepared, "-n", "40", "--batch-size", "4", "--workers", "2", "--json")
    want = json.loads(cli(*args, check_rc=0).stdout)
    proxy.plan.enabled = True
    got = json.loads(cli(*args, check_rc=0).stdout)
    keys = ("samples", "kept", "steps", "bad", "bad_examples", "groups", "stopped")
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}


@pytest.mark.parametrize("kind", ["reflect-dit", "sharegpt-4o", "relaion"])
def test_import_from_and_to_s3_gives_the_same_objects_with_faults(proxy, s3_bucket, tmp_path, kind):
    """reflect-dit streams a tar, sharegpt-4o reads zips by ranges, relaion joins metadata parquet
    read by ranges to img2dataset sidecars: each from S3, its tables and images written to S3."""
    from tests.importers.helpers import import_json, upload
    from tests.importers.test_s3_every_kind import KINDS
    from lavida_data.importers import load_all
    from lavida_data.importers.run import writes_folder

    client, bucket = s3_bucket
    build, with_images = KINDS[kind]
    folder, inner = build(tmp_path / "src")
    src = upload(client, bucket, folder, f"releases/{folder.name}") + (f"/{inner}" if inner else "")
    name = kind if writes_folder(load_all()[kind]) else f"{kind}.parquet"
    out = f"out-{kind}"  # (the parameters share a bucket)
    args = ["--images-to", f"s3://{bucket}/{out}/images"] if with_images else []

    def run() -> tuple[dict, dict[str, bytes]]:
        report = import_json(None, kind, src, f"s3://{bucket}/{out}/{name}", *args)
        return report, s3_tree(client, bucket, f"{out}/")

    clean, clean_files = run()
    storage.remove_tree(f"s3://{bucket}/{out}")
    proxy.plan.enabled = True
    faulty, faulty_files = run()
    assert faulty == clean and clean["rows"] > 0
    assert list(faulty_files) == list(clean_files)
    assert [f for f in clean_files if faulty_files[f] != clean_files[f]] == []
    assert_faults_everywhere(proxy.plan, ["GET", "LIST", "PUT"] if with_images else ["GET", "LIST"])
