"""The storage layer against the loopback S3 server behind the fault-injecting proxy: every
operation gives the right answer with faults on every kind of request; a truncated body is never
read as a short object; permanent faults fail at once naming the object; a store that stays
unavailable fails, bounded; and no module but the storage layer imports boto3."""

from __future__ import annotations

import ast
import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavida_data import io as storage
from lavida_data.io import ObjectChanged, StorageError, StorageUnavailable, policy
from lavida_data.io.tables import count_rows, iter_batches, read_schema

from tests.support import ROOT

DATA = os.urandom(700_000)


def _faults_everywhere(proxy, rate: float = 0.6, seed: int = 3) -> None:
    proxy.plan.rate, proxy.plan.seed, proxy.plan.enabled = rate, seed, True


def test_every_operation_is_right_with_faults_on_every_kind_of_request(proxy, s3_bucket, tmp_path):
    client, bucket = s3_bucket
    base = f"s3://{bucket}/x"
    client.put_object(Bucket=bucket, Key="x/big.bin", Body=DATA)
    before = sum(policy.retries.values())
    _faults_everywhere(proxy)

    assert storage.read_bytes(f"{base}/big.bin") == DATA
    assert storage.read_range(f"{base}/big.bin", 1000, 250_000) == DATA[1000:250_000]
    with storage.open_read(f"{base}/big.bin") as f:  # a stream that resumes where a fault cut it
        assert b"".join(iter(lambda: f.read(65536), b"")) == DATA
    with storage.open_read(f"{base}/big.bin", seekable=True) as f:
        f.seek(-5000, io.SEEK_END)
        assert f.read() == DATA[-5000:]
    assert storage.stat(f"{base}/big.bin").size == len(DATA)
    for i in range(12):
        storage.write_bytes(f"{base}/d/{i:02d}.bin", bytes([i]) * i)
    assert [storage.read_bytes(f"{base}/d/{i:02d}.bin") for i in range(12)] == [bytes([i]) * i for i in range(12)]
    local = tmp_path / "up.bin"
    local.write_bytes(DATA[:300_000])
    storage.upload(str(local), f"{base}/d/up.bin")
    storage.copy(f"{base}/d/05.bin", f"{base}/e/05.bin")
    storage.download(f"{base}/big.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == DATA
    listed = storage.listdir(f"{base}/d")
    assert listed == {**{f"{i:02d}.bin": i for i in range(12)}, "up.bin": 300_000}
    assert [u for u, _ in storage.walk(f"{base}/e")] == [f"{base}/e/05.bin"]
    assert storage.exists(f"{base}/e/05.bin") and not storage.exists(f"{base}/e/06.bin")
    assert storage.is_dir(f"{base}/d") and not storage.is_dir(f"{base}/nothing")
    storage.delete(f"{base}/d/00.bin")
    storage.delete_many([f"{base}/d/01.bin", f"{base}/d/02.bin"])
    assert sorted(storage.listdir(f"{base}/d")) == [f"{i:02d}.bin" for i in range(3, 12)] + ["up.bin"]
    storage.remove_tree(f"{base}/d")
    assert storage.listdir(f"{base}/d") == {}

    proxy.plan.enabled = False
    got = {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in ("x/e/05.bin",)}
    assert got == {"x/e/05.bin": b"\x05" * 5}
    faults = proxy.plan.summary()
    assert set(faults) == {"GET", "HEAD", "LIST", "PUT", "COPY", "POST", "DELETE"}, faults
    assert {f for kinds in faults.values() for f in kinds} == {
        "slowdown", "reset", "truncate", "stall", "stall_body", "incomplete"}, faults
    assert sum(policy.retries.values()) > before


def test_a_truncated_body_is_retried_never_read_short(proxy, s3_bucket, monkeypatch):
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="t.bin", Body=DATA)
    uri = f"s3://{bucket}/t.bin"
    proxy.plan.kinds, proxy.plan.rate, proxy.plan.enabled = ("truncate",), 1.0, True
    assert storage.read_bytes(uri) == DATA
    assert storage.read_range(uri, 10, 400_000) == DATA[10:400_000]
    with storage.open_read(uri) as f:
        assert f.read() == DATA
    assert proxy.plan.injected[("GET", "truncate")] >= 3

    # with no retry left, a truncated answer is an error: never a short object
    monkeypatch.setenv("LAVIDA_S3_ATTEMPTS", "1")
    monkeypatch.setenv("LAVIDA_S3_REQUEST_ATTEMPTS", "1")
    proxy.plan.decay, proxy.plan.max_faults = False, 100
    with pytest.raises(StorageUnavailable, match=f"{uri}: GET still failing"):
        storage.read_bytes(uri)
    with pytest.raises(StorageUnavailable):
        storage.read_range(uri, 0, 100_000)


