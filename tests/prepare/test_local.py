"""``lavida-data prepare``: MDS shards per dataset, manifests, idempotence, crash safety, embedded
images and S3 output. Shards are real MDS files, read back with mosaicml-streaming's reader."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavida_data import validate_file
from lavida_data.prepare.local import prepare
from lavida_data.prepared.layout import RowCodec, read_manifest, unpack_images

from tests.support import BIN, EXAMPLES, run_cli

DEMO_NAMES = ["laion-aes", "coyo-recap", "layout-feedback", "mammoth-si", "reflection-judge", "grandf", "refcoco",
              "gpt-edit", "sharegpt-4o-edit"]
JSON_KEYS = {"rows_read", "rows_kept", "dropped", "shards", "path", "fingerprint", "up_to_date", "images_embedded",
             "images_missing"}


# ----------------------------------------------------------------------------------------------- helpers


def lavida(*args, **kw) -> subprocess.CompletedProcess:
    """The command, which must succeed."""
    return run_cli(*args, check_rc=0, **kw)


def run_prepare(config, out, **kw):
    report = validate_file(config)
    assert report.valid, report.errors
    return prepare(report.plans.values(), str(out), **kw)


def tree(folder) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too): relative path -> bytes."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def snapshot(folder) -> dict[str, tuple[bytes, int]]:
    """Every file with its bytes and mtime_ns."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def decode(folder, sample) -> dict:
    """A prepared sample back to its table row, with the column kinds the manifest records."""
    return RowCodec.from_manifest(read_manifest(str(folder))).decode(sample)


def samples(folder) -> list[dict]:
    """The MDS samples of a prepared dataset, read with streaming's own reader."""
    from streaming import LocalDataset

    ds = LocalDataset(local=str(folder))
    return [ds[i] for i in range(len(ds))]


def laion_expectation(table: Path, cutoff: float = 5.0, min_size: int = 64):
    """Kept row indices and drops per reason, computed from the table with numpy."""
    t = pq.read_table(table)
    score = np.asarray(t["fltLaionAesthScore"].to_pylist(), dtype=float)
    h = np.asarray(t["intHeight"].to_pylist())
    w = np.asarray(t["intWidth"].to_pylist())
    aes_ok = score > cutoff
    size_ok = (h >= min_size) & (w >= min_size)
    dropped = {"aes_cutoff": int((~aes_ok).sum()), "min_size": int((aes_ok & ~size_ok).sum())}
    return np.flatnonzero(aes_ok & size_ok), t.num_rows, {k: v for k, v in dropped.items() if v}


