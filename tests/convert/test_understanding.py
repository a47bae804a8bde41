"""Understanding, grounding and UniWorld converters beyond the golden fixtures: registry,
columns, options, our extra options, image_root, skip reasons, and the relaxed sample check.

The payloads themselves are checked against upstream's in test_golden.py.
"""

from __future__ import annotations

import json

import pydantic
import pytest

import lavida_data
from lavida_data.convert.sample import check_sample

MAMMOTH = "preproces_und_mammoth_si_10M"
VW = "preproces_vw_instruct"
GRANDF = "preproces_grandf"
REFCOCO = "preproces_refcoco_rec"
REFLECTION = "preprocess_reflection_und"
UNIWORLD = "process_uniworld"

TURNS = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A dog."}]
UPSTREAM_REASONING = "\n Please also perform detailed reasoning for this problem and provide detailed reasoning traces."
UW = {"image": ["in.png"], "image_gen": ["out.png"], "image_gen_enc": ["in.png"], "is_edit": True, "folder": "uw",
      "conversations": [{"from": "human", "value": "<image> <image_gen_enc> red"},
                        {"from": "gpt", "value": "<image_gen>"}]}


@pytest.mark.parametrize(
    "name, aliases",
    [
        (MAMMOTH, ["und_mammoth", "preprocess_und_mammoth_si_10M"]),
        (VW, ["und_vw_instruct", "preprocess_vw_instruct"]),
        (GRANDF, ["grounding_grandf", "preprocess_grandf"]),
        (REFCOCO, ["grounding_refcoco", "preprocess_refcoco_rec"]),
        (REFLECTION, ["und_reflection"]),
        (UNIWORLD, ["passthrough"]),
    ],
)
def test_aliases_resolve_to_the_same_builtin(name, aliases):
    conv = lavida_data.registry.get(name)
    assert conv.name == name and conv.source == "builtin"
    for alias in aliases:
        assert lavida_data.registry.get(alias) is conv


@pytest.mark.parametrize(
    "name, required",
    [
        (MAMMOTH, ["image", "conversations"]),
        (VW, ["image", "conversations"]),
        (GRANDF, ["s3_path", "loc_caption"]),
        (REFCOCO, ["s3_path", "label", "loc_string"]),
        (REFLECTION, ["image", "prompts", "results"]),
        (UNIWORLD, ["conversations", "image", "image_gen", "image_gen_enc", "is_edit", "folder"]),
    ],
)
def test_columns_are_what_upstream_reads(name, required):
    conv = lavida_data.registry.get(name)
    assert conv.required_columns() == required and conv.optional_columns() == []


@pytest.mark.parametrize("name", [MAMMOTH, VW, GRANDF, REFCOCO, REFLECTION, UNIWORLD])
def test_s3_prefix_accepted_with_upstream_default(name):
    conv = lavida_data.registry.get(name)
    assert conv.parse_options({}).s3_prefix == ""
    assert conv.parse_options({"s3_prefix": "s3://shufan-internship-2025/x/"}).s3_prefix.endswith("/x/")


@pytest.mark.parametrize(
    "name, opts",
    [
        (MAMMOTH, {"s3_prefix": 1}), (MAMMOTH, {"s3_prefix": None}), (MAMMOTH, {"prefix": "s3://x"}),
        (VW, {"long_answer_words": -1}), (VW, {"reasoning_prompt": 3}), (GRANDF, {"folder": "x"}),
        (REFCOCO, {"label_key": "x"}), (REFLECTION, {"prompt_key": "p"}),
        (UNIWORLD, {"folder": "images"}), (UNIWORLD, {"reweight": True}), (UNIWORLD, {"do_reweight": "yes"}),
    ],
)
def test_bad_or_foreign_options_are_rejected(name, opts):
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(name).parse_options(opts)


def test_uniworld_option_defaults():
    o = lavida_data.registry.get(UNIWORLD).parse_options({})
    assert (o.pixel_diff, o.do_reweight) == (False, False)


# ---------------------------------------------------------------- our extra options (VisualWebInstruct)


def test_vw_reasoning_request_defaults_to_upstream_and_is_configurable(convert):
    long = [TURNS[0], {"from": "gpt", "value": "word " * 20}]
    row = {"image": ["a.jpg"], "conversations": long}
    assert convert(VW, row)["conversations"] == long
    s = convert(VW, row, {"long_answer_words": 19})
    assert s["conversations"][0]["value"] == TURNS[0]["value"] + UPSTREAM_REASONING
    s = convert(VW, row, {"long_answer_words": 19, "reasoning_prompt": " Think."})
    assert s["conversations"][0]["value"] == TURNS[0]["value"] + " Think."
    assert row["conversations"][0] is TURNS[0] and TURNS[0]["value"] == "<image>\nWhat is shown?"  # row untouched


# ---------------------------------------------------------------- image_root, ids, determinism


