"""``lavida-data import`` for the generated text-to-image releases: BLIP3o, Reflect-DiT, Echo-4o-Image,
each from a miniature copy of its native layout, through the converters."""

from __future__ import annotations

import json
import os
import time

import pyarrow.parquet as pq
import pytest

from lavida_data.convert.builtin.common import REFLECTION_HUMAN
from lavida_data.importers import run_import
from lavida_data.importers.errors import ImportError_

from .helpers import columns, human, image_bytes, import_json, read_table, round_trip, table_meta, write
from .layouts import blip3o_release, echo_release, reflect_dit_release


# ------------------------------------------------------------------------------------ BLIP3o


BLIP3O_ROWS = [("dalle3/00000/a1.jpg", "a cat in a teacup", 30, 40),
               ("dalle3/00000/a2.png", "a dog \u00e9t\u00e9", 50, 20),
               ("geneval_train/g1.jpg", "two red balls", 16, 12)]


def test_blip3o_webdataset_tars(cli, tmp_path):
    src = tmp_path / "BLIP3o-60k"
    blip3o_release(src)
    out = tmp_path / "blip3o.parquet"
    with pytest.raises(ImportError_, match=r"only inside archives \(dalle3/00000.tar, .*pass --images-to"):
        run_import("blip3o", str(src), str(out))
    imgs = tmp_path / "images"
    report = import_json(cli, "blip3o", src, out, "--images-to", imgs)
    assert report["skipped"] == {"bad_image": 1, "image_missing": 1, "missing_caption": 2, "unsafe_member_path": 2}
    assert report["images_written"] == 3
    got = read_table(out)
    assert got == [{"s3_path": str(imgs / "blip3o" / p), "caption": c, "intHeight": h, "intWidth": w}
                   for p, c, h, w in BLIP3O_ROWS]
    assert (imgs / "blip3o" / "geneval_train" / "g1.jpg").read_bytes() == image_bytes(12, 16)
    assert sorted(p.relative_to(imgs).as_posix() for p in imgs.rglob("*") if p.is_file()) == sorted(
        f"blip3o/{p}" for p, *_ in BLIP3O_ROWS)
    again = run_import("blip3o", str(src), str(out), images_to=str(imgs)).to_json()
    assert again["up_to_date"] is True and again["rows"] == 3 and again["mixture_entries"] == report["mixture_entries"]
    samples = round_trip(tmp_path, report["mixture_entries"])["blip3o"]
    assert [s["conversations"][0]["value"] for s in samples] == [human(c) for _, c, *_ in BLIP3O_ROWS]
    assert [s["image_gen"] for s in samples] == [r["s3_path"] for r in got]


def test_blip3o_extracted_pairs_in_place(tmp_path):
    src = tmp_path / "blip3o"
    write(src / "part0" / "k1.jpg", image_bytes(30, 20))
    write(src / "part0" / "k1.txt", "a kite")
    write(src / "part0" / "k2.jpg", image_bytes(5, 5))
    res = run_import("blip3o", str(src), str(tmp_path / "b.parquet"))
    assert res.skipped == {"missing_caption": 1}
    assert read_table(tmp_path / "b.parquet") == [
        {"s3_path": str(src / "part0" / "k1.jpg"), "caption": "a kite", "intHeight": 20, "intWidth": 30}]


def _files(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".tmp-" not in p.name}


def test_rerun_after_an_interrupted_import_writes_only_missing_images(tmp_path):
    src = tmp_path / "blip3o"
    blip3o_release(src)
    imgs, out = tmp_path / "images", tmp_path / "b.parquet"
    calls = 0

    def interrupt(n):
        nonlocal calls
        calls += 1
        if calls == 3:  # after a1 and a2 were handed to the image writer
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_import("blip3o", str(src), str(out), images_to=str(imgs), on_progress=interrupt)
    assert not out.exists()  # nothing committed
    before: set[str] = set()
    for _ in range(100):  # the writer threads finish what they were given
        time.sleep(0.02)
        now = _files(imgs)
        if now == before and now:
            break
        before = now
    assert before == {"blip3o/dalle3/00000/a1.jpg", "blip3o/dalle3/00000/a2.png"}
    os.remove(imgs / "blip3o" / "dalle3" / "00000" / "a2.png")  # as if its write had been cut
    res = run_import("blip3o", str(src), str(out), images_to=str(imgs))
    assert (res.images_written, res.images_reused) == (2, 1) and res.tables["main"]["rows"] == 3
    assert _files(imgs) == {f"blip3o/{p}" for p, *_ in BLIP3O_ROWS}


# ------------------------------------------------------------------------------- Reflect-DiT

