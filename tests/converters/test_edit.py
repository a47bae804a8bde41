"""Editing converters: sources to ``image`` and ``image_gen_enc``, target to ``image_gen`` (padded)."""

from __future__ import annotations

import json

import pydantic
import pytest

import lavida_data

GPT_EDIT = "process_gpt_edit"
SHAREGPT = "process_sharegpt_4o_edit"
PICA = "process_pica_banana"
LOC_GND = "process_gpt_edit_loc_gnd"
METAQUERY = "process_metaquery"

# converter -> (sources column, target column, instruction column)
COLUMNS = {
    GPT_EDIT: ("input_paths", "output_paths", "instruction"),
    SHAREGPT: ("input_image", "output_image", "input_prompt"),
    PICA: ("local_input_image", "local_output_image", "text"),
}
PLAIN = list(COLUMNS)
ALL = [GPT_EDIT, SHAREGPT, PICA, LOC_GND, METAQUERY]

GROUNDING = "<box_p> a hat </box_p><LOC_BEGIN><LOC_100><LOC_50><LOC_400><LOC_300><LOC_END>"


def make_row(name, sources, target, instruction, **extra):
    if name == METAQUERY:
        row = {"source_images_paths": sources, "tgt_path": target, "dir_name": "mq", "prompt": instruction}
    else:
        src, tgt, ins = COLUMNS.get(name, COLUMNS[GPT_EDIT])
        row = {src: sources, tgt: target, ins: instruction}
        if name == LOC_GND:
            row["grounding_text"] = GROUNDING
    row.update(extra)
    return row


@pytest.mark.parametrize(
    "name, aliases",
    [
        (GPT_EDIT, ["edit", "edit_gpt_image"]),
        (SHAREGPT, ["edit_sharegpt_4o"]),
        (PICA, ["edit_pica_banana"]),
        (LOC_GND, ["edit_layout_plan"]),
        (METAQUERY, ["edit_metaquery"]),
    ],
)
def test_aliases_resolve_to_the_same_converter(name, aliases):
    conv = lavida_data.registry.get(name)
    assert conv.name == name
    for alias in aliases:
        assert lavida_data.registry.get(alias) is conv


@pytest.mark.parametrize("name", PLAIN)
def test_edit_template_and_roles(convert, name):
    s = convert(name, make_row(name, "s3://b/src.png", "s3://b/tgt.png", "make the sky pink"))
    assert s["conversations"] == [
        {"from": "human", "value": "<image> <image_gen_enc> make the sky pink"},
        {"from": "gpt", "value": "Sure <image_gen>"},
    ]
    assert s["image"] == ["s3://b/src.png"]
    assert s["image_gen_enc"] == ["s3://b/src.png"]
    assert s["image_gen"] == "s3://b/tgt.png"
    assert s["gen_transform"] == "pad"  # the target is padded to square, not cropped
    assert s["id"] == "d:7"
    for key in ("hpsv2", "edit_reweight", "pixel_diff", "plan"):
        assert key not in s


@pytest.mark.parametrize("name", PLAIN)
def test_edit_several_sources(convert, name):
    for sources in (["a.png", "b.png"], '["a.png", "b.png"]', ("a.png", "b.png")):
        s = convert(name, make_row(name, sources, "t.png", "put the cat of the first into the second"))
        assert s["conversations"][0]["value"] == (
            "<image> <image_gen_enc> <image> <image_gen_enc> put the cat of the first into the second"
        )
        assert s["image"] == ["a.png", "b.png"]
        assert s["image_gen_enc"] == ["a.png", "b.png"]


@pytest.mark.parametrize("name", PLAIN)
def test_edit_paths_joined_onto_image_root(convert, name):
    row = make_row(name, ["src/a.png", "s3://other/b.png", "/abs/c.png"], ["out/t.png"], "edit")
    s = convert(name, row, image_root="/data/edit")
    assert s["image"] == ["/data/edit/src/a.png", "s3://other/b.png", "/abs/c.png"]
    assert s["image_gen_enc"] == s["image"]
    assert s["image_gen"] == "/data/edit/out/t.png"
    s = convert(name, row, image_root="s3://edits")
    assert s["image"][0] == "s3://edits/src/a.png" and s["image_gen"] == "s3://edits/out/t.png"


@pytest.mark.parametrize("name", PLAIN)
def test_edit_hpsv2_kept(convert, reason, name):
    assert convert(name, make_row(name, "a.png", "t.png", "edit", hpsv2=0.27))["hpsv2"] == 0.27
    assert convert(name, make_row(name, "a.png", "t.png", "edit", hpsv2="0.5"))["hpsv2"] == 0.5
    assert reason(name, make_row(name, "a.png", "t.png", "edit", hpsv2="good")) == "bad_value:hpsv2"


