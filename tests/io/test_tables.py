import csv
import io
import json
from collections import Counter

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from lavida_data.spec.filters import Filters
from lavida_data.io.tables import (
    ROW,
    batch_records,
    column_values,
    iter_batches,
    iter_json_array,
    read_schema,
    table_format,
)

ROWS = [
    {"s3_path": f"img/{i}.jpg", "caption": "1984" if i == 2 else f"cap {i}", "fltLaionAesthScore": 4.0 + i,
     "intHeight": 100 * i, "intWidth": 600}
    for i in range(7)
]


def write(path, rows, fmt):
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)
    elif fmt == "csv":
        pacsv.write_csv(pa.Table.from_pylist(rows), path)
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=2))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json", "jsonl"])
def test_every_format_reads_the_same_rows(tmp_path, fmt):
    path = write(tmp_path / f"t.{fmt}", ROWS, fmt)
    assert read_schema(path) == list(ROWS[0])
    batches = list(iter_batches(path, ["caption", "intHeight"], batch_size=2, numeric=["intHeight"]))
    got = [r for b in batches for r in b.to_pylist()]
    assert [r[ROW] for r in got] == list(range(7))
    assert [r["caption"] for r in got] == [r["caption"] for r in ROWS]  # "1984" stays text
    assert [int(r["intHeight"]) for r in got] == [r["intHeight"] for r in ROWS]
    assert all(set(b.schema.names) == {"caption", "intHeight", ROW} for b in batches)


def test_unknown_suffix_suggests():
    with pytest.raises(ValueError, match=r"unknown table format '.parqet'.*did you mean '.parquet'"):
        table_format("x/data.parqet")


def test_json_array_is_parsed_incrementally():
    records = [{"i": i, "text": "x" * 100} for i in range(2000)]
    data = json.dumps(records)

    class Counting(io.StringIO):
        read_chars = 0

        def read(self, n=-1):
            out = super().read(n)
            Counting.read_chars += len(out)
            return out

    src = Counting(data)
    it = iter_json_array(src, chunk=4096)
    first = next(it)
    assert first == records[0]
    assert Counting.read_chars <= 8192 < len(data)  # the first record came before the whole file
    assert list(it) == records[1:]


@pytest.mark.parametrize("bad, msg", [("{}", "must be a JSON array"), ("[{\"a\": 1}, 3]", "record 1 is a int"),
                                      ("[{\"a\": 1} {", "expected ','"), ("[{\"a\": 1},", "invalid JSON in record 1"),
                                      ("[{\"a\": 1}", "not closed")])
def test_json_array_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        list(iter_json_array(io.StringIO(bad), chunk=3))


