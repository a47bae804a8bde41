"""``lavida-data import`` for the URL-based text-to-image releases, COYO-700M and Re-LAION, each from
its metadata and a miniature img2dataset download, through the converters."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavida_data.importers import run_import
from lavida_data.importers.errors import ImportError_

from .helpers import columns, human, import_json, read_table, round_trip, upload
from .layouts import RELAION_DOWNLOADS, coyo_metadata, img2dataset_folder, relaion_metadata

T2I = "preproces_text_to_image_generation_s3"


# ---------------------------------------------------------------------------------- Re-LAION


@pytest.mark.parametrize("style", ["new", "old"])
def test_relaion_metadata_joined_to_img2dataset_output(cli, tmp_path, style):
    src = tmp_path / "relaion"
    (src / "metadata").mkdir(parents=True)
    pq.write_table(relaion_metadata(style), src / "metadata" / "part-00000-abc.snappy.parquet",
                   compression="snappy", row_group_size=2)
    img2dataset_folder(src / "images", RELAION_DOWNLOADS)
    out = tmp_path / "relaion.parquet"
    if style == "new":  # through the command
        report = import_json(cli, "relaion", src, out)
    else:
        report = run_import("relaion", str(src), str(out)).to_json()
    assert report["skipped"] == {"image_missing": 1, "missing_caption": 1, "missing_url": 1, "no_sidecar": 1,
                                 "not_downloaded": 2, "not_in_metadata": 1}
    assert report["skipped_examples"]["not_downloaded"].endswith("(http://a/2.jpg)")
    assert columns(out) == ["s3_path", "caption", "intHeight", "intWidth"]  # no score: Re-LAION ships none
    shard = (src / "images" / "00000").resolve()
    assert read_table(out) == [
        {"s3_path": str(shard / "000000000.jpg"), "caption": "a red fox", "intHeight": 24, "intWidth": 32},
        {"s3_path": str(shard / "000000001.jpg"), "caption": "a blue whale", "intHeight": 600, "intWidth": 800},
    ]
    [entry] = report["mixture_entries"]
    assert entry == {"name": "relaion", "path": str(out), "preprocess_fn": T2I, "length_group": "t2i"}
    if style == "new":
        samples = round_trip(tmp_path, [entry])["relaion"]
        assert [s["conversations"][0]["value"] for s in samples] == [human("a red fox"), human("a blue whale")]
        assert [s["image_gen"] for s in samples] == [str(shard / "000000000.jpg"), str(shard / "000000001.jpg")]
        assert not any("gen_score" in s or "hpsv2" in s for s in samples)  # no score column: no score


def test_downloads_that_img2dataset_resized_are_reported(cli, tmp_path):
    """img2dataset's default (256 px with borders) is useless for 1024-px generation: the import
    warns when the stored images are smaller than the originals it recorded, also when up to date."""
    src = tmp_path / "relaion"
    img2dataset_folder(src, RELAION_DOWNLOADS)  # 000000000: 32x24 stored, 640x480 original
    out = tmp_path / "t.parquet"
    proc = cli("import", "relaion", src, "--out", out)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stderr.split())
    assert "warning: 1 of 3 downloaded images are smaller than the originals img2dataset recorded" in text
    assert "000000000.jpg: 32x24 stored, 640x480 original" in text and "--resize_mode no" in text
    again = run_import("relaion", str(src), str(out))
    assert again.up_to_date and len(again.warnings) == 1 and again.warnings[0].startswith("1 of 3 ")
    kept = [{**d, "original_width": d.get("width"), "original_height": d.get("height")} for d in RELAION_DOWNLOADS]
    img2dataset_folder(tmp_path / "kept", kept)  # --resize_mode no: stored as downloaded
    assert run_import("relaion", str(tmp_path / "kept"), str(tmp_path / "k.parquet")).warnings == []


def test_relaion_from_img2dataset_output_alone(tmp_path):
    src = tmp_path / "relaion"
    img2dataset_folder(src, RELAION_DOWNLOADS)
    res = run_import("relaion", str(src), str(tmp_path / "t.parquet"))
    assert res.skipped == {"download_failed": 1, "image_missing": 1, "no_sidecar": 1}
    got = read_table(tmp_path / "t.parquet")
    assert [(os.path.basename(r["s3_path"]), r["caption"], r["intWidth"], r["intHeight"]) for r in got] == [
        ("000000000.jpg", "a red fox", 32, 24), ("000000001.jpg", "a blue whale", None, None),
        ("000000006.jpg", "not in the metadata", 8, 8)]


def test_relaion_metadata_without_downloads_says_what_to_do(tmp_path):
    src = tmp_path / "relaion"
    src.mkdir()
    pq.write_table(relaion_metadata("new"), src / "part-0.parquet")
    with pytest.raises(ImportError_, match="holds image URLs only.*img2dataset"):
        run_import("relaion", str(src), str(tmp_path / "t.parquet"))
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"link": ["x"], "alt": ["y"]}), bad / "x.parquet")
    expected = r"expected Re-LAION metadata: url, caption \(or the older URL, TEXT\).*link, alt"
    with pytest.raises(ImportError_, match=expected):
        run_import("relaion", str(bad), str(tmp_path / "t.parquet"))
    assert not (tmp_path / "t.parquet").exists()


# ------------------------------------------------------------------------------------- COYO

COYO_COLUMNS = ["id", "url", "text", "image_phash", "width", "height", "text_length", "word_count",
                "num_tokens_bert", "num_tokens_gpt", "num_faces", "clip_similarity_vitb32",
                "clip_similarity_vitl14", "nsfw_score_opennsfw2", "nsfw_score_gantman", "watermark_score",
                "aesthetic_score_laion_v2"]


def test_coyo_read_from_s3_images_in_place(cli, tmp_path, s3_bucket):
    client, bucket = s3_bucket
    src = tmp_path / "coyo"
    (src / "data").mkdir(parents=True)
    table = coyo_metadata([
        (1, "http://c/1.jpg", "a lighthouse at dusk", 1024, 768, 6.25),
        (2, "http://c/2.jpg", "a plain wall", 512, 512, 4.75),
        (3, "http://c/3.jpg", "never downloaded", 512, 512, 6.0),
        (4, "http://c/4.jpg", "  ", 512, 512, 6.0),
    ])
    assert table.column_names == COYO_COLUMNS
    pq.write_table(table, src / "data" / "part-00000-1a2b.snappy.parquet", compression="snappy")
    img2dataset_folder(src / "downloads", [
        {"key": "000000000", "url": "http://c/1.jpg", "caption": "a lighthouse at dusk", "status": "success",
         "width": 40, "height": 30, "image": (40, 30)},
        {"key": "000000001", "url": "http://c/2.jpg", "caption": "a plain wall", "status": "success",
         "width": 20, "height": 20, "image": (20, 20)},
        {"key": "000000003", "url": "http://c/4.jpg", "caption": "", "status": "success",
         "width": 20, "height": 20, "image": (20, 20)},
    ])
    uri = upload(client, bucket, src, "coyo")
    out = tmp_path / "coyo.parquet"
    report = import_json(cli, "coyo", uri, out)
    assert report["skipped"] == {"missing_caption": 1, "not_downloaded": 1}
    assert columns(out) == ["s3_path", "caption", "fltLaionAesthScore", "intHeight", "intWidth"]
    assert read_table(out) == [
        {"s3_path": f"{uri}/downloads/00000/000000000.jpg", "caption": "a lighthouse at dusk",
         "fltLaionAesthScore": 6.25, "intHeight": 30, "intWidth": 40},
        {"s3_path": f"{uri}/downloads/00000/000000001.jpg", "caption": "a plain wall",
         "fltLaionAesthScore": 4.75, "intHeight": 20, "intWidth": 20},
    ]
    [entry] = report["mixture_entries"]
    assert entry["aes_cutoff"] == 5.5 and entry["preprocess_fn"] == T2I
    [sample] = round_trip(tmp_path, [entry])["coyo"]  # 4.75 is under upstream's cutoff
    assert sample["conversations"][0]["value"] == human("a lighthouse at dusk")
    assert sample["image_gen"] == f"{uri}/downloads/00000/000000000.jpg"
    assert sample["gen_score"] == [6.25] and "hpsv2" not in sample  # upstream's one-element list


def test_coyo_images_copied_and_bad_metadata_refused(tmp_path):
    src = tmp_path / "coyo"
    src.mkdir()
    pq.write_table(coyo_metadata([(1, "http://c/1.jpg", "a boat", 64, 64, 7.0)]), src / "part-0.parquet")
    img2dataset_folder(src / "dl", [{"key": "000000000", "url": "http://c/1.jpg", "caption": "a boat",
                                     "status": "success", "width": 8, "height": 6, "image": (8, 6)}])
    res = run_import("coyo", str(src), str(tmp_path / "c.parquet"), images_to=str(tmp_path / "img"))
    [row] = read_table(tmp_path / "c.parquet")
    assert row["s3_path"] == str(tmp_path / "img" / "coyo" / "dl" / "00000" / "000000000.jpg")
    assert open(row["s3_path"], "rb").read() == (src / "dl" / "00000" / "000000000.jpg").read_bytes()
    assert res.images_written == 1
    pq.write_table(pa.table({"url": ["x"], "caption": ["y"]}), src / "part-1.parquet")  # not COYO's columns
    with pytest.raises(ImportError_, match="part-1.parquet: expected COYO-700M metadata"):
        run_import("coyo", str(src), str(tmp_path / "c2.parquet"))
