"""`grandf`, `refcoco` and `lmms-refcoco`: miniature native layouts imported through the CLI, read
back with exact LOC strings in both frames, and previewed through their converters."""

from __future__ import annotations

import json
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavida_data.importers import run_import

from .helpers import image_bytes, import_json, lavida, read_table, round_trip, table_meta
from .layouts import _grandf_source, _lmms_file, _refer_source

GRANDF = "preproces_grandf"
REFCOCO = "preproces_refcoco_rec"
GRANDF_HUMAN = "<image>\n Generate a dense image caption with bounding boxes in LOC format."


def loc(*v: int) -> str:
    return "<LOC_BEGIN>" + "".join(f"<LOC_{x}>" for x in v) + "<LOC_END>"


def gp(phrase: str, *v: int) -> str:
    return f"<box_p> {phrase} </box_p>{loc(*v)}"


# ------------------------------------------------------------------------------------ GranD-f

GRANDF_SKIPPED = {"bad_polygon": 1, "bad_rle": 1, "box_outside_image": 1, "mask_size_mismatch": 1,
                  "missing_caption": 1, "missing_image": 1, "no_groundings": 2, "overlapping_spans": 1,
                  "phrase_not_in_caption": 1, "span_outside_caption": 1, "unknown_image": 1}


def _grandf_expected(images: str) -> dict[str, list[tuple[str, str]]]:
    """(s3_path, loc_caption) per frame, in file name order (HA, OpenPsg, RefCOCOg train, val, flickr)."""
    man_r = "<box_p> A man </box_p>"
    return {
        "padded-square": [
            (f"{images}/sa_1.jpg", f"{gp('A red car', 102, 307, 614, 563)} parked next to "
                                   f"{gp('a tree', 717, 256, 973, 768)}."),
            (f"{images}/000000000001.jpg", f"{gp('Two dogs', 85, 341, 512, 768)} play."),
            (f"{images}/COCO_train2014_000000000009.jpg",
             f"{man_r}{loc(64, 192, 320, 832)} holding {gp('a cup', 384, 384, 576, 576)}."),
            (f"{images}/COCO_train2014_000000000009.jpg", f"{man_r}{loc(64, 192, 320, 832)} holding a cup."),
            (f"{images}/1000.jpg", f"{gp('A man', 51, 230, 307, 742)} rides {gp('a horse', 512, 384, 819, 691)} "
                                   f"near {gp('two dogs', 666, 640, 922, 845)}."),
        ],
        "per-axis": [
            (f"{images}/sa_1.jpg", f"{gp('A red car', 102, 102, 614, 614)} parked next to "
                                   f"{gp('a tree', 717, 0, 973, 1024)}."),
            (f"{images}/000000000001.jpg", f"{gp('Two dogs', 85, 256, 512, 896)} play."),
            (f"{images}/COCO_train2014_000000000009.jpg",
             f"{man_r}{loc(64, 85, 320, 939)} holding {gp('a cup', 384, 341, 576, 597)}."),
            (f"{images}/COCO_train2014_000000000009.jpg", f"{man_r}{loc(64, 85, 320, 939)} holding a cup."),
            (f"{images}/1000.jpg", f"{gp('A man', 51, 137, 307, 819)} rides {gp('a horse', 512, 341, 819, 751)} "
                                   f"near {gp('two dogs', 666, 683, 922, 956)}."),
        ],
    }