def source_rows(path: Path) -> list[dict]:
    """A table's rows as plain Python values, read without lavida_data."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def copy_examples(dst: Path) -> Path:
    shutil.copytree(EXAMPLES / "mixtures", dst / "mixtures")
    shutil.copytree(EXAMPLES / "data", dst / "data")
    return dst


# --------------------------------------------------------------------- 1 and 6: the demo mixture via the CLI


@pytest.fixture(scope="module")
def demo_cli(tmp_path_factory):
    """The demo mixture prepared once by the real CLI (``--workers 2 --json``)."""
    ex = copy_examples(tmp_path_factory.mktemp("demo") / "examples")
    out = ex.parent / "prepared"
    proc = lavida("prepare", ex / "mixtures" / "demo.yaml", "--out", out, "--workers", "2", "--json")
    return ex, out, json.loads(proc.stdout)


def test_prepare_demo_counts_manifests_and_shards(demo_cli):
    ex, out, result = demo_cli
    data = ex / "data"
    datasets = result["datasets"]
    assert list(datasets) == DEMO_NAMES
    assert sorted(p.name for p in out.iterdir()) == sorted(DEMO_NAMES)  # no partial or old folders left

    # laion-aes: 16 read; scores 4.5, 4.75, 5.0 are not > 5.0; rows 5, 10, 15 are 48 px high
    laion = datasets["laion-aes"]
    assert (laion["rows_read"], laion["rows_kept"], laion["dropped"]) == (16, 10, {"aes_cutoff": 3, "min_size": 3})
    kept, n, dropped = laion_expectation(data / "t2i.parquet")
    assert (n, len(kept), dropped) == (16, 10, laion["dropped"])
    assert kept.tolist() == [3, 4, 6, 7, 8, 9, 11, 12, 13, 14]

    report = validate_file(ex / "mixtures" / "demo.yaml")
    for name, r in datasets.items():
        assert set(r) == JSON_KEYS
        plan = report.plans[name]
        folder = out / name
        table = Path(plan.table)
        rows = source_rows(table)
        expected_kept = kept if name == "laion-aes" else np.arange(len(rows))
        assert r["path"] == str(folder) and r["up_to_date"] is False
        assert r["rows_read"] == len(rows) and r["rows_kept"] == len(expected_kept), name
        if name != "laion-aes":
            assert r["dropped"] == {}, name
        assert (r["images_embedded"], r["images_missing"]) == (0, {})

        manifest = json.loads((folder / "manifest.json").read_text())
        st = table.stat()
        assert manifest["dataset"] == name and manifest["fingerprint"] == r["fingerprint"]
        assert manifest["source"] == {"path": str(table), "size": st.st_size, "version": st.st_mtime}
        assert manifest["columns"] == plan.read_columns(list(rows[0]))
        if name == "laion-aes":
            assert manifest["columns"] == ["s3_path", "caption", "fltLaionAesthScore", "intHeight", "intWidth",
                                           "hpsv2"]
        assert manifest["filters"]["aes_cutoff"] == (5.0 if name == "laion-aes" else None)
        assert manifest["filters"]["min_size"] == (64 if name == "laion-aes" else None)
        for k in ("rows_read", "rows_kept", "dropped", "shards"):
            assert manifest[k] == r[k], (name, k)
        assert manifest["embed_images"] is False

        index = json.loads((folder / "index.json").read_text())
        assert len(index["shards"]) == r["shards"] >= 1
        assert sorted(f.name for f in folder.iterdir()) == sorted(
            ["index.json", "manifest.json", "rows.npy"] + [s["raw_data"]["basename"] for s in index["shards"]])

        row_map = np.load(folder / "rows.npy", allow_pickle=False)
        assert row_map.dtype == np.int64 and row_map.tolist() == expected_kept.tolist(), name

        got = samples(folder)
        assert [int(s["row_index"]) for s in got] == row_map.tolist()
        for s in got:
            assert "images" not in s  # references only
            row = decode(folder, s)
            assert list(row) == manifest["columns"], name
            source = rows[int(s["row_index"])]
            assert row == {c: source[c] for c in manifest["columns"]}, name

    laion_rows = [decode(out / "laion-aes", s) for s in samples(out / "laion-aes")]
    assert [r["s3_path"] for r in laion_rows][:2] == ["images/03-green-circle.jpg", "images/04-green-square.jpg"]
    assert all(r["fltLaionAesthScore"] > 5.0 and r["intHeight"] >= 64 for r in laion_rows)


def test_workers_2_gives_the_same_files_as_workers_1(demo_cli, tmp_path):
    ex, out, _ = demo_cli
    one = tmp_path / "one"
    results = run_prepare(ex / "mixtures" / "demo.yaml", one, workers=1)
    assert not any(r.up_to_date for r in results.values())
    files_two, files_one = tree(out), tree(one)
    assert list(files_two) == list(files_one)
    assert files_two == files_one


# ------------------------------------------------------------------------------------- 2: idempotence


def test_second_run_does_nothing_and_only_what_changed_is_prepared_again(examples_copy, tmp_path):
    config = examples_copy / "mixtures" / "demo.yaml"
    original = config.read_text()
    out = tmp_path / "prepared"
    first = run_prepare(config, out)
    before = snapshot(out)

    # a second run through the CLI: everything up to date, not one file touched
    again = json.loads(lavida("prepare", config, "--out", out, "--json").stdout)["datasets"]
    assert list(again) == DEMO_NAMES and all(r["up_to_date"] for r in again.values())
    for name, r in again.items():
        assert r == {**first[name].to_json(), "up_to_date": True}
    assert snapshot(out) == before

    def files_of(snap, name):
        return {k: v for k, v in snap.items() if k.startswith(name + os.sep)}

    def only(results, name, snap_before):
        assert [n for n, r in results.items() if not r.up_to_date] == [name]
        after = snapshot(out)
        for other in DEMO_NAMES:
            if other != name:
                assert files_of(after, other) == files_of(snap_before, other), other
        assert files_of(after, name) != files_of(snap_before, name)
        assert all(not k.startswith(".") for k in after)  # no partial or old folder left
        return after

    # load-time settings: weights, sampling strategies, converter options, seed -> nothing to do
    for old, new in [("seed: 2026", "seed: 7"), ("t2i: 300", "t2i: 3"), ('"dup:2"', '"dup:5"'),
                     ('"random:50%"', '"first:3"'), ('"random:50%"', '"random:2"'),
                     ("{name: laion-aes, path", '{name: laion-aes, sampling_strategy: "end:4", path'),
                     ("{reweight: true}", "{reweight: false}")]:
        assert old in original
        config.write_text(original.replace(old, new))
        results = run_prepare(config, out)
        assert all(r.up_to_date for r in results.values()), (old, new)
        assert snapshot(out) == before, (old, new)
    config.write_text(original)

    # a changed table: that dataset alone
    table = examples_copy / "data" / "t2i.parquet"
    t = pq.read_table(table)
    captions = t["caption"].to_pylist()
    captions[4] = "a changed caption"
    pq.write_table(t.set_column(t.schema.get_field_index("caption"), "caption", pa.array(captions)), table)
    results = run_prepare(config, out)
    before_table = before
    before = only(results, "laion-aes", before)
    assert results["laion-aes"].fingerprint != first["laion-aes"].fingerprint
    assert (results["laion-aes"].rows_read, results["laion-aes"].rows_kept) == (16, 10)
    by_row = {int(s["row_index"]): decode(out / "laion-aes", s) for s in samples(out / "laion-aes")}
    assert by_row[4]["caption"] == "a changed caption" and by_row[3]["caption"] == captions[3]
    assert before["laion-aes/manifest.json"] != before_table["laion-aes/manifest.json"]

    # a changed filter: that dataset alone, with the counts the new cutoff implies
    config.write_text(original.replace("aes_cutoff: 5.0", "aes_cutoff: 6.0"))
    results = run_prepare(config, out)
    before = only(results, "laion-aes", before)
    kept, n, dropped = laion_expectation(table, cutoff=6.0)
    r = results["laion-aes"]
    assert (r.rows_read, r.rows_kept, r.dropped) == (n, len(kept), dropped) == (16, 7, {"aes_cutoff": 7,
                                                                                         "min_size": 2})
    assert np.load(out / "laion-aes" / "rows.npy").tolist() == kept.tolist()
    assert json.loads((out / "laion-aes" / "manifest.json").read_text())["filters"]["aes_cutoff"] == 6.0

    # converter options that change the columns read do need a new preparation
    config.write_text(original.replace("aes_cutoff: 5.0", "aes_cutoff: 6.0").replace(
        "random_caption_keys: [caption, caption_short]", "random_caption_keys: [caption]"))
    results = run_prepare(config, out)
    only(results, "coyo-recap", before)
    assert json.loads((out / "coyo-recap" / "manifest.json").read_text())["columns"] == ["s3_path", "caption"]


# ---------------------------------------------------------------------------------- 3: killed preparation


def write_big_mixture(folder: Path, rows: int = 60_000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    caption = " in a long caption that makes every row about two hundred bytes of JSON text in the shard"
    t = pa.table({"s3_path": [f"images/{i % 16:02d}.jpg" for i in range(rows)],
                  "caption": [f"row {i}{caption}" for i in range(rows)]})
    pq.write_table(t, folder / "big.parquet", row_group_size=10_000)
    pq.write_table(t.slice(0, 40), folder / "small.parquet")
    config = folder / "mix.yaml"
    config.write_text("datasets:\n"
                      "  - {name: small, path: small.parquet, preprocess_fn: t2i}\n"
                      "  - {name: big, path: big.parquet, preprocess_fn: t2i}\n")
    return config


def test_killed_preparation_ends_with_the_same_files_as_an_uninterrupted_one(tmp_path):
    config = write_big_mixture(tmp_path / "src")
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["prepare", str(config), "--workers", "1", "--shard-size", "128KB", "--json"]

    proc = subprocess.Popen([str(BIN / "lavida-data"), *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_shard = killed / ".big.partial" / "shard.00000.mds"
    deadline = time.monotonic() + 90
    while not first_shard.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # no-op if it already ended: the assertion below says so
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()  # killed, not finished
    proc.stderr.close()
    # small was done, big half-written in its private folder
    assert (killed / "small" / "manifest.json").exists()
    assert not (killed / "big").exists() and first_shard.exists()
    assert not (killed / ".big.partial" / "manifest.json").exists()

    # started again (what the command runs, in this process: a second `lavida-data` would spend
    # seconds importing streaming), and an uninterrupted preparation for reference
    again = run_prepare(config, killed, workers=1, shard_size=128 << 10)
    assert again["small"].up_to_date is True and again["big"].up_to_date is False
    reference = run_prepare(config, clean, workers=1, shard_size=128 << 10)
    assert again["big"].rows_kept == reference["big"].rows_kept == 60_000
    assert again["big"].shards == reference["big"].shards > 20

    files_killed, files_clean = tree(killed), tree(clean)
    assert list(files_killed) == list(files_clean)  # same names: nothing partial left over
    assert files_killed == files_clean
    assert np.load(killed / "big" / "rows.npy").tolist() == list(range(60_000))


def test_crash_during_commit_or_with_a_stale_partial_folder_is_repaired(examples_copy, tmp_path):
    """The states a kill can leave around the final rename: a stale ``.NAME.partial``, the old folder
    moved aside (before or after the new one is in place) or half deleted."""
    config = examples_copy / "mixtures" / "demo.yaml"
    clean, out = tmp_path / "clean", tmp_path / "out"
    run_prepare(config, clean)
    run_prepare(config, out)
    # killed while writing a dataset's first preparation: a partial folder with junk, no final folder
    (out / ".grandf.partial").mkdir()
    (out / ".grandf.partial" / "shard.00007.mds").write_bytes(b"junk")
    shutil.rmtree(out / "grandf")
    # killed inside the commit: the old folder renamed aside, the new one not yet in place
    (out / "refcoco").rename(out / ".refcoco.old")
    (out / ".refcoco.partial").mkdir()
    # killed while an older run deleted its old folder, and that dataset is out of date again
    manifest = out / "coyo-recap" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"fingerprint": "', '"fingerprint": "0'))
    shutil.copytree(out / "coyo-recap", out / ".coyo-recap.old")
    (out / ".coyo-recap.old" / "rows.npy").unlink()
    # killed after the final rename, while the old folder was being deleted: up to date, leftover removed
    shutil.copytree(out / "gpt-edit", out / ".gpt-edit.old")
    (out / ".gpt-edit.old" / "index.json").unlink()
    results = run_prepare(config, out)
    assert sorted(n for n, r in results.items() if not r.up_to_date) == ["coyo-recap", "grandf", "refcoco"]
    assert tree(out) == tree(clean)


# ------------------------------------------------------------------------------------- 4: embedded images


EMBED_MIX = """seed: 1
datasets:
  - {name: laion-aes, path: ../data/t2i.parquet, preprocess_fn: t2i, aes_cutoff: 5.0, min_size: 64,
     image_root: ../data}
  - {name: gpt-edit, path: ../data/edit_gpt.parquet, preprocess_fn: edit, image_root: ../data}