@pytest.mark.parametrize("packed", ["tar", "folder"])
def test_reflect_dit_csv_generations_and_judge_set(cli, tmp_path, packed):
    src = tmp_path / "Reflect-DiT"
    reflect_dit_release(src, packed == "tar")
    if packed == "tar":
        imgs = tmp_path / "images"
        report = import_json(cli, "reflect-dit", src, tmp_path / "out", "--images-to", imgs)
        where = imgs / "reflect-dit" / "generations"
        assert not (where / "n2a.png").exists()  # the pair dropped for a mismatch: never extracted
    else:
        report = run_import("reflect-dit", str(src), str(tmp_path / "out")).to_json()
        where = src / "generations"
    assert report["skipped"] == {"image_missing": 2, "missing_prompt": 1, "negative_image_missing": 1,
                                 "negative_reason_mismatch": 1, "not_object": 1,
                                 "reason_semicolon_replaced": 1, "unexpected_judge_prompt": 1}

    def p(name):
        return str(where / name)

    out = tmp_path / "out"
    assert sorted(read_table(out / "t2i.parquet"), key=lambda r: r["s3_path"]) == [
        {"s3_path": p("p1.png"), "caption": "a cat on a mat", "intHeight": 32, "intWidth": 48},
        {"s3_path": p("p2.png"), "caption": "two dogs", "intHeight": 16, "intWidth": 16},
        {"s3_path": p("p3.png"), "caption": "a red car", "intHeight": 24, "intWidth": 24},
        {"s3_path": p("p4a.png"), "caption": "three birds", "intHeight": 20, "intWidth": 10},
        {"s3_path": p("p4b.png"), "caption": "three birds", "intHeight": 10, "intWidth": 20},
    ]
    # grounding_text: read by upstream's ..._s3_loc whatever its options; Reflect-DiT has no layout
    assert columns(out / "correction.parquet") == ["s3_path", "caption", "grounding_text", "negatives",
                                                   "negative_reasons"]
    assert sorted(read_table(out / "correction.parquet"), key=lambda r: r["s3_path"]) == [
        {"s3_path": p("p1.png"), "caption": "a cat on a mat", "grounding_text": None,
         "negatives": f"{p('n1a.png')};{p('n1b.png')}", "negative_reasons": "the cat is blue, should be orange;no mat"},
        {"s3_path": p("p3.png"), "caption": "a red car", "grounding_text": None, "negatives": p("n1b.png"),
         "negative_reasons": "no car"},
    ]
    assert sorted(read_table(out / "judge.parquet"), key=lambda r: r["prompts"]) == [
        {"image": p("p1.png"), "prompts": json.dumps(["a cat on a mat", "a mat"]),
         "results": json.dumps(["The cat is blue.", "There is a mat."])},
        {"image": p("j1.png"), "prompts": "a cat on a mat", "results": "The image matches the prompt."},
    ]
    entries = {e["name"]: e for e in report["mixture_entries"]}
    assert entries["reflect-dit-correction"]["process_fn_kwargs"] == {"no_plan": True, "add_feedback": True}
    assert entries["reflect-dit-judge"]["preprocess_fn"] == "preprocess_reflection_und"
    if packed == "folder":
        return
    got = round_trip(tmp_path, list(entries.values()))
    assert {s["image_gen"] for s in got["reflect-dit-t2i"]} == {p(n) for n in ("p1.png", "p2.png", "p3.png",
                                                                               "p4a.png", "p4b.png")}
    # upstream's no_plan answer with 1..5 past generations (drawn with repetition) and their feedback
    reasons = {p("n1a.png"): "the cat is blue, should be orange", p("n1b.png"): "no mat"}
    by_target = {s["image_gen"]: s for s in got["reflect-dit-correction"]}
    assert sorted(by_target) == [p("p1.png"), p("p3.png")]
    cat = by_target[p("p1.png")]
    assert 1 <= len(cat["image"]) <= 2 and set(cat["image"]) <= set(reasons)
    feedback = "\n".join(f"Generation {i}: <image>\n Feedback {i}: {reasons[n]}" for i, n in enumerate(cat["image"], 1))
    assert cat["conversations"] == [
        {"from": "human", "value": f"{human('a cat on a mat')}.  Please also consider past generations and their "
                                   f"feedbacks. Do not repeat these errors {feedback}"},
        {"from": "gpt", "value": "<image_gen>"}]
    car = by_target[p("p3.png")]
    assert car["image"] == [p("n1b.png")] and car["conversations"] == [
        {"from": "human", "value": f"{human('a red car')}.  Please also consider past generations and their "
                                   "feedbacks. Do not repeat these errors Generation 1: <image>\n Feedback 1: no car"},
        {"from": "gpt", "value": "<image_gen>"}]
    assert "do_not_mask_text" not in cat and "do_not_mask_text" not in car
    judged = {s["image"]: s for s in got["reflect-dit-judge"]}
    assert judged[p("j1.png")]["conversations"] == [
        {"from": "human", "value": REFLECTION_HUMAN.format(prompt="a cat on a mat")},
        {"from": "gpt", "value": "The image matches the prompt."}]
    assert judged[p("p1.png")]["conversations"][1]["value"] in ("The cat is blue.", "There is a mat.")


