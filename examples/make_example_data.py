"""Write the example tables and images that the mixtures in examples/mixtures/ read.

Deterministic: the same files every run. The repository ships the output (examples/data/);
run this to rebuild it, or with a folder argument to write a copy elsewhere:

    python examples/make_example_data.py [OUT_DIR]
"""

from __future__ import annotations

import json
import os
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 80, 220), "yellow": (235, 200, 30),
    "purple": (140, 60, 180), "orange": (240, 130, 20), "teal": (20, 160, 160), "pink": (240, 120, 170),
}
SHAPES = ("circle", "square", "triangle")


def loc(x1: int, y1: int, x2: int, y2: int) -> str:
    return f"<LOC_BEGIN><LOC_{x1}><LOC_{y1}><LOC_{x2}><LOC_{y2}><LOC_END>"


def draw(path: str, color: str, shape: str, size: int = 128, background=(245, 245, 240)) -> tuple[int, int, int, int]:
    """Draw one shape; returns its box on the 0..1024 grid."""
    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    box = (size // 5, size // 4, size * 4 // 5, size * 17 // 20)
    if shape == "circle":
        d.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        d.rectangle(box, fill=COLORS[color])
    else:
        d.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=COLORS[color])
    img.save(path, quality=90)
    return tuple(round(v * 1024 / size) for v in box)  # type: ignore[return-value]


LONG = (
    "A {color} {shape} sits in the middle of a pale square canvas. The shape has crisp edges and an "
    "even fill. The background is a warm off-white with no texture. There is nothing else in the frame."
)