"""


def test_embed_images_stores_the_referenced_files_and_counts_missing_ones(examples_copy, tmp_path):
    data = examples_copy / "data"
    config = examples_copy / "mixtures" / "embed.yaml"
    config.write_text(EMBED_MIX)
    missing = data / "images" / "13-purple-square.jpg"  # row 13 of t2i.parquet is kept; gpt-edit does not use it
    missing.unlink()
    out = tmp_path / "prepared"
    results = run_prepare(config, out, embed=True)

    laion = results["laion-aes"]
    assert (laion.rows_kept, laion.images_embedded, laion.images_missing) == (10, 9, {"FileNotFoundError": 1})
    manifest = read_manifest(str(out / "laion-aes"))
    assert manifest["embed_images"] is True
    assert (manifest["images_embedded"], manifest["images_missing"]) == (9, {"FileNotFoundError": 1})
    table = pq.read_table(data / "t2i.parquet").to_pylist()
    got = samples(out / "laion-aes")
    assert len(got) == 10
    for s in got:
        images = unpack_images(s["images"])
        path = os.path.join(str(data), table[int(s["row_index"])]["s3_path"])
        if path == str(missing):
            assert images == {}  # the loader fetches (and counts) it again
        else:
            assert images == {path: Path(path).read_bytes()}

    edit = results["gpt-edit"]
    edit_rows = pq.read_table(data / "edit_gpt.parquet").to_pylist()
    total = 0
    for s in samples(out / "gpt-edit"):
        images = unpack_images(s["images"])
        row = edit_rows[int(s["row_index"])]
        want = {os.path.join(str(data), row["input_paths"]), os.path.join(str(data), row["output_paths"])}
        assert set(images) == want
        assert all(images[p] == Path(p).read_bytes() and images[p][:2] == b"\xff\xd8" for p in images)
        total += len(images)
    assert edit.images_embedded == total == 2 * len(edit_rows) and edit.images_missing == {}

    # embedding is part of the fingerprint; preparing by reference again drops the column
    plain = run_prepare(config, out)
    assert not any(r.up_to_date for r in plain.values())
    assert all("images" not in s for s in samples(out / "laion-aes"))
    assert run_prepare(config, out)["laion-aes"].up_to_date


def test_image_fetches_are_concurrent(examples_copy, tmp_path, monkeypatch):
    import lavida_data.prepare.images as prep

    config = examples_copy / "mixtures" / "embed.yaml"
    config.write_text(EMBED_MIX.split("  - {name: gpt-edit")[0])  # laion-aes alone: each image fetched once
    real = prep.read_image_bytes
    calls: dict[str, int] = {}
    lock = threading.Lock()
    two_at_once = threading.Barrier(2, timeout=10)

    def watched(path):
        with lock:
            calls[path] = calls.get(path, 0) + 1
            first_two = sum(calls.values()) <= 2
        if first_two:
            two_at_once.wait()  # breaks (and the preparation fails) unless two fetches run together
        return real(path)

    monkeypatch.setattr(prep, "read_image_bytes", watched)
    results = run_prepare(config, tmp_path / "out", embed=True)
    assert list(results) == ["laion-aes"]
    assert results["laion-aes"].images_missing == {} and results["laion-aes"].images_embedded == 10
    assert len(calls) == 10 and all(n == 1 for n in calls.values())
    for s in samples(tmp_path / "out" / "laion-aes"):
        (data,) = unpack_images(s["images"]).values()
        assert data[:2] == b"\xff\xd8"


def test_a_lasting_transient_fault_stops_the_preparation_and_is_never_counted(examples_copy, tmp_path, monkeypatch):
    """A permanent fault (missing, denied) is counted as a missing image; a transient one that
    outlasts the retry policy stops the run naming the object, and nothing is committed."""
    import lavida_data.prepare.images as prep
    from lavida_data.io import StorageUnavailable

    config = examples_copy / "mixtures" / "embed.yaml"
    config.write_text(EMBED_MIX.split("  - {name: gpt-edit")[0])
    real = prep.read_image_bytes
    lasting = True

    def flaky(path):
        if path.endswith("07-blue-square.jpg") and lasting:
            raise StorageUnavailable(path, "GET", 6, 1.0, ConnectionResetError("reset"))
        if path.endswith("06-blue-circle.jpg"):
            raise PermissionError(f"{path}: access denied (403)")
        return real(path)

    monkeypatch.setattr(prep, "read_image_bytes", flaky)
    out = tmp_path / "out"
    with pytest.raises(StorageUnavailable, match="07-blue-square.jpg: GET still failing"):
        run_prepare(config, out, embed=True)
    assert not (out / "laion-aes").exists()
    lasting = False  # the store is back: the run completes, the denied image counted as missing
    results = run_prepare(config, out, embed=True)
    assert results["laion-aes"].images_missing == {"PermissionError": 1}
    assert results["laion-aes"].images_embedded == 9


# ------------------------------------------------------------------------------------------------ 5: S3


S3_MIX = """datasets:
  - {name: laion-aes, path: DATA/t2i.parquet, preprocess_fn: t2i, aes_cutoff: 5.0, min_size: 64,
     image_root: DATA}
  - {name: gpt-edit, path: DATA/edit_gpt.parquet, preprocess_fn: edit, image_root: DATA}
