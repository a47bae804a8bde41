"""Understanding and grounding converters, and the pass-through for rows already in sample form."""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import Field

from ..errors import SampleError
from ..registry import ConvertContext, converter
from ..sample import join_root
from .common import (
    GRANDF_HUMAN,
    REFCOCO_HUMAN,
    REFLECTION_HUMAN,
    Options,
    as_list,
    conversations,
    gpt,
    human,
    paths,
    text,
)


class PrefixOptions(Options):
    s3_prefix: str | None = Field(None, description="prefix joined to relative image paths")


def with_image_markers(turns: list[dict], n_images: int) -> list[dict]:
    """Prepend ``<image>\\n`` to the first human turn for each image its text does not mark."""
    have = sum(t["value"].count("<image>") for t in turns)
    if have >= n_images:
        return turns
    for i, t in enumerate(turns):
        if t["from"] == "human":
            turns[i] = {**t, "value": "<image>\n" * (n_images - have) + t["value"]}
            return turns
    raise SampleError("bad_conversations", "no human turn to place the image in")


@converter(
    "preproces_und_mammoth_si_10M",
    options=PrefixOptions,
    columns=["conversations"],
    optional=["image"],
    aliases=["und_mammoth", "preprocess_und_mammoth_si_10M"],
)
def und_mammoth(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Understanding (MAmmoTH-VL): `conversations` as JSON text or a list; `image` optional
    (text-only without it), joined onto `s3_prefix`."""
    turns = conversations(row)
    images = [join_root(ctx.options.s3_prefix, p) for p in as_list(row.get("image"), "image")]
    sample: dict = {"conversations": with_image_markers(turns, len(images))}
    if images:
        sample["image"] = images[0] if len(images) == 1 else images
    return sample


class VWOptions(PrefixOptions):
    long_answer_words: int = Field(150, ge=1, description="answers longer than this many words get the request")
    reasoning_prompt: str = Field(
        "\nPlease provide detailed reasoning before giving the final answer.",
        description="appended to the question of a long answer",
    )


@converter(
    "preproces_vw_instruct",
    options=VWOptions,
    columns=["conversations", "image"],
    aliases=["und_vw_instruct", "preprocess_vw_instruct"],
)
def und_vw_instruct(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Understanding (VisualWebInstruct): `conversations` list, `image` list; a question whose
    answer has over `long_answer_words` words gets a request for detailed reasoning."""
    o: VWOptions = ctx.options
    turns = conversations(row)
    for i in range(len(turns) - 1):
        q, a = turns[i], turns[i + 1]
        if q["from"] == "human" and a["from"] == "gpt" and len(a["value"].split()) > o.long_answer_words:
            turns[i] = {**q, "value": q["value"] + o.reasoning_prompt}
    images = [join_root(o.s3_prefix, p) for p in paths(row, "image")]
    return {"conversations": with_image_markers(turns, len(images)), "image": images}


@converter("preproces_grandf", columns=["s3_path", "loc_caption"], aliases=["grounding_grandf", "preprocess_grandf"])
def grounding_grandf(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Grounded dense caption (GranD-f): the answer is `loc_caption` in LOC format."""
    return {"conversations": [human(GRANDF_HUMAN), gpt(text(row, "loc_caption"))], "image": text(row, "s3_path")}


@converter(
    "preproces_refcoco_rec",
    columns=["s3_path", "label", "loc_string"],
    aliases=["grounding_refcoco", "preprocess_refcoco_rec"],
)
def grounding_refcoco(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Referring expression (RefCOCO/+/g): locate `label`; the answer is `loc_string`."""
    return {
        "conversations": [human(REFCOCO_HUMAN.format(label=text(row, "label"))), gpt(text(row, "loc_string"))],
        "image": text(row, "s3_path"),
    }


def _texts(row: Mapping[str, Any], key: str) -> list:
    """A JSON list of texts, or one text: a plain text that merely starts with "[" (such as
    "[photo] a cat") is one text, not malformed JSON."""
    try:
        return as_list(row.get(key), key)
    except SampleError:
        return [str(row.get(key)).strip()]


@converter("preprocess_reflection_und", columns=["image", "prompts", "results"], aliases=["und_reflection"])
def und_reflection(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Judge a generated image against its prompt. `prompts`/`results` may be lists of paired
    judgements; one pair is drawn per sample."""
    prompts = _texts(row, "prompts")
    results = _texts(row, "results")
    if not prompts or not results:
        raise SampleError("missing:prompts" if not prompts else "missing:results", "empty prompt or result")
    if len(prompts) != len(results):
        raise SampleError("bad_value:results", f"{len(prompts)} prompts but {len(results)} results")
    i = ctx.rng.randrange(len(prompts)) if len(prompts) > 1 else 0
    return {
        "conversations": [human(REFLECTION_HUMAN.format(prompt=str(prompts[i]))), gpt(str(results[i]))],
        "image": text(row, "image"),
    }


class FolderOptions(Options):
    folder: str | None = Field(None, description="prefix joined to the rows' relative image paths")


@converter(
    "process_uniworld",
    options=FolderOptions,
    columns=["conversations"],
    optional=["image", "image_gen", "image_gen_enc"],
    aliases=["passthrough"],
)
def passthrough(row: Mapping[str, Any], ctx: ConvertContext) -> dict:
    """Rows already in sample form (UniWorld): conversations and image roles taken as they are,
    relative image paths joined onto `folder`."""
    sample: dict = {"conversations": conversations(row)}
    for role in ("image", "image_gen", "image_gen_enc"):
        v = row.get(role)
        items = [join_root(ctx.options.folder, p) for p in as_list(v, role)]
        if items:
            multiple = isinstance(v, (list, tuple)) or (isinstance(v, str) and v.lstrip().startswith("["))
            sample[role] = items if multiple or role == "image_gen_enc" else items[0]
    return sample