def test_a_large_upload_in_parts_survives_faults_and_lost_answers(proxy, s3_bucket, tmp_path, monkeypatch):
    """A multipart upload whose parts and completion are faulted, or whose completion answer is lost
    after it took effect (a retried completion then finds no upload): the object is there, whole."""
    from lavida_data.io import s3

    client, bucket = s3_bucket
    monkeypatch.setattr(s3, "SINGLE_PUT_MAX", 1 << 20)  # parts from 1 MiB (8 MiB each)
    big = tmp_path / "big.bin"
    big.write_bytes(DATA * 18)  # 12.6 MB: two parts
    for kinds in (None, ("lost",)):
        proxy.plan.kinds, proxy.plan.rate, proxy.plan.enabled = kinds, 1.0, True
        storage.upload(str(big), f"s3://{bucket}/big-{bool(kinds)}.bin")
        proxy.plan.enabled = False
        assert client.get_object(Bucket=bucket, Key=f"big-{bool(kinds)}.bin")["Body"].read() == big.read_bytes()
    assert proxy.plan.injected[("POST", "lost")] >= 2 and proxy.plan.injected[("PUT", "lost")] >= 2
    assert any("uploadId" in k and k.startswith("POST|") for k in proxy.plan.faulted)


def test_an_upload_in_parts_whose_completion_answer_was_lost_is_recognised(s3_bucket, tmp_path, monkeypatch):
    """S3 may answer a retried completion with NoSuchUpload: the upload's token on the object says
    it is done (no second upload); an object of another upload is not taken for it."""
    from botocore.exceptions import ClientError

    from lavida_data.io import s3

    client, bucket = s3_bucket
    monkeypatch.setattr(s3, "SINGLE_PUT_MAX", 1 << 20)
    big = tmp_path / "big.bin"
    big.write_bytes(DATA * 3)
    real = s3.client()
    uploads = []

    class Client:  # the real client, but its upload_file's answer is lost after it took effect
        def __getattr__(self, name):
            return getattr(real, name)

        def upload_file(self, *args, **kwargs):
            uploads.append(kwargs["ExtraArgs"]["Metadata"])
            real.upload_file(*args, **kwargs)
            raise ClientError({"Error": {"Code": "NoSuchUpload"}, "ResponseMetadata": {"HTTPStatusCode": 404}},
                              "CompleteMultipartUpload")

    monkeypatch.setattr(s3, "client", Client)
    storage.upload(str(big), f"s3://{bucket}/big.bin")
    assert len(uploads) == 1
    assert client.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == big.read_bytes()
    client.put_object(Bucket=bucket, Key="other.bin", Body=b"x")  # no token: the failure is real

    def fails(*args, **kwargs):
        uploads.append(1)
        raise ClientError({"Error": {"Code": "NoSuchUpload"}, "ResponseMetadata": {"HTTPStatusCode": 404}},
                          "CompleteMultipartUpload")

    Client.upload_file = fails
    with pytest.raises(StorageError, match="other.bin: the multipart upload is gone"):
        storage.upload(str(big), f"s3://{bucket}/other.bin")


