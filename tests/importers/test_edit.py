"""``lavida-data import`` for the editing releases: ShareGPT-4o-Image and GPT-Image-Edit-1.5M, each
from a miniature copy of its native layout, through the converters."""

from __future__ import annotations

import json
import os
import tarfile

import pytest

from lavida_data.importers import run_import
from lavida_data.importers.errors import ImportError_

from .helpers import columns, human, import_json, png, read_table, round_trip, upload, write, write_tar
from .layouts import gpt_edit_release, sharegpt_release

# ------------------------------------------------------------------------------- ShareGPT-4o

SHAREGPT_SKIPS = {"bad_input_image": 1, "image_missing": 1, "missing_input_prompt": 1, "missing_output_image": 1,
                  "not_object": 1}


def test_sharegpt_4o_split_tar_through_the_command(cli, tmp_path):
    src = tmp_path / "ShareGPT-4o-Image"
    sharegpt_release(src, "split-tar")
    imgs, out = tmp_path / "images", tmp_path / "sharegpt"
    report = import_json(cli, "sharegpt-4o", src, out, "--images-to", imgs)
    assert report["skipped"] == SHAREGPT_SKIPS
    assert report["images_written"] == 7  # not the image no record names

    def p(name):
        return str(imgs / "sharegpt-4o" / name)

    assert columns(out / "edit.parquet") == ["input_image", "output_image", "input_prompt"]
    assert read_table(out / "t2i.parquet") == [
        {"s3_path": p("output_image/t0.png"), "caption": "a watercolor fox", "intHeight": 20, "intWidth": 30},
        {"s3_path": p("output_image/t2.png"), "caption": "a neon sign", "intHeight": 34, "intWidth": 12},
    ]
    assert read_table(out / "edit.parquet") == [
        {"input_image": [p("input_image/e0_a.png")], "output_image": p("output_image/e0.png"),
         "input_prompt": "make it night"},
        {"input_image": [p("input_image/e1_a.png"), p("input_image/e1_b.png")],
         "output_image": p("output_image/e1.png"), "input_prompt": "put both in one room"},
    ]
    entries = {e["name"]: e for e in report["mixture_entries"]}
    assert entries["sharegpt-4o-edit"]["preprocess_fn"] == "process_sharegpt_4o_edit"
    got = round_trip(tmp_path, list(entries.values()))
    assert [s["conversations"][0]["value"] for s in got["sharegpt-4o-t2i"]] == [
        human("a watercolor fox"), human("a neon sign")]
    e1 = got["sharegpt-4o-edit"][1]
    assert e1["conversations"] == [
        {"from": "human", "value": "<image> <image_gen_enc> <image> <image_gen_enc>  put both in one room"},
        {"from": "gpt", "value": "Sure <image_gen>"}]
    assert e1["image"] == e1["image_gen_enc"] == [p("input_image/e1_a.png"), p("input_image/e1_b.png")]
    assert e1["image_gen"] == p("output_image/e1.png") and e1["pad_image_gen"] is True and e1["reweight"] is False


@pytest.mark.parametrize("packing", ["zip", "nested-tar", "folder", "s3-folder"])
def test_sharegpt_4o_packing_variants(tmp_path, packing, request):
    src = tmp_path / "ShareGPT-4o-Image"
    sharegpt_release(src, packing.replace("s3-", ""))
    source, imgs = str(src), str(tmp_path / "images")
    if packing == "s3-folder":
        client, bucket = request.getfixturevalue("s3_bucket")
        source = upload(client, bucket, src, "releases/ShareGPT-4o-Image")
    if "folder" in packing:  # plain files: referenced in place
        imgs = None

        def p(name):
            return f"{source}/{name}"
    else:
        with pytest.raises(ImportError_, match="pass --images-to"):
            run_import("sharegpt-4o", source, str(tmp_path / "t"))

        def p(name):
            return f"{imgs}/sharegpt-4o/{name}"  # under the record's path, whatever the packing
    res = run_import("sharegpt-4o", source, str(tmp_path / "t"), images_to=imgs)
    assert res.skipped == SHAREGPT_SKIPS
    t2i = read_table(tmp_path / "t" / "t2i.parquet")
    assert sorted((r["s3_path"], r["caption"], r["intWidth"], r["intHeight"]) for r in t2i) == [
        (p("output_image/t0.png"), "a watercolor fox", 30, 20), (p("output_image/t2.png"), "a neon sign", 12, 34)]
    assert sorted(read_table(tmp_path / "t" / "edit.parquet"), key=lambda r: r["input_prompt"]) == [
        {"input_image": [p("input_image/e0_a.png")], "output_image": p("output_image/e0.png"),
         "input_prompt": "make it night"},
        {"input_image": [p("input_image/e1_a.png"), p("input_image/e1_b.png")],
         "output_image": p("output_image/e1.png"), "input_prompt": "put both in one room"},
    ]