def test_jsonl_error_names_line(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: invalid JSON"):
        list(iter_batches(str(p)))


# a column mixing JSON types, as GPT-Image-Edit's input_paths (a string in some rows, a list in others)
MIXED = ["s3://b/k.jpg", ["s3://b/a.jpg", "s3://b/b.jpg"], None, "1984", 3, 2.5, True, {"x": [1, {"y": None}]},
         [], "", 2**70, '["not", "a", "list"]', "images/0.jpg", "images/1.jpg", 7, 8]


def _strict(values):  # equality that tells 1 from 1.0 and True from 1
    return [json.dumps(v, sort_keys=True) + type(v).__name__ for v in values]


def _roundtrip_shards(path, cols, numeric=()):
    """The values a prepared shard gives back: encoded as prepare does, decoded as the loader does."""
    from lavida_data.prepared.layout import RowCodec, column_kinds

    fmt = table_format(path)
    schema = pq.ParquetFile(path).schema_arrow if fmt == "parquet" else None
    codec = RowCodec(column_kinds(schema, cols, fmt, list(numeric)))
    out = []
    for batch in iter_batches(path, cols, batch_size=3, numeric=list(numeric)):
        for sample in codec.encode(batch, batch.column(ROW)).to_pylist():
            out.append(codec.decode(sample))
    return out


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_json_column_mixing_types_reads_back_each_value_as_it_was(tmp_path, fmt):
    rows = [{"input_paths": v, "n": i} for i, v in enumerate(MIXED)]
    path = write(tmp_path / f"t.{fmt}", rows, fmt)
    for size in (1, 3, 100):  # homogeneous batches, mixed ones, all in one
        batches = list(iter_batches(path, ["input_paths"], batch_size=size))
        got = [v for b in batches for v in column_values(b, "input_paths")]
        assert _strict(got) == _strict(MIXED), size
        records = [r for b in batches for r in batch_records(b)]
        assert _strict([r["input_paths"] for r in records]) == _strict(MIXED)
        assert [r[ROW] for r in records] == list(range(len(MIXED)))
    decoded = _roundtrip_shards(path, ["input_paths", "n"])
    assert _strict([r["input_paths"] for r in decoded]) == _strict(MIXED)  # nothing quoted twice
    assert [r["n"] for r in decoded] == list(range(len(MIXED)))


def test_a_json_numeric_filter_column_mixing_ints_and_floats_is_numeric(tmp_path):
    rows = [{"fltLaionAesthScore": v} for v in (5, 5.5, None, 7)]
    path = write(tmp_path / "t.jsonl", rows, "jsonl")
    (batch,) = iter_batches(path, ["fltLaionAesthScore"], numeric=["fltLaionAesthScore"])
    assert batch.schema.field("fltLaionAesthScore").type == pa.float64()
    kept = Filters(aes_cutoff=5.2).apply(batch, Counter())
    assert kept.column("fltLaionAesthScore").to_pylist() == [5.5, 7.0]
    (batch,) = iter_batches(path, ["fltLaionAesthScore"])  # not a filter column: ints stay ints
    assert _strict(column_values(batch, "fltLaionAesthScore")) == _strict([5, 5.5, None, 7])


def test_filters_read_mixed_json_columns_as_their_values(tmp_path):
    rows = [{"image": "a.jpg", "fltLaionAesthScore": "6.5"}, {"image": ["a", "b", "c"], "fltLaionAesthScore": 7},
            {"image": "[x].jpg", "fltLaionAesthScore": 6}, {"image": ["a"], "fltLaionAesthScore": "high"}]
    path = write(tmp_path / "t.jsonl", rows, "jsonl")
    (batch,) = iter_batches(path, ["image", "fltLaionAesthScore"])
    dropped = Counter()
    kept = Filters(aes_cutoff=5.9, max_enc_column="image", max_enc_value=2).apply(batch, dropped)
    assert batch_records(kept) == [{"image": "a.jpg", "fltLaionAesthScore": "6.5", ROW: 0},
                                   {"image": "[x].jpg", "fltLaionAesthScore": 6, ROW: 2}]
    assert dict(+dropped) == {"aes_cutoff:null": 1, "max_enc_images": 1}


def test_a_csv_column_of_paths_and_json_text_reads_back_as_written(tmp_path):
    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input_paths", "n"])
        for i, v in enumerate(["s3://b/k.jpg", '["s3://b/a.jpg", "s3://b/b.jpg"]', '"quoted"', "1984"]):
            w.writerow([v, i])
    want = ["s3://b/k.jpg", '["s3://b/a.jpg", "s3://b/b.jpg"]', '"quoted"', "1984"]
    (batch,) = iter_batches(str(path), ["input_paths"])
    assert column_values(batch, "input_paths") == want
    assert [r["input_paths"] for r in _roundtrip_shards(str(path), ["input_paths", "n"])] == want


def test_a_parquet_table_reads_back_each_value_as_it_was(tmp_path):
    t = pa.table({"text": ["s3://b/k.jpg", '["a.jpg"]', None, '"q"'],
                  "paths": [["a.jpg", "b.jpg"], [], None, ["c.jpg"]],
                  "meta": [{"x": 1, "y": None}, {"x": None, "y": "s"}, None, {"x": 2, "y": "t"}]})
    path = str(tmp_path / "t.parquet")
    pq.write_table(t, path)
    want = t.to_pylist()
    (batch,) = iter_batches(path, ["text", "paths", "meta"])
    assert [{k: r[k] for k in want[0]} for r in batch_records(batch)] == want
    assert [{k: r[k] for k in want[0]} for r in _roundtrip_shards(path, ["text", "paths", "meta"])] == want


def test_filters_count_every_drop_by_reason():
    batch = pa.RecordBatch.from_pylist([
        {"fltLaionAesthScore": 6.0, "intHeight": 600, "intWidth": 600, "image": ["a"]},
        {"fltLaionAesthScore": 5.0, "intHeight": 600, "intWidth": 600, "image": ["a"]},  # not > 5
        {"fltLaionAesthScore": None, "intHeight": 600, "intWidth": 600, "image": ["a"]},
        {"fltLaionAesthScore": 7.0, "intHeight": 511, "intWidth": 600, "image": ["a"]},
        {"fltLaionAesthScore": 7.0, "intHeight": 512, "intWidth": 512, "image": ["a", "b", "c"]},
        {"fltLaionAesthScore": 7.0, "intHeight": 512, "intWidth": 512, "image": ["a", "b"]},
    ])
    dropped = Counter()
    kept = Filters(aes_cutoff=5.0, min_size=512, max_enc_column="image", max_enc_value=2).apply(batch, dropped)
    assert kept.column("fltLaionAesthScore").to_pylist() == [6.0, 7.0]
    assert dict(+dropped) == {"aes_cutoff": 1, "aes_cutoff:null": 1, "min_size": 1, "max_enc_images": 1}


def test_filters_on_text_columns():
    batch = pa.RecordBatch.from_pylist([{"fltLaionAesthScore": "6.5", "image": '["a", "b"]'},
                                        {"fltLaionAesthScore": "", "image": "a.jpg"}])
    dropped = Counter()
    kept = Filters(aes_cutoff=6.0, max_enc_column="image", max_enc_value=1).apply(batch, dropped)
    assert kept.num_rows == 0
    assert dict(+dropped) == {"aes_cutoff:null": 1, "max_enc_images": 1}


def test_a_csv_left_half_read_does_not_hang_or_abort_the_interpreter_at_exit(tmp_path):
    """Arrow's streaming csv reader runs a read-ahead thread on the open file: a reader left to
    the interpreter's shutdown aborted ("terminate called without an active exception") or hung
    `lavida-data validate` and `preview`. Headers are now parsed in memory and readers closed."""
    import subprocess
    import sys

    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write("s3_path,caption\n")
        f.writelines(f"/x/{i}.jpg,a caption with a few words in it\n" for i in range(200_000))
    code = ("import sys\nfrom lavida_data.io.tables import iter_batches, read_schema\n"
            "assert read_schema(sys.argv[1]) == ['s3_path', 'caption']\n"
            "it = iter_batches(sys.argv[1], batch_size=1000)\nnext(it)\n")
    for _ in range(5):
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_an_edit_table_mixing_one_and_several_sources_previews_and_streams_every_row(tmp_path):
    """GPT-Image-Edit's ``input_paths``: a string in some rows, a list in others. Each row's paths
    are the table's (never JSON-quoted), none is skipped as ``image_unsupported``, in preview and
    through preparation and the loader."""
    import shutil

    from lavida_data import validate_file
    from lavida_data.prepare.local import prepare
    from lavida_data.cli.preview import preview
    from lavida_data.stream.loader import build_dataloader, build_dataset

    from tests.support import EXAMPLES

    shutil.copytree(EXAMPLES / "data" / "images", tmp_path / "images")
    imgs = sorted(p.name for p in (tmp_path / "images").glob("*.jpg"))
    rows = [{"input_paths": f"images/{imgs[i]}" if i % 2 else [f"images/{imgs[i]}", f"images/{imgs[i + 1]}"],
             "output_paths": f"images/{imgs[i + 2]}", "instruction": f"edit {i}"} for i in range(6)]
    write(tmp_path / "edit.jsonl", rows, "jsonl")
    mix = tmp_path / "m.yaml"
    mix.write_text("datasets:\n  - {name: e, path: edit.jsonl, preprocess_fn: edit, image_root: .}\n")
    report = validate_file(mix)
    assert report.valid, report.errors
    items, stats = preview(report.plans.values(), n=10, seed=0)
    assert len(items) == 6 and not stats["e"].skipped
    for item, row in zip(items, rows):
        src = row["input_paths"] if isinstance(row["input_paths"], list) else [row["input_paths"]]
        paths = item.sample["image_gen_enc"] if isinstance(item.sample["image_gen_enc"], list) \
            else [item.sample["image_gen_enc"]]
        assert paths == [str(tmp_path / p) for p in src]
    prepare(report.plans.values(), str(tmp_path / "prepared"))
    ds = build_dataset(report, str(tmp_path / "prepared"), batch_size=2, process={"image": {"gen_size": 256}})
    batches = list(build_dataloader(ds, num_workers=0))
    assert sorted(i for b in batches for i in b["ids"]) == [f"e:{i}" for i in range(6)]
    assert [s for b in batches for s in b["skipped"]] == []
    assert sorted(len(s["gen_enc_pixels"]) for b in batches for s in b["samples"]) == [1, 1, 1, 2, 2, 2]