def test_a_parquet_table_read_while_throttled_is_the_whole_table(proxy, s3_bucket, tmp_path):
    """The issue's failure: a throttled request read as an empty table ("Parquet file size is 0 bytes")."""
    client, bucket = s3_bucket
    t = pa.table({"s3_path": [f"img/{i}.jpg" for i in range(5000)], "caption": [f"c {i}" for i in range(5000)]})
    pq.write_table(t, tmp_path / "t.parquet", row_group_size=700)
    client.upload_file(str(tmp_path / "t.parquet"), bucket, "t.parquet")
    uri = f"s3://{bucket}/t.parquet"
    proxy.plan.kinds, proxy.plan.rate, proxy.plan.enabled = ("slowdown", "reset", "truncate"), 0.7, True
    assert read_schema(uri) == ["s3_path", "caption"] and count_rows(uri) == 5000
    rows = [r for b in iter_batches(uri, ["caption"], batch_size=999) for r in b.column("caption").to_pylist()]
    assert rows == t.column("caption").to_pylist()
    assert proxy.plan.injected[("HEAD", "slowdown")] and proxy.plan.injected[("GET", "slowdown")]


def test_permanent_faults_fail_at_once_naming_the_object(proxy, s3_bucket):
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="secret/k.bin", Body=b"x")
    proxy.plan.enabled = True
    proxy.plan.rate = 0.0  # (the first request of each kind still faults: warm them up)
    storage.read_bytes(f"s3://{bucket}/secret/k.bin")
    storage.stat(f"s3://{bucket}/secret/k.bin")
    gets = proxy.plan.requests["GET"]
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/nope.bin: no such object"):
        storage.read_bytes(f"s3://{bucket}/nope.bin")
    assert proxy.plan.requests["GET"] == gets + 1  # not retried
    proxy.plan.denied = ("/secret/",)
    with pytest.raises(PermissionError, match=rf"s3://{bucket}/secret/k.bin: access denied \(AccessDenied\)"):
        storage.read_bytes(f"s3://{bucket}/secret/k.bin")
    assert proxy.plan.injected[("GET", "denied")] == 1
    with pytest.raises(PermissionError, match=f"s3://{bucket}/secret/k.bin: access denied"):
        storage.stat(f"s3://{bucket}/secret/k.bin")
    assert proxy.plan.injected[("HEAD", "denied")] == 1


def test_a_store_that_stays_unavailable_fails_bounded(proxy, s3_bucket, monkeypatch):
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="k.bin", Body=b"x")
    monkeypatch.setenv("LAVIDA_S3_ATTEMPTS", "3")
    monkeypatch.setenv("LAVIDA_S3_REQUEST_ATTEMPTS", "2")
    proxy.plan.kinds, proxy.plan.rate, proxy.plan.decay, proxy.plan.max_faults = ("slowdown",), 1.0, False, 100
    proxy.plan.enabled = True
    with pytest.raises(StorageUnavailable, match=rf"k.bin: PUT still failing after 3 attempt\(s\).*SlowDown"):
        storage.write_bytes(f"s3://{bucket}/k.bin", b"new")
    assert proxy.plan.requests["PUT"] == 3 * 2  # the layer's tries x botocore's attempts of each
    proxy.plan.enabled = False
    assert client.get_object(Bucket=bucket, Key="k.bin")["Body"].read() == b"x"


def test_an_object_replaced_while_it_is_read_is_an_error(proxy, s3_bucket):
    client, bucket = s3_bucket
    big = DATA * 8  # more than the reader's buffer
    client.put_object(Bucket=bucket, Key="k.bin", Body=big)
    with storage.open_read(f"s3://{bucket}/k.bin", seekable=True) as f:
        assert f.read(10) == big[:10]
        client.put_object(Bucket=bucket, Key="k.bin", Body=big[::-1])
        f.seek(5_000_000)
        with pytest.raises(ObjectChanged, match="k.bin: the object changed"):
            f.read(10)


def test_no_module_but_the_storage_layer_imports_boto3():
    offenders = []
    for package in ("lavida_data", "lavida_train"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("lavida_data/io/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] in ("boto3", "botocore", "s3transfer") for n in names):
                    offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
    assert [p.name for p in Path(ROOT / "lavida_data").glob("s3.py")] == []  # the old second entry point is gone
