"""Golden fixtures of mixture files: which rows upstream LaViDa-O's loader keeps and selects.

Not run by the tests (they read the JSON this writes). Regenerate after an upstream change with

    .venv/bin/python scripts/golden/make_mixtures.py /path/to/LaVida-O [tests/golden/mixtures]

Two files:

- ``random_selection.json``: the row positions ``DataFrame.sample(n=N, random_state=42)`` (what
  upstream's ``random:N`` calls) takes from a table of ``rows`` rows, in pandas' order.
- ``selection.json``: one small parquet table (its rows are stored) and dataset entries (filters,
  hidden aesthetic filter, sampling strategies); for each entry the ``rid`` column of the rows that
  upstream's ``build_dataset_lazy`` hands to its dataset, in its order (``dup`` repeats included),
  or the exception upstream raises. Upstream's dataset class is replaced by a recorder, so only
  the YAML reading, filtering and sampling of upstream's own function run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAM = "adobe-research/LaVida-O@e3a80df"

#: (rows, n) pairs for random_selection.json
RANDOM_SIZES = [(1, 1), (5, 5), (10, 3), (20, 5), (40, 13), (100, 37), (1000, 250), (12345, 100),
                (100000, 50)]


def table_rows() -> list[dict]:
    """40 rows: scores around 5 (5.0 exactly, nulls), sizes around 512 (nulls), 0..3 input images."""
    rows = []
    for i in range(40):
        score = None if i % 13 == 7 else [4.0, 5.0, 5.01, 5.5, 5.67, 5.68, 6.5, 7.25][i % 8]
        height = None if i == 22 else [256, 511, 512, 1024, 768][i % 5]
        width = [512, 1024, 600, 511, 2048, 512][i % 6]
        rows.append({
            "rid": i,
            "s3_path": f"s3://bucket/img/{i:03d}.jpg",
            "caption": f"caption number {i}",
            "fltLaionAesthScore": score,
            "intHeight": height,
            "intWidth": width,
            "input_paths": [f"s3://bucket/in/{i}_{k}.jpg" for k in range(i % 4)],
            "instruction": f"edit number {i}",
            "output_paths": f"s3://bucket/out/{i}.jpg",
        })
    return rows


T2I_COLS = ["rid", "s3_path", "caption", "fltLaionAesthScore", "intHeight", "intWidth"]
NO_SCORE = ["rid", "s3_path", "caption", "intHeight", "intWidth"]

#: name -> the entry's keys besides name, json_path and preprocess_fn (t2i unless given)
CASES: dict[str, dict] = {
    "hidden_aes_columns": {"columns": T2I_COLS},
    "hidden_aes_all_columns": {},
    "no_score_column": {"columns": NO_SCORE},
    "aes_5_67": {"columns": T2I_COLS, "aes_cutoff": 5.67},
    "aes_5_strict": {"columns": T2I_COLS, "aes_cutoff": 5},
    "aes_null": {"columns": T2I_COLS, "aes_cutoff": None},
    "min_size": {"columns": NO_SCORE, "min_size": 512},
    "min_size_hidden_aes": {"columns": T2I_COLS, "min_size": 512},
    "max_enc_images": {"preprocess_fn": "process_gpt_edit", "columns": ["rid", "input_paths", "output_paths",
                       "instruction"], "max_enc_images": {"column": "input_paths", "value": 1}},
    "all_filters": {"columns": T2I_COLS + ["input_paths"], "aes_cutoff": 5.0, "min_size": 512,
                    "max_enc_images": {"column": "input_paths", "value": 2}},
    "first_7": {"columns": NO_SCORE, "sampling_strategy": "first:7"},
    "first_100": {"columns": NO_SCORE, "sampling_strategy": "first:100"},
    "first_0": {"columns": NO_SCORE, "sampling_strategy": "first:0"},
    "end_7": {"columns": NO_SCORE, "sampling_strategy": "end:7"},
    "end_100": {"columns": NO_SCORE, "sampling_strategy": "end:100"},
    "end_0": {"columns": NO_SCORE, "sampling_strategy": "end:0"},
    "first_25pct": {"columns": NO_SCORE, "sampling_strategy": "first:25%"},
    "first_33pct_filtered": {"columns": T2I_COLS, "sampling_strategy": "first:33%"},
    "end_10pct_filtered": {"columns": T2I_COLS, "min_size": 512, "sampling_strategy": "end:10%"},
    "random_5": {"columns": NO_SCORE, "sampling_strategy": "random:5"},
    "random_40": {"columns": NO_SCORE, "sampling_strategy": "random:40"},
    "random_41": {"columns": NO_SCORE, "sampling_strategy": "random:41"},
    "random_30pct": {"columns": NO_SCORE, "sampling_strategy": "random:30%"},
    "random_9_filtered": {"columns": T2I_COLS, "sampling_strategy": "random:9"},
    "random_12_5pct": {"columns": NO_SCORE, "sampling_strategy": "random:12.5%"},
    "dup_2": {"columns": NO_SCORE, "sampling_strategy": "dup:2"},
    "dup_3_filtered": {"columns": T2I_COLS, "aes_cutoff": 6, "sampling_strategy": "dup:3"},
    "all": {"columns": NO_SCORE, "sampling_strategy": "all"},
}


def random_selection() -> dict:
    import pandas as pd

    out = []
    for rows, n in RANDOM_SIZES:
        df = pd.DataFrame({"row": range(rows)})
        out.append({"rows": rows, "n": n, "positions": [int(i) for i in df.sample(n=n, random_state=42).index]})
    return {"upstream": UPSTREAM, "what": "DataFrame.sample(n, random_state=42).index on a RangeIndex",
            "cases": out}


class Recorder:
    """Stands in for upstream's LazySupervisedDataset: keeps the rows it is given."""

    made: list = []

    def __init__(self, data_path, tokenizer, data_args, prepend_folder=True, list_data=None, preprocess_fn=None,
                 name=None):
        self.rows = list_data
        Recorder.made.append(self)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if i >= len(self.rows):
            raise IndexError(i)
        return None


def upstream_selection(checkout: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    sys.path.insert(0, HERE)
    from upstream_env import load_upstream

    load_upstream(checkout)
    from llava.train.data import datasets as up

    up.LazySupervisedDataset = Recorder
    rows = table_rows()
    work = tempfile.mkdtemp(prefix="lavida-golden-mixtures-")
    table = os.path.join(work, "t.parquet")
    pq.write_table(pa.Table.from_pylist(rows), table)
    results = {}
    for name, keys in CASES.items():
        entry = {"name": name, "json_path": table, "preprocess_fn": "preproces_text_to_image_generation_s3", **keys}
        path = os.path.join(work, f"{name}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump({"datasets": [entry]}, f)
        Recorder.made = []
        try:
            up.build_dataset_lazy(path, None, SimpleNamespace(group_by_random_length=False))
            results[name] = {"rids": [int(r) for r in Recorder.made[0].rows["rid"]]}
        except Exception as e:  # what upstream raises for this entry
            results[name] = {"error": type(e).__name__}
    return {"upstream": UPSTREAM, "rows": rows,
            "cases": {n: {"entry": CASES[n], **r} for n, r in results.items()}}


def main(checkout: str, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for fname, data in (("random_selection.json", random_selection()),
                        ("selection.json", upstream_selection(checkout))):
        with open(os.path.join(out, fname), "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        print(f"wrote {os.path.join(out, fname)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "..", "tests", "golden",
                                                                          "mixtures"))