def test_grandf_all_three_formats_both_frames(tmp_path, cli):
    src = _grandf_source(tmp_path)
    images = str(src / "images")
    expected = _grandf_expected(images)
    out = tmp_path / "grandf.parquet"
    res = import_json(cli, "grandf", src, out)
    assert res["skipped"] == GRANDF_SKIPPED
    assert res["rows"] == 5
    assert [(r["s3_path"], r["loc_caption"]) for r in read_table(out)] == expected["padded-square"]
    assert table_meta(out)["frame"] == "padded-square"
    assert "sa_404.jpg" in res["skipped_examples"]["missing_image"]
    [entry] = res["mixture_entries"]
    assert entry == {"name": "grandf", "path": str(out), "preprocess_fn": GRANDF, "length_group": "grounding"}

    [samples] = round_trip(tmp_path, [entry]).values()
    assert [(s["image"], s["conversations"]) for s in samples] == [
        (path, [{"from": "human", "value": GRANDF_HUMAN}, {"from": "gpt", "value": cap}])
        for path, cap in expected["padded-square"]]

    out2 = tmp_path / "grandf-per-axis.parquet"
    res2 = import_json(None, "grandf", src, out2, "--frame", "per-axis")
    assert res2["skipped"] == GRANDF_SKIPPED
    assert [(r["s3_path"], r["loc_caption"]) for r in read_table(out2)] == expected["per-axis"]
    assert table_meta(out2)["frame"] == "per-axis"
    assert import_json(None, "grandf", src, out2, "--frame", "per-axis")["up_to_date"]
    assert not import_json(None, "grandf", src, out2)["up_to_date"]  # another frame: imported again


def test_grandf_without_images_folder_writes_relative_names(tmp_path):
    src = _grandf_source(tmp_path, with_images=False)
    out = tmp_path / "ha.parquet"
    res = run_import("grandf", str(src / "GranDf_HA_GCG_train.json"), str(out))
    # no images folder: nothing to check a file against, so the record naming sa_404.jpg is kept
    assert res.skipped == {"bad_rle": 1, "mask_size_mismatch": 1, "missing_caption": 1, "no_groundings": 1,
                           "span_outside_caption": 1}
    rows = read_table(out)
    assert [r["s3_path"] for r in rows] == ["sa_1.jpg", "sa_404.jpg"]
    [samples] = round_trip(tmp_path, res.entries, image_root="/data/sa1b").values()
    assert [s["image"] for s in samples] == ["/data/sa1b/sa_1.jpg", "/data/sa1b/sa_404.jpg"]
    # RefCOCOg records carry no size: without the image it cannot be known
    res = run_import("grandf", str(src / "RefCOCOg_GCG_val.json"), str(tmp_path / "r.parquet"))
    assert res.skipped == {"unknown_image_size": 1} and res.tables["main"]["rows"] == 0


