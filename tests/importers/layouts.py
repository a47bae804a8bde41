"""A miniature copy of each import KIND's release as published (one builder or more per KIND),
with the anomalies its importer must count; shared by the KIND's own tests and
test_s3_every_kind."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lavida_data.convert.builtin.common import REFLECTION_HUMAN

from .helpers import (image_bytes, png, write, save_image, write_tar, split, write_zip, rle_list, rle_compressed, rect_mask, Unicode, py2_pickle)


# ------------------------------------------------------------------- miniature native layouts
# One builder (or more) per import KIND: a tiny copy of the release as published, with the
# anomalies its importer must count; shared by the KIND's own tests and test_s3_every_kind.


# ---------------------------------------------------------------- img2dataset (coyo, relaion)


def img2dataset_folder(root, samples: list[dict]) -> None:
    """img2dataset ``--output_format files``: ``00000/<key>.jpg`` + ``<key>.json`` (+ the
    per-shard parquet and stats file it writes beside them). A sample: {key, url, caption,
    status, width, height, image: (w, h) or None, json: False to leave the sidecar out, ...}."""
    shard = root / "00000"
    table = []
    for s in samples:
        s = dict(s)
        img = s.pop("image", None)
        with_json = s.pop("json", True)
        if img is not None:
            write(shard / f"{s['key']}.jpg", image_bytes(*img))
            write(shard / f"{s['key']}.txt", s.get("caption") or "")
        if with_json:
            write(shard / f"{s['key']}.json", json.dumps(s))
        table.append({"key": s["key"], "url": s["url"], "status": s.get("status", "success")})
    pq.write_table(pa.Table.from_pylist(table), root / "00000.parquet")
    write(root / "00000_stats.json", json.dumps({"count": len(samples), "successes": 3}))


RELAION_DOWNLOADS = [
    # stored image resized: the sidecar's size is the stored one
    {"key": "000000000", "url": "http://a/0.jpg", "caption": "a red fox", "status": "success",
     "width": 32, "height": 24, "original_width": 640, "original_height": 480, "image": (32, 24)},
    # no size in the sidecar: the metadata's
    {"key": "000000001", "url": "http://a/1.jpg", "caption": "a blue whale", "status": "success", "image": (16, 12)},
    {"key": "000000002", "url": "http://a/2.jpg", "caption": "failed", "status": "failed_to_download",
     "error_message": "404", "width": None, "height": None},
    {"key": "000000006", "url": "http://a/extra.jpg", "caption": "not in the metadata", "status": "success",
     "width": 8, "height": 8, "image": (8, 8)},
    {"key": "000000007", "url": "http://a/7.jpg", "caption": "lost image", "status": "success",
     "width": 8, "height": 8},  # success, but its jpg is gone
    {"key": "000000008", "url": "http://a/8.jpg", "caption": "no sidecar", "image": (8, 8), "json": False},
]


def relaion_metadata(style: str) -> pa.Table:
    url, cap, w, h = ("url", "caption", "width", "height") if style == "new" else ("URL", "TEXT", "WIDTH", "HEIGHT")
    data = [
        ("http://a/0.jpg", "a red fox", 640, 480),
        ("http://a/1.jpg", "a blue whale", 800, 600),
        ("http://a/2.jpg", "failed", 100, 100),
        ("http://a/3.jpg", None, 100, 100),
        (None, "no url", 100, 100),
        ("http://a/5.jpg", "never fetched", 100, 100),
    ]
    cols = {url: [d[0] for d in data], cap: [d[1] for d in data], w: [d[2] for d in data],
            h: [d[3] for d in data], ("similarity" if style == "new" else "similarity"): [0.3] * len(data),
            ("punsafe" if style == "new" else "punsafe"): [0.01] * len(data)}
    if style == "old":
        cols["hash"] = [1] * len(data)
        cols["pwatermark"] = [0.1] * len(data)
    return pa.table(cols)


def coyo_metadata(rows_: list[tuple]) -> pa.Table:
    """COYO-700M's real column set; ``rows_``: (id, url, text, width, height, aesthetic)."""
    n = len(rows_)
    return pa.table({
        "id": pa.array([r[0] for r in rows_], pa.int64()), "url": [r[1] for r in rows_],
        "text": [r[2] for r in rows_], "image_phash": ["ffee"] * n,
        "width": pa.array([r[3] for r in rows_], pa.int64()), "height": pa.array([r[4] for r in rows_], pa.int64()),
        "text_length": pa.array([10] * n, pa.int64()), "word_count": pa.array([2] * n, pa.int64()),
        "num_tokens_bert": pa.array([3] * n, pa.int64()), "num_tokens_gpt": pa.array([3] * n, pa.int64()),
        "num_faces": pa.array([0] * n, pa.int64()), "clip_similarity_vitb32": [0.3] * n,
        "clip_similarity_vitl14": [0.3] * n, "nsfw_score_opennsfw2": [0.01] * n,
        "nsfw_score_gantman": [0.02] * n, "watermark_score": [0.1] * n,
        "aesthetic_score_laion_v2": pa.array([r[5] for r in rows_], pa.float64()),
    })


