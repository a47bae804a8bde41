"""The vectorised Arrow-to-MDS writer writes what streaming's MDSWriter writes, and streaming
0.13 reads it back sample for sample."""

from __future__ import annotations

import filecmp
import os

import numpy as np
import pyarrow as pa
import pytest

from lavida_data.prepared.mds import ArrowMDSWriter

COLUMNS = {
    "s3_path": "str", "caption": "str", "blob": "bytes",
    "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
    "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
    "f16": "float16", "f32": "float32", "f64": "float64",
}


def table(n: int, seed: int = 0, big_first: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    captions = ["é" * int(k) + f" caption {i}" for i, k in enumerate(rng.integers(0, 200, n))]
    if big_first:
        captions[0] = "x" * 5000  # alone over the size limit
    return pa.table({
        "s3_path": [f"s3://bucket/images/{i:07d}.jpg" for i in range(n)],
        "caption": captions,
        "blob": [rng.integers(0, 256, int(k), dtype=np.uint8).tobytes() for k in rng.integers(0, 40, n)],
        "i8": rng.integers(-128, 127, n).astype(np.int8), "i16": rng.integers(-3000, 3000, n).astype(np.int16),
        "i32": rng.integers(-2**31, 2**31 - 1, n).astype(np.int32), "i64": rng.integers(-2**62, 2**62, n),
        "u8": rng.integers(0, 255, n).astype(np.uint8), "u16": rng.integers(0, 65535, n).astype(np.uint16),
        "u32": rng.integers(0, 2**32 - 1, n).astype(np.uint32), "u64": rng.integers(0, 2**63, n).astype(np.uint64),
        "f16": rng.random(n).astype(np.float16), "f32": rng.random(n).astype(np.float32), "f64": rng.random(n),
    })


def write_reference(rows: pa.Table, out, columns, size_limit):
    from streaming import MDSWriter

    with MDSWriter(out=str(out), columns=columns, size_limit=size_limit) as w:
        for r in rows.to_pylist():
            w.write(r)


def write_ours(rows: pa.Table, out, columns, size_limit, chunk=777):
    with ArrowMDSWriter(str(out), columns, size_limit=size_limit) as w:
        for b in rows.to_batches(max_chunksize=chunk):
            w.write_batch(b)
    return w.shards


@pytest.mark.parametrize("size_limit", [4096, 1 << 16, 1 << 26, None])
def test_same_files_as_mdswriter(tmp_path, size_limit):
    rows = table(3000, big_first=size_limit == 4096)
    write_reference(rows, tmp_path / "ref", COLUMNS, size_limit)
    shards = write_ours(rows, tmp_path / "ours", COLUMNS, size_limit)
    names = sorted(os.listdir(tmp_path / "ref"))
    assert names == sorted(os.listdir(tmp_path / "ours"))
    for name in names:
        assert filecmp.cmp(tmp_path / "ref" / name, tmp_path / "ours" / name, shallow=False), name
    if size_limit == 4096:
        assert shards[0]["samples"] == 0  # MDSWriter leaves an empty shard when the first sample is too big
    assert sum(s["samples"] for s in shards) == 3000


def test_streaming_reads_back_every_sample_and_type(tmp_path):
    from streaming import LocalDataset

    rows = table(1200, seed=3)
    write_ours(rows, tmp_path / "ours", COLUMNS, 1 << 15, chunk=500)
    ds = LocalDataset(local=str(tmp_path / "ours"))
    expected = rows.to_pylist()
    assert len(ds) == len(expected)
    for i in (0, 1, 499, 500, 777, 1199):
        got = ds[i]
        for name, enc in COLUMNS.items():
            want = expected[i][name]
            if enc.startswith("float"):
                assert float(got[name]) == pytest.approx(float(np.dtype(enc).type(want)))
            else:
                assert got[name] == want, (i, name)


def test_large_string_input_and_single_column(tmp_path):
    rows = pa.table({"t": pa.array(["a", "bb", ""], pa.large_string())})
    write_reference(pa.table({"t": ["a", "bb", ""]}), tmp_path / "ref", {"t": "str"}, None)
    write_ours(rows, tmp_path / "ours", {"t": "str"}, None)
    assert filecmp.cmp(tmp_path / "ref" / "shard.00000.mds", tmp_path / "ours" / "shard.00000.mds", shallow=False)


def test_nulls_and_unknown_encodings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="null"):
        with ArrowMDSWriter(str(tmp_path / "a"), {"t": "str"}) as w:
            w.write_batch(pa.table({"t": ["a", None]}))
    with pytest.raises(ValueError, match="not supported"):
        ArrowMDSWriter(str(tmp_path / "b"), {"t": "json"})
