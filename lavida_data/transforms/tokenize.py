"""Load-time tokenisation: a converted sample -> ids, labels and image-slot masks, as upstream.

The ids and labels equal upstream LaViDa-O's (``preprocess_multimodal`` then
``preprocess_llada``) for the same sample, tokenizer and random draws. Two steps:

1. **Markers** (upstream's ``preprocess_multimodal``; only when the sample has an ``"image"`` or
   ``"image_gen"`` key, whatever its value), turn by turn, on the text:

   * a turn with exactly one ``<image>`` that does not start with it: the marker moves to the
     front, ``"<image>\\n" + rest.strip()``;
   * ``<image_gen>`` -> ``<|reserved_token_126095|>`` + ``<image_gen_xtd>`` x ``gen_tokens`` +
     ``<|reserved_token_126096|>`` (the two brackets are plain text, not tokens);
   * ``<image_gen_fake>`` -> ``<|reserved_token_7|>``;
   * ``<image_gen_enc>`` -> ``<|reserved_token_6|>`` x ``gen_enc_tokens``;
   * each ``[[micro_conds_texts]]``, in order, -> the next of the sample's ``micro_conds_texts``,
     or ``""`` with probability 0.3 (one draw from the sample's generator per occurrence). A
     sample without micro-condition texts keeps the placeholder as text, as upstream does.

   Without those keys the text stays as it is (``<image_gen_fake>`` and the placeholder are
   then plain text).

2. **Chat** (upstream's ``preprocess_llada``):

   * the system message (``system_prompt``), rendered by the tokenizer's chat template with the
     trailing assistant header cut, with its BOS;
   * a leading turn that is not from ``human`` is dropped; the next turn must be from ``gpt``;
   * ``turns="one"`` (upstream's default): one ``human`` turn is drawn with the sample's
     generator and it and the turn after it are kept; ``turns="all"`` (upstream's
     ``SELECT_ALL_INDEX``) keeps them all;
   * when the sample has an ``"image"`` key, ``"<image>\\n"`` goes in front of the first kept
     turn if that lacks ``<image>``;
   * each turn on its own through the chat template (content trimmed; BOS and trailing
     assistant header cut) and tokenised as ONE string, header included; ``human`` is
     ``user``, ``gpt`` ``assistant``, other names pass through;
   * labels: user and system messages ignored; an assistant message ignores its first six
     tokens (upstream's hard-coded header length) and trains on the rest, ``<|eot_id|>``
     included;
   * ``<image>`` (a special token only when the sample has an ``"image"`` key) -> ``-200``;
     each ``<image_gen_xtd>`` -> ``-300`` with label ``-100``; ``<|reserved_token_6|>`` keeps its
     id with label ``-100``. As upstream, ``<image>`` and ``<image_gen_xtd>`` are added as
     special tokens to a private copy of the tokenizer (once per process here).

Outputs: ``input_ids``, ``labels`` (long), ``gen_mask`` (True at the ``-300`` slots),
``gen_enc_mask`` (True at ``<|reserved_token_6|>``), ``n_images`` (``-200`` count), ``n_gen``,
``n_gen_enc`` (expanded ``<image_gen>`` / ``<image_gen_enc>`` markers in the kept turns).

Where upstream raises (no ``gpt`` turn after the first ``human`` one, an unknown first speaker,
more placeholders than micro-condition texts, ...) the sample is skipped:
:class:`~lavida_data.errors.SampleError`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from lavida_data.errors import SampleError
from lavida_data.transforms.tokenizer import (
    BOS,
    GEN_TOKEN_INDEX,
    IMAGE_TOKEN_INDEX,
    TokenIds,
    TokenizerError,
    loc_tokens,
    reserved_token,
)

IGNORE_INDEX = -100
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)

IMAGE = "<image>"
IMAGE_GEN = "<image_gen>"
IMAGE_GEN_ENC = "<image_gen_enc>"
IMAGE_GEN_FAKE = "<image_gen_fake>"
#: one generated-image slot in the text; a special token of the private tokenizer copy
IMAGE_GEN_XTD = "<image_gen_xtd>"
#: upstream's brackets of a generated image: plain text (LLaDA has no such tokens)
GEN_OPEN = "<|reserved_token_126095|>"
GEN_CLOSE = "<|reserved_token_126096|>"
GEN_FAKE_TEXT = reserved_token(7)
GEN_ENC_TEXT = reserved_token(6)
MICRO_CONDS = "[[micro_conds_texts]]"
MICRO_CONDS_DROP = 0.3
NOISE_TEXT = "QA_GT_caption_based_noisy"  # removed by upstream's preprocess_multimodal
ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"
#: upstream ignores this many tokens at the start of an assistant message (LLaDA's header)
ASSISTANT_HEADER_TOKENS = 6

#: conversation ``from`` -> chat role (other names pass through, as upstream)
ROLES = {"human": "user", "gpt": "assistant"}
_IGNORED_ROLES = ("user", "system", "human")
#: runs of slot tokens in the text: encoded once each, then repeated (same ids, far faster)
_RUNS_RE = re.compile(f"(?:{re.escape(IMAGE_GEN_XTD)})+|(?:{re.escape(GEN_ENC_TEXT)})+")


class TokenizeConfig(BaseModel):
    """Settings of the tokenisation transform."""

    model_config = ConfigDict(extra="forbid")

    tokenizer: str = Field(description="path (or hub name) of a LLaDA-style Hugging Face tokenizer")
    max_length: int = Field(4096, gt=0, description="longest sequence, in tokens")
    gen_tokens: int = Field(256, gt=0, description="slots per <image_gen>: 256 at 256 px, 1024 at 1024 px "
                                                   "(upstream's num_gen_image_tokens)")
    gen_enc_tokens: int | None = Field(
        None, gt=0, description="slots per <image_gen_enc>; None: gen_tokens (upstream's num_gen_image_tokens // "
                                "num_gen_image_tokens_enc_ds, the latter 1 in every released stage)"
    )
    turns: Literal["one", "all"] = Field(
        "one", description="'one': one random human/gpt pair (upstream's default); 'all': every turn "
                           "(upstream's SELECT_ALL_INDEX=1, the 1024 px stages)"
    )
    loc_tokens: bool = Field(True, description="LOC markup as single tokens (the tokenizer must have them); "
                                               "False leaves it plain text")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="the system message")
    truncate: Literal["error", "right"] = Field(
        "error", description="over max_length: 'error' skips the sample; 'right' cuts text after the last image"
    )

    @property
    def enc_tokens(self) -> int:
        return self.gen_enc_tokens if self.gen_enc_tokens is not None else self.gen_tokens


@functools.lru_cache(maxsize=None)
def load_tokenizer(path: str) -> tuple[Any, TokenIds]:
    """``AutoTokenizer.from_pretrained(path)`` and its :class:`TokenIds`, once per process."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return tok, TokenIds.from_tokenizer(tok)