# ---------------------------------------------------------------------------- GPT-Image-Edit


def test_gpt_image_edit_one_table_per_source(cli, tmp_path):
    src = tmp_path / "GPT-Image-Edit-1.5M"
    gpt_edit_release(src)
    out, imgs = tmp_path / "gpt-edit", tmp_path / "images"
    with pytest.raises(ImportError_, match=r"only inside archives \(gpt-edit/hqedit.tar.gz, gpt-edit/omniedit.tar\)"):
        run_import("gpt-image-edit", str(src), str(out))
    report = import_json(cli, "gpt-image-edit", src, out, "--images-to", imgs)
    assert report["skipped"] == {"image_missing": 1, "image_without_record": 1, "missing_input": 1,
                                 "missing_instruction": 1}
    assert {k: t["rows"] for k, t in report["tables"].items()} == {"hqedit": 2, "omniedit": 2, "ultraedit": 1}

    def a(path):  # extracted from an archive
        return str(imgs / "gpt-image-edit" / "gpt-edit" / path)

    assert read_table(out / "hqedit.parquet") == [
        {"input_paths": a("hqedit/edit/input/00001.png"), "output_paths": a("hqedit/edit/output/00001.png"),
         "instruction": "make the sky pink"},
        {"input_paths": a("hqedit/edit/input/00002.png"), "output_paths": a("hqedit/edit/output/00002.png"),
         "instruction": "Turn the pink sky into a starry night."},
    ]
    assert read_table(out / "omniedit.parquet") == [
        {"input_paths": a(f"omniedit/addition/input/{i}.png"), "output_paths": a(f"omniedit/addition/output/{i}.png"),
         "instruction": text} for i, text in ((5, "add a red balloon"), (6, "add a small boat"))]
    # unpacked images are copied too when --images-to is given, under the same keys
    assert read_table(out / "ultraedit.parquet") == [
        {"input_paths": a("ultraedit/edit/input/7.png"), "output_paths": a("ultraedit/edit/output/7.png"),
         "instruction": "remove the car"}]
    assert (imgs / "gpt-image-edit" / "gpt-edit" / "hqedit" / "edit" / "input" / "00099.png").exists()
    entries = report["mixture_entries"]
    assert sorted((e["name"], e["preprocess_fn"]) for e in entries) == [
        ("gpt-image-edit-hqedit", "process_gpt_edit"), ("gpt-image-edit-omniedit", "process_gpt_edit"),
        ("gpt-image-edit-ultraedit", "process_gpt_edit")]
    got = round_trip(tmp_path, entries)
    s = got["gpt-image-edit-hqedit"][0]
    assert s["conversations"] == [  # upstream's template, then a space, then the instruction
        {"from": "human", "value": "<image> <image_gen_enc>  make the sky pink"},
        {"from": "gpt", "value": "Sure <image_gen>"}]
    assert s["image"] == [a("hqedit/edit/input/00001.png")] and s["image_gen"] == a("hqedit/edit/output/00001.png")
    assert got["gpt-image-edit-ultraedit"][0]["image_gen"] == a("ultraedit/edit/output/7.png")
    assert [x["conversations"][0]["value"] for x in got["gpt-image-edit-omniedit"]] == [
        "<image> <image_gen_enc>  add a red balloon", "<image> <image_gen_enc>  add a small boat"]


def test_gpt_image_edit_without_metadata_says_what_it_expected(tmp_path):
    write_tar(tmp_path / "src" / "hqedit.tar", [("gpt-edit/hqedit/edit/input/1.png", png(4, 4))])
    with pytest.raises(ImportError_, match=r"expected GPT-Image-Edit metadata \(metadata/<source>_<task>.json"):
        run_import("gpt-image-edit", str(tmp_path / "src"), str(tmp_path / "out"), images_to=str(tmp_path / "i"))


