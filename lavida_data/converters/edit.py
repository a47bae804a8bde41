"""Editing converters: sources go to both ``image`` (understanding) and ``image_gen_enc`` (VQ);
the target goes to ``image_gen`` and is padded to square, not cropped."""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import Field

from ..errors import SampleError
from ..registry import ConvertContext, converter
from ..sample import join_root
from .common import EDIT_SOURCE, PLAN_GPT, T2I_GPT, Options, gpt, human, number, paths, t2i_sample, text

EDIT_TYPES = ("add", "remove", "replace", "adjust")


class EditOptions(Options):
    no_template: bool = Field(
        False, description="the instruction already holds its <image> <image_gen_enc> markers: add none"
    )
    reweight: bool = Field(False, description="weight the image loss by the edited area")
    t2i: bool = Field(False, description="emit a text-to-image sample of the target, captioned by the instruction")
    pixel_diff: bool = Field(False, description="derive the edited area from pixel differences")


def edit_sample(sources: list[str], target: str, instruction: str, opts: EditOptions, row: Mapping[str, Any]) -> dict:
    if opts.t2i:
        return t2i_sample(target, instruction, row)
    prompt = instruction if opts.no_template else EDIT_SOURCE * len(sources) + instruction
    sample = {
        "conversations": [human(prompt), gpt(T2I_GPT)],
        "image": list(sources),
        "image_gen_enc": list(sources),
        "image_gen": target,
        "gen_transform": "pad",
    }
    hps = number(row, "hpsv2")
    if hps is not None:
        sample["hpsv2"] = hps
    if opts.reweight:
        sample["edit_reweight"] = True
    if opts.pixel_diff:
        sample["pixel_diff"] = True
    return sample


def _target(row: Mapping[str, Any], key: str) -> str:
    out = paths(row, key)
    if len(out) != 1:
        raise SampleError(f"bad_value:{key}", f"an edit has one target, {key!r} holds {len(out)}")
    return out[0]


@converter(
    "process_gpt_edit",
    options=EditOptions,
    columns=["input_paths", "output_paths", "instruction"],
    optional=["hpsv2"],
    aliases=["edit", "edit_gpt_image"],
)
def edit_gpt(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Edit (GPT-Image-Edit): `input_paths` (one or a list) -> `output_paths`, by `instruction`."""
    return edit_sample(paths(row, "input_paths"), _target(row, "output_paths"), text(row, "instruction"), ctx.options, row)


@converter(
    "process_sharegpt_4o_edit",
    options=EditOptions,
    columns=["input_image", "output_image", "input_prompt"],
    optional=["hpsv2"],
    aliases=["edit_sharegpt_4o"],
)
def edit_sharegpt_4o(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Edit (ShareGPT-4o-Image): `input_image` -> `output_image`, by `input_prompt`."""
    return edit_sample(paths(row, "input_image"), _target(row, "output_image"), text(row, "input_prompt"), ctx.options, row)


@converter(
    "process_pica_banana",
    options=EditOptions,
    columns=["local_input_image", "local_output_image", "text"],
    optional=["hpsv2"],
    aliases=["edit_pica_banana"],
)
def edit_pica_banana(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Edit (Pico-Banana): `local_input_image` -> `local_output_image`, by `text`."""
    return edit_sample(
        paths(row, "local_input_image"), _target(row, "local_output_image"), text(row, "text"), ctx.options, row
    )


@converter(
    "process_gpt_edit_loc_gnd",
    options=EditOptions,
    columns=["input_paths", "output_paths", "instruction", "grounding_text"],
    optional=["edit_type", "hpsv2"],
    aliases=["edit_layout_plan"],
)
def edit_loc(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Edit with a planned layout: the answer places the objects (`grounding_text`) before the
    image; `edit_type` (add, remove, replace, adjust) is named in the answer when given."""
    sample = edit_sample(paths(row, "input_paths"), _target(row, "output_paths"), text(row, "instruction"), ctx.options, row)
    loc = text(row, "grounding_text")
    etype = row.get("edit_type")
    if etype is not None and str(etype).strip():
        etype = str(etype).strip().lower()
        if etype not in EDIT_TYPES:
            raise SampleError("bad_value:edit_type", f"edit_type {etype!r} is not one of {EDIT_TYPES}")
        loc = f"({etype}) {loc}"
    sample["conversations"][1] = gpt(PLAN_GPT.format(loc=loc, target="<image_gen>"))
    sample["plan"] = True
    return sample


@converter(
    "process_metaquery",
    options=EditOptions,
    columns=["source_images_paths", "tgt_path", "dir_name", "prompt"],
    aliases=["edit_metaquery"],
)
def edit_metaquery(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Edit-like (MetaQuery): `source_images_paths` -> `tgt_path`, both relative to `dir_name`."""
    folder = text(row, "dir_name")
    sources = [join_root(folder, p) for p in paths(row, "source_images_paths")]
    return edit_sample(sources, join_root(folder, text(row, "tgt_path")), text(row, "prompt"), ctx.options, row)