# ------------------------------------------------------------------------------------- BLIP3o


def blip3o_release(root):
    dalle = [
        ("00000/a1.jpg", image_bytes(40, 30)), ("00000/a1.txt", b"a cat in a teacup"),
        ("00000/a1.json", b'{"key": "a1"}'),
        ("00000/a2.png", png(20, 50)), ("00000/a2.txt", "a dog \u00e9t\u00e9 ".encode()),
        ("00000/a3.jpg", image_bytes(8, 8)),  # no caption
        ("00000/a4.txt", b"a caption without image"),
        ("00000/a5.jpg", b"not an image"), ("00000/a5.txt", b"corrupt"),
        ("00000/a6.jpg", image_bytes(8, 8)), ("00000/a6.txt", b"   "),
        ("../evil.jpg", image_bytes(8, 8)), ("../evil.txt", b"outside the release"),
    ]
    write_tar(root / "dalle3" / "00000.tar", dalle)
    gz = write_tar(root / "geneval_train" / "00000.tar.gz",
                   [("g1.jpg", image_bytes(12, 16)), ("g1.txt", b"two red balls")], gz=True)
    split(gz, 3)


# -------------------------------------------------------------------------------- Reflect-DiT


REFLECT_CSV = """prompt,positive_filename,negative_filename,negative_reason
a cat on a mat,p1.png,n1a.pngXXXn1b.png,"the cat is blue; should be orangeXXXno mat"
two dogs,p2.png,n2a.pngXXXn2b.png,only one dog
,p9.png,,
a red car,p3.png,n3a.pngXXXn1b.png,wrong colorXXXno car
three birds,p4a.pngXXXp4b.png,,
ghost,p_missing.png,,
"""

REFLECT_JUDGE = [
    {"id": "j4", "image": ["p1.png"], "conversations": [
        {"from": "human", "value": "<image>\n" + REFLECTION_HUMAN[len("<image>\n"):].format(prompt="a cat on a mat")},
        {"from": "gpt", "value": "The cat is blue."},
        {"from": "human", "value": "Please evaluate this generated image based on the following prompt: a mat "
                                   "Focus on text alignment and compositionality."},
        {"from": "gpt", "value": "There is a mat."}]},
    {"id": "j1", "image": "generations/j1.png", "conversations": [
        {"from": "human", "value": REFLECTION_HUMAN.format(prompt="a cat on a mat")},
        {"from": "gpt", "value": "The image matches the prompt."}]},
    {"id": "j2", "image": "p2.png", "conversations": [{"from": "human", "value": "<image>\nWhat is this?"},
                                                      {"from": "gpt", "value": "dogs"}]},
    {"id": "j3", "image": "missing.png", "conversations": [
        {"from": "human", "value": REFLECTION_HUMAN.format(prompt="x")}, {"from": "gpt", "value": "no"}]},
    17,
]

REFLECT_GENERATIONS = {"p1.png": (48, 32), "n1a.png": (8, 8), "n1b.png": (8, 8), "j1.png": (8, 8),
                       "p2.png": (16, 16), "n2a.png": (8, 8), "n2b.png": (8, 8), "p3.png": (24, 24),
                       "p4a.png": (10, 20), "p4b.png": (20, 10)}


def reflect_dit_release(root, packed: bool = True) -> None:
    """Reflect-DiT: the CSV, the LLaVA judge set and the generations (a tar, or the folder it unpacks to)."""
    write(root / "reflect_dit_train.csv", REFLECT_CSV)
    write(root / "judge" / "reflection_llava.json", json.dumps(REFLECT_JUDGE))
    members = [(f"generations/{n}", png(*wh)) for n, wh in REFLECT_GENERATIONS.items()]
    if packed:
        write_tar(root / "generations.tar", members)
    else:
        for name, data in members:
            write(root / name, data)


# ------------------------------------------------------------------------------------ Echo-4o