# --------------------------------------------------------------------------------------------
# Step 1: markers (upstream's preprocess_multimodal)


@dataclass
class Turn:
    """One conversation turn after marker expansion; ``n_gen`` / ``n_enc`` count its expanded
    ``<image_gen>`` / ``<image_gen_enc>`` markers."""

    speaker: str
    text: str
    n_gen: int = 0
    n_enc: int = 0


def _turns(conversations: Any) -> list[Turn]:
    if not isinstance(conversations, (list, tuple)) or not conversations:
        raise SampleError("bad_conversations", "conversations must be a non-empty list")
    out = []
    for turn in conversations:
        if not (isinstance(turn, Mapping) and isinstance(turn.get("value"), str) and isinstance(turn.get("from"), str)):
            raise SampleError("bad_conversations", "each turn must be {'from': str, 'value': str}")
        out.append(Turn(turn["from"], turn["value"]))
    return out


def expand_markers(
    turns: list[Turn], *, gen_tokens: int, enc_tokens: int, micro_conds_texts: Sequence[str] | None,
    rng: np.random.Generator | None,
) -> list[Turn]:
    """Upstream's ``preprocess_multimodal`` on each turn (see the module docstring); draws one
    ``rng.random()`` per filled micro-condition placeholder, in text order."""
    gen = GEN_OPEN + IMAGE_GEN_XTD * gen_tokens + GEN_CLOSE
    enc = GEN_ENC_TEXT * enc_tokens
    k = 0
    out = []
    for t in turns:
        v = t.text
        if v.count(IMAGE) == 1 and not v.startswith(IMAGE):
            v = (IMAGE + "\n" + v.replace(IMAGE, "").strip()).strip()
        v = v.replace(NOISE_TEXT, "")
        n_gen, n_enc = v.count(IMAGE_GEN), v.count(IMAGE_GEN_ENC)
        v = v.replace(IMAGE_GEN, gen).replace(IMAGE_GEN_FAKE, GEN_FAKE_TEXT).replace(IMAGE_GEN_ENC, enc)
        if micro_conds_texts is not None:
            while MICRO_CONDS in v:
                if k >= len(micro_conds_texts):
                    raise SampleError("micro_conds_mismatch", f"more {MICRO_CONDS} placeholders than the "
                                      f"{len(micro_conds_texts)} micro_conds_texts")
                if rng is None:
                    raise TypeError("filling micro-conditions needs the sample's numpy Generator")
                fill = "" if rng.random() < MICRO_CONDS_DROP else micro_conds_texts[k]
                v = v.replace(MICRO_CONDS, fill, 1)
                k += 1
        out.append(Turn(t.speaker, v, n_gen, n_enc))
    return out


