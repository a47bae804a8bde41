"""Text-to-image converters: plain (s3), by image-store hash, with a layout plan, region-detailed (SAM)."""

from __future__ import annotations

import random
from typing import Any, Mapping

from pydantic import Field, field_validator, model_validator

from lavida_data.convert.builtin.common import (
    GEN,
    GEN_FAKE,
    NO_PLAN_HUMAN,
    PLAN_GPT,
    PLAN_HUMAN,
    T2I_GPT,
    T2I_HUMAN,
    CaptionOptions,
    Options,
    TruncateOptions,
    gpt,
    human,
    join,
    pick_caption,
    scores,
    text,
    truncate_caption,
)
from lavida_data.convert.registry import ConvertContext, converter
from lavida_data.errors import SampleError

SCORES = ["fltLaionAesthScore", "hpsv2"]


def t2i_payload(target: str, caption: str, row: Mapping[str, Any]) -> dict:
    turns = [human(T2I_HUMAN.format(caption=caption)), gpt(T2I_GPT)]
    return {"image_gen": target, "conversations": turns, **scores(row)}


@converter(
    "preproces_text_to_image_generation_s3",
    options=CaptionOptions,
    columns=lambda o: ["s3_path", *o.caption_columns()],
    optional=SCORES,
    aliases=["t2i", "preprocess_text_to_image_generation_s3"],
)
def t2i_s3(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Text to image: `s3_path` is the target, the caption (maybe drawn among columns, maybe cut
    to its first sentences) the prompt; `fltLaionAesthScore` / `hpsv2` kept as `gen_score` / `hpsv2`."""
    return t2i_payload(text(row, "s3_path"), pick_caption(row, ctx.rng, ctx.options), row)


class HashOptions(TruncateOptions):
    caption_key: str = Field("longLLA_captions", min_length=1, description="column holding the caption")
    uri_template: str = Field(
        "piat://{hash}",
        description="image location built from the hash (upstream: piat://<hash>, its internal store), "
        "e.g. s3://bucket/images/{hash}.jpg; relative results are joined onto image_root",
    )

    @model_validator(mode="after")
    def _has_hash(self) -> "HashOptions":
        if "{hash}" not in self.uri_template:
            raise ValueError("uri_template must contain {hash}")
        return self


@converter(
    "preproces_text_to_image_generation_piat_hash",
    options=HashOptions,
    columns=lambda o: ["strImagehash", o.caption_key],
    optional=SCORES,
    aliases=["t2i_hash", "preprocess_text_to_image_generation_piat_hash"],
)
def t2i_hash(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Text to image with the image in a content-addressed store: `piat://<strImagehash>` by
    default, or where `uri_template` says."""
    o: HashOptions = ctx.options
    target = o.uri_template.replace("{hash}", text(row, "strImagehash"))
    return t2i_payload(target, truncate_caption(text(row, o.caption_key), ctx.rng, o, o.random_truncate), row)


class LocOptions(CaptionOptions):
    plan_only: bool = Field(False, description="plan only: answer with <image_gen_fake>, no target (wins over no_plan)")
    no_plan: bool = Field(False, description="answer with the image alone, no layout")
    add_feedback: bool = Field(
        False, description="show 1..max_reflection past generations (`negatives`) with their feedback"
    )
    s3_prefix_enc: str | None = Field(None, description="prefix joined to the paths in `negatives` (false: none)")
    max_reflection: int = Field(5, ge=1, description="most past generations shown (drawn with repetition)")
    do_print: bool = Field(False, description="accepted for upstream's configs; ignored (upstream prints the payload)")

    @field_validator("s3_prefix_enc", mode="before")
    @classmethod
    def _false_is_none(cls, v: Any) -> Any:
        return None if v is False else v


FEEDBACK_HEAD = " Please also consider past generations and their feedbacks. Do not repeat these errors "
FEEDBACK_ITEM = "Generation {n}: <image>\n Feedback {n}: {reason}"


def _loc_columns(o: LocOptions) -> list[str]:
    cols = ["s3_path", *o.caption_columns(), "grounding_text"]
    if o.add_feedback:
        cols += ["negatives", "negative_reasons"]
    return list(dict.fromkeys(cols))


def _feedback(row: Mapping[str, Any], rng: random.Random, o: LocOptions) -> tuple[list[str], str]:
    """1..max_reflection past generations drawn with repetition, and the text that shows them."""
    negatives = text(row, "negatives").split(";")
    reasons = text(row, "negative_reasons").split(";")
    n = rng.randint(1, min(len(negatives), o.max_reflection))
    picks = [rng.randrange(len(negatives)) for _ in range(n)]
    if max(picks) >= len(reasons):
        raise SampleError("feedback_mismatch", f"{len(negatives)} negatives but {len(reasons)} negative_reasons")
    images = [join(o.s3_prefix_enc, negatives[i]) for i in picks]
    items = "\n".join(FEEDBACK_ITEM.format(n=j + 1, reason=reasons[i]) for j, i in enumerate(picks))
    return images, FEEDBACK_HEAD + items


def plan_payload(
    caption: str, feedback: str, loc: Any, target: str | None, plan_only: bool, no_plan: bool
) -> dict:
    """The three answers of a layout converter: plan only (<image_gen_fake>, no target), the
    image alone (``no_plan``), or the plan then the image (text loss kept: ``do_not_mask_text``)."""
    if plan_only:
        return {"conversations": [human(PLAN_HUMAN.format(caption=caption, feedback=feedback)),
                                  gpt(PLAN_GPT.format(loc=loc(), target=GEN_FAKE))]}
    if no_plan:
        return {"image_gen": target,
                "conversations": [human(NO_PLAN_HUMAN.format(caption=caption, feedback=feedback)), gpt(GEN)]}
    return {"image_gen": target, "do_not_mask_text": True,
            "conversations": [human(PLAN_HUMAN.format(caption=caption, feedback=feedback)),
                              gpt(PLAN_GPT.format(loc=loc(), target=GEN))]}


@converter(
    "preproces_text_to_image_generation_s3_loc",
    options=LocOptions,
    columns=_loc_columns,
    optional=SCORES,
    aliases=["t2i_layout_plan", "preprocess_text_to_image_generation_s3_loc"],
)
def t2i_loc(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Layout planning: the answer places the objects (`grounding_text`, LOC format) before the
    image. `plan_only` answers with <image_gen_fake> and no target; `no_plan` with the image
    alone; `add_feedback` shows past generations (`negatives`, `;`-separated) with their
    `negative_reasons`."""
    o: LocOptions = ctx.options
    target = None if o.plan_only else text(row, "s3_path")
    caption = pick_caption(row, ctx.rng, o)
    images, feedback = _feedback(row, ctx.rng, o) if o.add_feedback else (None, "")
    sample = plan_payload(caption, feedback, lambda: text(row, "grounding_text"), target, o.plan_only, o.no_plan)
    if images is not None:
        sample["image"] = images
    sample.update(scores(row))
    return sample


class SamOptions(Options):
    random_truncate: bool = Field(
        False, description="accepted as upstream declares it; SAM captions are never cut to sentences"
    )
    caption_key: str = Field("caption", min_length=1, description="column holding the caption")
    caption_drop: float = Field(
        0.1, ge=0, le=1, description="probability of replacing the caption by 'an image with region captions.'"
    )
    plan_only: bool = Field(False, description="plan only: answer with <image_gen_fake>, no target (wins over no_plan)")
    no_plan: bool = Field(False, description="answer with the image alone, no layout")
    s3_prefix: str | None = Field(None, description="prefix joined to `s3_path`")
    do_print: bool = Field(False, description="accepted for upstream's configs; ignored (upstream prints the payload)")
    max_caption_length: int = Field(
        800, ge=1, description="captions are cut to this many characters (upstream's MAX_CAP_LENGTH)"
    )


DETAIL_PROB = 0.4
DETAIL_REQUEST = "Please plan each region in detail by providing individual descriptions. "
DROPPED_CAPTION = "an image with region captions."


def _crop_parms(row: Mapping[str, Any]) -> list:
    """``[new_width, new_height, left, top, right, bottom]`` as the row gives it (upstream
    resizes to the first two, then crops the box; anything else fails there)."""
    v = row.get("crop_parms")
    if v is None:
        raise SampleError("missing:crop_parms", "column 'crop_parms' is empty")
    ok = isinstance(v, (list, tuple)) and len(v) == 6
    if not ok or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise SampleError("bad_value:crop_parms", f"crop_parms must be six numbers, got {v!r}")
    return list(v)


def _sam_columns(o: SamOptions) -> list[str]:
    return list(dict.fromkeys(["caption", "s3_path", o.caption_key, "cap_short", "cap_detail", "crop_parms"]))


@converter(
    "preproces_text_to_image_generation_layout_sam",
    options=SamOptions,
    columns=_sam_columns,
    optional=SCORES,
    aliases=["t2i_layout_sam", "preprocess_text_to_image_generation_layout_sam"],
)
def t2i_layout_sam(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Region-detailed layout planning (SAM images): the plan is `cap_short`, or (40%) the
    detailed `cap_detail` with a request for detail; the caption is dropped with probability
    `caption_drop`; the target is cut with the row's fixed `crop_parms`."""
    o: SamOptions = ctx.options
    target = None
    if not o.plan_only or o.s3_prefix:  # upstream joins the prefix even for a plan alone
        target = join(o.s3_prefix, text(row, "s3_path")) if o.s3_prefix else text(row, "s3_path")
    caption = text(row, o.caption_key)[: o.max_caption_length]
    detail = ctx.rng.random() < DETAIL_PROB
    if ctx.rng.random() < o.caption_drop:
        caption = DROPPED_CAPTION
    loc_key = "cap_detail" if detail else "cap_short"
    sample = plan_payload(caption, DETAIL_REQUEST if detail else "", lambda: text(row, loc_key), target,
                          o.plan_only, o.no_plan)
    sample.update(scores(row))
    sample["crop_parms"] = [_crop_parms(row)]
    return sample