@pytest.mark.parametrize("name", PLAIN)
def test_edit_bad_rows(reason, name):
    src, tgt, ins = COLUMNS[name]
    ok = make_row(name, "a.png", "t.png", "edit")
    assert reason(name, {**ok, src: None}) == f"missing:{src}"
    assert reason(name, {**ok, src: []}) == f"missing:{src}"
    assert reason(name, {**ok, src: [1]}) == f"bad_value:{src}"
    assert reason(name, {**ok, src: "[broken"}) == f"bad_value:{src}"
    assert reason(name, {**ok, tgt: ""}) == f"missing:{tgt}"
    assert reason(name, {**ok, tgt: ["t1.png", "t2.png"]}) == f"bad_value:{tgt}"
    assert reason(name, {**ok, ins: "  "}) == f"missing:{ins}"


@pytest.mark.parametrize("name", PLAIN)
def test_edit_single_target_in_a_list(convert, name):
    s = convert(name, make_row(name, ["a.png"], ["t.png"], "edit"))
    assert s["image_gen"] == "t.png"
    s = convert(name, make_row(name, ["a.png"], '["t.png"]', "edit"))
    assert s["image_gen"] == "t.png"


@pytest.mark.parametrize("name", ALL)
def test_edit_no_template(convert, reason, name):
    ins = "<image> <image_gen_enc> make it night"
    s = convert(name, make_row(name, "a.png", "t.png", ins), {"no_template": True})
    assert s["conversations"][0]["value"] == ins
    assert s["image_gen_enc"] == (["mq/a.png"] if name == METAQUERY else ["a.png"])
    # without its markers, the instruction does not match the images
    bad = make_row(name, "a.png", "t.png", "make it night")
    assert reason(name, bad, {"no_template": True}) == "image_marker_mismatch"
    # and a template on top of markers doubles them
    assert reason(name, make_row(name, "a.png", "t.png", ins)) == "image_marker_mismatch"


@pytest.mark.parametrize("name", ALL)
def test_edit_reweight_and_pixel_diff(convert, name):
    row = make_row(name, "a.png", "t.png", "edit")
    s = convert(name, row, {"reweight": True})
    assert s["edit_reweight"] is True and "pixel_diff" not in s
    s = convert(name, row, {"pixel_diff": True})
    assert s["pixel_diff"] is True and "edit_reweight" not in s
    s = convert(name, row, {"reweight": True, "pixel_diff": True})
    assert s["edit_reweight"] is True and s["pixel_diff"] is True
    assert s["gen_transform"] == "pad"


@pytest.mark.parametrize("name", PLAIN)
def test_edit_t2i_option(convert, name):
    row = make_row(name, ["a.png", "b.png"], "t.png", "a cat wearing a hat", hpsv2=0.3)
    s = convert(name, row, {"t2i": True}, image_root="/r")
    assert s["conversations"] == [
        {"from": "human", "value": "Generate an image with the caption: a cat wearing a hat [[micro_conds_texts]]"},
        {"from": "gpt", "value": "Sure <image_gen>"},
    ]
    assert s["image_gen"] == "/r/t.png"
    assert "image" not in s and "image_gen_enc" not in s
    assert s["gen_transform"] == "crop"
    assert s["hpsv2"] == 0.3


@pytest.mark.parametrize("name", ALL)
def test_edit_deterministic(check_deterministic, name):
    s = check_deterministic(name, make_row(name, ["a.png", "b.png"], "t.png", "edit it"))
    assert s["conversations"][0]["value"].count("<image_gen_enc>") == 2


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "opts",
    [{"no_template": "yes"}, {"reweight": 1}, {"t2i": None}, {"pixel_diff": "true"}, {"notemplate": True}, {"edit_type": "add"}],
)
def test_edit_bad_options(name, opts):
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(name).parse_options(opts)


@pytest.mark.parametrize("name", ALL)
def test_edit_option_defaults(name):
    o = lavida_data.registry.get(name).parse_options({})
    assert (o.no_template, o.reweight, o.t2i, o.pixel_diff) == (False, False, False, False)


# ---------------------------------------------------------------- process_gpt_edit_loc_gnd


def test_loc_gnd_plan_answer(convert):
    row = make_row(LOC_GND, "src.png", "tgt.png", "give the man a hat")
    s = convert(LOC_GND, row, image_root="s3://edits")
    assert s["conversations"] == [
        {"from": "human", "value": "<image> <image_gen_enc> give the man a hat"},
        {
            "from": "gpt",
            "value": "Sure I should place the objects in the following manner "
            "<box_p> a hat </box_p><LOC_BEGIN><LOC_100><LOC_50><LOC_400><LOC_300><LOC_END> <image_gen>",
        },
    ]
    assert s["image"] == ["s3://edits/src.png"] and s["image_gen_enc"] == ["s3://edits/src.png"]
    assert s["image_gen"] == "s3://edits/tgt.png"
    assert s["plan"] is True
    assert s["gen_transform"] == "pad"
    assert s["id"] == "d:7"


