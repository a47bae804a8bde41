"""Upstream-style mixture files, with tables made for them, prepare and stream in length-group
batches (one group per step, upstream's per-group batch sizes).

``UPSTREAM_STYLE`` uses what upstream's stage files use: the eleven converters with their
keyword options (``s3_prefix``, ``plan_only``, ``add_feedback``, ``task``, ``do_print``, ...),
repeated dataset names and keys, the score column without ``aes_cutoff``, weights and batch
factors (one for a group no dataset uses). With ``LAVIDA_UPSTREAM`` set to a LaVida-O checkout,
its own four files go the same way.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from lavida_data import validate_file
from lavida_data.prepare.local import prepare
from lavida_data.stream.loader import build_dataloader, build_dataset

from .upstream_tables import tables_for

UPSTREAM_STYLE = """\
datasets:
  - name: blip3o-60k
    json_path: /mnt/data/blip3o.parquet
    sampling_strategy: dup:1
    preprocess_fn: preproces_text_to_image_generation_s3
    length_group:  t2i
    columns: ['s3_path', 'caption', 'fltLaionAesthScore','intHeight','intWidth','hpsv2']
  - name: sharegpt4o
    json_path: /mnt/data/sharegpt4o.parquet
    sampling_strategy: all
    preprocess_fn: preproces_text_to_image_generation_s3
    min_size: 512
    length_group:  t2i
    columns: ['s3_path', 'caption', 'fltLaionAesthScore','intHeight','intWidth','hpsv2']
    process_fn_kwargs:
      caption_key: caption
      random_truncate: false
  - name: laion
    json_path: /mnt/data/laion.parquet
    sampling_strategy: all
    preprocess_fn: preproces_text_to_image_generation_piat_hash
    columns: ['llava_next_caption','fltLaionAesthScore','strImagehash','intHeight','intWidth']
    length_group:  laion_coyo
    process_fn_kwargs:
      caption_key: llava_next_caption
  - name: reflect-dit-plan
    json_path: /mnt/data/reflect.parquet
    sampling_strategy: random:50%
    preprocess_fn: preproces_text_to_image_generation_s3_loc
    length_group: plan
    columns: ['s3_path', 'caption', 'grounding_text', 'negatives', 'negative_reasons']
    process_fn_kwargs:
      plan_only: true
      add_feedback: true
      s3_prefix_enc: s3://bucket/reflect/
      do_print: false
  - name: reflect-dit-plan
    json_path: /mnt/data/reflect.parquet
    sampling_strategy: first:10
    preprocess_fn: preproces_text_to_image_generation_s3_loc
    length_group: plan
    columns: ['s3_path', 'caption', 'grounding_text']
    process_fn_kwargs:
      plan_only: false
  - name: mammoth
    json_path: /mnt/data/mammoth.parquet
    sampling_strategy: end:12
    preprocess_fn: preproces_und_mammoth_si_10M
    columns: ['image', 'conversations']
    length_group: und
    process_fn_kwargs:
      s3_prefix: s3://bucket/mammoth/
  - name: vw
    json_path: /mnt/data/vw.parquet
    preprocess_fn: preproces_vw_instruct
    max_enc_images: {column: image, value: 1}
    length_group: und
  - name: judge
    json_path: /mnt/data/judge.parquet
    preprocess_fn: preprocess_reflection_und
    columns: ['image', 'prompts', 'results']
    length_group: und
  - name: grand-f
    json_path: /mnt/data/grandf.parquet
    sampling_strategy: dup:2
    preprocess_fn: preproces_grandf
    length_group:  grounding
    columns: ['s3_path', 'loc_caption']
  - name: refcoco
    json_path: /mnt/data/refcoco.parquet
    sampling_strategy: dup:2
    preprocess_fn: preproces_refcoco_rec
    columns: ['s3_path', 'label','loc_string']
    length_group:  grounding
  - name: omniedit
    json_path: /mnt/data/omniedit.parquet
    preprocess_fn: process_gpt_edit
    columns: ['input_paths', 'output_paths', 'instruction', 'hpsv2']
    length_group: edit
  - name: omniedit-reason
    json_path: /mnt/data/omniedit.parquet
    preprocess_fn: process_gpt_edit_loc_gnd
    columns: ['input_paths', 'output_paths', 'instruction', 'grounding_text']
    length_group: edit_reason
    process_fn_kwargs:
      task: "swap"
      plan_only: true
  - name: sharegpt-4o-edit
    json_path: /mnt/data/sharegpt-edit.parquet
    preprocess_fn: process_sharegpt_4o_edit
    columns: ['input_image', 'output_image', 'input_prompt']
    length_group: edit