def test_grandf_refuses_images_to_and_unknown_layouts(tmp_path):
    src = _grandf_source(tmp_path, with_images=False)
    rc, _, err = lavida("import", "grandf", src, "--out", tmp_path / "g.parquet", "--images-to", tmp_path / "i")
    assert rc == 2 and "--images-to is not used" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.json").write_text(json.dumps([{"hello": 1}, 3]))
    res = run_import("grandf", str(tmp_path / "other"), str(tmp_path / "o.parquet"))
    assert res.skipped == {"unknown_record": 2}
    assert "expected a GranD-f record" in res.examples["unknown_record"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.json").write_text('[{"file_name": "a.jpg"}, {"caption": ')
    with pytest.raises(ValueError, match="invalid JSON"):
        run_import("grandf", str(tmp_path / "broken"), str(tmp_path / "b.parquet"))
    assert not (tmp_path / "b.parquet").exists()


# ------------------------------------------------------------------------------------ RefCOCO


REFCOCO_SKIPPED = {"bad_ref": 1, "box_outside_image": 1, "empty_sentence": 1, "missing_annotation": 1}


@pytest.mark.parametrize("py2", [True, False], ids=["py2-pickle", "py3-protocol2"])
def test_refcoco_refer_toolkit_both_frames(tmp_path, cli, py2):
    ds = _refer_source(tmp_path, py2=py2)
    train2014 = str((ds / ".." / "images" / "mscoco" / "images" / "train2014").resolve())
    im9, im25 = f"{train2014}/COCO_train2014_000000000009.jpg", f"{train2014}/COCO_train2014_000000000025.jpg"
    out = tmp_path / "refcoco.parquet"
    res = import_json(cli if py2 else None, "refcoco", ds, out)
    assert res["skipped"] == REFCOCO_SKIPPED and res["rows"] == 3
    rows = read_table(out)
    assert rows == [
        {"s3_path": im9, "label": "man on left", "loc_string": loc(64, 256, 448, 512)},
        {"s3_path": im9, "label": "the guy", "loc_string": loc(64, 256, 448, 512)},
        {"s3_path": im25, "label": "tall thing", "loc_string": loc(256, 256, 768, 768)},
    ]
    [entry] = res["mixture_entries"]
    assert entry == {"name": "refcoco", "path": str(out), "preprocess_fn": REFCOCO, "length_group": "grounding"}
    [samples] = round_trip(tmp_path, [entry]).values()
    assert samples[0]["image"] == im9
    assert samples[0]["conversations"] == [
        {"from": "human",
         "value": "<image>\n Please locate man on left in this image. Give bounding boxes in LOC format."},
        {"from": "gpt", "value": loc(64, 256, 448, 512)}]
    assert import_json(None, "refcoco", ds, out)["up_to_date"]

    res = run_import("refcoco", str(ds / "refs(unc).p"), str(tmp_path / "pa.parquet"), frame="per-axis")
    assert [r["loc_string"] for r in read_table(tmp_path / "pa.parquet")] == [
        loc(64, 171, 448, 512), loc(64, 171, 448, 512), loc(0, 256, 1024, 768)]


def test_refcocog_umd_from_s3_with_relative_image_names(tmp_path, s3_bucket):
    client, bucket = s3_bucket
    ds = _refer_source(tmp_path, with_images=False)
    (ds / "refs(unc).p").rename(ds / "refs(umd).p")
    for p in ds.iterdir():
        client.upload_file(str(p), bucket, f"refer/refcocog/{p.name}")
    out = f"s3://{bucket}/tables/refcocog.parquet"
    res = run_import("refcoco", f"s3://{bucket}/refer/refcocog", out)
    assert res.skipped == REFCOCO_SKIPPED
    rows = read_table(out)
    assert [r["s3_path"] for r in rows] == ["COCO_train2014_000000000009.jpg"] * 2 + ["COCO_train2014_000000000025.jpg"]
    [samples] = round_trip(tmp_path, res.entries, image_root="s3://coco/train2014").values()
    assert samples[2]["image"] == "s3://coco/train2014/COCO_train2014_000000000025.jpg"
    assert run_import("refcoco", f"s3://{bucket}/refer/refcocog", out).up_to_date


def test_refcoco_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"refs\(unc\)\.p"):
        run_import("refcoco", str(tmp_path / "empty"), str(tmp_path / "x.parquet"))
    ds = _refer_source(tmp_path, with_images=False)
    (ds / "instances.json").unlink()
    with pytest.raises(ValueError, match="instances.json"):
        run_import("refcoco", str(ds), str(tmp_path / "x.parquet"))
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    (ds / "instances.json").write_text(json.dumps({"images": [], "annotations": []}))
    (ds / "refs(unc).p").write_bytes(pickle.dumps([Exploit()], protocol=2))
    rc, _, err = lavida("import", "refcoco", ds, "--out", tmp_path / "x.parquet")
    assert rc == 2 and "refused to load global" in err and "refs(unc).p" in err
    assert not marker.exists() and not (tmp_path / "x.parquet").exists()


# ------------------------------------------------------------------------------- lmms RefCOCO


