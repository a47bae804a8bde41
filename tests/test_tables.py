import io
import json
from collections import Counter

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from lavida_data.filters import Filters
from lavida_data.tables import ROW, iter_batches, iter_json_array, read_schema, table_format

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


def test_mixed_types_kept_as_json_text(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"image": "a.jpg"}) + "\n" + json.dumps({"image": ["b.jpg", "c.jpg"]}) + "\n")
    (batch,) = list(iter_batches(str(p), ["image"]))
    assert batch.column("image").to_pylist() == ['"a.jpg"', '["b.jpg", "c.jpg"]']


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
    code = ("import sys\nfrom lavida_data.tables import iter_batches, read_schema\n"
            "assert read_schema(sys.argv[1]) == ['s3_path', 'caption']\n"
            "it = iter_batches(sys.argv[1], batch_size=1000)\nnext(it)\n")
    for _ in range(5):
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
