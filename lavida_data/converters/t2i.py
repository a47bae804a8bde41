"""Text-to-image converters: plain, by image-store hash, with a layout plan, and region-detailed."""

from __future__ import annotations

import json
from typing import Any, Literal, Mapping

from pydantic import Field, model_validator

from ..errors import SampleError
from ..registry import ConvertContext, converter
from ..sample import join_root
from .common import (
    MICRO,
    PLAN_GPT,
    T2I_GPT,
    T2I_HUMAN,
    CaptionOptions,
    TruncateOptions,
    gpt,
    human,
    pick_caption,
    scores,
    t2i_sample,
    text,
)

SCORES = ["fltLaionAesthScore", "hpsv2"]


@converter(
    "preproces_text_to_image_generation_s3",
    options=CaptionOptions,
    columns=lambda o: ["s3_path", *o.caption_columns()],
    optional=SCORES,
    aliases=["t2i", "preprocess_text_to_image_generation_s3"],
)
def t2i_s3(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Text to image: `s3_path` is the target, the caption (possibly drawn, possibly truncated)
    the prompt; aesthetic score and HPSv2 kept for micro-conditions."""
    return t2i_sample(text(row, "s3_path"), pick_caption(row, ctx.rng, ctx.options, ctx.options.caption_columns()), row)


class HashOptions(CaptionOptions):
    caption_key: str = Field("longLLA_captions", min_length=1, description="column holding the caption")
    uri_template: str = Field(
        "{hash}",
        description="image location built from the hash, e.g. s3://bucket/images/{hash}.jpg; "
        "relative results are joined onto image_root",
    )

    @model_validator(mode="after")
    def _has_hash(self) -> "HashOptions":
        if "{hash}" not in self.uri_template:
            raise ValueError("uri_template must contain {hash}")
        return self


@converter(
    "preproces_text_to_image_generation_piat_hash",
    options=HashOptions,
    columns=lambda o: ["strImagehash", *o.caption_columns()],
    optional=SCORES,
    aliases=["t2i_hash", "preprocess_text_to_image_generation_piat_hash"],
)
def t2i_hash(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Text to image with the image in a content-addressed store, located by `uri_template`."""
    target = ctx.options.uri_template.replace("{hash}", text(row, "strImagehash"))
    return t2i_sample(target, pick_caption(row, ctx.rng, ctx.options, ctx.options.caption_columns()), row)


class LocOptions(CaptionOptions):
    plan_only: bool = Field(False, description="plan without a target image (<image_gen_fake>)")
    no_plan: bool = Field(False, description="plain text to image, ignoring the layout")
    add_feedback: bool = Field(False, description="add 1..max_reflection past generations with their feedback")
    s3_prefix_enc: str | None = Field(None, description="prefix of relative paths in `negatives`")
    max_reflection: int = Field(5, ge=1, le=5, description="most past generations added")

    @model_validator(mode="after")
    def _exclusive(self) -> "LocOptions":
        if self.plan_only and self.no_plan:
            raise ValueError("plan_only and no_plan exclude each other")
        return self


FEEDBACK_HEAD = "\nHere are previous attempts and feedback on them:"
FEEDBACK_ITEM = "\n<image> Feedback: {reason}"


def _loc_columns(o: LocOptions) -> list[str]:
    cols = [] if o.plan_only else ["s3_path"]
    cols += o.caption_columns()
    if not o.no_plan:
        cols.append("grounding_text")
    if o.add_feedback:
        cols += ["negatives", "negative_reasons"]
    return cols


@converter(
    "preproces_text_to_image_generation_s3_loc",
    options=LocOptions,
    columns=_loc_columns,
    optional=lambda o: SCORES + ([] if o.add_feedback else ["negatives", "negative_reasons"]),
    aliases=["t2i_layout_plan", "preprocess_text_to_image_generation_s3_loc"],
)
def t2i_loc(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Layout planning: the answer places the objects (`grounding_text`, LOC format) before the
    image. `plan_only` answers with <image_gen_fake> and no target; `add_feedback` shows past
    generations (`negatives`, `;`-separated) with their `negative_reasons`."""
    o: LocOptions = ctx.options
    caption = pick_caption(row, ctx.rng, o, o.caption_columns())
    prompt = T2I_HUMAN.format(caption=caption)
    sample: dict = {}
    if o.add_feedback:
        negs = [p.strip() for p in text(row, "negatives").split(";") if p.strip()]
        reasons = [r.strip() for r in text(row, "negative_reasons").split(";") if r.strip()]
        if len(negs) != len(reasons):
            raise SampleError(
                "feedback_mismatch", f"{len(negs)} negatives but {len(reasons)} negative_reasons"
            )
        k = ctx.rng.randint(1, min(o.max_reflection, len(negs)))
        picks = sorted(ctx.rng.sample(range(len(negs)), k))
        prompt = prompt.replace(" " + MICRO, "") + FEEDBACK_HEAD
        prompt += "".join(FEEDBACK_ITEM.format(reason=reasons[i]) for i in picks) + " " + MICRO
        sample["image"] = [join_root(o.s3_prefix_enc, negs[i]) for i in picks]
    target = "<image_gen_fake>" if o.plan_only else "<image_gen>"
    answer = T2I_GPT if o.no_plan else PLAN_GPT.format(loc=text(row, "grounding_text"), target=target)
    sample["conversations"] = [human(prompt), gpt(answer)]
    if not o.plan_only:
        sample["image_gen"] = text(row, "s3_path")
        sample["gen_transform"] = "crop"
    if not o.no_plan:
        sample["plan"] = True
    sample.update(scores(row))
    return sample


class SamOptions(TruncateOptions):
    caption_keys: list[str] = Field(
        ["caption", "cap_short", "cap_detail"], min_length=1,
        description="the caption is drawn among the non-empty ones of these columns",
    )
    gen_size: Literal[256, 1024] = Field(1024, description="generation size the crop refers to")


def _crop(v: Any) -> list[int]:
    if isinstance(v, str):
        s = v.strip()
        try:
            v = json.loads(s) if s[:1] in "[{" else [float(x) for x in s.replace(",", " ").split()]
        except (json.JSONDecodeError, ValueError) as e:
            raise SampleError("bad_value:crop_parms", f"crop_parms {v!r} is not four numbers") from e
    if isinstance(v, Mapping):
        try:
            v = [v["top"], v["left"], v["height"], v["width"]]
        except KeyError as e:
            raise SampleError("bad_value:crop_parms", f"crop_parms lacks {e}") from e
    if not isinstance(v, (list, tuple)) or len(v) != 4:
        raise SampleError("bad_value:crop_parms", f"crop_parms must be [top, left, height, width], got {v!r}")
    try:
        return [int(round(float(x))) for x in v]
    except (TypeError, ValueError, OverflowError) as e:  # OverflowError: inf
        raise SampleError("bad_value:crop_parms", f"crop_parms {v!r} is not four numbers") from e


@converter(
    "preproces_text_to_image_generation_layout_sam",
    options=SamOptions,
    columns=lambda o: ["s3_path", *o.caption_keys, "crop_parms"],
    optional=SCORES,
    aliases=["t2i_layout_sam", "preprocess_text_to_image_generation_layout_sam"],
)
def t2i_layout_sam(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Region-detailed captions (SAM images): the caption is drawn among `caption`, `cap_short`
    and `cap_detail`; the target is cut with the fixed crop `crop_parms` [top, left, height,
    width] at 1024 instead of a random crop."""
    o: SamOptions = ctx.options
    sample = t2i_sample(text(row, "s3_path"), pick_caption(row, ctx.rng, o, o.caption_keys), row)
    sample["gen_transform"] = "fixed_crop"
    sample["gen_crop"] = _crop(row.get("crop_parms"))
    sample["gen_size"] = o.gen_size
    return sample