"""


def objects(client, bucket, prefix) -> dict[str, tuple[str, object]]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["ETag"], o["LastModified"])
    return out


def test_prepare_to_s3(s3_bucket, tmp_path):
    from lavida_data.io import s3

    client, bucket = s3_bucket
    for p in [EXAMPLES / "data" / "t2i.parquet", EXAMPLES / "data" / "edit_gpt.parquet",
              *sorted((EXAMPLES / "data" / "images").iterdir())]:
        client.upload_file(str(p), bucket, "data/" + str(p.relative_to(EXAMPLES / "data")))
    s3_config = tmp_path / "s3.yaml"
    s3_config.write_text(S3_MIX.replace("DATA", f"s3://{bucket}/data"))
    local_config = tmp_path / "local.yaml"
    local_config.write_text(S3_MIX.replace("DATA", str(EXAMPLES / "data")))
    out = f"s3://{bucket}/prepared"

    calls: list[tuple[str, str | None, bool]] = []

    def record(params, model, **_):  # every S3 call lavida_data makes, in order
        manifest_there = None
        if model.name == "PutObject" and params["Key"].endswith(".mds"):
            key = params["Key"].rsplit("/", 1)[0] + "/manifest.json"
            manifest_there = bool(client.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"))
        calls.append((model.name, params.get("Key"), manifest_there))

    s3.client().meta.events.register("before-parameter-build.s3", record)
    try:
        check_prepare_to_s3(client, bucket, tmp_path, s3_config, local_config, out, calls)
    finally:
        s3.client().meta.events.unregister("before-parameter-build.s3", record)


def check_prepare_to_s3(client, bucket, tmp_path, s3_config, local_config, out, calls):
    def writes(prefix):
        return [(op, key, m) for op, key, m in calls if op in ("PutObject", "DeleteObject", "CreateMultipartUpload",
                                                               "CopyObject") and key.startswith(prefix)]

    results = run_prepare(s3_config, out, shard_size=1024)
    local = run_prepare(local_config, tmp_path / "local", shard_size=1024)
    listing = objects(client, bucket, "prepared/")
    for name in ("laion-aes", "gpt-edit"):
        r = results[name]
        assert r.path == f"{out}/{name}" and not r.up_to_date
        index = json.loads(client.get_object(Bucket=bucket, Key=f"prepared/{name}/index.json")["Body"].read())
        shard_keys = [f"prepared/{name}/{s['raw_data']['basename']}" for s in index["shards"]]
        assert sorted(k for k in listing if k.startswith(f"prepared/{name}/")) == sorted(
            [f"prepared/{name}/{f}" for f in ("index.json", "manifest.json", "rows.npy")] + shard_keys)
        # the same shards, index and row map as a local preparation of the same tables
        local_files = tree(tmp_path / "local" / name)
        for f, data in local_files.items():
            if f != "manifest.json":
                assert client.get_object(Bucket=bucket, Key=f"prepared/{name}/{f}")["Body"].read() == data, f
        manifest, local_manifest = read_manifest(r.path), read_manifest(str(tmp_path / "local" / name))
        for k in ("rows_read", "rows_kept", "dropped", "shards", "columns", "filters", "embed_images"):
            assert manifest[k] == local_manifest[k], k
        assert manifest["source"]["path"] == f"s3://{bucket}/data/{Path(local_manifest['source']['path']).name}"
        assert manifest["source"]["version"] == client.head_object(
            Bucket=bucket, Key=manifest["source"]["path"].split("/", 3)[3])["ETag"].strip('"')
        # upload order: the manifest is removed first, shards go up, then the index, the row map, the manifest
        ops = writes(f"prepared/{name}/")
        assert ops[0][:2] == ("DeleteObject", f"prepared/{name}/manifest.json")
        puts = [key.rsplit("/", 1)[1] for op, key, _ in ops if op == "PutObject"]
        assert puts[-3:] == ["index.json", "rows.npy", "manifest.json"]
        assert sorted(puts[:-3]) == sorted(k.rsplit("/", 1)[1] for k in shard_keys)
    assert results["laion-aes"].shards == local["laion-aes"].shards > 1
    assert (results["laion-aes"].rows_kept, results["laion-aes"].dropped) == (10, {"aes_cutoff": 3, "min_size": 3})

    # a second run is up to date: nothing written, every object as it was
    calls.clear()
    again = run_prepare(s3_config, out, shard_size=1024)
    assert all(r.up_to_date for r in again.values())
    assert writes("prepared/") == []
    assert objects(client, bucket, "prepared/") == listing

    # a re-preparation into fewer shards deletes the stale shard objects; while shards go up the
    # old manifest is gone, so the half-updated dataset never counts as prepared
    calls.clear()
    fewer = run_prepare(s3_config, out)  # default 64MB shards
    assert [n for n, r in fewer.items() if r.up_to_date] == []
    assert fewer["laion-aes"].shards == 1
    now = objects(client, bucket, "prepared/laion-aes/")
    assert sorted(now) == [f"prepared/laion-aes/{f}" for f in
                           ("index.json", "manifest.json", "rows.npy", "shard.00000.mds")]
    ops = writes("prepared/laion-aes/")
    assert ops[0][:2] == ("DeleteObject", "prepared/laion-aes/manifest.json")
    assert [m for op, key, m in ops if op == "PutObject" and key.endswith(".mds")] == [False]
    deleted = [key for op, key, _ in ops[1:] if op == "DeleteObject"]
    assert sorted(deleted) == sorted(k for k in listing if k.startswith("prepared/laion-aes/shard.")
                                     and k != "prepared/laion-aes/shard.00000.mds")
    assert read_manifest(f"{out}/laion-aes")["shards"] == 1

    # images on S3 are fetched into the shards (2 fetch threads: each new thread makes its own boto3 client)
    from lavida_data.prepare.local import prepare_dataset

    plan = validate_file(s3_config).plans["laion-aes"]
    embedded = prepare_dataset(plan, str(tmp_path / "embedded"), embed=True, fetch_workers=2)
    assert embedded.images_embedded == 10 and embedded.images_missing == {}
    table = pq.read_table(EXAMPLES / "data" / "t2i.parquet").to_pylist()
    for s in samples(tmp_path / "embedded" / "laion-aes"):
        rel = table[int(s["row_index"])]["s3_path"]
        assert unpack_images(s["images"]) == {f"s3://{bucket}/data/{rel}": (EXAMPLES / "data" / rel).read_bytes()}


def test_only_shards_uploaded_is_not_prepared(s3_bucket, tmp_path):
    """A commit cut short after the shards (no index, no manifest) leaves a dataset that is not prepared."""
    from lavida_data.io import s3
    from lavida_data.prepared.commit import commit_s3

    client, bucket = s3_bucket
    run_prepare(EXAMPLES / "mixtures" / "demo.yaml", tmp_path / "local")
    work = tmp_path / "local" / "grandf"
    dest = f"s3://{bucket}/prepared/grandf"

    class Cut(Exception):
        pass

    def cut_at_index(params, model, **_):
        if model.name == "PutObject" and params["Key"].endswith("/index.json"):
            raise Cut()

    s3.client().meta.events.register("before-parameter-build.s3.PutObject", cut_at_index)
    try:
        with pytest.raises(Cut):
            commit_s3(str(work), dest)
    finally:
        s3.client().meta.events.unregister("before-parameter-build.s3.PutObject", cut_at_index)
    keys = sorted(objects(client, bucket, "prepared/grandf/"))
    assert keys == ["prepared/grandf/shard.00000.mds"]
    assert read_manifest(dest) is None
    commit_s3(str(work), dest)
    assert read_manifest(dest) == read_manifest(str(work))


def test_a_prepare_to_s3_killed_after_its_manifest_leaves_nothing_behind_after_the_next_run(s3_bucket, tmp_path):
    """Killed between the manifest and the removal of the earlier preparation's shards: the next run
    finds the dataset up to date and removes them; the objects are those of an uninterrupted run."""
    from lavida_data.prepared.commit import KILL_AFTER

    client, bucket = s3_bucket
    for p in [EXAMPLES / "data" / "t2i.parquet", EXAMPLES / "data" / "edit_gpt.parquet"]:
        client.upload_file(str(p), bucket, "data/" + p.name)
    config = tmp_path / "s3.yaml"
    config.write_text(S3_MIX.replace("DATA", f"s3://{bucket}/data"))
    out = f"s3://{bucket}/prepared"
    run_prepare(config, out, shard_size=1024)  # many shards
    before = objects(client, bucket, "prepared/laion-aes/")
    assert len([k for k in before if k.endswith(".mds")]) > 2

    env = {**os.environ, KILL_AFTER: "commit:manifest"}
    killed = run_cli("prepare", config, "--out", out, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = objects(client, bucket, "prepared/laion-aes/")
    assert read_manifest(f"{out}/laion-aes")["shards"] == 1  # committed (64MB shards: one) ...
    assert len([k for k in left if k.endswith(".mds")]) == len([k for k in before if k.endswith(".mds")])  # ... stale

    again = run_prepare(config, out)
    assert again["laion-aes"].up_to_date and not again["gpt-edit"].up_to_date
    fresh = run_prepare(config, f"s3://{bucket}/fresh")
    assert {n: r.shards for n, r in again.items()} == {n: r.shards for n, r in fresh.items()}
    def contents(prefix: str) -> dict[str, bytes]:
        return {k[len(prefix):]: client.get_object(Bucket=bucket, Key=k)["Body"].read()
                for k in objects(client, bucket, prefix)}

    assert contents("prepared/") == contents("fresh/")