weights:
  t2i: 250
  laion_coyo: 150
  plan: 100
  und: 250
  grounding: 100
  edit: 200
  edit_reason: 170
  mjv6: 20
batch_sizes:
  t2i: 1
  und: 0.5
  grounding: 0.5
  edit_reason: 0.5
  edit_reason: 0.25
"""

B = 4
FACTORS = {"t2i": 1, "laion_coyo": 1, "plan": 1, "und": 0.5, "grounding": 0.5, "edit": 1, "edit_reason": 0.25}


def stream_file(text: str, folder: Path, tokenizer: str, steps: int = 40) -> tuple[list[dict], object]:
    mixture = folder / "mixture.yaml"
    mixture.write_text(tables_for(text, folder / "tables"))
    report = validate_file(mixture)
    assert report.valid, [str(e) for e in report.errors]
    prepare(report.plans.values(), str(folder / "prepared"))
    ds = build_dataset(report, str(folder / "prepared"), batch_size=B,
                       process={"decode_images": False,
                                "tokenize": {"tokenizer": tokenizer, "gen_tokens": 64, "max_length": 8192}},
                       loader={"epoch_steps": steps})
    loader = build_dataloader(ds, num_workers=2)
    return list(loader), report


def test_upstream_style_file_streams_one_group_per_step(tmp_path, tokenizer):
    batches, report = stream_file(UPSTREAM_STYLE, tmp_path, tokenizer)
    said = " | ".join(w.message for w in report.warnings)  # upstream's slips are said, not refused
    for what in ("renamed 'reflect-dit-plan~2'", "duplicate key 'edit_reason'", "'mjv6', which no dataset uses",
                 "fltLaionAesthScore > 5"):
        assert what in said
    names = {spec.name for spec in report.mixture.datasets}
    assert "reflect-dit-plan~2" in names and report.mixture.batch_sizes["edit_reason"] == 0.25
    groups = collections.Counter()
    for step, batch in enumerate(batches):
        assert batch["step"] == step
        group = batch["group"]
        groups[group] += 1
        size = max(int(B * FACTORS[group]), 1)
        assert len(batch["ids"]) + len(batch["skipped"]) == size
        assert batch["input_ids"].shape[0] == len(batch["ids"])
        spec_groups = {s.name: s.length_group for s in report.mixture.datasets}
        assert {spec_groups[i.rsplit(":", 1)[0]] for i in batch["ids"]} <= {group}
    assert len(batches) == 40 and len(groups) >= 5
    skipped = [s for b in batches for s in b["skipped"]]
    assert skipped == [], skipped


UPSTREAM = os.environ.get("LAVIDA_UPSTREAM")


@pytest.mark.skipif(not UPSTREAM, reason="set LAVIDA_UPSTREAM to a LaVida-O checkout")
@pytest.mark.parametrize("stem", ["debug_dataset", "s1_und_gnd_data", "s2_t2i_pretrain", "s3_interleaved"])
def test_upstream_files_prepare_and_stream(tmp_path, tokenizer, stem):
    text = (Path(UPSTREAM) / "config" / "data" / f"{stem}.yaml").read_text()
    batches, report = stream_file(text, tmp_path, tokenizer, steps=20)
    factors = report.mixture.batch_sizes
    for batch in batches:
        size = max(int(B * factors.get(batch["group"], 1)), 1)
        assert len(batch["ids"]) + len(batch["skipped"]) == size
    assert [s for b in batches for s in b["skipped"]] == []
