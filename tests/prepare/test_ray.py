"""``lavida-data prepare --engine ray``: a local Ray cluster (2 CPUs) started here prepares the same
tables as the local engine, and every file must be byte for byte the same: shards, index, row map,
manifest (so the fingerprint too), for local and S3 tables and outputs, with embedded images, and
after a driver killed half-way. Nothing of Ray or S3 is mocked (S3 is a moto server on loopback)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lavida_data.prepare.local as local_engine
from lavida_data import validate_file
from lavida_data.prepared.mds import ArrowMDSWriter, shard_bounds
from lavida_data.prepare.local import prepare

from tests.support import EXAMPLES, run_cli

ray = pytest.importorskip("ray")

from lavida_data.prepare.ray import KILL_AFTER, forwarded_env, prepare_ray  # noqa: E402

SHARD = 8 << 10  # many shards from small tables
JSON_KEYS = {"rows_read", "rows_kept", "dropped", "shards", "path", "fingerprint", "up_to_date", "images_embedded",
             "images_missing"}


@pytest.fixture(scope="module")
def cluster(s3_endpoint):
    """A local Ray with 2 CPUs for this module; yields its address (for a second driver). Its
    workers get the S3 settings as the engine forwards them to its tasks (so they share one pool)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": forwarded_env()})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def small_batches(monkeypatch):
    """128-row read batches (instead of 65536) for both engines: several jsonl blocks from small tables."""
    monkeypatch.setattr(local_engine, "BATCH_ROWS", 128)


# ------------------------------------------------------------------------------------------- helpers

IMAGES = sorted(p.name for p in (EXAMPLES / "data" / "images").iterdir())


def rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        score = None if i % 37 == 5 else round(float(rng.random() * 10), 3)
        meta = [i, {"k": i}, "text", [1, 2], 2.5][i % 5] if i % 150 else {"first": True}  # types vary by batch
        out.append({
            "s3_path": "images/" + IMAGES[i % len(IMAGES)], "caption": f"row {i} " + "word " * int(rng.integers(0, 60)),
            "fltLaionAesthScore": score, "intHeight": int(rng.integers(32, 1024)),
            "intWidth": int(rng.integers(32, 1024)), "hpsv2": float(rng.random()),
            "tags": [f"t{j}" for j in range(i % 4)], "nsfw": bool(i % 3 == 0), "meta": meta,
        })
    return out


def write_tables(folder: Path, n: int = 1200) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    recs = rows(n)
    flat = [{k: v for k, v in r.items() if k != "meta"} for r in recs]
    pq.write_table(pa.Table.from_pylist(flat), folder / "t.parquet", row_group_size=100)
    pq.write_table(pa.Table.from_pylist(flat), folder / "t_big.parquet", row_group_size=1000)
    (folder / "t.jsonl").write_text("".join(json.dumps(r) + "\n" + ("\n" if i % 97 == 3 else "")
                                            for i, r in enumerate(recs)))
    (folder / "t.json").write_text(json.dumps(recs[:300]))
    cols = ["s3_path", "caption", "fltLaionAesthScore", "intHeight", "intWidth"]
    lines = [",".join(cols)] + [",".join("" if r[c] is None else str(r[c]).strip() for c in cols) for r in recs]
    (folder / "t.csv").write_text("\n".join(lines) + "\n")
    return folder


MIX = """seed: 7
datasets:
  - {name: pq, path: DATA/t.parquet, preprocess_fn: t2i, aes_cutoff: 5.0, min_size: 256,
     columns: [s3_path, caption, fltLaionAesthScore, intHeight, intWidth, tags, nsfw]}
  - {name: pq-big-groups, path: DATA/t_big.parquet, preprocess_fn: t2i, min_size: 128}
  - {name: js, path: DATA/t.jsonl, preprocess_fn: t2i, aes_cutoff: 3.0,
     columns: [s3_path, caption, fltLaionAesthScore, meta]}
  - {name: cs, path: DATA/t.csv, preprocess_fn: t2i, min_size: 100}
  - {name: ja, path: DATA/t.json, preprocess_fn: t2i}
"""


def mixture(folder: Path, data: str, text: str = MIX) -> Path:
    config = folder / "mix.yaml"
    config.write_text(text.replace("DATA", data))
    return config


def plans(config):
    report = validate_file(config)
    assert report.valid, report.errors
    return report.plans.values()