def test_gpt_image_edit_metadata_beside_the_archive(tmp_path):
    src = tmp_path / "src"
    write_tar(src / "gpt-edit" / "ultraedit.tar", [(f"gpt-edit/ultraedit/edit/{role}/{i}.png", png(4, 4))
                                                   for i in (1, 2) for role in ("input", "output")])
    write(src / "metadata" / "ultraedit_edit.json", json.dumps([
        {"id": 1, "task": "edit", "input": "input/1.png", "output": "output/1.png", "instruction": "blur it"}]))
    imgs = tmp_path / "i"
    res = run_import("gpt-image-edit", str(src), str(tmp_path / "out"), images_to=str(imgs))
    assert res.skipped == {} and res.images_written == 2  # images no record names are not extracted
    base = imgs / "gpt-image-edit" / "gpt-edit" / "ultraedit" / "edit"
    assert read_table(tmp_path / "out" / "ultraedit.parquet") == [
        {"input_paths": str(base / "input" / "1.png"), "output_paths": str(base / "output" / "1.png"),
         "instruction": "blur it"}]


def test_gpt_image_edit_rerun_is_up_to_date_until_the_source_changes(tmp_path, monkeypatch):
    """Its tables are named after the sources found, so the index ``_import.json`` (written last)
    says which to check: a rerun of the same source and options reads no archive."""
    src = tmp_path / "GPT-Image-Edit-1.5M"
    gpt_edit_release(src)
    out, imgs = tmp_path / "gpt-edit", str(tmp_path / "images")
    first = run_import("gpt-image-edit", str(src), str(out), images_to=imgs)
    assert not first.up_to_date and first.images_written == 11
    index = json.loads((out / "_import.json").read_text())
    assert (index["kind"], index["skipped"]) == ("gpt-image-edit", first.skipped)
    assert index["tables"] == [{"part": p, **t} for p, t in first.tables.items()]
    mtimes = {p: os.stat(t["path"]).st_mtime_ns for p, t in first.tables.items()}

    def no_archive(*args, **kwargs):
        raise AssertionError("an up-to-date import read an archive")

    with monkeypatch.context() as m:
        m.setattr(tarfile, "open", no_archive)
        again = import_json(None, "gpt-image-edit", src, out, "--images-to", imgs)
    assert again["up_to_date"] and (again["images_written"], again["images_reused"]) == (0, 0)
    assert (again["tables"], again["skipped"], again["mixture_entries"]) == (first.tables, first.skipped,
                                                                             first.entries)
    assert {p: os.stat(t["path"]).st_mtime_ns for p, t in first.tables.items()} == mtimes

    write(src / "gpt-edit" / "ultraedit" / "edit" / "input" / "8.png", png(8, 8))  # the source changes
    third = run_import("gpt-image-edit", str(src), str(out), images_to=imgs)
    assert not third.up_to_date and (third.images_written, third.images_reused) == (0, 11)
    assert third.tables == first.tables
    assert run_import("gpt-image-edit", str(src), str(out), images_to=imgs).up_to_date
    # other options, or a table the index lists gone: imported again
    assert not run_import("gpt-image-edit", str(src), str(out), images_to=imgs, frame="per-axis").up_to_date
    os.remove(out / "omniedit.parquet")
    fourth = run_import("gpt-image-edit", str(src), str(out), images_to=imgs, frame="per-axis")
    assert not fourth.up_to_date and fourth.tables == first.tables


def test_gpt_image_edit_index_on_s3(tmp_path, s3_bucket):
    client, bucket = s3_bucket
    src = tmp_path / "src"
    write_tar(src / "gpt-edit" / "ultraedit.tar", [(f"gpt-edit/ultraedit/edit/{role}/1.png", png(4, 4))
                                                   for role in ("input", "output")])
    write(src / "metadata" / "ultraedit_edit.json", json.dumps([
        {"id": 1, "task": "edit", "input": "input/1.png", "output": "output/1.png", "instruction": "blur it"}]))
    out, imgs = f"s3://{bucket}/tables/gpt-edit", f"s3://{bucket}/images"
    first = run_import("gpt-image-edit", str(src), out, images_to=imgs)
    index = json.loads(client.get_object(Bucket=bucket, Key="tables/gpt-edit/_import.json")["Body"].read())
    assert index["tables"] == [{"part": "ultraedit", "path": f"{out}/ultraedit.parquet", "rows": 1}]
    again = run_import("gpt-image-edit", str(src), out, images_to=imgs)
    assert again.up_to_date and again.entries == first.entries and again.images_reused == 0
