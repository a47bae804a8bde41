"""Editing converters beyond the golden fixtures: registry, columns, options, image_root, skips.

The payloads themselves are checked against upstream's in test_golden.py.
"""

from __future__ import annotations

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
    LOC_GND: ("input_paths", "output_paths", "instruction"),
}
GROUNDING = "<LOC_100><LOC_50><LOC_400><LOC_300> a hat"


def make_row(name, sources, target="t.png", instruction="edit it", **extra):
    if name == METAQUERY:
        row = {"source_images_paths": sources, "tgt_path": target, "dir_name": "mq", "prompt": instruction}
    else:
        src, tgt, ins = COLUMNS[name]
        row = {src: sources, tgt: target, ins: instruction}
        if name == LOC_GND:
            row["grounding_text"] = GROUNDING
    return {**row, **extra}


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
def test_aliases_resolve_to_the_same_builtin(name, aliases):
    conv = lavida_data.registry.get(name)
    assert conv.name == name and conv.source == "builtin"
    for alias in aliases:
        assert lavida_data.registry.get(alias) is conv


@pytest.mark.parametrize(
    "name, required, optional",
    [
        (GPT_EDIT, ["input_paths", "output_paths", "instruction"], ["hpsv2"]),
        (SHAREGPT, ["input_image", "output_image", "input_prompt"], []),
        (PICA, ["local_input_image", "local_output_image", "text"], ["hpsv2"]),
        (LOC_GND, ["input_paths", "output_paths", "instruction", "grounding_text"], ["edit_type", "hpsv2"]),
        (METAQUERY, ["source_images_paths", "tgt_path", "dir_name", "prompt"], []),
    ],
)
def test_columns_are_what_upstream_reads(name, required, optional):
    conv = lavida_data.registry.get(name)
    assert conv.required_columns() == required and conv.optional_columns() == optional


@pytest.mark.parametrize(
    "name, opts",
    [
        (SHAREGPT, {"s3_prefix": "s3://xiangw-data/Data/ShareGPT-4o-Image/"}),  # upstream's config
        (LOC_GND, {"plan_only": False, "task": "add"}),
        (LOC_GND, {"plan_only": True, "task": "swap"}),
        (GPT_EDIT, {"s3_prefix": "p", "no_template": True, "reweight": True, "t2i": True, "pixel_diff": True}),
        (PICA, {"s3_prefix": "p", "no_template": True, "reweight": True, "t2i": True, "pixel_diff": True}),
        (LOC_GND, {"s3_prefix": "p", "no_template": True, "reweight": True, "t2i": True, "pixel_diff": True}),
        (METAQUERY, {"s3_prefix": "s3://mq"}),
    ],
)
def test_upstream_options_accepted(name, opts):
    lavida_data.registry.get(name).parse_options(opts)


@pytest.mark.parametrize(
    "name, opts",
    [
        (GPT_EDIT, {"no_template": "yes"}), (GPT_EDIT, {"reweight": 1}), (GPT_EDIT, {"t2i": None}),
        (GPT_EDIT, {"pixel_diff": "true"}), (GPT_EDIT, {"notemplate": True}), (GPT_EDIT, {"s3_prefix": None}),
        (GPT_EDIT, {"task": "add"}), (GPT_EDIT, {"plan_only": True}),
        # options upstream's function does not declare
        (SHAREGPT, {"pixel_diff": True}), (PICA, {"edit_type": "add"}), (LOC_GND, {"edit_type": "add"}),
        (LOC_GND, {"task": 3}), (METAQUERY, {"no_template": True}), (METAQUERY, {"reweight": True}),
        (METAQUERY, {"t2i": True}), (METAQUERY, {"pixel_diff": True}),
    ],
)
def test_bad_or_foreign_options_are_rejected(name, opts):
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(name).parse_options(opts)


def test_option_defaults_are_upstream_defaults():
    for name in (GPT_EDIT, SHAREGPT, PICA, LOC_GND):
        o = lavida_data.registry.get(name).parse_options({})
        assert (o.s3_prefix, o.no_template, o.reweight, o.t2i) == ("", False, False, False)
    loc = lavida_data.registry.get(LOC_GND).parse_options({})
    assert (loc.task, loc.plan_only, loc.pixel_diff) == ("add", False, False)
    assert lavida_data.registry.get(METAQUERY).parse_options({}).s3_prefix == ""


@pytest.mark.parametrize("name", [GPT_EDIT, SHAREGPT, PICA, LOC_GND, METAQUERY])
def test_deterministic_and_joined_onto_image_root(convert, check_deterministic, name):
    row = make_row(name, ["a.png", "/abs/c.png"])
    s = check_deterministic(name, row, image_root="/data")
    folder = "mq/" if name == METAQUERY else ""
    assert s["image"] == s["image_gen_enc"] == [f"/data/{folder}a.png", "/abs/c.png"]
    if name != LOC_GND or "image_gen" in s:
        assert s["image_gen"] == f"/data/{folder}t.png"
    assert s["id"] == "d:7"


@pytest.mark.parametrize(
    "name, row, why",
    [
        (GPT_EDIT, make_row(GPT_EDIT, ["a.png", None]), "bad_value:input_paths"),
        (GPT_EDIT, make_row(GPT_EDIT, "a.png", target=""), "bad_image_path:image_gen"),
        (GPT_EDIT, make_row(GPT_EDIT, "a.png", hpsv2="high"), "bad_value:hpsv2"),
        (SHAREGPT, make_row(SHAREGPT, 3), "bad_value:input_image"),
        (PICA, make_row(PICA, "a.png", instruction=4), "bad_value:text"),
        (LOC_GND, make_row(LOC_GND, "a.png", grounding_text=["x"]), "bad_value:grounding_text"),
        (METAQUERY, make_row(METAQUERY, "a.png"), "bad_value:source_images_paths"),
        (METAQUERY, make_row(METAQUERY, ["a.png"], dir_name=None), "missing:dir_name"),
        (METAQUERY, make_row(METAQUERY, ["a.png"], prompt=None), "missing:prompt"),
    ],
)
def test_skip_reasons(reason, name, row, why):
    assert reason(name, row) == why


def test_loc_gnd_edit_type_column_decides_over_task(convert):
    row = make_row(LOC_GND, "a.png", edit_type="remove")
    assert "removing" in convert(LOC_GND, row, {"task": "add"})["conversations"][1]["value"]
    row = make_row(LOC_GND, "a.png")
    assert "replacing" in convert(LOC_GND, row, {"task": "swap"})["conversations"][1]["value"]


def test_loc_gnd_plan_only_has_no_target(convert):
    s = convert(LOC_GND, make_row(LOC_GND, "a.png"), {"plan_only": True})
    assert "image_gen" not in s and "do_not_mask_text" not in s
    assert s["conversations"][1]["value"].endswith("<image_gen_fake>") and s["image"] == ["a.png"]