def tree(folder) -> dict[str, bytes]:
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def s3_tree(client, bucket, prefix) -> dict[str, bytes]:
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in sorted(keys)}


def same_files(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert list(a) == list(b)
    assert [k for k in a if a[k] != b[k]] == []


# ------------------------------------------------------------------------------ the shard cutting rule


@pytest.mark.parametrize("limit", [600, 4096, 1 << 20, None])
def test_shard_bounds_are_where_the_writer_cuts(tmp_path, limit):
    rng = np.random.default_rng(limit or 1)
    blobs = [bytes(int(k)) for k in rng.integers(0, 400, 2000)]
    blobs[0] = bytes(900)  # alone over the smallest limit: an empty first shard
    table = pa.table({"blob": pa.array(blobs, pa.binary())})
    with ArrowMDSWriter(str(tmp_path), {"blob": "bytes"}, size_limit=limit) as w:
        for b in table.to_batches(max_chunksize=333):
            w.write_batch(b)
    counts = [s["samples"] for s in w.shards]
    sizes = np.array([len(b) + 4 + 4 for b in blobs])  # 4 bytes of length header, 4 of offset
    for chunks in ([sizes], np.array_split(sizes, 7), np.array_split(sizes, 1999)):
        bounds = shard_bounds(chunks, limit, w.extra_per_shard)
        assert [b - a for a, b in bounds] == counts
        assert bounds[-1][1] == 2000 and all(bounds[k][1] == bounds[k + 1][0] for k in range(len(bounds) - 1))
    assert (counts[0] == 0) == (limit == 600)
    assert shard_bounds([], limit, w.extra_per_shard) == []


# ----------------------------------------------------------------------------------- engine comparison


@pytest.fixture(scope="module")
def from_local_tables(cluster, tmp_path_factory):
    """The mixture of local tables prepared by both engines (128-row read batches)."""
    root = tmp_path_factory.mktemp("local-tables")
    config = mixture(root, str(write_tables(root / "data")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(local_engine, "BATCH_ROWS", 128)
        local = prepare(plans(config), str(root / "local"), shard_size=SHARD)
        got = prepare_ray(plans(config), str(root / "ray"), shard_size=SHARD, block_rows=250)
    return config, root, local, got


def test_engines_write_identical_files_from_local_tables(from_local_tables, small_batches):
    config, root, local, got = from_local_tables
    same_files(tree(root / "local"), tree(root / "ray"))  # nothing else left (no work folder)

    assert list(got) == ["pq", "pq-big-groups", "js", "cs", "ja"]
    for name, r in got.items():
        assert {**r.to_json(), "path": None} == {**local[name].to_json(), "path": None, "engine": r.engine}
        assert r.engine["shards"] == {"total": r.shards, "reused": 0, "computed": r.shards} and r.shards > 3, name
    blocks = {n: r.engine["blocks"]["total"] for n, r in got.items()}
    # row groups of 100 joined into blocks of 200; groups of 1000 cut in slices of 250; jsonl blocks hold
    # whole 128-row batches (256); csv 250 lines; a json array is one block
    assert blocks == {"pq": 6, "pq-big-groups": 5, "js": 5, "cs": 5, "ja": 1}
    assert got["pq"].dropped == local["pq"].dropped and set(got["pq"].dropped) == {"aes_cutoff", "aes_cutoff:null",
                                                                                   "min_size"}
    assert 0 < got["js"].rows_kept < got["js"].rows_read == 1200

    # each engine sees the other's output as up to date
    assert all(r.up_to_date for r in prepare(plans(config), str(root / "ray"), shard_size=SHARD).values())
    again = prepare_ray(plans(config), str(root / "local"), shard_size=SHARD)
    assert all(r.up_to_date and r.engine["blocks"]["computed"] == 0 for r in again.values())


def test_engines_write_identical_files_on_s3(cluster, small_batches, s3_bucket, tmp_path):
    client, bucket = s3_bucket
    data = write_tables(tmp_path / "data", n=500)
    for name in ("t.parquet", "t.jsonl", "t.csv"):
        client.upload_file(str(data / name), bucket, f"data/{name}")
    text = "\n".join(line for line in MIX.splitlines() if "t_big" not in line and "t.json," not in line) + "\n"
    config = mixture(tmp_path, f"s3://{bucket}/data", text)
    local = prepare(plans(config), f"s3://{bucket}/local", shard_size=SHARD)
    got = prepare_ray(plans(config), f"s3://{bucket}/ray", shard_size=SHARD, block_rows=150)
    files = s3_tree(client, bucket, "ray/")
    same_files(s3_tree(client, bucket, "local/"), files)  # and no work prefix left behind
    assert {n: r.engine["blocks"]["total"] > 1 for n, r in got.items()} == {"pq": True, "js": True, "cs": True}
    for name, r in got.items():
        assert r.path == f"s3://{bucket}/ray/{name}" and r.shards == local[name].shards > 3
        manifest = json.loads(files[f"{name}/manifest.json"])
        suffix = {"pq": "parquet", "js": "jsonl", "cs": "csv"}[name]
        assert manifest["source"]["path"] == f"s3://{bucket}/data/t.{suffix}"
    assert all(r.up_to_date for r in prepare(plans(config), f"s3://{bucket}/ray", shard_size=SHARD).values())


def test_the_ray_engine_gives_the_same_files_with_s3_faults(cluster, small_batches, s3_bucket, tmp_path):
    """Tasks in Ray's worker processes read blocks, write blocks and shards, and the driver copies and
    commits, all through the fault-injecting proxy (503 SlowDown, resets, stalls, truncated bodies):
    the same files and counts as a run without faults."""
    from tests.io.faults import faulty_s3

    client, bucket = s3_bucket
    data = write_tables(tmp_path / "data", n=400)
    for name in ("t.parquet", "t.jsonl", "t.csv"):
        client.upload_file(str(data / name), bucket, f"data/{name}")
    text = "\n".join(line for line in MIX.splitlines() if "t_big" not in line and "t.json," not in line) + "\n"
    config = mixture(tmp_path, f"s3://{bucket}/data", text)
    with faulty_s3(os.environ["AWS_ENDPOINT_URL"], rate=0.15) as proxy:
        clean = prepare_ray(plans(config), f"s3://{bucket}/clean", shard_size=SHARD, block_rows=150)
        proxy.plan.enabled = True
        faulty = prepare_ray(plans(config), f"s3://{bucket}/faulty", shard_size=SHARD, block_rows=150)
        summary, faulted = proxy.plan.summary(), proxy.plan.faulted
    same_files(s3_tree(client, bucket, "clean/"), s3_tree(client, bucket, "faulty/"))  # no work prefix left
    assert {n: (r.rows_read, r.rows_kept, r.dropped, r.shards) for n, r in faulty.items()} == \
        {n: (r.rows_read, r.rows_kept, r.dropped, r.shards) for n, r in clean.items()}
    assert {"GET", "HEAD", "LIST", "PUT", "COPY", "DELETE"} <= set(summary), summary
    # faults met by the tasks (in Ray's worker processes): table reads, blocks and shards written
    assert any(k.startswith("PUT|") and "/.ray/blocks/" in k for k in faulted), faulted
    assert any(k.startswith("PUT|") and "/faulty/.pq.partial/shard." in k for k in faulted), faulted


def test_a_mixture_streams_identically_from_both_outputs(from_local_tables):
    from lavida_data.stream.loader import build_dataloader, build_dataset
    from lavida_data.stream.order import global_order

    config, tmp_path, _, _ = from_local_tables
    report = validate_file(config)
    orders = [global_order(report.mixture, report.plans, str(tmp_path / o), batch_size=8) for o in ("local", "ray")]
    assert orders[0] == orders[1] and len(orders[0]) > 2000
    batches = []
    for out in ("local", "ray"):
        loader = build_dataloader(build_dataset(report, str(tmp_path / out), batch_size=8,
                                                process={"decode_images": False}), num_workers=0)
        batches.append([list(b["ids"]) for _, b in zip(range(6), loader)])
    assert batches[0] == batches[1] and sum(map(len, batches[0])) == 48
    assert [sorted(b) for b in batches[0]] == [sorted(orders[0][8 * k: 8 * k + 8]) for k in range(6)]


EMBED_MIX = """datasets:
  - {name: t2i, path: DATA/e.parquet, preprocess_fn: t2i, aes_cutoff: 4.0, image_root: IMAGES}
  - {name: feedback, path: DATA/e.parquet, preprocess_fn: t2i_layout_plan, aes_cutoff: 2.0, image_root: IMAGES,
     process_fn_kwargs: {add_feedback: true, max_reflection: 3}}
"""


def test_embedded_images_are_the_same(cluster, small_batches, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(EXAMPLES / "data" / "images", images)
    (images / IMAGES[13]).unlink()  # missing: counted once per read batch by both engines
    rng = np.random.default_rng(3)
    n = 400
    t = pa.table({
        "s3_path": [IMAGES[i % 16] for i in range(n)], "caption": [f"caption {i}" for i in range(n)],
        "fltLaionAesthScore": rng.random(n) * 10, "grounding_text": [f"<LOC_{i % 9}>" for i in range(n)],
        # the past generations shown with feedback are drawn at each row's position among the kept rows
        "negatives": [";".join(IMAGES[(i + k) % 16] for k in range(4)) for i in range(n)],
        "negative_reasons": [";".join(f"reason {k}" for k in range(4)) for i in range(n)],
    })
    (tmp_path / "data").mkdir()
    pq.write_table(t, tmp_path / "data" / "e.parquet", row_group_size=40)
    config = mixture(tmp_path, str(tmp_path / "data"), EMBED_MIX.replace("IMAGES", str(images)))
    local = prepare(plans(config), str(tmp_path / "local"), embed=True, shard_size=64 << 10)
    got = prepare_ray(plans(config), str(tmp_path / "ray"), embed=True, shard_size=64 << 10, block_rows=80,
                      fetch_workers=4)
    same_files(tree(tmp_path / "local"), tree(tmp_path / "ray"))
    for name in ("t2i", "feedback"):
        assert got[name].engine["blocks"]["total"] == 5 and got[name].shards > 3
        assert got[name].images_embedded == local[name].images_embedded > 0
        assert got[name].images_missing == local[name].images_missing
    assert got["feedback"].images_embedded > got["feedback"].rows_kept  # the target and 1 to 3 past attempts
    # one missing file, counted once per 128-row read batch holding a kept row that uses it
    assert 2 <= got["t2i"].images_missing["FileNotFoundError"] <= 4


@pytest.mark.slow
def test_images_on_s3_embedded_into_s3_output(cluster, small_batches, s3_bucket, tmp_path):
    client, bucket = s3_bucket
    for name in IMAGES[:12]:  # the other four are missing
        client.upload_file(str(EXAMPLES / "data" / "images" / name), bucket, f"images/{name}")
    n = 300
    t = pa.table({"s3_path": [IMAGES[i % 16] for i in range(n)], "caption": [f"caption {i}" for i in range(n)],
                  "fltLaionAesthScore": [float(i % 10) for i in range(n)]})
    pq.write_table(t, tmp_path / "e.parquet", row_group_size=30)
    client.upload_file(str(tmp_path / "e.parquet"), bucket, "data/e.parquet")
    config = mixture(tmp_path, f"s3://{bucket}/data", "datasets:\n  - {name: t2i, path: DATA/e.parquet, "
                     f"preprocess_fn: t2i, aes_cutoff: 2.0, image_root: 's3://{bucket}/images'}}\n")
    local = prepare(plans(config), f"s3://{bucket}/local", embed=True, shard_size=32 << 10)["t2i"]
    got = prepare_ray(plans(config), f"s3://{bucket}/ray", embed=True, shard_size=32 << 10, block_rows=60)["t2i"]
    same_files(s3_tree(client, bucket, "local/"), s3_tree(client, bucket, "ray/"))
    assert got.engine["blocks"]["total"] == 5 and got.shards == local.shards > 3
    assert got.images_embedded == local.images_embedded > 150
    assert got.images_missing == local.images_missing == {"FileNotFoundError": 4 * 3}  # 4 files x 3 read batches


# --------------------------------------------------------------------------------------------- resume


def prepare_cli(config, out, address, *extra, env=None) -> subprocess.CompletedProcess:
    return run_cli("prepare", config, "--out", out, "--engine", "ray", "--address", address, "--shard-size", "8KB",
                   "--block-rows", "100", "--json", *extra, timeout=180, env={**os.environ, **(env or {})})


def big_mixture(tmp_path, n: int = 3000) -> Path:
    (tmp_path / "data").mkdir()
    flat = [{k: v for k, v in r.items() if k != "meta"} for r in rows(n, seed=5)]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "data" / "big.parquet", row_group_size=100)
    return mixture(tmp_path, str(tmp_path / "data"), "datasets:\n  - {name: big, path: DATA/big.parquet, "
                                                     "preprocess_fn: t2i, aes_cutoff: 4.0}\n")


def test_a_killed_driver_resumes_and_ends_with_the_local_engines_files(cluster, tmp_path):
    config = big_mixture(tmp_path, n=2000)
    out = tmp_path / "ray"
    killed = prepare_cli(config, out, cluster, env={KILL_AFTER: "blocks:4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    work = out / ".big.partial" / ".ray"
    plan = json.loads((work / "plan.json").read_text())
    assert len(plan["blocks"]) == 20
    persisted = sorted(p.name for p in (work / "blocks").glob("*.npz"))
    assert 4 <= len(persisted) < 10 and not (out / "big").exists()  # the tasks after the 4th waited

    # started again (in this process, whose Ray workers are warm: a second command would start its own)
    r = prepare_ray(plans(config), str(out), shard_size=SHARD)["big"]
    assert r.up_to_date is False
    blocks = r.engine["blocks"]
    assert blocks["total"] == 20 and blocks["reused"] >= len(persisted) and blocks["computed"] >= 1
    assert blocks["reused"] + blocks["computed"] == 20 and r.engine["shards"]["computed"] == r.shards

    local = prepare(plans(config), str(tmp_path / "local"), shard_size=SHARD)
    assert local["big"].shards == r.shards > 20
    same_files(tree(tmp_path / "local"), tree(out))


@pytest.mark.slow
def test_a_driver_killed_while_writing_shards_reuses_the_blocks_and_shards(cluster, tmp_path):
    config = big_mixture(tmp_path)
    out = tmp_path / "ray"
    killed = prepare_cli(config, out, cluster, env={KILL_AFTER: "shard_groups:2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = prepare_cli(config, out, cluster)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.lstrip().startswith("{")  # nothing but the JSON on stdout
    r = json.loads(resumed.stdout)["datasets"]["big"]
    assert set(r) == JSON_KEYS | {"engine"} and r["up_to_date"] is False
    assert r["engine"]["blocks"] == {"total": 30, "reused": 30, "computed": 0}
    assert r["engine"]["shards"]["reused"] >= 2 and r["engine"]["shards"]["computed"] >= 1
    prepare(plans(config), str(tmp_path / "local"), shard_size=SHARD)
    same_files(tree(tmp_path / "local"), tree(out))


def test_stale_work_of_another_fingerprint_is_discarded(cluster, tmp_path):
    config = big_mixture(tmp_path, n=600)
    out = tmp_path / "ray"
    work = out / ".big.partial"
    (work / ".ray" / "blocks").mkdir(parents=True)
    (work / ".ray" / "plan.json").write_text(json.dumps({"version": 1, "fingerprint": "old", "batch_rows": 65536,
                                                         "blocks": [{"start": 0, "end": 600}]}))
    (work / ".ray" / "blocks" / "000000.npz").write_bytes(b"stale")
    (work / "shard.00000.mds").write_bytes(b"stale")
    r = prepare_ray(plans(config), str(out), shard_size=SHARD, block_rows=200)["big"]
    assert r.engine["blocks"] == {"total": 3, "reused": 0, "computed": 3}
    prepare(plans(config), str(tmp_path / "local"), shard_size=SHARD)
    same_files(tree(tmp_path / "local"), tree(out))


def test_bare_carriage_returns_in_jsonl_stop_with_a_clear_error(cluster, tmp_path):
    from lavida_data.errors import LavidaDataError

    line = b'{"s3_path": "a.jpg", "caption": "x"}'
    (tmp_path / "t.jsonl").write_bytes(line + b"\n" + line + b"\r" + line + b"\n")  # 3 records, 2 lines
    config = mixture(tmp_path, str(tmp_path), "datasets:\n  - {name: j, path: DATA/t.jsonl, preprocess_fn: t2i}\n")
    with pytest.raises(LavidaDataError, match=r"j: ValueError: .*t\.jsonl: .* 3 record\(s\), not 2 .*--engine local"):
        prepare_ray(plans(config), str(tmp_path / "out"))
    assert prepare(plans(config), str(tmp_path / "local"))["j"].rows_kept == 3


def test_without_ray_the_engine_asks_for_the_extra(tmp_path):
    config = big_mixture(tmp_path)
    code = ("import sys; sys.modules['ray'] = None; from lavida_data.cli import main; "
            f"sys.exit(main(['prepare', {str(config)!r}, '--out', {str(tmp_path / 'out')!r}, '--engine', 'ray']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "pip install 'lavida-data[ray]'" in proc.stderr and not (tmp_path / "out").exists()