def test_table_of_an_older_version_is_imported_again(tmp_path):
    """A table whose columns differ from its part's (here: a correction table written before
    ``grounding_text`` was added) is not up to date, whatever its import metadata says."""
    src, out = tmp_path / "Reflect-DiT", tmp_path / "out"
    reflect_dit_release(src, packed=False)
    first = run_import("reflect-dit", str(src), str(out))
    assert run_import("reflect-dit", str(src), str(out)).up_to_date
    path = out / "correction.parquet"
    meta = pq.ParquetFile(path).metadata.metadata
    old = pq.read_table(path).drop_columns(["grounding_text"]).replace_schema_metadata(meta)
    pq.write_table(old, path)
    assert table_meta(path) == table_meta(out / "t2i.parquet") | {"part": "correction",
                                                                   "rows": first.tables["correction"]["rows"]}
    again = run_import("reflect-dit", str(src), str(out))
    assert not again.up_to_date and again.tables == first.tables
    assert columns(path) == ["s3_path", "caption", "grounding_text", "negatives", "negative_reasons"]


def test_reflect_dit_csv_with_other_columns_is_refused(tmp_path):
    write(tmp_path / "src" / "x.csv", "text,image\na,b\n")
    expected = "expected the Reflect-DiT CSV columns prompt, positive_filename.*text, image"
    with pytest.raises(ImportError_, match=expected):
        run_import("reflect-dit", str(tmp_path / "src"), str(tmp_path / "out"))


# ----------------------------------------------------------------------------------- Echo-4o


def test_echo_4o_images_written_to_s3(cli, tmp_path, s3_bucket):
    client, bucket = s3_bucket
    src = tmp_path / "Echo-4o-Image"
    echo_release(src)
    out = tmp_path / "echo"
    with pytest.raises(ImportError_, match="pass --images-to"):
        run_import("echo-4o", str(src), str(out))
    base = f"s3://{bucket}/gen/echo-4o"
    report = import_json(cli, "echo-4o", src, out, "--images-to", f"s3://{bucket}/gen")
    assert report["skipped"] == {"bad_json": 1, "image_missing": 1, "missing_instruction": 1}
    assert report["images_written"] == 8
    assert sorted(read_table(out / "t2i.parquet"), key=lambda r: r["caption"]) == [
        {"s3_path": f"{base}/Surrel-Fantasy-Image/images/00000.jpg", "caption": "a floating castle",
         "intHeight": 20, "intWidth": 40},
        {"s3_path": f"{base}/Surrel-Fantasy-Image/images/00001.jpg", "caption": "a glass whale",
         "intHeight": 60, "intWidth": 30},
        {"s3_path": f"{base}/Instruction-Following-Image/images/00000.jpg", "caption": "three red apples",
         "intHeight": 16, "intWidth": 16},
    ]
    mr = f"{base}/Multi-Reference-Image/images"
    assert read_table(out / "multiref.parquet") == [
        {"input_paths": [f"{mr}/00000_0.jpg", f"{mr}/00000_1.jpg"], "output_paths": f"{mr}/00000.jpg",
         "instruction": "the cat of image 1 on the sofa of image 2"},
        {"input_paths": [f"{mr}/00001_0.jpg"], "output_paths": f"{mr}/00001.jpg", "instruction": "the hat on the dog"},
    ]
    stored = client.get_object(Bucket=bucket, Key="gen/echo-4o/Surrel-Fantasy-Image/images/00001.jpg")["Body"].read()
    assert stored == image_bytes(30, 60)
    got = round_trip(tmp_path, report["mixture_entries"])
    assert {s["conversations"][0]["value"]: s["image_gen"] for s in got["echo-4o-t2i"]} == {
        human("a floating castle"): f"{base}/Surrel-Fantasy-Image/images/00000.jpg",
        human("a glass whale"): f"{base}/Surrel-Fantasy-Image/images/00001.jpg",
        human("three red apples"): f"{base}/Instruction-Following-Image/images/00000.jpg"}
    first = got["echo-4o-multiref"][0]
    assert first["conversations"][0]["value"] == (  # upstream's template, then a space, then the instruction
        "<image> <image_gen_enc> <image> <image_gen_enc>  the cat of image 1 on the sofa of image 2")
    assert first["image"] == first["image_gen_enc"] == [f"{mr}/00000_0.jpg", f"{mr}/00000_1.jpg"]
    assert first["image_gen"] == f"{mr}/00000.jpg"