# --------------------------------------------------------------------------------------------
# Step 2: the turns kept (upstream's preprocess_llada)


def select_turns(turns: list[Turn], mode: str, rng: np.random.Generator | None) -> list[Turn]:
    """Drop a leading non-``human`` turn; check the next is ``gpt``; with ``mode="one"`` keep one
    drawn ``human`` turn and the turn after it (one ``rng.integers(n_human)``)."""
    if turns[0].speaker not in ROLES:
        raise SampleError("bad_conversations", f"first turn from {turns[0].speaker!r} (human or gpt)")
    if turns[0].speaker != "human":
        turns = turns[1:]
    if len(turns) < 2 or turns[1].speaker != "gpt":
        raise SampleError("bad_conversations", "the turn after the first human turn must be from gpt")
    if mode == "all":
        return turns
    humans = [i for i, t in enumerate(turns) if t.speaker == "human"]
    if not humans:
        raise SampleError("bad_conversations", "no human turn")
    if rng is None:
        raise TypeError("turns='one' needs the sample's numpy Generator")
    i = humans[int(rng.integers(len(humans)))]
    if i + 1 >= len(turns):
        raise SampleError("bad_conversations", "the drawn human turn is the last turn")
    return turns[i : i + 2]


# --------------------------------------------------------------------------------------------
# The tokenizer copies


