"""Small parquet tables made for a mixture file's datasets, as upstream's tables would be.

Upstream's mixture files point at private tables (``/mnt/localssd/...``). :func:`tables_for`
writes, for each dataset entry, a parquet table with the columns the entry declares plus those
its converter reads, with values of the kind upstream's converter expects, and returns the
file's text with each ``json_path`` pointing at its table (nothing else in the text changes:
repeated keys, repeated names and comments stay).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from lavida_data.convert.registry import registry

LOC = "<LOC_BEGIN><LOC_10><LOC_20><LOC_300><LOC_400><LOC_END>"
LONG = "A red bus parked next to a tall building. It is raining. People walk by with umbrellas. " * 3

#: converter -> the table's columns it needs beyond what entries list (upstream's reads)
_MAMMOTH = json.dumps([{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A bus."},
                       {"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "Red."}])


def value(column: str, converter: str, i: int) -> Any:
    """A value for ``column`` of row ``i`` that ``converter`` accepts as upstream's does."""
    if column == "conversations":
        if converter == "preproces_und_mammoth_si_10M":
            return _MAMMOTH
        return [{"from": "human", "value": "<image>\nSolve it."}, {"from": "gpt", "value": "x = 2 " * (i % 3 * 80 + 1)}]
    if column == "image":
        if converter == "preproces_vw_instruct":
            return [f"vw/{i}.jpg"]
        return f"images/{i}.jpg"
    if column in ("s3_path", "input_image", "output_image", "output_paths", "input_paths"):
        return f"{column}/{i}.jpg"
    if column == "negatives":
        return ";".join(f"neg/{i}-{k}.jpg" for k in range(3))
    if column == "negative_reasons":
        return "too dark;wrong colour;misplaced"
    if column == "strImagehash":
        return f"{i:08x}deadbeef"
    if column in ("fltLaionAesthScore",):
        return 5.0 + 0.25 * (i % 8)  # some rows under upstream's hidden > 5 cut and under 5.67
    if column in ("intHeight", "intWidth"):
        return 1024 if i % 4 else 384
    if column == "hpsv2":
        return 0.25 + 0.01 * i
    if column in ("grounding_text", "loc_string"):
        return f"<box_p> bus </box_p>{LOC}"
    if column == "loc_caption":
        return f"A <box_p> bus </box_p>{LOC} in the rain."
    if column == "crop_parms":
        return [1024, 1024, 0, 0, 1024, 1024]
    if column == "edit_type":
        return ["add", "remove", "swap", None][i % 4]
    if column in ("caption", "longLLA_captions", "llava_next_caption"):
        return LONG if i % 2 else f"a red bus number {i}"
    return f"{column} text {i}"


def _needed(entry: dict) -> list[str]:
    conv = registry.get(entry["preprocess_fn"])
    options = conv.parse_options(entry.get("process_fn_kwargs"))
    cols = list(entry.get("columns") or [])
    for c in list(conv.required_columns(options)) + list(conv.optional_columns(options)):
        if c not in cols:
            cols.append(c)
    if entry.get("min_size") is not None:
        cols += [c for c in ("intHeight", "intWidth") if c not in cols]
    return cols


def tables_for(text: str, out: Path, rows: int = 24) -> str:
    """Write one table per distinct ``json_path`` of the mixture ``text`` under ``out``; return
    the text with those paths replaced."""
    data = yaml.safe_load(text)
    out.mkdir(parents=True, exist_ok=True)
    columns: dict[str, dict[str, str]] = {}  # path -> column -> the converter that shapes its values
    for entry in data["datasets"]:
        per = columns.setdefault(entry["json_path"], {})
        for c in _needed(entry):
            per.setdefault(c, entry["preprocess_fn"])
    made: dict[str, Path] = {}
    for k, (path, cols) in enumerate(columns.items()):
        table = {c: [value(c, conv, i) for i in range(rows)] for c, conv in cols.items()}
        target = out / f"t{k}.parquet"
        pq.write_table(pa.table(table), target)
        made[path] = target
    for path, target in made.items():
        text = re.sub(rf"(json_path:\s*){re.escape(path)}(\s)", lambda m: f"{m.group(1)}{target}{m.group(2)}", text)
    return text
