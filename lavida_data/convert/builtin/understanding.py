"""Understanding and grounding converters, and UniWorld's rows that are already samples."""

from __future__ import annotations

import copy
import json
from typing import Any, Mapping

from pydantic import Field

from lavida_data.convert.builtin.common import (
    GRANDF_HUMAN,
    REFCOCO_HUMAN,
    REFLECTION_HUMAN,
    PrefixOptions,
    gpt,
    human,
    join,
    path_list,
    text,
)
from lavida_data.convert.registry import ConvertContext, converter
from lavida_data.errors import SampleError

IMAGE_ROLES = ("image", "image_gen", "image_gen_enc")


def _optional_image(row: Mapping[str, Any], prefix: str) -> str | None:
    """The row's `image` joined onto ``prefix``; ``None`` (a text-only sample) when it is null."""
    v = row.get("image")
    if v is None:
        return None
    if not isinstance(v, str):
        raise SampleError("bad_value:image", f"column 'image' holds {type(v).__name__}, not a path")
    return join(prefix, v)


def _json_list(v: Any) -> list[str] | None:
    """A non-empty JSON list of strings given as text (our importers' form of several values),
    else ``None``: any other text is one value, as upstream takes it."""
    if not isinstance(v, str) or not v.lstrip().startswith("["):
        return None
    try:
        out = json.loads(v)
    except json.JSONDecodeError:
        return None
    ok = isinstance(out, list) and out and all(isinstance(x, str) for x in out)
    return out if ok else None


