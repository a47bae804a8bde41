"""`mammoth-vl` and `visualwebinstruct`: miniature native layouts imported through the CLI, read
back, and previewed through their converters."""

from __future__ import annotations

import json
import os
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavida_data.importers import run_import
from lavida_data.importers.base import ImportContext
from lavida_data.importers.understanding import import_mammoth

from .helpers import import_json, lavida, read_table, round_trip, save_image
from .layouts import LONG, MAMMOTH_RECORDS, VW_RECORDS, _mammoth_source, _vw_source, turns

MAMMOTH = "preproces_und_mammoth_si_10M"
VW = "preproces_vw_instruct"
REASONING = "\n Please also perform detailed reasoning for this problem and provide detailed reasoning traces."


# -------------------------------------------------------------------------------- MAmmoTH-VL


EXPECTED_CONV = {
    "t0": turns("What is 2+2?", "4"),
    "i1": turns("<image>\nWhat is shown?", "A diagram."),
    "i2": [*turns("Title?", "Sales"), {"from": "human", "value": "Max?"}, {"from": "gpt", "value": "12"}],
    "m3": turns("Compare.", "Same."),
}


def test_mammoth_from_tar_shards_to_images_folder(tmp_path, cli):
    src = _mammoth_source(tmp_path)
    out, imgs = tmp_path / "out" / "mammoth.parquet", tmp_path / "imgs"
    res = import_json(cli, "mammoth-vl", src, out, "--images-to", imgs)
    assert res["rows"] == 4 and not res["up_to_date"]
    assert res["skipped"] == {"bad_conversations": 1, "bad_image": 1, "missing_conversations": 1,
                              "missing_image": 1, "not_object": 1}
    assert "bad-image" in res["skipped_examples"]["missing_image"]
    assert res["images_written"] == 3
    assert sorted(str(p.relative_to(imgs)) for p in imgs.rglob("*") if p.is_file()) == [
        "mammoth-vl/ai2d/1.jpg", "mammoth-vl/si/chart/2.png", "mammoth-vl/si/geo/3.jpg"]
    root = imgs / "mammoth-vl"  # the image root of the table
    rows = read_table(out)
    assert [r["image"] for r in rows] == [None, "ai2d/1.jpg", "si/chart/2.png", '["ai2d/1.jpg", "si/geo/3.jpg"]']
    assert [json.loads(r["conversations"]) for r in rows] == list(EXPECTED_CONV.values())
    assert pq.read_schema(out).names == ["image", "conversations"]
    [entry] = res["mixture_entries"]
    assert entry == {"name": "mammoth-vl", "path": str(out), "preprocess_fn": MAMMOTH, "length_group": "und",
                     "process_fn_kwargs": {"s3_prefix": str(root)}}

    # the conversations as the release has them (upstream inserts no <image>: its rendering does)
    [samples] = round_trip(tmp_path, [entry]).values()
    assert [s["conversations"] for s in samples] == list(EXPECTED_CONV.values())
    assert "image" not in samples[0]  # text only: no image key, as upstream
    assert [s.get("image") for s in samples] == [None, f"{root}/ai2d/1.jpg", f"{root}/si/chart/2.png",
                                                 [f"{root}/ai2d/1.jpg", f"{root}/si/geo/3.jpg"]]

    again = import_json(None, "mammoth-vl", src, out, "--images-to", imgs)
    assert again["up_to_date"] and again["rows"] == 4 and again["mixture_entries"] == [entry]


def test_mammoth_unpacked_images_are_referenced_in_place(tmp_path):
    src = _mammoth_source(tmp_path, shards=False)
    for rel in ("ai2d/1.jpg", "chart/2.png", "geo/3.jpg"):
        save_image(src / "images" / rel, 8, 8)
    res = run_import("mammoth-vl", str(src), str(tmp_path / "m.parquet"))
    assert res.skipped["missing_image"] == 1 and res.images_written == 0
    assert [r["image"] for r in read_table(tmp_path / "m.parquet")] == [
        None, "ai2d/1.jpg", "chart/2.png", '["ai2d/1.jpg", "geo/3.jpg"]']
    assert res.entries[0]["process_fn_kwargs"] == {"s3_prefix": str(src / "images")}


def test_mammoth_shards_need_images_to(tmp_path):
    src = _mammoth_source(tmp_path)
    rc, _, err = lavida("import", "mammoth-vl", src, "--out", tmp_path / "m.parquet")
    assert rc == 2
    assert "tar shards" in err and "--images-to" in err
    assert not (tmp_path / "m.parquet").exists()


def test_mammoth_json_object_is_refused(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"data": MAMMOTH_RECORDS}))
    with pytest.raises(ValueError, match="expected a JSON array"):
        run_import("mammoth-vl", str(tmp_path / "a.json"), str(tmp_path / "m.parquet"))


