"""Pieces shared by the built-in converters: upstream's prompt texts, value checks, captions.

The converters return upstream LaViDa-O's payloads (``llava/train/data/process_functions.py``)
key for key. Where upstream would raise on a row, ours raises :class:`SampleError` with a reason
(the row is skipped and counted). Where upstream would write a missing value into a prompt (a
``None`` caption of a plan, say, becomes the text "None"), ours skips the row too; those cases
are listed in the README's "Differences from upstream".
"""

from __future__ import annotations

import math
import posixpath
import random
import re
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from lavida_data.errors import SampleError

MICRO = "[[micro_conds_texts]]"
T2I_HUMAN = "Generate an image with the caption: {caption} " + MICRO
T2I_GPT = "Sure <image_gen>"
PLAN_HUMAN = T2I_HUMAN + ". Please first think and plan the layout in LOC format.{feedback}"
NO_PLAN_HUMAN = T2I_HUMAN + ". {feedback}"
PLAN_GPT = "Sure I should place the objects in the following manner {loc} {target}"
GRANDF_HUMAN = "<image>\n Generate a dense image caption with bounding boxes in LOC format."
REFCOCO_HUMAN = "<image>\n Please locate {label} in this image. Give bounding boxes in LOC format."
REFLECTION_HUMAN = (
    "<image>\nPlease evaluate this generated image based on the following prompt: {prompt} "
    "Focus on text alignment and compositionality."
)
EDIT_SOURCE = "<image> <image_gen_enc> "
GEN, GEN_FAKE = "<image_gen>", "<image_gen_fake>"

#: score columns kept for the micro-conditions, and the payload keys upstream puts them under
SCORE_KEYS = {"fltLaionAesthScore": "gen_score", "hpsv2": "hpsv2"}


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PrefixOptions(Options):
    s3_prefix: str = Field("", description="prefix joined (as os.path.join does) to the rows' image paths")


class TruncateOptions(Options):
    """Caption truncation of text-to-image converters: upstream's ``random_truncate`` and the
    numbers upstream fixes (``MAX_CAP_LENGTH`` 800, probability 0.2, captions over 150)."""

    random_truncate: bool = Field(True, description="a long caption may be cut to its first sentences")
    max_caption_length: int = Field(
        800, ge=1, description="captions are cut to this many characters (upstream's MAX_CAP_LENGTH)"
    )
    truncate_prob: float = Field(
        0.2, ge=0, le=1, description="probability of cutting a long caption to its first sentences"
    )
    truncate_min_length: int = Field(150, ge=0, description="captions longer than this may be cut to sentences")


class CaptionOptions(TruncateOptions):
    """Caption choice and truncation of ``preproces_text_to_image_generation_s3`` and ``..._s3_loc``."""

    caption_key: str = Field("caption", min_length=1, description="column holding the caption")
    no_drop_keys: list[str] | None = Field(
        None, description="caption columns never truncated; when given, decides instead of random_truncate"
    )
    random_caption_keys: list[str] | None = Field(
        None, min_length=1, description="draw the caption column uniformly among these, per sample"
    )

    def caption_columns(self) -> list[str]:
        return list(dict.fromkeys(self.random_caption_keys or [self.caption_key]))


def human(text: str) -> dict:
    return {"from": "human", "value": text}


def gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def text(row: Mapping[str, Any], key: str) -> str:
    """A text value as the row gives it (not stripped; empty allowed, as upstream).

    Missing (absent, ``None`` or NaN): ``missing:<key>``; not a string: ``bad_value:<key>``."""
    v = row.get(key)
    if missing(v):
        raise SampleError(f"missing:{key}", f"column {key!r} is empty")
    if not isinstance(v, str):
        raise SampleError(f"bad_value:{key}", f"column {key!r} holds {type(v).__name__}, not text")
    return v


def join(prefix: str | None, *parts: str) -> str:
    """``os.path.join`` on POSIX, as upstream joins its prefixes (an absolute part restarts)."""
    return posixpath.join(prefix or "", *parts)


def path_list(row: Mapping[str, Any], key: str, *, text_is_one: bool = True) -> list[str]:
    """Image paths from a list column; one text is one path when ``text_is_one`` (upstream's
    edit converters wrap a string in a list; the others iterate it, which we refuse)."""
    v = row.get(key)
    if isinstance(v, str) and text_is_one:
        return [v]
    if v is None:
        raise SampleError(f"missing:{key}", f"column {key!r} is empty")
    if not isinstance(v, (list, tuple)) or not all(isinstance(p, str) for p in v):
        raise SampleError(f"bad_value:{key}", f"column {key!r} must hold a list of path strings")
    return list(v)


def scores(row: Mapping[str, Any], keys: Sequence[str] = tuple(SCORE_KEYS)) -> dict:
    """``gen_score`` / ``hpsv2`` as one-element lists when the row has the column (as upstream).

    A null score is left out (upstream, reading with pandas, would carry NaN into the
    micro-condition text); a score that is not a number skips the row as ``bad_value:<key>``
    (upstream fails formatting it with ``:.3f``)."""
    out = {}
    for key in keys:
        v = row.get(key)
        if missing(v):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SampleError(f"bad_value:{key}", f"column {key!r} is not a number: {v!r}")
        out[SCORE_KEYS[key]] = [v]
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?]) +")


def first_sentences(caption: str, rng: random.Random) -> str:
    """The first k sentences (k uniform in 1..n) of the stripped caption, joined by one space."""
    sentences = _SENTENCE_END.split(caption.strip())
    return " ".join(sentences[: rng.randint(1, len(sentences))])


def truncate_caption(caption: str, rng: random.Random, opts: TruncateOptions, may_truncate: bool = True) -> str:
    """With probability ``truncate_prob``, a caption over ``truncate_min_length`` characters that
    ``may_truncate`` is cut to its first sentences; then every caption is cut at
    ``max_caption_length`` characters."""
    if rng.random() < opts.truncate_prob and len(caption) > opts.truncate_min_length and may_truncate:
        caption = first_sentences(caption, rng)
    return caption[: opts.max_caption_length]


def pick_caption(row: Mapping[str, Any], rng: random.Random, opts: CaptionOptions) -> str:
    """The caption of ``caption_key`` (or of a column drawn among ``random_caption_keys``),
    truncated unless ``no_drop_keys`` / ``random_truncate`` say otherwise."""
    keys = opts.random_caption_keys
    key = keys[rng.randrange(len(keys))] if keys else opts.caption_key
    may = opts.random_truncate if opts.no_drop_keys is None else key not in opts.no_drop_keys
    return truncate_caption(text(row, key), rng, opts, may)