def echo_release(root):
    sur = root / "Surrel-Fantasy-Image"
    lines = [
        {"task_type": "t2i", "instruction": "a floating castle",
         "output_image": "/Echo-4o-Image/Surrel-Fantasy-Image/images/00000.jpg", "type": "T1"},
        {"task_type": "t2i", "instruction": "a glass whale",
         "output_image": "/Echo-4o-Image/Surrel-Fantasy-Image/images/00001.jpg", "type": "T2"},
        {"task_type": "t2i", "instruction": "never packed",
         "output_image": "/Echo-4o-Image/Surrel-Fantasy-Image/images/00007.jpg", "type": "T1"},
        {"task_type": "t2i", "output_image": "/Echo-4o-Image/Surrel-Fantasy-Image/images/00001.jpg"},
    ]
    write(sur / "Surrel-Fantasy-Image.jsonl",
          "\n".join(json.dumps(x) for x in lines[:2]) + "\n{not json\n" + "\n".join(json.dumps(x) for x in lines[2:]))
    write_tar(sur / "images" / "0-1.tar.gz", [("00000.jpg", image_bytes(40, 20))], gz=True)
    gz = write_tar(sur / "images" / "1-2.tar.gz", [("images/00001.jpg", image_bytes(30, 60))], gz=True)
    split(gz, 2)
    ins = root / "Instruction-Following-Image"  # the same file names in another subset
    write(ins / "Instruction-Following-Image.jsonl", json.dumps(
        {"task_type": "t2i", "instruction": "three red apples",
         "output_image": "/Echo-4o-Image/Instruction-Following-Image/images/00000.jpg", "type": "T1"}) + "\n")
    write_tar(ins / "images" / "0-5000.tar.gz", [("00000.jpg", image_bytes(16, 16))], gz=True)
    mr = root / "Multi-Reference-Image"
    recs = [
        {"task_type": "multi_reference", "instruction": "the cat of image 1 on the sofa of image 2",
         "input_images": ["/Echo-4o-Image/Multi-Reference-Image/images/00000_0.jpg",
                          "/Echo-4o-Image/Multi-Reference-Image/images/00000_1.jpg"],
         "output_image": "/Echo-4o-Image/Multi-Reference-Image/images/00000.jpg"},
        {"task_type": "multi_reference", "instruction": "the hat on the dog",
         "input_image": "/Echo-4o-Image/Multi-Reference-Image/images/00001_0.jpg",
         "output_image": "/Echo-4o-Image/Multi-Reference-Image/images/00001.jpg"},
    ]
    write(mr / "Multi-Reference-Image.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n")
    write_tar(mr / "images" / "0-5000.tar.gz", [(n, image_bytes(8, 8)) for n in
                                                 ("00000_0.jpg", "00000_1.jpg", "00000.jpg", "00001_0.jpg",
                                                  "00001.jpg")], gz=True)


# -------------------------------------------------------------------------------- ShareGPT-4o


SHAREGPT_T2I_RECORDS = [
    {"input_prompt": "a watercolor fox", "output_image": "output_image/t0.png"},
    {"input_prompt": "", "output_image": "output_image/t1.png"},
    42,
    {"input_prompt": "lost", "output_image": "output_image/none.png"},
    {"input_prompt": "a neon sign", "output_image": "./output_image/t2.png"},
]
SHAREGPT_EDIT_RECORDS = [
    {"input_prompt": "make it night", "input_image": ["input_image/e0_a.png"], "output_image": "output_image/e0.png"},
    {"input_prompt": "put both in one room", "input_image": ["input_image/e1_a.png", "input_image/e1_b.png"],
     "output_image": "output_image/e1.png"},
    {"input_prompt": "x", "input_image": 5, "output_image": "output_image/e0.png"},
    {"input_prompt": "no target", "input_image": ["input_image/e0_a.png"]},
]
SHAREGPT_IMAGES = {"output_image/t0.png": (30, 20), "output_image/t2.png": (12, 34), "output_image/e0.png": (8, 8),
                   "output_image/e1.png": (8, 8), "input_image/e0_a.png": (8, 8), "input_image/e1_a.png": (8, 8),
                   "input_image/e1_b.png": (8, 8), "output_image/unused.png": (8, 8)}


