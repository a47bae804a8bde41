"""`grandf`, `refcoco` and `lmms-refcoco`: miniature native layouts imported through the CLI, read
back with exact LOC strings in both frames, and previewed through their converters."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavida_data.importers import run_import

from .helpers import (
    Unicode,
    image_bytes,
    import_json,
    lavida,
    py2_pickle,
    read_table,
    rect_mask,
    rle_compressed,
    rle_list,
    round_trip,
    save_image,
    table_meta,
)

GRANDF = "preproces_grandf"
REFCOCO = "preproces_refcoco_rec"
GRANDF_HUMAN = "<image>\n Generate a dense image caption with bounding boxes in LOC format."


def loc(*v: int) -> str:
    return "<LOC_BEGIN>" + "".join(f"<LOC_{x}>" for x in v) + "<LOC_END>"


def span(caption: str, phrase: str) -> list[int]:
    i = caption.index(phrase)
    return [i, i + len(phrase)]


def gp(phrase: str, *v: int) -> str:
    return f"<box_p> {phrase} </box_p>{loc(*v)}"


# ------------------------------------------------------------------------------------ GranD-f

HA_CAP = "A red car parked next to a tree."
PSG_CAP = "Two dogs play."
FLICKR_CAP = "A man rides a horse near two dogs."


def _grandf_source(root: Path, with_images: bool = True) -> Path:
    src = root / "GranD-f"
    src.mkdir(parents=True)
    if with_images:
        for name, (w, h) in {"sa_1.jpg": (200, 100), "000000000001.jpg": (120, 80),
                             "COCO_train2014_000000000009.jpg": (160, 120), "1000.jpg": (200, 150),
                             "1001.jpg": (50, 50)}.items():
            save_image(src / "images" / name, w, h)
    car = rle_compressed(rect_mask(100, 200, 20, 10, 120, 60))
    tree = [rle_list(rect_mask(100, 200, 150, 0, 190, 90)), rle_list(rect_mask(100, 200, 140, 50, 160, 100))]
    good = {"file_name": "sa_1.jpg", "caption": HA_CAP, "height": 100, "width": 200, "groundings": {
        "A red car": {"token_positives": span(HA_CAP, "A red car"), "rle_masks": [car]},
        "a tree": {"token_positives": span(HA_CAP, "a tree"), "rle_masks": tree}}}
    bad_rle = {"size": [100, 200], "counts": [5, 5]}
    ha = [
        good,
        {**good, "groundings": {"A red car": {"token_positives": [0, 9], "rle_masks": [bad_rle]}}},
        {**good, "groundings": {"A red car": {"token_positives": [10, 99], "rle_masks": [car]}}},
        {**good, "caption": ""},
        {**good, "groundings": {}},
        {**good, "file_name": "sa_404.jpg"},
        {**good, "groundings": {"A red car": {"token_positives": [0, 9],
                                              "rle_masks": [rle_list(rect_mask(50, 50, 1, 1, 5, 5))]}}},
    ]
    (src / "GranDf_HA_GCG_train.json").write_text(json.dumps(ha))
    dogs = rle_compressed(rect_mask(80, 120, 10, 20, 60, 70))
    psg = [{"file_name": "000000000001.jpg", "caption": PSG_CAP, "height": 80, "width": 120,
            "groundings": {"Two dogs": {"token_positives": [0, 8], "rle_masks": [dogs]}}},
           {"file_name": "000000000001.jpg", "caption": PSG_CAP, "height": 80, "width": 120,
            "groundings": {"Two dogs": {"token_positives": [0, 8], "rle_masks": [dogs]},
                           "dogs": {"token_positives": [4, 8], "rle_masks": [dogs]}}}]
    (src / "OpenPsgGCG_train.json").write_text(json.dumps(psg))
    man = {"sentence": "A man", "segmentation": [[10, 10, 50, 10, 50, 110, 10, 110]]}
    cup = {"sentence": "a cup.", "segmentation": [[60, 40, 80, 40, 80, 60], [70, 50, 90, 55, 75, 70]]}
    rec = {"img_file_name": "COCO_train2014_000000000009.jpg", "caption": '"A man holding a cup."', "refs": [man, cup]}
    (src / "RefCOCOg_GCG_train.json").write_text(json.dumps({  # a dict of keyed records
        "COCO_train2014_000000000009.jpg_0": rec,
        "COCO_train2014_000000000009.jpg_1": {
            **rec, "refs": [man, {"sentence": "a hat", "segmentation": [[1, 1, 2, 2, 3, 1]]}]},
        "COCO_train2014_000000000009.jpg_2": {**rec, "refs": [{"sentence": "A man", "segmentation": [[1, 2, 3]]}]},
    }))
    (src / "RefCOCOg_GCG_val.json").write_text(json.dumps([{"k": {**rec, "refs": [man]}}]))  # a list of {key: record}
    flickr = {
        "info": {"description": "flickr mergedGT"},
        "images": [{"id": 1, "file_name": "1000.jpg", "height": 150, "width": 200, "caption": FLICKR_CAP},
                   {"id": 2, "file_name": "1001.jpg", "height": 50, "width": 50, "caption": "Nothing here."},
                   {"id": 3, "file_name": "1000.jpg", "height": 150, "width": 200, "caption": "A man."}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [10, 20, 50, 100], "tokens_positive": [span(FLICKR_CAP, "A man")],
             "sam_mask": rle_compressed(rect_mask(150, 200, 10, 20, 60, 120))},
            {"id": 2, "image_id": 1, "bbox": [100, 50, 60, 60], "tokens_positive": [span(FLICKR_CAP, "a horse")]},
            {"id": 3, "image_id": 1, "bbox": [160, 100, 20, 30], "tokens_positive": [span(FLICKR_CAP, "two dogs")]},
            {"id": 4, "image_id": 1, "bbox": [130, 110, 30, 30], "tokens_positive": [span(FLICKR_CAP, "two dogs")]},
            {"id": 5, "image_id": 3, "bbox": [150, 10, 200, 20], "tokens_positive": [[0, 5]]},
            {"id": 6, "image_id": 99, "bbox": [1, 1, 2, 2], "tokens_positive": [[0, 1]]},
        ],
        "categories": [],
    }
    (src / "flickr_mergedGT_GCG_train.json").write_text(json.dumps(flickr))
    return src


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


def _refer_source(root: Path, py2: bool = True, with_images: bool = True) -> Path:
    data = root / "refer" / "data"
    ds = data / "refcoco"
    ds.mkdir(parents=True)
    if with_images:
        train2014 = data / "images" / "mscoco" / "images" / "train2014"
        save_image(train2014 / "COCO_train2014_000000000009.jpg", 160, 120)
        save_image(train2014 / "COCO_train2014_000000000025.jpg", 100, 200)

    def sent(s: str, i: int) -> dict:
        return {"tokens": s.split(), "raw": s.title(), "sent_id": i, "sent": s}

    refs = [
        {"ref_id": 0, "ann_id": 101, "image_id": 9, "split": "train", "category_id": 1,
         "file_name": "COCO_train2014_000000000009_101.jpg", "sent_ids": [0, 1],
         "sentences": [sent("man on left", 0), sent("the  guy", 1)]},
        {"ref_id": 1, "ann_id": 102, "image_id": 25, "split": "train",
         "sentences": [sent("tall thing", 2), sent("  ", 3)]},
        {"ref_id": 2, "ann_id": 104, "image_id": 25, "split": "val", "sentences": [sent("val only", 4)]},
        {"ref_id": 3, "ann_id": 999, "image_id": 9, "split": "train", "sentences": [sent("lost", 5)]},
        {"ref_id": 4, "ann_id": 103, "image_id": 9, "split": "train", "sentences": [sent("outside", 6)]},
        "garbage",
        {"ref_id": 6, "ann_id": 101, "image_id": 9, "split": "testA", "sentences": [sent("test only", 7)]},
    ]
    if py2:
        refs[1]["sentences"][0]["sent"] = Unicode("tall thing")
        (ds / "refs(unc).p").write_bytes(py2_pickle(refs))
    else:
        (ds / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (ds / "refs(google).p").write_bytes(py2_pickle([]))  # unc is preferred
    (ds / "instances.json").write_text(json.dumps({
        "info": {}, "licenses": [],
        "images": [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 160, "height": 120},
                   {"id": 25, "file_name": "COCO_train2014_000000000025.jpg", "width": 100, "height": 200},
                   {"id": 77, "file_name": "COCO_train2014_000000000077.jpg", "width": 10, "height": 10}],
        "annotations": [
            {"id": 101, "image_id": 9, "bbox": [10, 20, 60, 40], "segmentation": [[10, 20, 70, 20, 70, 60]],
             "area": 2400, "iscrowd": 0, "category_id": 1},
            {"id": 102, "image_id": 25, "bbox": [0, 50, 100, 100], "category_id": 2},
            {"id": 103, "image_id": 9, "bbox": [150, 100, 30, 30], "category_id": 1},
            {"id": 104, "image_id": 25, "bbox": [1, 1, 5, 5], "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "giraffe"}],
    }))
    return ds


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


def _lmms_file(path: Path, rows: list[dict]) -> None:
    schema = pa.schema([
        ("question_id", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("question", pa.string()), ("answer", pa.list_(pa.string())), ("segmentation", pa.list_(pa.float32())),
        ("bbox", pa.list_(pa.float32())), ("iscrowd", pa.int64()), ("file_name", pa.string())])
    full = [{"question": "Please carefully observe the area circled in the image and come up with a caption.",
             "segmentation": [1.0, 2.0, 3.0], "iscrowd": 0, "file_name": None, **r} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(full, schema=schema), path, row_group_size=3)


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
