"""Pieces shared by the built-in converters: templates, caption handling, value coercion."""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from ..errors import SampleError

MICRO = "[[micro_conds_texts]]"
T2I_HUMAN = "Generate an image with the caption: {caption} " + MICRO
T2I_GPT = "Sure <image_gen>"
PLAN_GPT = "Sure I should place the objects in the following manner {loc} {target}"
GRANDF_HUMAN = "<image>\n Generate a dense image caption with bounding boxes in LOC format."
REFCOCO_HUMAN = "<image>\n Please locate {label} in this image. Give bounding boxes in LOC format."
REFLECTION_HUMAN = (
    "<image>\nPlease evaluate this generated image based on the following prompt: {prompt} "
    "Focus on text alignment and compositionality."
)
EDIT_SOURCE = "<image> <image_gen_enc> "


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TruncateOptions(Options):
    """Caption truncation of text-to-image converters."""

    max_caption_length: int = Field(800, ge=1, description="captions are cut to this many characters")
    truncate_prob: float = Field(0.2, ge=0, le=1, description="probability of cutting a long caption to its first sentences")
    truncate_min_length: int = Field(150, ge=0, description="captions longer than this may be cut to sentences")


class CaptionOptions(TruncateOptions):
    """Caption choice and truncation of text-to-image converters."""

    caption_key: str = Field("caption", min_length=1, description="column holding the caption")
    random_caption_keys: list[str] | None = Field(
        None, min_length=1, description="draw the caption column among these, per sample"
    )

    def caption_columns(self) -> list[str]:
        return list(self.random_caption_keys or [self.caption_key])


def human(text: str) -> dict:
    return {"from": "human", "value": text}


def gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def present(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, float) and math.isnan(v):
        return False
    if isinstance(v, str) and not v.strip():
        return False
    return True


def text(row: Mapping[str, Any], key: str) -> str:
    """A required text value; a missing or empty one skips the sample as ``missing:<key>``."""
    v = row.get(key)
    if not present(v):
        raise SampleError(f"missing:{key}", f"column {key!r} is empty")
    return str(v).strip() if isinstance(v, str) else str(v)


def number(row: Mapping[str, Any], key: str) -> float | None:
    """An optional number; ``None`` when absent, a skip as ``bad_value:<key>`` when not a number."""
    v = row.get(key)
    if not present(v):
        return None
    try:
        return float(v)
    except (TypeError, ValueError) as e:
        raise SampleError(f"bad_value:{key}", f"column {key!r} is not a number: {v!r}") from e


def as_list(v: Any, key: str) -> list:
    """A list value given as a list, a JSON list in a string, or one scalar."""
    if not present(v):
        return []
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("["):
            try:
                v = json.loads(s)
            except json.JSONDecodeError as e:
                raise SampleError(f"bad_value:{key}", f"column {key!r} holds malformed JSON") from e
        else:
            return [s]
    if isinstance(v, (list, tuple)):
        return [x for x in v if present(x)]
    return [v]


def paths(row: Mapping[str, Any], key: str) -> list[str]:
    out = as_list(row.get(key), key)
    if not out:
        raise SampleError(f"missing:{key}", f"column {key!r} is empty")
    if not all(isinstance(p, str) for p in out):
        raise SampleError(f"bad_value:{key}", f"column {key!r} must hold path strings")
    return out


def conversations(row: Mapping[str, Any], key: str = "conversations") -> list[dict]:
    """LLaVA turns from a list column or a JSON string, checked and normalised."""
    v = row.get(key)
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError as e:
            raise SampleError(f"bad_value:{key}", f"column {key!r} is not valid JSON") from e
    if not isinstance(v, (list, tuple)) or not v:
        raise SampleError(f"missing:{key}", f"column {key!r} holds no conversation")
    turns = []
    for t in v:
        if not isinstance(t, Mapping) or not isinstance(t.get("from"), str) or not isinstance(t.get("value"), str):
            raise SampleError(f"bad_value:{key}", "each turn must be an object with string 'from' and 'value'")
        turns.append({"from": t["from"], "value": t["value"]})
    return turns


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def truncate_caption(caption: str, rng: random.Random, opts: TruncateOptions) -> str:
    """With probability ``truncate_prob`` cut a long caption to its first k sentences (k uniform
    in 1..n); then cut every caption at ``max_caption_length`` characters."""
    if len(caption) > opts.truncate_min_length and rng.random() < opts.truncate_prob:
        sentences = [s for s in _SENTENCE.split(caption) if s]
        k = rng.randint(1, len(sentences))
        caption = " ".join(sentences[:k])
    return caption[: opts.max_caption_length]


def pick_caption(row: Mapping[str, Any], rng: random.Random, opts: TruncateOptions, keys: list[str]) -> str:
    """The caption from ``keys[0]``, or drawn among the non-empty ``keys`` when there are several;
    then truncated."""
    if len(keys) > 1:
        keys = [k for k in keys if present(row.get(k))]
        if not keys:
            raise SampleError("missing:caption", "every caption column is empty")
        key = keys[rng.randrange(len(keys))]
    else:
        key = keys[0]
    return truncate_caption(text(row, key), rng, opts)


def scores(row: Mapping[str, Any]) -> dict:
    """Scores kept for micro-conditions: ``gen_score`` (aesthetic) and ``hpsv2``, when present."""
    out = {}
    aes = number(row, "fltLaionAesthScore")
    if aes is not None:
        out["gen_score"] = aes
    hps = number(row, "hpsv2")
    if hps is not None:
        out["hpsv2"] = hps
    return out


def t2i_sample(target: str, caption: str, row: Mapping[str, Any]) -> dict:
    return {
        "conversations": [human(T2I_HUMAN.format(caption=caption)), gpt(T2I_GPT)],
        "image_gen": target,
        "gen_transform": "crop",
        **scores(row),
    }