def sharegpt_release(root, packing: str) -> None:
    write(root / "text_to_image.json", json.dumps(SHAREGPT_T2I_RECORDS, indent=1))
    write(root / "image_editing.json", json.dumps(SHAREGPT_EDIT_RECORDS))
    members = [(name, png(*wh)) for name, wh in SHAREGPT_IMAGES.items()]
    if packing == "split-tar":  # one gzip tar, published in parts
        split(write_tar(root / "images.tar.gz", members, gz=True), 2)
    elif packing == "zip":  # one zip per folder, named after it, members without the folder
        for folder in ("output_image", "input_image"):
            write_zip(root / f"{folder}.zip", [(n.split("/", 1)[1], d) for n, d in members if n.startswith(folder)])
    elif packing == "nested-tar":  # a tar unpacking to the release folder
        write_tar(root / "ShareGPT-4o-Image.tar", [(f"ShareGPT-4o-Image/{n}", d) for n, d in members])
    else:  # unpacked
        for name, data in members:
            write(root / name, data)


# ----------------------------------------------------------------------------- GPT-Image-Edit


def gpt_edit_release(root) -> None:
    hq = "gpt-edit/hqedit"
    hq_meta = [
        {"id": 1, "dataset_source": "hqedit", "task": "edit", "input": "input/00001.png", "output": "output/00001.png",
         "instruction": "make the sky pink", "instruction_type": "original", "input_description": "a beach"},
        {"id": 2, "dataset_source": "hqedit", "task": "edit", "input": "input/00002.png", "output": "output/00002.png",
         "instruction": "Turn the pink sky into a starry night.", "instruction_type": "rewrite",
         "input_description": "a beach"},
        {"id": 3, "dataset_source": "hqedit", "task": "edit", "input": "input/00003.png", "output": "output/00003.png",
         "instruction": "gone", "instruction_type": "complex", "input_description": ""},
        {"id": 4, "dataset_source": "hqedit", "task": "edit", "input": "input/00001.png", "output": "output/00001.png",
         "instruction": "", "instruction_type": "original", "input_description": ""},
    ]
    members = [(f"{hq}/edit/{role}/{i:05d}.png", png(8, 8)) for i in (1, 2) for role in ("input", "output")]
    members.append((f"{hq}/edit/input/00099.png", png(8, 8)))  # no record names it
    members.append((f"{hq}/metadata/hqedit_edit.json", json.dumps(hq_meta).encode()))  # after its images
    split(write_tar(root / "gpt-edit" / "hqedit.tar.gz", members, gz=True), 3)
    omni = "gpt-edit/omniedit"
    omni_meta = [
        {"id": "5", "dataset_source": "omniedit", "task": "addition", "input": "input/5.png", "output": "output/5.png",
         "instruction": "add a red balloon", "instruction_type": "original", "input_description": "a park",
         "instruction_original": "Add a balloon"},
        # no task: the metadata file's name gives it
        {"id": "6", "dataset_source": "omniedit", "input": "input/6.png", "output": "output/6.png",
         "instruction": "add a small boat", "instruction_type": "complex", "input_description": "a lake",
         "instruction_original": "Add boat"},
        {"id": "7", "dataset_source": "omniedit", "task": "addition", "output": "output/7.png",
         "instruction": "no input"},
    ]
    write_tar(root / "gpt-edit" / "omniedit.tar",  # metadata first this time
              [(f"{omni}/metadata/omniedit_addition.json", json.dumps(omni_meta).encode())]
              + [(f"{omni}/addition/{role}/{i}.png", png(8, 8)) for i in (5, 6) for role in ("input", "output")])
    # UltraEdit already unpacked, its metadata beside the images
    ultra = root / "gpt-edit" / "ultraedit"
    for role in ("input", "output"):
        write(ultra / "edit" / role / "7.png", png(8, 8))
    write(ultra / "metadata" / "ultraedit_edit.jsonl", json.dumps(
        {"id": 7, "dataset_source": "ultraedit", "task": "edit", "input": "input/7.png", "output": "output/7.png",
         "instruction": "remove the car", "instruction_type": "original", "input_description": "a street"}) + "\n")


# --------------------------------------------------------------------------------- MAmmoTH-VL


def turns(q: str, a: str) -> list[dict]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