def test_lmms_refcoco_images_to_s3(tmp_path, cli, s3_bucket):
    client, bucket = s3_bucket
    car = image_bytes(200, 100)
    small = image_bytes(50, 50, "PNG")
    coco9 = "COCO_train2014_000000000009.jpg"
    _lmms_file(tmp_path / "RefCOCO" / "data" / "val-00000-of-00001.parquet", [
        {"question_id": "q0", "image": {"bytes": car, "path": None}, "answer": ["the red car", "car on left"],
         "bbox": [20, 10, 100, 50], "file_name": coco9},
        {"question_id": "q1", "image": {"bytes": car, "path": None}, "answer": ["everything"],
         "bbox": [0, 0, 200, 100], "file_name": coco9},
        {"question_id": "q2", "image": {"bytes": small, "path": None}, "answer": ["corner"], "bbox": [0, 0, 25, 25]},
        {"question_id": "bad0", "image": {"bytes": None, "path": None}, "answer": ["x"], "bbox": [0, 0, 1, 1]},
        {"question_id": "bad1", "image": {"bytes": b"not an image", "path": None}, "answer": ["x"],
         "bbox": [0, 0, 1, 1]},
        {"question_id": "bad2", "image": {"bytes": car, "path": None}, "answer": ["x"], "bbox": [190, 0, 50, 50],
         "file_name": "COCO_train2014_000000000777.jpg"},
        {"question_id": "bad3", "image": {"bytes": car, "path": None}, "answer": [], "bbox": [0, 0, 5, 5],
         "file_name": "COCO_train2014_000000000778.jpg"},
    ])
    _lmms_file(tmp_path / "RefCOCO" / "data" / "testA-00000-of-00001.parquet", [
        {"question_id": "q3", "image": {"bytes": car, "path": None}, "answer": ["car"], "bbox": [20, 10, 100, 50],
         "file_name": coco9}])
    imgs = f"s3://{bucket}/images"
    out = tmp_path / "lmms.parquet"
    res = import_json(cli, "lmms-refcoco", tmp_path / "RefCOCO", out, "--images-to", imgs)
    assert res["skipped"] == {"bad_image": 1, "box_outside_image": 1, "missing_image": 1, "no_answer": 1}
    assert res["images_written"] == 2
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="images/")["Contents"])
    assert keys == [f"images/lmms-refcoco/{coco9}", "images/lmms-refcoco/q2.jpg"]
    got = client.get_object(Bucket=bucket, Key=f"images/lmms-refcoco/{coco9}")["Body"].read()
    assert got == car
    p9, p2 = f"{imgs}/lmms-refcoco/{coco9}", f"{imgs}/lmms-refcoco/q2.jpg"
    car_box = loc(102, 307, 614, 563)
    assert read_table(out) == [  # files in name order: testA, then val
        {"s3_path": p9, "label": "car", "loc_string": car_box},
        {"s3_path": p9, "label": "the red car", "loc_string": car_box},
        {"s3_path": p9, "label": "car on left", "loc_string": car_box},
        {"s3_path": p9, "label": "everything", "loc_string": loc(0, 256, 1024, 768)},
        {"s3_path": p2, "label": "corner", "loc_string": loc(0, 0, 512, 512)},
    ]
    [samples] = round_trip(tmp_path, res["mixture_entries"]).values()
    assert samples[1]["image"] == p9 and samples[1]["conversations"][1]["value"] == car_box
    assert "locate the red car in" in samples[1]["conversations"][0]["value"]
    again = import_json(None, "lmms-refcoco", tmp_path / "RefCOCO", out, "--images-to", imgs)
    assert again["up_to_date"] and again["rows"] == 5

    res = run_import("lmms-refcoco", str(tmp_path / "RefCOCO"), str(tmp_path / "pa.parquet"), images_to=imgs,
                     frame="per-axis")
    assert res.images_written == 0 and res.images_reused >= 2  # the stable keys are found again
    assert [r["loc_string"] for r in read_table(tmp_path / "pa.parquet")][:1] == [loc(102, 102, 614, 614)]


def test_lmms_refcoco_needs_images_to_and_its_columns(tmp_path):
    _lmms_file(tmp_path / "a.parquet", [{"question_id": "q", "image": {"bytes": image_bytes(4, 4), "path": None},
                                         "answer": ["x"], "bbox": [0, 0, 1, 1]}])
    rc, _, err = lavida("import", "lmms-refcoco", tmp_path / "a.parquet", "--out", tmp_path / "o.parquet")
    assert rc == 2 and "--images-to" in err
    pq.write_table(pa.table({"question_id": ["q"], "answer": [["x"]]}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="lacks column"):
        run_import("lmms-refcoco", str(tmp_path / "b.parquet"), str(tmp_path / "o.parquet"),
                   images_to=str(tmp_path / "i"))