@pytest.mark.parametrize(
    "edit_type, prefix",
    [("add", "(add) "), ("remove", "(remove) "), ("replace", "(replace) "), ("adjust", "(adjust) "),
     (" Add ", "(add) "), ("REPLACE", "(replace) "), (None, ""), ("", ""), ("  ", "")],
)
def test_loc_gnd_edit_type(convert, edit_type, prefix):
    s = convert(LOC_GND, make_row(LOC_GND, "a.png", "t.png", "edit", edit_type=edit_type))
    assert s["conversations"][1]["value"] == (
        f"Sure I should place the objects in the following manner {prefix}{GROUNDING} <image_gen>"
    )


@pytest.mark.parametrize("edit_type", ["delete", "style", "added", 3])
def test_loc_gnd_bad_edit_type(reason, edit_type):
    assert reason(LOC_GND, make_row(LOC_GND, "a.png", "t.png", "edit", edit_type=edit_type)) == "bad_value:edit_type"


def test_loc_gnd_bad_rows(reason):
    row = make_row(LOC_GND, "a.png", "t.png", "edit")
    assert reason(LOC_GND, {**row, "grounding_text": None}) == "missing:grounding_text"
    assert reason(LOC_GND, {**row, "input_paths": None}) == "missing:input_paths"
    assert reason(LOC_GND, {**row, "output_paths": ["a", "b"]}) == "bad_value:output_paths"
    assert reason(LOC_GND, {**row, "instruction": ""}) == "missing:instruction"


def test_loc_gnd_options(convert):
    row = make_row(LOC_GND, ["a.png", "b.png"], "t.png", "<image> <image_gen_enc> <image> <image_gen_enc> merge", hpsv2=0.2)
    s = convert(LOC_GND, row, {"no_template": True, "reweight": True})
    assert s["conversations"][0]["value"] == "<image> <image_gen_enc> <image> <image_gen_enc> merge"
    assert s["conversations"][1]["value"].startswith("Sure I should place the objects in the following manner ")
    assert s["edit_reweight"] is True and s["hpsv2"] == 0.2 and s["plan"] is True


def test_loc_gnd_columns():
    conv = lavida_data.registry.get(LOC_GND)
    assert set(conv.required_columns()) == {"input_paths", "output_paths", "instruction", "grounding_text"}
    assert set(conv.optional_columns()) == {"edit_type", "hpsv2"}


# ---------------------------------------------------------------- process_metaquery


def test_metaquery_sources_and_target_under_dir_name(convert):
    row = {
        "source_images_paths": ["a.png", "b.png"],
        "tgt_path": "t.png",
        "dir_name": "metaquery/set1",
        "prompt": "the dog from the first in the scene of the second",
    }
    s = convert(METAQUERY, row, image_root="/data")
    assert s["conversations"] == [
        {
            "from": "human",
            "value": "<image> <image_gen_enc> <image> <image_gen_enc> the dog from the first in the scene of the second",
        },
        {"from": "gpt", "value": "Sure <image_gen>"},
    ]
    assert s["image"] == ["/data/metaquery/set1/a.png", "/data/metaquery/set1/b.png"]
    assert s["image_gen_enc"] == s["image"]
    assert s["image_gen"] == "/data/metaquery/set1/t.png"
    assert s["gen_transform"] == "pad"
    assert s["id"] == "d:7"


def test_metaquery_s3_dir_and_absolute_paths(convert):
    row = {"source_images_paths": json.dumps(["a.png", "s3://x/b.png"]), "tgt_path": "t.png",
           "dir_name": "s3://mq/set2", "prompt": "p"}
    s = convert(METAQUERY, row, image_root="/ignored")
    assert s["image"] == ["s3://mq/set2/a.png", "s3://x/b.png"]
    assert s["image_gen"] == "s3://mq/set2/t.png"


def test_metaquery_bad_rows(reason):
    row = {"source_images_paths": ["a.png"], "tgt_path": "t.png", "dir_name": "d", "prompt": "p"}
    assert reason(METAQUERY, {**row, "dir_name": ""}) == "missing:dir_name"
    assert reason(METAQUERY, {**row, "tgt_path": None}) == "missing:tgt_path"
    assert reason(METAQUERY, {**row, "source_images_paths": []}) == "missing:source_images_paths"
    assert reason(METAQUERY, {**row, "prompt": None}) == "missing:prompt"


def test_metaquery_t2i(convert):
    row = {"source_images_paths": ["a.png"], "tgt_path": "t.png", "dir_name": "d", "prompt": "a dog"}
    s = convert(METAQUERY, row, {"t2i": True})
    assert s["conversations"][0]["value"] == "Generate an image with the caption: a dog [[micro_conds_texts]]"
    assert s["image_gen"] == "d/t.png" and "image" not in s
