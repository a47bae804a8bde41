"""Golden fixtures of the 15 converters: upstream LaViDa-O's own ``PROCESS_FUNCTIONs`` on chosen rows.

Not run by the tests (they read the JSON this writes). Regenerate after an upstream change with

    .venv/bin/python scripts/golden/make_converters.py /path/to/LaVida-O [tests/golden/converters]

For every case (a row and the ``process_fn_kwargs``) the upstream function is run once per
combination of its random draws: ``random.random``, ``random.randint`` (in
``randomly_select_sentences``), ``np.random.rand``, ``np.random.randint`` and ``np.random.choice``
are replaced by an explorer that walks every outcome (probabilities: one value below and one
above any threshold in [0, 1); integers: every value of the range; choices: every element or
every ordered tuple). A case stores the SET of payloads upstream can produce and the SET of
exception types it can raise; the function is called the way upstream's dataset calls it
(``fn(data=row, tokenizer=..., has_image=..., **kwargs)``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import os
import random
import sys
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAM = "adobe-research/LaVida-O@e3a80df"
NEAR_ONE = 1.0 - 1e-9  # a draw of random.random / np.random.rand that is below no threshold < 1


# ------------------------------------------------------------------ rows

SHORT = "A red fox sits in the snow."
# 181 characters, 4 sentences once split at [.!?] followed by spaces (the newline is no split)
LONG = ("  A tall lighthouse stands on a rocky cliff.  Waves crash below it!   Is a storm coming?\n"
        "Gulls circle overhead. The sky glows orange and purple as the sun sets over the quiet sea.  ")
# 25 sentences, 1549 characters: cut at MAX_CAP_LENGTH (800) after the random truncation
VERY_LONG = " ".join(f"Sentence number {i:02d} tells a little more about this busy scene." for i in range(25))
C150 = ("A small red boat floats on a calm lake. Pine trees line the far shore under a pale sky, "
        "and mist rises slowly from the still water at dawn, quite low.")
C151 = C150[:-1] + "!."
ONE_SENTENCE = "   " + "word " * 40 + "  "  # 205 characters, no sentence end: truncation only strips
assert len(LONG) == 181 and len(C150) == 150 and len(C151) == 151 and len(VERY_LONG) > 800

SCORES = {"fltLaionAesthScore": 6.25, "hpsv2": 0.3125}
LOC = "<LOC_12><LOC_40><LOC_300><LOC_500> a fox"
CROP = [1024, 1365, 0, 170, 1024, 1194]  # new_width, new_height, left, top, right, bottom
PREFIX = "s3://bucket/images/"

T2I = {"s3_path": "t2i/0001.jpg", "caption": SHORT, **SCORES}
HASH = {"strImagehash": "abc123", "longLLA_captions": SHORT, "llava_next_caption": "A blue car.", **SCORES}
LOCROW = {"s3_path": "t2i/0002.jpg", "caption": SHORT, "grounding_text": LOC, **SCORES,
          "negatives": "neg/a.jpg;neg/b.jpg;neg/c.jpg", "negative_reasons": "too dark;no fox;two foxes"}
SAM = {"s3_path": "sam/0003.jpg", "caption": "A street market.", "cap_short": "<LOC_1> stalls",
       "cap_detail": "<LOC_1> stalls with red awnings <LOC_2> a crowd", "crop_parms": CROP, "fltLaionAesthScore": 5.5}
TURNS = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A cat on a mat."}]
WORDS_150 = " ".join(["word"] * 150)
WORDS_151 = " ".join(["word"] * 151)
EDIT_SRC, EDIT_TGT = "edit/in.png", "edit/out.png"


def _t2i_cases() -> list[tuple[str, dict, dict]]:
    return [
        ("short_caption_with_scores", T2I, {}),
        ("no_score_columns", {"s3_path": "a.jpg", "caption": SHORT}, {}),
        ("only_hpsv2", {"s3_path": "a.jpg", "caption": SHORT, "hpsv2": 0.25}, {}),
        ("integer_score", {"s3_path": "a.jpg", "caption": SHORT, "fltLaionAesthScore": 6}, {}),
        ("long_caption_may_be_truncated", {**T2I, "caption": LONG}, {}),
        ("long_caption_random_truncate_false", {**T2I, "caption": LONG}, {"random_truncate": False}),
        ("no_drop_keys_names_the_key", {**T2I, "caption": LONG}, {"no_drop_keys": ["caption"]}),
        ("no_drop_keys_override_random_truncate", {**T2I, "caption": LONG},
         {"no_drop_keys": ["other"], "random_truncate": False}),
        ("very_long_caption_cut_at_800", {**T2I, "caption": VERY_LONG}, {}),
        ("very_long_caption_no_truncate", {**T2I, "caption": VERY_LONG}, {"random_truncate": False}),
        ("caption_of_150_never_truncated", {**T2I, "caption": C150}, {}),
        ("caption_of_151_may_be_truncated", {**T2I, "caption": C151}, {}),
        ("one_sentence_truncation_strips", {**T2I, "caption": ONE_SENTENCE}, {}),
        ("caption_key", {**T2I, "caption_short": "A fox."}, {"caption_key": "caption_short"}),
        ("yaml_caption_key_no_random_truncate", {**T2I, "caption": LONG},
         {"caption_key": "caption", "random_truncate": False}),
        ("random_caption_keys", {**T2I, "caption": LONG, "caption_short": "A fox."},
         {"random_caption_keys": ["caption", "caption_short"]}),
        ("random_caption_keys_with_no_drop_keys", {**T2I, "caption": LONG, "caption_short": LONG.upper()},
         {"random_caption_keys": ["caption", "caption_short"], "no_drop_keys": ["caption"]}),
        ("random_caption_key_missing_from_row", {**T2I}, {"random_caption_keys": ["caption", "absent"]}),
        ("caption_key_missing_from_row", {"s3_path": "a.jpg"}, {}),
        ("caption_none", {**T2I, "caption": None}, {}),
        ("caption_not_text", {**T2I, "caption": 5}, {}),
        ("empty_caption", {**T2I, "caption": ""}, {}),
        ("caption_spaces_kept", {**T2I, "caption": "  A fox.  "}, {}),
        ("s3_path_none", {**T2I, "s3_path": None}, {}),
        ("score_none", {**T2I, "hpsv2": None}, {}),
    ]


def _hash_cases() -> list[tuple[str, dict, dict]]:
    return [
        ("default_caption_column", HASH, {}),
        ("yaml_caption_key_llava_next_caption", HASH, {"caption_key": "llava_next_caption"}),
        ("yaml_caption_key_caption", {"strImagehash": "ff00", "caption": SHORT, "fltLaionAesthScore": 6.0},
         {"caption_key": "caption"}),
        ("no_scores", {"strImagehash": "abc", "longLLA_captions": SHORT}, {}),
        ("long_caption_may_be_truncated", {**HASH, "longLLA_captions": LONG}, {}),
        ("long_caption_random_truncate_false", {**HASH, "longLLA_captions": LONG}, {"random_truncate": False}),
        ("very_long_caption_cut_at_800", {**HASH, "longLLA_captions": VERY_LONG}, {}),
        ("caption_key_missing_from_row", {"strImagehash": "abc"}, {}),
        ("caption_none", {**HASH, "longLLA_captions": None}, {}),
        ("hash_none", {**HASH, "strImagehash": None}, {}),
        ("empty_caption", {**HASH, "longLLA_captions": ""}, {}),
    ]


def _loc_cases() -> list[tuple[str, dict, dict]]:
    fb = {"add_feedback": True}
    pre = {"s3_prefix_enc": "s3://shufan-internship-2025/reflect-dit-train-images/"}
    two = {**LOCROW, "negatives": "neg/a.jpg;neg/b.jpg", "negative_reasons": "too dark;no fox"}
    return [
        ("plan", LOCROW, {}),
        ("plan_only", LOCROW, {"plan_only": True}),
        ("no_plan", LOCROW, {"no_plan": True}),
        ("plan_only_wins_over_no_plan", LOCROW, {"plan_only": True, "no_plan": True}),
        ("plan_only_without_target_path", {**LOCROW, "s3_path": None}, {"plan_only": True}),
        ("feedback_plan", two, fb),
        ("feedback_plan_only_yaml", two, {**fb, **pre, "plan_only": True, "do_print": False}),
        ("feedback_plan_yaml", two, {**fb, **pre, "do_print": False}),
        ("feedback_no_plan_yaml", two, {**fb, **pre, "do_print": False, "no_plan": True}),
        ("feedback_three_negatives_default_max", LOCROW, {**fb, **pre}),
        ("feedback_max_reflection_1", LOCROW, {**fb, "max_reflection": 1}),
        ("feedback_max_reflection_2", LOCROW, {**fb, "max_reflection": 2}),
        ("feedback_max_reflection_0", LOCROW, {**fb, "max_reflection": 0}),
        ("feedback_prefix_and_absolute_negative", {**two, "negatives": "/abs/a.jpg;rel/b.jpg"},
         {**fb, "s3_prefix_enc": "s3://x/y"}),
        ("feedback_empty_prefix", two, {**fb, "s3_prefix_enc": ""}),
        ("feedback_fewer_reasons_than_negatives", {**two, "negative_reasons": "too dark"}, fb),
        ("feedback_more_reasons_than_negatives", {**two, "negatives": "neg/a.jpg"}, fb),
        ("feedback_spaces_kept", {**two, "negatives": "neg/a.jpg; neg/b.jpg", "negative_reasons": " dark ;no fox"}, fb),
        ("feedback_negatives_none", {**two, "negatives": None}, fb),
        ("prefix_without_feedback_ignored", LOCROW, pre),
        ("long_caption_plan", {**LOCROW, "caption": LONG}, {}),
        ("long_caption_no_truncate", {**LOCROW, "caption": LONG}, {"random_truncate": False}),
        ("no_drop_keys", {**LOCROW, "caption": LONG}, {"no_drop_keys": ["caption"]}),
        ("random_caption_keys", {**LOCROW, "caption_short": "A fox."},
         {"random_caption_keys": ["caption", "caption_short"]}),
        ("caption_key", {**LOCROW, "cap2": "Two foxes."}, {"caption_key": "cap2"}),
        ("very_long_caption", {**LOCROW, "caption": VERY_LONG}, {"random_truncate": False}),
        ("no_scores", {k: v for k, v in LOCROW.items() if k not in SCORES}, {}),
        ("caption_key_missing_from_row", {k: v for k, v in LOCROW.items() if k != "caption"}, {}),
        ("caption_none", {**LOCROW, "caption": None}, {}),
        ("grounding_text_none", {**LOCROW, "grounding_text": None}, {}),
        ("empty_grounding_text", {**LOCROW, "grounding_text": ""}, {"no_plan": True}),
        ("s3_path_none", {**LOCROW, "s3_path": None}, {}),
    ]


def _sam_cases() -> list[tuple[str, dict, dict]]:
    return [
        ("default", SAM, {}),
        ("caption_drop_0", SAM, {"caption_drop": 0.0}),
        ("caption_drop_1", SAM, {"caption_drop": 1.0}),
        ("plan_only", SAM, {"plan_only": True}),
        ("no_plan", SAM, {"no_plan": True, "caption_drop": 0.0}),
        ("plan_only_wins_over_no_plan", SAM, {"plan_only": True, "no_plan": True, "caption_drop": 0.0}),
        ("s3_prefix", SAM, {"s3_prefix": "s3://bucket/sam"}),
        ("empty_s3_prefix", SAM, {"s3_prefix": "", "caption_drop": 0.0}),
        ("caption_key", {**SAM, "cap_long": VERY_LONG}, {"caption_key": "cap_long", "caption_drop": 0.0}),
        ("very_long_caption_cut_no_random_truncate", {**SAM, "caption": VERY_LONG},
         {"random_truncate": True, "caption_drop": 0.0}),
        ("scores", {**SAM, "hpsv2": 0.25}, {"caption_drop": 0.0, "do_print": False}),
        ("no_scores", {k: v for k, v in SAM.items() if k != "fltLaionAesthScore"}, {"caption_drop": 0.0}),
        ("cap_detail_missing_from_row", {k: v for k, v in SAM.items() if k != "cap_detail"}, {"caption_drop": 0.0}),
        ("caption_none", {**SAM, "caption": None}, {}),
        ("cap_short_none", {**SAM, "cap_short": None}, {"caption_drop": 0.0}),
        ("crop_parms_none", {**SAM, "crop_parms": None}, {"caption_drop": 0.0}),
        ("crop_parms_short", {**SAM, "crop_parms": [1, 2, 3, 4]}, {"caption_drop": 0.0}),
    ]


def _mammoth_cases() -> list[tuple[str, dict, dict]]:
    conv = json.dumps(TURNS)
    extra = json.dumps([{"from": "human", "value": "Hi", "weight": 1}, {"from": "gpt", "value": "Hello"}])
    return [
        ("image_no_prefix", {"image": "a/b.jpg", "conversations": conv}, {}),
        ("yaml_prefix", {"image": "a/b.jpg", "conversations": conv},
         {"s3_prefix": "s3://shufan-internship-2025/MAmmoTH-VL-Instruct-12M/single_image_data/"}),
        ("prefix_without_slash", {"image": "a/b.jpg", "conversations": conv}, {"s3_prefix": "s3://x/y"}),
        ("absolute_image_keeps_path", {"image": "/data/b.jpg", "conversations": conv}, {"s3_prefix": "s3://x/"}),
        ("text_only", {"image": None, "conversations": extra}, {"s3_prefix": "s3://x/"}),
        ("no_marker_added", {"image": "a.jpg", "conversations": json.dumps(TURNS[1:] + TURNS[1:])}, {}),
        ("json_list_image", {"image": '["a.jpg", "b/c.jpg"]', "conversations": conv}, {"s3_prefix": "s3://x/"}),
        ("conversations_list_raises", {"image": "a.jpg", "conversations": TURNS}, {}),
        ("conversations_bad_json", {"image": "a.jpg", "conversations": "[{"}, {}),
    ]


def _vw_cases() -> list[tuple[str, dict, dict]]:
    long = [TURNS[0], {"from": "gpt", "value": WORDS_151}]
    four = TURNS + [{"from": "human", "value": "Why?"}, {"from": "gpt", "value": WORDS_151}]
    return [
        ("short_answer", {"image": ["a.jpg"], "conversations": TURNS}, {}),
        ("yaml_prefix_two_images", {"image": ["a.jpg", "b/c.jpg"], "conversations": TURNS},
         {"s3_prefix": "s3://shufan-internship-2025/VisualWebInstruct/"}),
        ("answer_of_151_words", {"image": ["a.jpg"], "conversations": long}, {}),
        ("answer_of_150_words",
         {"image": ["a.jpg"], "conversations": [TURNS[0], {"from": "gpt", "value": WORDS_150}]}, {}),
        ("only_the_first_answer_counts", {"image": ["a.jpg"], "conversations": four}, {}),
        ("images_none", {"image": None, "conversations": long}, {"s3_prefix": "s3://x/"}),
        ("images_empty", {"image": [], "conversations": TURNS}, {}),
        ("one_turn_raises", {"image": ["a.jpg"], "conversations": TURNS[:1]}, {}),
        ("conversations_json_text_raises", {"image": ["a.jpg"], "conversations": json.dumps(TURNS)}, {}),
    ]


def _grandf_cases() -> list[tuple[str, dict, dict]]:
    row = {"s3_path": "g/1.jpg", "loc_caption": "A <LOC_1> man rides a <LOC_2> horse."}
    return [
        ("basic", row, {}),
        ("s3_prefix_unused", row, {"s3_prefix": "s3://x/"}),
        ("loc_caption_none", {**row, "loc_caption": None}, {}),
        ("s3_path_none", {**row, "s3_path": None}, {}),
    ]


def _refcoco_cases() -> list[tuple[str, dict, dict]]:
    row = {"s3_path": "coco/1.jpg", "label": "the man on the left", "loc_string": "<LOC_1><LOC_2><LOC_3><LOC_4>"}
    return [
        ("basic", row, {}),
        ("s3_prefix_unused", row, {"s3_prefix": "s3://x/"}),
        ("label_not_text", {**row, "label": 3}, {}),
        ("loc_string_none", {**row, "loc_string": None}, {}),
    ]


def _reflection_cases() -> list[tuple[str, dict, dict]]:
    row = {"image": "gen/1.png", "prompts": "a cat on a red mat", "results": "The mat is blue. No."}
    return [
        ("basic", row, {}),
        ("yaml_prefix", row, {"s3_prefix": "s3://shufan-internship-2025/reflect-dit-train-images/"}),
        ("image_none", {**row, "image": None}, {"s3_prefix": "s3://x/"}),
        ("texts_kept_verbatim", {**row, "prompts": '["a cat", "a dog"]', "results": "[photo] yes"}, {}),
        ("paired_json_lists", {**row, "prompts": '["a cat", "a dog"]', "results": '["Yes.", "No."]'}, {}),
        ("results_none", {**row, "results": None}, {}),
    ]


def _metaquery_cases() -> list[tuple[str, dict, dict]]:
    row = {"source_images_paths": ["s1.jpg", "s2.jpg"], "tgt_path": "t.jpg", "dir_name": "set7",
           "prompt": "Combine them."}
    return [
        ("two_sources_one_template", row, {}),
        ("one_source", {**row, "source_images_paths": ["s1.jpg"]}, {}),
        ("s3_prefix", row, {"s3_prefix": "s3://mq"}),
        ("absolute_dir_name", {**row, "dir_name": "/abs/set7"}, {"s3_prefix": "s3://mq/"}),
        ("target_none", {**row, "tgt_path": None}, {}),
    ]


def _uniworld_cases() -> list[tuple[str, dict, dict]]:
    turns = [{"from": "human", "value": "<image> <image_gen_enc> Make it red."},
             {"from": "gpt", "value": "<image_gen>"}]
    edit = {"image": ["in.png"], "image_gen": ["out.png"], "image_gen_enc": ["in.png"], "is_edit": True,
            "folder": "uw", "conversations": turns}
    t2i = {"image": [], "image_gen": ["g.png"], "image_gen_enc": [], "is_edit": False, "folder": "uw",
           "conversations": [{"from": "human", "value": "A fox."}, {"from": "gpt", "value": "<image_gen>"}]}
    und2 = {"image": ["a.png", "b.png"], "image_gen": [], "image_gen_enc": [], "is_edit": False, "folder": "/abs",
            "conversations": [{"from": "human", "value": "<image> <image> Same?"}, {"from": "gpt", "value": "No."}]}
    return [
        ("edit", edit, {}),
        ("edit_do_reweight", edit, {"do_reweight": True}),
        ("edit_pixel_diff", edit, {"pixel_diff": True, "s3_prefix": "s3://unused/"}),
        ("edit_reweight_and_pixel_diff", edit, {"do_reweight": True, "pixel_diff": True}),
        ("edit_three_images_no_reweight", {**edit, "image": ["a.png", "b.png"]}, {"do_reweight": True}),
        ("t2i_lists_empty_become_none", t2i, {"do_reweight": True}),
        ("two_understanding_images_pad", und2, {}),
        ("one_image_not_edit", {**t2i, "image": ["a.png"], "image_gen": []}, {}),
        ("folder_missing_raises", {k: v for k, v in edit.items() if k != "folder"}, {}),
        ("image_none_raises", {**edit, "image": None}, {}),
        ("empty_lists_folder_none", {**t2i, "image_gen": [], "folder": None}, {}),
    ]


def _edit_cases(src: str, tgt: str, ins: str, *, pixel_diff: bool, hps: bool) -> list[tuple[str, dict, dict]]:
    row = {src: EDIT_SRC, tgt: EDIT_TGT, ins: "Make the sky red."}
    two = {**row, src: ["a.png", "b.png"]}
    cases = [
        ("one_source_text", row, {}),
        ("one_source_list", {**row, src: [EDIT_SRC]}, {}),
        ("two_sources", two, {}),
        ("no_sources", {**row, src: []}, {}),
        ("s3_prefix", two, {"s3_prefix": "s3://xiangw-data/Data/ShareGPT-4o-Image/"}),
        ("absolute_paths_with_prefix", {**row, src: "/abs/in.png"}, {"s3_prefix": "s3://x"}),
        ("no_template", two, {"no_template": True}),
        ("reweight", row, {"reweight": True}),
        ("t2i_adds_micro_label", row, {"t2i": True}),
        ("t2i_no_template", row, {"t2i": True, "no_template": True}),
        ("target_none_raises", {**row, tgt: None}, {}),
        ("target_list_raises", {**row, tgt: [EDIT_TGT]}, {}),
        ("sources_none_raises", {**row, src: None}, {}),
        ("hpsv2_column", {**row, "hpsv2": 0.3}, {}),
        ("instruction_none", {**row, ins: None}, {}),
    ]
    if pixel_diff:
        cases += [("pixel_diff", row, {"pixel_diff": True}),
                  ("all_options", two, {"pixel_diff": True, "reweight": True, "t2i": True, "s3_prefix": "p"})]
    else:
        cases += [("all_options", two, {"reweight": True, "t2i": True, "no_template": True, "s3_prefix": "p"})]
    if hps:
        cases += [("hpsv2_none", {**row, "hpsv2": None}, {})]
    return cases


def _loc_gnd_cases() -> list[tuple[str, dict, dict]]:
    row = {"input_paths": EDIT_SRC, "output_paths": EDIT_TGT, "instruction": "Add a cat",
           "grounding_text": "<LOC_5><LOC_6><LOC_7><LOC_8> cat"}
    cases = [("default_task_add", row, {})]
    for task in ("add", "remove", "swap", "replace", "adjust", "recolor"):
        cases.append((f"task_{task}", row, {"task": task}))
    for plan_only in (False, True):
        for task in ("add", "remove", "swap"):
            name = f"yaml_plan_only_{str(plan_only).lower()}_task_{task}"
            cases.append((name, row, {"plan_only": plan_only, "task": task}))
    cases += [
        ("edit_type_overrides_task", {**row, "edit_type": "remove"}, {"task": "add"}),
        ("edit_type_adjust", {**row, "edit_type": "adjust"}, {}),
        ("edit_type_unknown", {**row, "edit_type": "style"}, {}),
        ("edit_type_none_keeps_task", {**row, "edit_type": None}, {"task": "swap"}),
        ("edit_type_empty_keeps_task", {**row, "edit_type": ""}, {"task": "remove"}),
        ("two_sources_prefix", {**row, "input_paths": ["a.png", "b.png"]}, {"s3_prefix": "s3://e"}),
        ("no_template", row, {"no_template": True}),
        ("t2i", row, {"t2i": True}),
        ("reweight_unused", row, {"reweight": True}),
        ("pixel_diff", row, {"pixel_diff": True, "plan_only": True}),
        ("hpsv2_column", {**row, "hpsv2": 0.3}, {}),
        ("grounding_text_none", {**row, "grounding_text": None}, {}),
        ("target_none_plan_only", {**row, "output_paths": None}, {"plan_only": True}),
    ]
    return cases


CASES: dict[str, Callable[[], list[tuple[str, dict, dict]]]] = {
    "preproces_text_to_image_generation_s3": _t2i_cases,
    "preproces_text_to_image_generation_piat_hash": _hash_cases,
    "preproces_text_to_image_generation_s3_loc": _loc_cases,
    "preproces_text_to_image_generation_layout_sam": _sam_cases,
    "preproces_und_mammoth_si_10M": _mammoth_cases,
    "preproces_vw_instruct": _vw_cases,
    "preproces_grandf": _grandf_cases,
    "preproces_refcoco_rec": _refcoco_cases,
    "preprocess_reflection_und": _reflection_cases,
    "process_metaquery": _metaquery_cases,
    "process_uniworld": _uniworld_cases,
    "process_sharegpt_4o_edit": lambda: _edit_cases(
        "input_image", "output_image", "input_prompt", pixel_diff=False, hps=False),
    "process_gpt_edit": lambda: _edit_cases("input_paths", "output_paths", "instruction", pixel_diff=True, hps=True),
    "process_pica_banana": lambda: _edit_cases(
        "local_input_image", "local_output_image", "text", pixel_diff=True, hps=True),
    "process_gpt_edit_loc_gnd": _loc_gnd_cases,
}


# ------------------------------------------------------------------ exploring the draws


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def explore(call: Callable[[], Any]) -> tuple[list[Any], list[str], int]:
    """Run ``call`` once per combination of outcomes of its random draws.

    Returns (distinct outputs, distinct exception type names, number of runs)."""
    outputs: dict[str, Any] = {}
    raises: set[str] = set()
    stack: list[list[int]] = [[]]
    runs = 0
    saved = (random.random, random.randint, np.random.rand, np.random.randint, np.random.choice)
    while stack:
        seq = stack.pop()
        taken: list[int] = []

        def pick(options: list) -> Any:
            i = len(taken)
            if i < len(seq):
                j = seq[i]
            else:
                j = 0
                stack.extend(taken + [alt] for alt in range(1, len(options)))
            taken.append(j)
            return options[j]

        def np_choice(a, size=None, replace=True, p=None):
            assert replace and p is None
            arr = np.arange(a) if isinstance(a, (int, np.integer)) else np.array(a)
            if size is None:
                return arr[pick(list(range(len(arr))))]
            return arr[list(pick(list(itertools.product(range(len(arr)), repeat=int(size)))))]

        def np_randint(low, high=None, size=None, dtype=int):
            assert size is None
            lo, hi = (0, low) if high is None else (low, high)
            if hi <= lo:  # numpy's own error for an empty range
                raise ValueError("low >= high")
            return pick(list(range(lo, hi)))

        def np_rand(*shape):
            assert not shape, "only scalar draws are enumerated"
            return pick([0.0, NEAR_ONE])

        random.random = lambda: pick([0.0, NEAR_ONE])
        random.randint = lambda a, b: pick(list(range(a, b + 1)))
        np.random.rand = np_rand
        np.random.randint = np_randint
        np.random.choice = np_choice
        runs += 1
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                out = _jsonable(call())
            outputs[json.dumps(out, sort_keys=True)] = out
        except Exception as e:  # noqa: BLE001 - every upstream exception is a recorded outcome
            raises.add(type(e).__name__)
        finally:
            random.random, random.randint, np.random.rand, np.random.randint, np.random.choice = saved
    return [outputs[k] for k in sorted(outputs)], sorted(raises), runs


def make(checkout: str, out_dir: str) -> None:
    sys.path.insert(0, HERE)
    from upstream_env import load_upstream

    os.environ.pop("MAX_CAP_LENGTH", None)  # upstream's default, 800
    load_upstream(checkout)
    from llava.constants import MAX_CAP_LENGTH
    from llava.train.data.process_functions import PROCESS_FUNCTIONs

    assert sorted(PROCESS_FUNCTIONs) == sorted(CASES), "upstream's function list changed"
    os.makedirs(out_dir, exist_ok=True)
    for name, cases in CASES.items():
        fn = PROCESS_FUNCTIONs[name]
        records = []
        seen = set()
        for case_id, row, options in cases():
            assert case_id not in seen, case_id
            seen.add(case_id)
            outputs, raises, runs = explore(
                lambda: fn(data=copy.deepcopy(row), tokenizer=None, has_image=True, **options)
            )
            records.append({"id": case_id, "row": row, "options": options, "outputs": outputs, "raises": raises})
            print(f"{name}/{case_id}: {len(outputs)} outputs, raises {raises or '-'} ({runs} runs)")
        doc = {
            "function": name,
            "upstream": UPSTREAM,
            "generated_by": "scripts/golden/make_converters.py",
            "max_cap_length": MAX_CAP_LENGTH,
            "cases": records,
        }
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: make_converters.py UPSTREAM_CHECKOUT [OUT_DIR]")
    default_out = os.path.join(HERE, "..", "..", "tests", "golden", "converters")
    make(sys.argv[1], os.path.normpath(sys.argv[2] if len(sys.argv) > 2 else default_out))