def test_prefixes_then_image_root(convert, check_deterministic):
    row = {"conversations": json.dumps(TURNS), "image": "coco/1.jpg"}
    assert convert(MAMMOTH, row, image_root="/data")["image"] == "/data/coco/1.jpg"
    assert convert(MAMMOTH, row, {"s3_prefix": "s3://b/m"}, image_root="/data")["image"] == "s3://b/m/coco/1.jpg"
    s = check_deterministic(VW, {"image": ["a.jpg", "/abs/b.jpg"], "conversations": TURNS}, image_root="/r")
    assert s["image"] == ["/r/a.jpg", "/abs/b.jpg"] and s["id"] == "d:7"
    s = convert(GRANDF, {"s3_path": "g.jpg", "loc_caption": "c"}, {"s3_prefix": "unused/"}, image_root="/r")
    assert s["image"] == "/r/g.jpg"
    s = check_deterministic(UNIWORLD, UW, image_root="/r")
    assert s["image"] == s["image_gen_enc"] == ["/r/uw/in.png"] and s["image_gen"] == ["/r/uw/out.png"]


# ---------------------------------------------------------------- samples upstream accepts, skips


def test_samples_with_unmatched_markers_are_kept(convert):
    s = convert(REFLECTION, {"image": None, "prompts": "p", "results": "r"})
    assert "image" not in s and s["conversations"][0]["value"].startswith("<image>\n")
    s = convert(MAMMOTH, {"image": "a.jpg", "conversations": json.dumps(TURNS[1:] * 2)})
    assert s["image"] == "a.jpg"
    s = convert(UNIWORLD, {**UW, "image_gen_enc": [], "image": [], "image_gen": []})
    assert (s["image"], s["image_gen"], s["image_gen_enc"], s["pad_image_gen"]) == (None, None, None, True)


@pytest.mark.parametrize(
    "name, row, why",
    [
        (MAMMOTH, {"image": 3, "conversations": json.dumps(TURNS)}, "bad_value:image"),
        (MAMMOTH, {"image": "a.jpg", "conversations": None}, "missing:conversations"),
        (MAMMOTH, {"image": "a.jpg", "conversations": json.dumps({"from": "human"})}, "bad_conversations"),
        (MAMMOTH, {"image": "a.jpg", "conversations": "[]"}, "bad_conversations"),
        (MAMMOTH, {"image": "", "conversations": json.dumps(TURNS)}, "bad_image_path:image"),
        (VW, {"image": "a.jpg", "conversations": TURNS}, "bad_value:image"),
        (VW, {"image": ["a.jpg", 3], "conversations": TURNS}, "bad_value:image"),
        (VW, {"image": ["a.jpg"], "conversations": [TURNS[0], {"from": "gpt"}]}, "bad_value:conversations"),
        (VW, {"image": ["a.jpg"], "conversations": [TURNS[0], TURNS[1], {"from": "x", "value": 3}]},
         "bad_conversations"),
        (GRANDF, {"s3_path": "a.jpg", "loc_caption": 5}, "bad_value:loc_caption"),
        (REFCOCO, {"s3_path": None, "label": "l", "loc_string": "s"}, "missing:s3_path"),
        (REFLECTION, {"image": "a.jpg", "prompts": None, "results": "r"}, "missing:prompts"),
        (UNIWORLD, {**UW, "folder": 3}, "bad_value:folder"),
        (UNIWORLD, {**UW, "image_gen": "out.png"}, "bad_value:image_gen"),
        (UNIWORLD, {**UW, "image_gen_enc": None}, "missing:image_gen_enc"),
        (UNIWORLD, {**UW, "conversations": json.dumps(UW["conversations"])}, "bad_conversations"),
    ],
)
def test_skip_reasons(reason, name, row, why):
    assert reason(name, row) == why


def test_check_sample_keeps_type_checks():
    check_sample({"conversations": [{"from": "human", "value": "<image> <image>"}], "image": None})
    for bad in ([], None, "text", [{"from": "human"}], [{"from": 1, "value": "x"}], ["turn"]):
        with pytest.raises(lavida_data.SampleError) as ei:
            check_sample({"conversations": bad})
        assert ei.value.reason == "bad_conversations"


def test_json_list_forms_of_our_importers(convert):
    conv = json.dumps(TURNS)
    assert convert(MAMMOTH, {"image": '["a.jpg", "b.jpg"]', "conversations": conv}, {"s3_prefix": "p"})["image"] == [
        "p/a.jpg", "p/b.jpg"]
    assert convert(MAMMOTH, {"image": "[x].jpg", "conversations": conv})["image"] == "[x].jpg"
    row = {"image": "g.png", "prompts": '["a", "b"]', "results": '["yes"]'}  # unequal: taken as text
    s = convert(REFLECTION, row)
    assert '["a", "b"]' in s["conversations"][0]["value"] and s["conversations"][1]["value"] == '["yes"]'
    both = {**row, "results": '["yes", "no"]'}
    pairs = {tuple(t["value"] for t in convert(REFLECTION, both, position=p)["conversations"]) for p in range(40)}
    assert {r for _, r in pairs} == {"yes", "no"}
    assert all(("prompt: a Focus" in h) == (r == "yes") for h, r in pairs)