def test_mammoth_json_array_is_streamed(tmp_path):
    """A ~55 MB annotation file goes through the importer with a small, bounded peak of memory."""
    path = tmp_path / "mammoth_si_10M.json"
    answer = "word " * 1800
    with open(path, "w") as f:
        f.write("[\n")
        n = 6000
        for i in range(n):
            rec = {"id": str(i), "conversations": turns(f"Question {i}?", answer), "source": "x"}
            f.write(json.dumps(rec) + (",\n" if i < n - 1 else "\n"))
        f.write("]\n")
    size = path.stat().st_size
    assert size > 50e6
    ctx = ImportContext("mammoth-vl", str(path))
    tracemalloc.start()
    try:
        count = sum(1 for _ in import_mammoth(str(path), ctx))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n and not ctx.skipped
    assert peak < size / 8, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"


# -------------------------------------------------------------------------- VisualWebInstruct


VW_EXPECTED_IMAGES = [["imgs/a.jpg"], ["imgs/b.png"], ["imgs/sub/c.jpg"], ["imgs/a.jpg", "imgs/b.png"]]
VW_SKIPPED = {"bad_conversations": 1, "missing_conversations": 1, "missing_image": 1, "no_image": 1}


def test_visualwebinstruct_from_zip_to_images_folder(tmp_path, cli):
    src = _vw_source(tmp_path)
    out, imgs = tmp_path / "vw.parquet", tmp_path / "vw-images"
    res = import_json(cli, "visualwebinstruct", src, out, "--images-to", imgs)
    assert res["rows"] == 4
    assert res["skipped"] == {**VW_SKIPPED, "bad_json": 1}
    assert res["images_written"] == 3  # the unused one is not copied
    assert sorted(str(p.relative_to(imgs)) for p in imgs.rglob("*") if p.is_file()) == [
        "visualwebinstruct/imgs/a.jpg", "visualwebinstruct/imgs/b.png", "visualwebinstruct/imgs/sub/c.jpg"]
    root = imgs / "visualwebinstruct"  # the image root of the table
    rows = read_table(out)
    assert [r["image"] for r in rows] == VW_EXPECTED_IMAGES
    assert rows[0]["conversations"] == VW_RECORDS[0]["conversations"]
    assert pq.read_schema(out).field("image").type == pa.list_(pa.string())
    [entry] = res["mixture_entries"]
    assert entry == {"name": "visualwebinstruct", "path": str(out), "preprocess_fn": VW, "length_group": "und",
                     "max_enc_images": {"column": "image", "value": 1}, "process_fn_kwargs": {"s3_prefix": str(root)}}

    # upstream's choice (single-image samples) comes from the entry; the table keeps every sample
    [samples] = round_trip(tmp_path, [entry]).values()
    assert [s["image"] for s in samples] == [[f"{root}/{p[0]}"] for p in VW_EXPECTED_IMAGES[:3]]
    assert samples[0]["conversations"] == VW_RECORDS[0]["conversations"]  # a short answer: as it is
    assert samples[1]["conversations"] == [{"from": "human", "value": "Solve." + REASONING},  # over 150 words
                                           {"from": "gpt", "value": LONG}]
    del entry["max_enc_images"]
    [samples] = round_trip(tmp_path, [entry]).values()
    assert len(samples) == 4


def test_visualwebinstruct_parquet_and_unpacked_images_read_from_s3(tmp_path, s3_bucket):
    client, bucket = s3_bucket
    src = _vw_source(tmp_path, fmt="parquet", zipped=False)
    for p in src.rglob("*"):
        if p.is_file():
            client.upload_file(str(p), bucket, f"vw/{p.relative_to(src)}")
    out = tmp_path / "vw.parquet"
    res = import_json(None, "visualwebinstruct", f"s3://{bucket}/vw", out)
    assert res["rows"] == 4 and res["skipped"] == VW_SKIPPED and res["images_written"] == 0
    assert [r["image"] for r in read_table(out)] == VW_EXPECTED_IMAGES
    assert res["mixture_entries"][0]["process_fn_kwargs"] == {"s3_prefix": f"s3://{bucket}/vw"}
    [samples] = round_trip(tmp_path, res["mixture_entries"]).values()
    assert samples[0]["image"] == [f"s3://{bucket}/vw/imgs/a.jpg"]
    assert import_json(None, "visualwebinstruct", f"s3://{bucket}/vw", out)["up_to_date"]


def test_visualwebinstruct_zip_needs_images_to(tmp_path):
    src = _vw_source(tmp_path)
    rc, _, err = lavida("import", "visualwebinstruct", src / "visualwebinstruct_conversation.jsonl",
                        "--out", tmp_path / "v.parquet")
    assert rc == 2 and "images.zip" in err and "--images-to" in err
    os.remove(src / "images.zip")
    rc, _, err = lavida("import", "visualwebinstruct", src, "--out", tmp_path / "v.parquet")
    assert rc == 2 and "imgs" in err
    assert not (tmp_path / "v.parquet").exists()
