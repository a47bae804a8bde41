"""The importers' streaming JSON: a file's top level item by item (strict), and records from
arrays, JSON lines and ``{id: record}`` objects (tolerant: bad records are counted)."""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest

from lavida_data.importers.base import ImportContext
from lavida_data.importers.jsonstream import JsonError, JsonStream, iter_json_top, read_records


def test_json_top_level_is_streamed_item_by_item(tmp_path):
    p = tmp_path / "coco.json"
    p.write_text(json.dumps({"info": {"a": [1, 2]}, "images": [{"id": 1}, {"id": 2}], "n": 12345678901234567890,
                             "annotations": [], "list": [1.5, "x", None, [2]]}))
    assert list(iter_json_top(str(p))) == [
        ("info", {"a": [1, 2]}, False), ("images", {"id": 1}, True), ("images", {"id": 2}, True),
        ("n", 12345678901234567890, False), ("list", 1.5, True), ("list", "x", True), ("list", None, True),
        ("list", [2], True)]
    p.write_text("[]")
    assert list(iter_json_top(str(p))) == []
    p.write_text("{}")
    assert list(iter_json_top(str(p))) == []
    p.write_text('{"images": [{"id": 1}, {"id": ')
    with pytest.raises(JsonError, match="invalid JSON"):
        list(iter_json_top(str(p)))


def test_json_stream_across_chunk_boundaries():
    doc = [{"a": 12345678, "b": [1.25e-3, 'x"y', None, True, False]}, 98765, "str \u00e9", [], {}, -0.5]
    text = json.dumps(doc, indent=1)
    for chunk in (1, 2, 3, 7, 64, 1 << 20):
        js = JsonStream(io.StringIO(text), "t.json", chunk=chunk)
        assert js.expect("[", "an array") == "["
        assert list(js.items()) == doc
        assert js.peek() == ""
    big = [{"caption": "x" * (3 << 20)}, {"caption": "y"}]  # a record larger than the 1 MB read size
    js = JsonStream(io.StringIO(json.dumps(big)), "big.json")
    js.expect("[", "an array")
    assert list(js.items()) == big


@pytest.mark.parametrize("name, text, expected, skipped", [
    ("m.json", '[{"a": 1}, 7, {"a": 2}]', [{"a": 1}, {"a": 2}], {"not_object": 1}),
    ("m.json", '\ufeff [{"a": 1}]', [{"a": 1}], {}),
    ("m.json", '{"a": 1}\n\n{oops\n[3]\n{"a": 2}\n', [{"a": 1}, {"a": 2}], {"bad_json": 1, "not_object": 1}),
    ("m.jsonl", '{oops\n{"a": 1}\n', [{"a": 1}], {"bad_json": 1}),
    ("m.json", '{\n "k1": {"a": 1},\n "k2": {"a": 2}\n}', [{"id": "k1", "a": 1}, {"id": "k2", "a": 2}], {}),
    ("m.json", '{\n "k1": {"a": 1},\n "k2": 3\n}', [{"id": "k1", "a": 1}], {"not_object": 1}),
    ("m.json", '{"k1": {"a": 1}}', [{"id": "k1", "a": 1}], {}),
    ("m.json", '{\n "a": 1,\n "b": {"c": [1, 2]}\n}', [{"a": 1, "b": {"c": [1, 2]}}], {}),  # one record
    ("m.json", '{\n "meta": {"x": 1},\n "a": 2\n}', [{"meta": {"x": 1}, "a": 2}], {}),  # not a mapping
    ("m.json", '[{"a": 1}, {"a": ', [{"a": 1}], {"bad_json": 1}),
    ("m.json", '[{"a": 1}', [{"a": 1}], {"bad_json": 1}),
    ("m.json", "", [], {}),
])
def test_records_are_read_one_by_one_and_bad_ones_counted(name, text, expected, skipped):
    """JSON arrays (streamed), JSON lines and {id: record} objects; a bad record is counted."""
    ctx = ImportContext("k", "s")
    assert list(read_records(io.BytesIO(text.encode()), ctx.skip, ("a",), name)) == expected
    assert ctx.skipped == skipped


def test_a_mapping_of_records_is_streamed(tmp_path):
    """A pretty-printed ``{id: record}`` object is read record by record, not whole: the peak of
    memory is a few read buffers (1 MB each)."""
    path = tmp_path / "meta.json"
    n, caption = 2100, "word " * 2000
    with open(path, "w") as f:
        f.write("{\n")
        f.write(",\n".join(f' "{i}": {json.dumps({"a": i, "caption": caption})}' for i in range(n)))
        f.write("\n}\n")
    size = path.stat().st_size
    ctx = ImportContext("k", "s")
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_records(str(path), ctx.skip, ("a",)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n and not ctx.skipped
    assert size > 20e6 and peak < 8e6, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