MAMMOTH_RECORDS = [
    {"id": "t0", "conversations": turns("What is 2+2?", "4"), "source": "math"},  # text-only
    {"id": "i1", "image": "ai2d/1.jpg", "conversations": turns("<image>\nWhat is shown?", "A diagram.")},
    {"id": "i2", "image": "./chart/2.png",
     "conversations": [*turns("Title?", "Sales"), {"from": "human", "value": "Max?"},
                       {"from": "gpt", "value": "12", "weight": 1}]},
    {"id": "m3", "image": ["ai2d/1.jpg", "geo/3.jpg"], "conversations": turns("Compare.", "Same.")},
    # malformed
    {"id": "bad-missing", "image": "ai2d/1.jpg"},
    {"id": "bad-turn", "conversations": [{"from": "human", "value": 3}]},
    {"id": "bad-image", "image": "ai2d/404.jpg", "conversations": turns("?", "!")},
    {"id": "bad-type", "image": 17, "conversations": turns("?", "!")},
    "not a record",
]


def _mammoth_source(root: Path, shards: bool = True) -> Path:
    src = root / "MAmmoTH-VL-Instruct-12M"
    src.mkdir(parents=True)
    (src / "mammoth_si_10M.json").write_text(json.dumps(MAMMOTH_RECORDS, indent=1))
    if shards:
        write_tar(src / "single_image_data" / "shard_0.tar.gz", [("./ai2d/1.jpg", image_bytes(40, 30))], gz=True)
        # an extra leading folder in the archive: matched as <top>/<record path>
        write_tar(src / "single_image_data" / "shard_1.tar.gz",
                  [("si/chart/2.png", image_bytes(20, 20, "PNG")), ("si/geo/3.jpg", image_bytes(30, 30))], gz=True)
    return src


# -------------------------------------------------------------------------- VisualWebInstruct


LONG = " ".join(["step"] * 160)
VW_RECORDS = [
    {"id": "a", "image": "imgs/a.jpg", "conversations": turns("<image>\nWhat is it?", "A plot.")},
    {"id": "b", "image": ["b.png"], "conversations": turns("Solve.", LONG)},  # relative to imgs/
    {"id": "c", "images": "imgs/sub/c.jpg", "conversations": turns("<image>\nRead it.", "42")},
    {"id": "d", "images": ["a.jpg", "imgs/b.png"], "conversations": turns("Two?", "Yes.")},  # two images
    # malformed
    {"id": "e", "conversations": turns("No image?", "None.")},
    {"id": "f", "image": "imgs/missing.jpg", "conversations": turns("?", "!")},
    {"id": "g", "image": "imgs/a.jpg", "conversations": "not json"},
    {"id": "h", "image": "imgs/a.jpg"},
]
VW_IMAGES = {"imgs/a.jpg": image_bytes(10, 10), "imgs/b.png": image_bytes(12, 6, "PNG"),
             "imgs/sub/c.jpg": image_bytes(9, 9), "imgs/unused.jpg": image_bytes(5, 5)}


def _vw_source(root: Path, fmt: str = "jsonl", zipped: bool = True) -> Path:
    src = root / "VisualWebInstruct"
    src.mkdir(parents=True)
    if fmt == "jsonl":
        (src / "visualwebinstruct_conversation.jsonl").write_text(
            "\n".join(json.dumps(r) for r in VW_RECORDS) + "\n{broken\n")
    else:
        def as_list(v):
            return [v] if isinstance(v, str) else v

        # a list column named images, conversations as JSON text
        rows = [{"id": r["id"], "images": as_list(r.get("image", r.get("images"))),
                 "conversations": json.dumps(r["conversations"]) if isinstance(r.get("conversations"), list)
                 else r.get("conversations")} for r in VW_RECORDS]
        pq.write_table(pa.Table.from_pylist(rows), src / "visualwebinstruct_conversation.parquet")
    if zipped:
        write_zip(src / "images.zip", [("imgs/", b""), *VW_IMAGES.items()])
    else:
        for name, data in VW_IMAGES.items():
            write(src / name, data)
    return src


# ------------------------------------------------------------------------------------ GranD-f


def span(caption: str, phrase: str) -> list[int]:
    i = caption.index(phrase)
    return [i, i + len(phrase)]


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


# -------------------------------------------------------------------- RefCOCO (refer toolkit)


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


# --------------------------------------------------------------------------- lmms-lab RefCOCO


def _lmms_file(path: Path, rows: list[dict]) -> None:
    schema = pa.schema([
        ("question_id", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("question", pa.string()), ("answer", pa.list_(pa.string())), ("segmentation", pa.list_(pa.float32())),
        ("bbox", pa.list_(pa.float32())), ("iscrowd", pa.int64()), ("file_name", pa.string())])
    full = [{"question": "Please carefully observe the area circled in the image and come up with a caption.",
             "segmentation": [1.0, 2.0, 3.0], "iscrowd": 0, "file_name": None, **r} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(full, schema=schema), path, row_group_size=3)