@converter(
    "preproces_und_mammoth_si_10M",
    options=PrefixOptions,
    columns=["image", "conversations"],
    aliases=["und_mammoth", "preprocess_und_mammoth_si_10M"],
)
def und_mammoth(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Understanding (MAmmoTH-VL): `conversations` is JSON text, taken as it is; `image` (null:
    text only; a JSON list: several images) is joined onto `s3_prefix`."""
    raw = text(row, "conversations")
    try:
        turns = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SampleError("bad_value:conversations", "column 'conversations' is not valid JSON") from e
    sample: dict = {"conversations": turns}
    several = _json_list(row.get("image"))
    if several:  # ours: upstream would join the JSON text as one path, and fail loading it
        sample["image"] = [join(ctx.options.s3_prefix, p) for p in several]
        return sample
    image = _optional_image(row, ctx.options.s3_prefix)
    if image is not None:
        sample["image"] = image
    return sample


class VWOptions(PrefixOptions):
    long_answer_words: int = Field(
        150, ge=0, description="a first answer of more words than this gets the reasoning request"
    )
    reasoning_prompt: str = Field(
        "\n Please also perform detailed reasoning for this problem and provide detailed reasoning traces.",
        description="appended to the first question when its answer is long",
    )


def _turn_text(turns: list, i: int) -> str:
    t = turns[i]
    if not isinstance(t, Mapping) or not isinstance(t.get("value"), str):
        raise SampleError("bad_value:conversations", f"turn {i} has no text 'value'")
    return t["value"]


@converter(
    "preproces_vw_instruct",
    options=VWOptions,
    columns=["image", "conversations"],
    aliases=["und_vw_instruct", "preprocess_vw_instruct"],
)
def und_vw_instruct(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Understanding (VisualWebInstruct): `conversations` list, `image` list (null: text only);
    when the first answer has over `long_answer_words` words, the first question asks for
    detailed reasoning."""
    o: VWOptions = ctx.options
    v = row.get("conversations")
    if not isinstance(v, (list, tuple)):
        raise SampleError("bad_value:conversations", "column 'conversations' must be a list of turns")
    if len(v) < 2:
        raise SampleError("bad_value:conversations", "a conversation needs a question and an answer")
    turns = copy.deepcopy(list(v))
    if len(_turn_text(turns, 1).split()) > o.long_answer_words:
        turns[0] = {**turns[0], "value": _turn_text(turns, 0) + o.reasoning_prompt}
    sample: dict = {"conversations": turns}
    if row.get("image") is not None:
        sample["image"] = [join(o.s3_prefix, p) for p in path_list(row, "image", text_is_one=False)]
    return sample


UNUSED_PREFIX = "accepted as upstream declares it; unused (the paths are taken as they are)"


class UnusedPrefixOptions(PrefixOptions):
    s3_prefix: str = Field("", description=UNUSED_PREFIX)


@converter(
    "preproces_grandf",
    options=UnusedPrefixOptions,
    columns=["s3_path", "loc_caption"],
    aliases=["grounding_grandf", "preprocess_grandf"],
)
def grounding_grandf(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Grounded dense caption (GranD-f): the answer is `loc_caption` in LOC format."""
    return {"image": text(row, "s3_path"), "conversations": [human(GRANDF_HUMAN), gpt(text(row, "loc_caption"))]}


@converter(
    "preproces_refcoco_rec",
    options=UnusedPrefixOptions,
    columns=["s3_path", "label", "loc_string"],
    aliases=["grounding_refcoco", "preprocess_refcoco_rec"],
)
def grounding_refcoco(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Referring expression (RefCOCO/+/g): locate `label`; the answer is `loc_string`."""
    return {
        "image": text(row, "s3_path"),
        "conversations": [human(REFCOCO_HUMAN.format(label=text(row, "label"))), gpt(text(row, "loc_string"))],
    }


@converter(
    "preprocess_reflection_und",
    options=PrefixOptions,
    columns=["image", "prompts", "results"],
    aliases=["und_reflection"],
)
def und_reflection(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Judge a generated image (`image`, joined onto `s3_prefix`) against its prompt
    (`prompts`); the answer is `results`. Both texts are used as they are, except that two JSON
    lists of equal length (several judgements of one image) give one pair, drawn per sample."""
    prompt, result = text(row, "prompts"), text(row, "results")
    prompts, results = _json_list(prompt), _json_list(result)
    if prompts and results and len(prompts) == len(results):  # ours: upstream writes the lists as text
        i = ctx.rng.randrange(len(prompts))
        prompt, result = prompts[i], results[i]
    sample: dict = {"conversations": [human(REFLECTION_HUMAN.format(prompt=prompt)), gpt(result)]}
    image = _optional_image(row, ctx.options.s3_prefix)
    if image is not None:
        sample["image"] = image
    return sample


class UniWorldOptions(PrefixOptions):
    s3_prefix: str = Field("", description=UNUSED_PREFIX + "; the row's `folder` is the prefix")
    pixel_diff: bool = Field(False, description="state the pixel difference of source and target in the prompt")
    do_reweight: bool = Field(False, description="weight the loss by the edited area for one-source edits")


@converter(
    "process_uniworld",
    options=UniWorldOptions,
    columns=["conversations", *IMAGE_ROLES, "is_edit", "folder"],
    aliases=["passthrough"],
)
def passthrough(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Rows already in sample form (UniWorld): `conversations` as they are; the `image`,
    `image_gen` and `image_gen_enc` lists joined onto the row's `folder` (an empty list: None).
    The target is padded for edits and whenever there are two images or more."""
    o: UniWorldOptions = ctx.options
    lists = {role: path_list(row, role, text_is_one=False) for role in IMAGE_ROLES}
    folder = row.get("folder")
    if any(lists.values()) and not isinstance(folder, str):
        why = "missing:folder" if folder is None else "bad_value:folder"
        raise SampleError(why, "no folder to join the paths onto")
    total = len(lists["image"]) + len(lists["image_gen"])
    is_edit = row.get("is_edit")
    conv = row.get("conversations")
    return {
        **{role: [join(folder, p) for p in paths] or None for role, paths in lists.items()},
        "pad_image_gen": is_edit or total >= 2,
        "reweight": bool(total == 2 and is_edit) and o.do_reweight,
        "conversations": copy.deepcopy(list(conv)) if isinstance(conv, (list, tuple)) else conv,
        "pixel_diff": o.pixel_diff,
    }
