"""Editing converters: the sources go to both ``image`` (understanding) and ``image_gen_enc``
(VQ), the target to ``image_gen``, padded to a square (``pad_image_gen``)."""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import Field

from lavida_data.convert.builtin.common import (
    EDIT_SOURCE,
    GEN,
    GEN_FAKE,
    MICRO,
    T2I_GPT,
    PrefixOptions,
    gpt,
    human,
    join,
    path_list,
    scores,
    text,
)
from lavida_data.convert.registry import ConvertContext, converter
from lavida_data.errors import SampleError


class EditOptions(PrefixOptions):
    no_template: bool = Field(
        False, description="add no '<image> <image_gen_enc> ' per source: the instruction has its markers"
    )
    reweight: bool = Field(False, description="weight the image loss by the edited area (sets the sample's `reweight`)")
    t2i: bool = Field(False, description="append the micro-condition label to the instruction")


class PixelDiffOptions(EditOptions):
    pixel_diff: bool = Field(False, description="state the pixel difference of source and target in the prompt")


def edit_payload(
    row: Mapping[str, Any], o: EditOptions, src: str, tgt: str, ins: str, *, suffix: str = ""
) -> tuple[dict, str]:
    """The keys every edit converter shares, and the human text before the micro label."""
    sources = [join(o.s3_prefix, p) for p in path_list(row, src)]
    target = join(o.s3_prefix, text(row, tgt))
    template = "" if o.no_template else EDIT_SOURCE * len(sources)
    prompt = f"{template} {text(row, ins)}{suffix}" + (f" {MICRO}" if o.t2i else "")
    return {"image_gen_enc": sources, "image": list(sources), "image_gen": target, "pad_image_gen": True}, prompt


def _edit(row: Mapping[str, Any], o: EditOptions, src: str, tgt: str, ins: str) -> dict:
    sample, prompt = edit_payload(row, o, src, tgt, ins)
    sample["conversations"] = [human(prompt), gpt(T2I_GPT)]
    sample["reweight"] = o.reweight
    if isinstance(o, PixelDiffOptions):
        sample["pixel_diff"] = o.pixel_diff
        sample.update(scores(row, ["hpsv2"]))
    return sample


@converter(
    "process_gpt_edit",
    options=PixelDiffOptions,
    columns=["input_paths", "output_paths", "instruction"],
    optional=["hpsv2"],
    aliases=["edit", "edit_gpt_image"],
)
def edit_gpt(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Edit (GPT-Image-Edit and others): `input_paths` (one or a list) -> `output_paths`, by `instruction`."""
    return _edit(row, ctx.options, "input_paths", "output_paths", "instruction")


@converter(
    "process_sharegpt_4o_edit",
    options=EditOptions,
    columns=["input_image", "output_image", "input_prompt"],
    aliases=["edit_sharegpt_4o"],
)
def edit_sharegpt_4o(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Edit (ShareGPT-4o-Image): `input_image` -> `output_image`, by `input_prompt` (no HPSv2, no pixel_diff)."""
    return _edit(row, ctx.options, "input_image", "output_image", "input_prompt")


@converter(
    "process_pica_banana",
    options=PixelDiffOptions,
    columns=["local_input_image", "local_output_image", "text"],
    optional=["hpsv2"],
    aliases=["edit_pica_banana"],
)
def edit_pica_banana(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Edit (Pico-Banana): `local_input_image` -> `local_output_image`, by `text`."""
    return _edit(row, ctx.options, "local_input_image", "local_output_image", "text")


class LocGndOptions(PixelDiffOptions):
    reweight: bool = Field(False, description="accepted as upstream declares it; unused (no `reweight` key)")
    task: str = Field(
        "add", description="edit kind when the row's `edit_type` is empty: add, remove, swap/replace, adjust, other"
    )
    plan_only: bool = Field(False, description="plan only: answer with <image_gen_fake>, no target")


EDIT_REASONS = {
    "add": "I should consider adding the objects in these locations : ",
    "remove": "I should consider removing the objects in these locations : ",
    "swap": "I should consider replacing the objects in these locations : ",
    "replace": "I should consider replacing the objects in these locations : ",
    "adjust": "I should consider adjusting the objects in these locations : ",
}
OTHER_EDIT = "I should consider edit the objects in these locations : "
PLAN_REQUEST = ". Please first think and plan the layout in LOC format. "


@converter(
    "process_gpt_edit_loc_gnd",
    options=LocGndOptions,
    columns=["input_paths", "output_paths", "instruction", "grounding_text"],
    optional=["edit_type", "hpsv2"],
    aliases=["edit_layout_plan"],
)
def edit_loc(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Edit with a planned layout: the answer names the edit (`edit_type`, else `task`) and
    places the objects (`grounding_text`) before the image, or instead of it (`plan_only`)."""
    o: LocGndOptions = ctx.options
    sample, prompt = edit_payload(row, o, "input_paths", "output_paths", "instruction", suffix=PLAN_REQUEST)
    task = (row.get("edit_type") or o.task) if "edit_type" in row else o.task
    reason = EDIT_REASONS.get(task, OTHER_EDIT) if isinstance(task, str) else OTHER_EDIT
    answer = f"Sure {reason} {text(row, 'grounding_text')} {GEN_FAKE if o.plan_only else GEN}"
    sample["conversations"] = [human(prompt), gpt(answer)]
    sample["pixel_diff"] = o.pixel_diff
    if o.plan_only:
        del sample["image_gen"]
    else:
        sample["do_not_mask_text"] = True
    sample.update(scores(row, ["hpsv2"]))
    return sample


@converter(
    "process_metaquery",
    options=PrefixOptions,
    columns=["source_images_paths", "tgt_path", "dir_name", "prompt"],
    aliases=["edit_metaquery"],
)
def edit_metaquery(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Edit-like (MetaQuery): `source_images_paths` -> `tgt_path`, both under `dir_name`; one
    '<image> <image_gen_enc>' whatever the number of sources, as upstream."""
    prefix = ctx.options.s3_prefix
    folder = text(row, "dir_name")
    if isinstance(row.get("source_images_paths"), str):  # upstream would take each character as a path
        raise SampleError("bad_value:source_images_paths", "source_images_paths must be a list of paths")
    sources = [join(prefix, folder, p) for p in path_list(row, "source_images_paths")]
    return {
        "image_gen_enc": sources,
        "image": list(sources),
        "image_gen": join(prefix, folder, text(row, "tgt_path")),
        "pad_image_gen": True,
        "conversations": [human(EDIT_SOURCE + text(row, "prompt")), gpt(T2I_GPT)],
    }