def write(out: str) -> None:
    img_dir = os.path.join(out, "images")
    os.makedirs(img_dir, exist_ok=True)
    items = []
    for i, (color, shape) in enumerate([(c, s) for c in COLORS for s in SHAPES][:16]):
        name = f"{i:02d}-{color}-{shape}.jpg"
        box = draw(os.path.join(img_dir, name), color, shape)
        items.append({"file": f"images/{name}", "color": color, "shape": shape, "box": box})

    def caption(it):
        return f"a {it['color']} {it['shape']} on a plain background"

    # text to image (parquet): scores and sizes for the filters
    t2i = [
        {"s3_path": it["file"], "caption": LONG.format(**it) if i % 2 else caption(it),
         "fltLaionAesthScore": 4.5 + 0.25 * i, "hpsv2": 0.25 + 0.005 * i,
         "intHeight": 128 if i % 5 else 48, "intWidth": 128}
        for i, it in enumerate(items)
    ]
    pq.write_table(pa.Table.from_pylist(t2i), os.path.join(out, "t2i.parquet"))
    # text to image with two caption columns (csv)
    coyo = [{"s3_path": it["file"], "caption": caption(it), "caption_short": f"{it['color']} {it['shape']}",
             "intHeight": 128, "intWidth": 128} for it in items[:8]]
    pacsv.write_csv(pa.Table.from_pylist(coyo), os.path.join(out, "t2i_coyo.csv"))
    # image store by hash (jsonl)
    hashes = []
    for it in items[:6]:
        h = it["file"].split("/")[1].split("-")[0] + "a1b2c3"
        os.makedirs(os.path.join(out, "store"), exist_ok=True)
        Image.open(os.path.join(out, it["file"])).save(os.path.join(out, "store", f"{h}.jpg"))
        hashes.append({"strImagehash": h, "longLLA_captions": LONG.format(**it)})
    _jsonl(os.path.join(out, "t2i_hash.jsonl"), hashes)
    # layout planning with feedback (json array)
    plan = []
    for i, it in enumerate(items[:6]):
        others = [items[(i + k) % len(items)]["file"].removeprefix("images/") for k in (1, 2, 3)]
        plan.append({
            "s3_path": it["file"], "caption": caption(it),
            "grounding_text": f"<box_p> {it['color']} {it['shape']} </box_p>{loc(*it['box'])}",
            "negatives": ";".join(others),
            "negative_reasons": "the colour is wrong;the shape is wrong;the object is misplaced",
        })
    _json(os.path.join(out, "t2i_loc.json"), plan)
    # region-detailed captions with a fixed crop (parquet)
    sam = [{"s3_path": it["file"], "caption": caption(it), "cap_short": f"{it['color']} {it['shape']}",
            "cap_detail": f"A {it['shape']} filled in {it['color']}, centred.",
            # upstream's [new_w, new_h, left, top, right, bottom]: resize to new size, cut a 1024 box
            "crop_parms": [1024, 1024, 0, 0, 1024, 1024],
            "fltLaionAesthScore": 6.0}
           for it in items[6:10]]
    pq.write_table(pa.Table.from_pylist(sam), os.path.join(out, "t2i_sam.parquet"))

    # understanding: MAmmoTH-style, conversations as JSON text, some text-only (jsonl)
    mammoth = []
    for i, it in enumerate(items[:6]):
        conv = [{"from": "human", "value": "What colour is the shape?" if i % 3 else "<image>\nName the shape."},
                {"from": "gpt", "value": it["color"] if i % 3 else it["shape"]}]
        rec = {"conversations": json.dumps(conv), "image": it["file"].removeprefix("images/") if i != 4 else None}
        if i == 4:
            rec["conversations"] = json.dumps([{"from": "human", "value": "What is 2 + 3?"}, {"from": "gpt", "value": "5"}])
        mammoth.append(rec)
    _jsonl(os.path.join(out, "und_mammoth.jsonl"), mammoth)
    # VisualWebInstruct-style: list columns (parquet); one row with three images for max_enc_images
    vw = []
    for i, it in enumerate(items[:5]):
        answer = ("The shape is " + it["shape"] + ". ") + ("Reasoning step. " * 80 if i == 1 else "")
        images = [it["file"]] if i != 2 else [it["file"], items[3]["file"], items[4]["file"]]
        vw.append({"conversations": [{"from": "human", "value": "<image>\nWhich shape is shown?"},
                                     {"from": "gpt", "value": answer.strip()}],
                   "image": images})
    pq.write_table(pa.Table.from_pylist(vw), os.path.join(out, "und_vw.parquet"))
    # grounding (csv) and referring expressions (parquet)
    grandf = [{"s3_path": it["file"],
               "loc_caption": f"A <box_p> {it['color']} {it['shape']} </box_p>{loc(*it['box'])} on a plain background."}
              for it in items[:4]]
    pacsv.write_csv(pa.Table.from_pylist(grandf), os.path.join(out, "grandf.csv"))
    refcoco = [{"s3_path": it["file"], "label": f"the {it['color']} {it['shape']}", "loc_string": loc(*it["box"])}
               for it in items[:8]]
    pq.write_table(pa.Table.from_pylist(refcoco), os.path.join(out, "refcoco.parquet"))
    # reflection (json)
    refl = [{"image": it["file"], "prompts": f"a {it['color']} {it['shape']}",
             "results": "The image matches the prompt." if i % 2 else f"The shape is not a {it['shape']}."}
            for i, it in enumerate(items[:4])]
    _json(os.path.join(out, "reflection.json"), refl)

    # editing
    pairs = [(items[i], items[i + 1]) for i in range(0, 12, 2)]
    gpt_edit = [{"input_paths": a["file"], "output_paths": b["file"],
                 "instruction": f"Turn the {a['color']} {a['shape']} into a {b['color']} {b['shape']}.", "hpsv2": 0.3}
                for a, b in pairs]
    pq.write_table(pa.Table.from_pylist(gpt_edit), os.path.join(out, "edit_gpt.parquet"))
    share = [{"input_image": [a["file"]], "output_image": b["file"], "input_prompt": f"Make it {b['color']}."}
             for a, b in pairs[:3]]
    _json(os.path.join(out, "edit_sharegpt4o.json"), share)
    pica = [{"local_input_image": a["file"], "local_output_image": b["file"], "text": f"Change it to a {b['shape']}."}
            for a, b in pairs[:3]]
    pacsv.write_csv(pa.Table.from_pylist(pica), os.path.join(out, "edit_pica.csv"))
    kinds = ["replace", "adjust", "", "add"]
    locg = [{"input_paths": [a["file"]], "output_paths": b["file"],
             "instruction": f"Replace the {a['shape']} with a {b['shape']}.",
             "grounding_text": f"<box_p> {b['color']} {b['shape']} </box_p>{loc(*b['box'])}", "edit_type": kinds[k]}
            for k, (a, b) in enumerate(pairs[:4])]
    _jsonl(os.path.join(out, "edit_loc.jsonl"), locg)
    mq = [{"source_images_paths": [a["file"].removeprefix("images/"), c["file"].removeprefix("images/")],
           "tgt_path": b["file"].removeprefix("images/"), "dir_name": "images",
           "prompt": f"Combine the {a['shape']} and the {c['shape']} into a {b['shape']}."}
          for a, b, c in zip(items[:3], items[3:6], items[6:9])]
    pq.write_table(pa.Table.from_pylist(mq), os.path.join(out, "edit_metaquery.parquet"))
    # UniWorld's layout: paths relative to the row's `folder`, lists per role, `is_edit`
    uni = [{"id": f"uw-{k}", "conversations": [{"from": "human", "value": f"<image> <image_gen_enc> Make it {b['color']}."},
                                               {"from": "gpt", "value": "Sure <image_gen>"}],
            "image": [_bare(a)], "image_gen": [_bare(b)], "image_gen_enc": [_bare(a)], "is_edit": True,
            "folder": "images"}
           for k, (a, b) in enumerate(pairs[3:6])]
    _jsonl(os.path.join(out, "uniworld.jsonl"), uni)


def _bare(item: dict) -> str:
    return item["file"].removeprefix("images/")


def _json(path: str, rows: list) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")


def _jsonl(path: str, rows: list) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