@dataclass
class _Vocab:
    """A private copy of the backend tokenizer with ``<image>`` (optionally) and
    ``<image_gen_xtd>`` added as special tokens; the system message's ids."""

    backend: Any
    image_id: int | None
    xtd_id: int
    enc_id: int
    system_ids: np.ndarray | None = None

    def encode(self, text: str) -> np.ndarray:
        """``backend.encode(text).ids``. Each run of ``<image_gen_xtd>`` / ``<|reserved_token_6|>``
        is encoded as one and repeated: special tokens split the text, so the ids are the same
        (checked: when the runs do not come back one id each, the whole text is encoded)."""
        runs: list[tuple[int, int]] = []

        def one(m: re.Match) -> str:
            tok = IMAGE_GEN_XTD if m.group(0).startswith(IMAGE_GEN_XTD) else GEN_ENC_TEXT
            runs.append((self.xtd_id if tok == IMAGE_GEN_XTD else self.enc_id, len(m.group(0)) // len(tok)))
            return tok

        short = _RUNS_RE.sub(one, text)
        ids = np.asarray(self.backend.encode(short).ids, dtype=np.int64)
        if not runs:
            return ids
        at = np.flatnonzero((ids == self.xtd_id) | (ids == self.enc_id))
        if len(at) != len(runs) or any(ids[i] != r[0] for i, r in zip(at, runs)):
            return np.asarray(self.backend.encode(text).ids, dtype=np.int64)
        counts = np.ones(len(ids), dtype=np.int64)
        counts[at] = [n for _, n in runs]
        return np.repeat(ids, counts)


def _copy_backend(tok: Any, *, image: bool, drop: frozenset[str]) -> tuple[Any, int | None, int]:
    from tokenizers import AddedToken, Tokenizer

    data = json.loads(tok.backend_tokenizer.to_str())
    if drop:
        data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in drop]
    bt = Tokenizer.from_str(json.dumps(data))
    new = ([IMAGE] if image else []) + [IMAGE_GEN_XTD]
    bt.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
    return bt, (bt.token_to_id(IMAGE) if image else None), bt.token_to_id(IMAGE_GEN_XTD)


def render_message(tok: Any, role: str, content: str, *, keep_bos: bool = False) -> str:
    """One message through the tokenizer's chat template, the trailing assistant header cut and,
    unless ``keep_bos`` (the system message), a leading BOS (upstream's per-message rendering)."""
    text = tok.apply_chat_template([{"role": role, "content": content}], tokenize=False)
    if not keep_bos and text.startswith(BOS):
        text = text[len(BOS):]
    if text.endswith(ASSISTANT_HEADER):
        text = text[: -len(ASSISTANT_HEADER)]
    return text


class Tokenize:
    """``Tokenize(config)(sample, rng)`` -> ``input_ids``, ``labels``, ``gen_mask``,
    ``gen_enc_mask`` (tensors of one length) and ``n_images``, ``n_gen``, ``n_gen_enc``.

    ``sample`` is the converted (and image-transformed) sample: its ``conversations``, its
    ``micro_conds_texts`` (None or absent: none) and the presence of its ``image`` /
    ``image_gen`` keys. ``rng`` is the sample's numpy generator (micro-condition drops, the
    drawn turn pair). Picklable (for data-loader workers): the tokenizer loads lazily, once per
    process.
    """

    def __init__(self, config: TokenizeConfig | Mapping[str, Any] | None = None, **kwargs: Any):
        if config is not None and kwargs:
            raise TypeError("pass a TokenizeConfig or keyword settings, not both")
        if config is None:
            config = TokenizeConfig(**kwargs)
        elif not isinstance(config, TokenizeConfig):
            config = TokenizeConfig(**dict(config))
        self.config = config
        self._state: tuple | None = None

    def __getstate__(self) -> dict:
        return {"config": self.config, "_state": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # ---------------------------------------------------------------- tokenizer

    def _load(self) -> tuple[Any, TokenIds, dict[bool, _Vocab]]:
        if self._state is None:
            cfg = self.config
            tok, ids = load_tokenizer(cfg.tokenizer)
            if cfg.loc_tokens and not ids.loc_ok:
                raise TokenizerError(
                    f"tokenizer {cfg.tokenizer!r} lacks the LOC tokens (<LOC_0>..<LOC_1024>, <box_p>, "
                    "</box_p>, <LOC_BEGIN>, <LOC_END>) as single tokens: add them or set loc_tokens: false"
                )
            if not getattr(tok, "chat_template", None):
                raise TokenizerError(f"tokenizer {cfg.tokenizer!r} has no chat template (LLaDA's is needed)")
            drop = frozenset() if cfg.loc_tokens else frozenset(loc_tokens())
            system = render_message(tok, "system", cfg.system_prompt, keep_bos=True)
            vocabs = {}
            for image in (False, True):
                bt, image_id, xtd_id = _copy_backend(tok, image=image, drop=drop)
                vocab = _Vocab(bt, image_id, xtd_id, ids.gen_enc_slot)
                vocab.system_ids = vocab.encode(system)
                vocabs[image] = vocab
            self._state = (tok, ids, vocabs)
        return self._state

    @property
    def tokenizer(self) -> Any:
        return self._load()[0]

    @property
    def token_ids(self) -> TokenIds:
        return self._load()[1]

    # ---------------------------------------------------------------- transform

    def __call__(self, sample: Mapping[str, Any], rng: np.random.Generator | None = None) -> dict:
        if not isinstance(sample, Mapping):
            raise TypeError("Tokenize takes the whole sample (a mapping with 'conversations'), "
                            f"not {type(sample).__name__}")
        cfg = self.config
        tok, ids, vocabs = self._load()
        turns = _turns(sample.get("conversations"))
        if "image" in sample or "image_gen" in sample:
            turns = expand_markers(turns, gen_tokens=cfg.gen_tokens, enc_tokens=cfg.enc_tokens,
                                   micro_conds_texts=sample.get("micro_conds_texts"), rng=rng)
        turns = select_turns(turns, cfg.turns, rng)
        has_image = "image" in sample
        if has_image and IMAGE not in turns[0].text:
            turns[0] = dataclasses.replace(turns[0], text=IMAGE + "\n" + turns[0].text)
        vocab = vocabs[has_image]
        x, y = self._render(tok, vocab, turns)

        gen = x == vocab.xtd_id
        enc = x == ids.gen_enc_slot
        x[gen] = GEN_TOKEN_INDEX
        y[gen | enc] = IGNORE_INDEX
        if vocab.image_id is not None:
            x[x == vocab.image_id] = IMAGE_TOKEN_INDEX
        x, y, gen, enc = self._fit(x, y, gen, enc)
        return {
            "input_ids": torch.from_numpy(x),
            "labels": torch.from_numpy(y),
            "gen_mask": torch.from_numpy(gen),
            "gen_enc_mask": torch.from_numpy(enc),
            "n_images": int((x == IMAGE_TOKEN_INDEX).sum()),
            "n_gen": sum(t.n_gen for t in turns),
            "n_gen_enc": sum(t.n_enc for t in turns),
        }

    @staticmethod
    def _render(tok: Any, vocab: _Vocab, turns: list[Turn]) -> tuple[np.ndarray, np.ndarray]:
        """The system message and each turn, rendered and tokenised one by one; their labels."""
        system = vocab.system_ids
        pieces, targets = [system], [np.full(len(system), IGNORE_INDEX, dtype=np.int64)]
        for t in turns:
            role = ROLES.get(t.speaker, t.speaker)
            text = render_message(tok, role, t.text)
            x = vocab.encode(text)
            y = np.full(len(x), IGNORE_INDEX, dtype=np.int64)
            if role not in _IGNORED_ROLES:
                skip = ASSISTANT_HEADER_TOKENS if text.startswith(ASSISTANT_HEADER) else 0
                if len(x) < skip:
                    raise SampleError("bad_conversations", f"an assistant message of {len(x)} tokens (< {skip})")
                y[skip:] = x[skip:]
            pieces.append(x)
            targets.append(y)
        return np.concatenate(pieces), np.concatenate(targets)

    def _fit(self, x: np.ndarray, y: np.ndarray, gen: np.ndarray, enc: np.ndarray) -> tuple:
        """``max_length``: the arrays as they are, cut (``truncate="right"``, no image position
        beyond the cut) or :class:`SampleError` ``too_long``."""
        limit = self.config.max_length
        n = len(x)
        if n <= limit:
            return x, y, gen, enc
        if self.config.truncate == "error":
            raise SampleError("too_long", f"{n} tokens > max_length {limit}")
        if (x[limit:] == IMAGE_TOKEN_INDEX).any() or gen[limit:].any() or enc[limit:].any():
            raise SampleError("too_long", f"{n} tokens > max_length {limit}, and cutting would drop image slots")
        return x[:limit], y[:limit], gen[:limit], enc[:limit]


def gen_token_count(image_size: int, downsample: int = 16) -> int:
    """Sequence slots of one generated image at ``image_size`` px: the VQ grid (``downsample`` px
    a code), merged 2x2 past 32x32 as upstream does at 1024 px (256 px: 256, 1024 px: 1024)."""
    side = image_size // downsample
    return (side // 2) ** 2 if side > 32 else side * side
