"""Load-time tokenisation: a LLaVA-style conversation -> ids, labels and image-slot masks.

Sequence (LLaDA chat format)::

    BOS
    <|start_header_id|>system<|end_header_id|>\\n\\n{system prompt}<|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n{human turn}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n{gpt turn}<|eot_id|>
    ...

Labels (-100 = ignored): BOS, the system and user messages and every role header are ignored;
an assistant's content and its ``<|eot_id|>`` are targets, except image positions.

Markers in the text:

* ``<image>`` -> one id ``-200`` each (the model puts the SigLIP features there); all of a
  turn's ``<image>`` markers move to its front, followed by ``"\\n"`` and the rest of the turn,
  stripped (LLaVA's ``preprocess_multimodal``);
* ``<image_gen>`` -> ``gen_begin``, ``gen_tokens`` x ``gen_slot``, ``gen_end``; ``gen_mask`` is
  True at the slots only (not at the sentinels);
* ``<image_gen_enc>`` -> ``gen_enc_tokens`` x ``gen_enc_slot``, marked in ``gen_enc_mask``;
* ``<image_gen_fake>`` -> one ``gen_fake`` (plan-only samples; no image behind it).

All of these positions, sentinels included, are ignored in the labels: the images carry their
own loss. Text between markers is tokenised with ``add_special_tokens=False``. With
``loc_tokens`` LOC markup (``<LOC_BEGIN><LOC_12>...``) comes out as single ids (the tokenizer
must have them: :attr:`TokenIds.loc_ok`); without, it is tokenised as plain text even when the
tokenizer knows the LOC tokens.

A leading ``system`` turn replaces ``system_prompt``; an empty system prompt drops the system
message. ``turns="one"`` keeps one human/gpt pair drawn with the sample's generator (upstream's
default); understanding and edit-source markers of the dropped turns move into the kept human
turn (earlier ones to its front, later ones to its end), so the sample's images still all have
a place. When the conversation has ``<image_gen>`` markers, the pair holding them is the one kept
(markers spread over several pairs: ``SampleError("bad_conversations")``); a single pair draws
nothing from the generator.

With ``loc_tokens`` off and a tokenizer that knows the LOC tokens, text segments bypass the
added-token matcher altogether (normaliser, pre-tokeniser, model), so special-token strings
inside the text stay plain text too.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import SampleError
from ..tokenizer import END_HEADER, IMAGE_TOKEN_INDEX, START_HEADER, TokenIds, TokenizerError, loc_tokens

IGNORE_INDEX = -100
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)

IMAGE = "<image>"
IMAGE_GEN = "<image_gen>"
IMAGE_GEN_ENC = "<image_gen_enc>"
IMAGE_GEN_FAKE = "<image_gen_fake>"
_MARKER_RE = re.compile("(" + "|".join(re.escape(m) for m in (IMAGE, IMAGE_GEN, IMAGE_GEN_ENC, IMAGE_GEN_FAKE)) + ")")
_CARRIED_RE = re.compile(f"{re.escape(IMAGE)}|{re.escape(IMAGE_GEN_ENC)}")

#: conversation ``from`` -> chat role
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class TokenizeConfig(BaseModel):
    """Settings of the tokenisation transform."""

    model_config = ConfigDict(extra="forbid")

    tokenizer: str = Field(description="path (or hub name) of a LLaDA-style Hugging Face tokenizer")
    max_length: int = Field(4096, gt=0, description="longest sequence, in tokens")
    gen_tokens: int = Field(256, gt=0, description="slots per <image_gen>: 256 at 256 px, 1024 at 1024 px")
    gen_enc_tokens: int = Field(1024, gt=0, description="slots per <image_gen_enc> (edit source)")
    turns: Literal["all", "one"] = Field(
        "all", description="'one': keep one random human/gpt pair (upstream's default); 'all' (1024 stages)"
    )
    loc_tokens: bool = Field(True, description="LOC markup as single tokens; False leaves it plain text")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="system message; empty drops it")
    truncate: Literal["error", "right"] = Field(
        "error", description="over max_length: 'error' skips the sample; 'right' cuts text after the last image"
    )


@functools.lru_cache(maxsize=None)
def load_tokenizer(path: str) -> tuple[Any, TokenIds]:
    """``AutoTokenizer.from_pretrained(path)`` and its :class:`TokenIds`, once per process."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return tok, TokenIds.from_tokenizer(tok)


class Tokenize:
    """``Tokenize(config)(conversations, rng)`` -> ``input_ids``, ``labels``, ``gen_mask``,
    ``gen_enc_mask`` (tensors of one length) and ``n_images``, ``n_gen``, ``n_gen_enc``.

    Picklable (for data-loader workers): the tokenizer loads lazily, once per process.
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
        return {"config": self.config, "_state": None, "_cache": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # ---------------------------------------------------------------- tokenizer

    def _load(self) -> tuple:
        if self._state is None:
            tok, ids = load_tokenizer(self.config.tokenizer)
            if self.config.loc_tokens and not ids.loc_ok:
                raise TokenizerError(
                    f"tokenizer {self.config.tokenizer!r} lacks the LOC tokens (<LOC_0>..<LOC_1024>, <box_p>, "
                    "</box_p>, <LOC_BEGIN>, <LOC_END>) as single tokens: add them or set loc_tokens: false"
                )
            vocab = tok.get_vocab()
            plain = not self.config.loc_tokens and any(t in vocab for t in loc_tokens())
            headers = {
                role: self._encode_with(tok, f"{START_HEADER}{role}{END_HEADER}\n\n")
                for role in ("system", "user", "assistant")
            }
            self._state = (tok, ids, plain, headers)
        return self._state

    @property
    def tokenizer(self) -> Any:
        return self._load()[0]

    @property
    def token_ids(self) -> TokenIds:
        return self._load()[1]

    @staticmethod
    def _encode_with(tok: Any, text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> list[int]:
        """Ids of a text segment (no markers), LOC markup as this config wants it. Short segments
        that recur (the system prompt, "Sure ") are cached."""
        if not text:
            return []
        cache = self.__dict__.setdefault("_cache", {})
        hit = cache.get(text)
        if hit is not None:
            return hit
        ids = self._encode(text)
        if len(text) <= 256 and len(cache) < 4096:
            cache[text] = ids
        return ids

    def _encode(self, text: str) -> list[int]:
        tok, _, plain, _ = self._load()
        if not plain:
            backend = getattr(tok, "backend_tokenizer", None)
            if backend is not None:  # the fast tokenizer itself: no BatchEncoding on the way
                return list(backend.encode(text, add_special_tokens=False).ids)
            return self._encode_with(tok, text)
        # the tokenizer knows the LOC tokens but they are off: run normaliser, pre-tokeniser and
        # model directly, so no added token is matched and LOC markup stays plain text
        bt = tok.backend_tokenizer
        s = bt.normalizer.normalize_str(text) if bt.normalizer is not None else text
        pieces = bt.pre_tokenizer.pre_tokenize_str(s) if bt.pre_tokenizer is not None else [(s, None)]
        return [t.id for piece, _ in pieces for t in bt.model.tokenize(piece)]

    # ---------------------------------------------------------------- transform

    def __call__(
        self, conversations: Sequence[Mapping[str, str]] | Mapping[str, Any], rng: np.random.Generator | None = None
    ) -> dict:
        if isinstance(conversations, Mapping):  # a whole sample
            conversations = conversations.get("conversations")  # type: ignore[assignment]
        cfg = self.config
        _, ids, _, headers = self._load()
        msgs = _messages(conversations)
        system = cfg.system_prompt
        if msgs and msgs[0][0] == "system":
            system = msgs[0][1]
            msgs = msgs[1:]
        if cfg.turns == "one":
            if rng is None:
                raise TypeError("turns='one' needs the sample's numpy Generator")
            msgs = _one_pair(msgs, rng)

        seq = _Seq()
        seq.add([ids.bos], train=False)
        if system:
            self._message(seq, ids, headers, "system", system)
        for role, value in msgs:
            self._message(seq, ids, headers, role, value)

        n = seq.n
        if n > cfg.max_length:
            if cfg.truncate == "error":
                raise SampleError("too_long", f"{n} tokens > max_length {cfg.max_length}")
            if any(end > cfg.max_length for _, end in seq.spans):
                raise SampleError(
                    "too_long", f"{n} tokens > max_length {cfg.max_length}, and cutting would drop image slots"
                )
        input_ids, labels, gen, enc = seq.arrays(cfg.max_length)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "gen_mask": torch.from_numpy(gen),
            "gen_enc_mask": torch.from_numpy(enc),
            "n_images": seq.n_images,
            "n_gen": seq.n_gen,
            "n_gen_enc": seq.n_gen_enc,
        }

    def _message(self, seq: "_Seq", ids: TokenIds, headers: dict, role: str, value: str) -> None:
        cfg = self.config
        train = role == "assistant"
        seq.add(headers[role], train=False)
        n_img = value.count(IMAGE)
        if n_img:
            value = IMAGE * n_img + "\n" + value.replace(IMAGE, "").strip()
        for piece in _MARKER_RE.split(value):
            if piece == IMAGE:
                seq.add([IMAGE_TOKEN_INDEX], train=False, span=True)
                seq.n_images += 1
            elif piece == IMAGE_GEN:
                seq.add([ids.gen_begin], train=False, span_start=True)
                seq.add_run(ids.gen_slot, cfg.gen_tokens, _GEN)
                seq.add([ids.gen_end], train=False, span_end=True)
                seq.n_gen += 1
            elif piece == IMAGE_GEN_ENC:
                seq.add_run(ids.gen_enc_slot, cfg.gen_enc_tokens, _ENC, span=True)
                seq.n_gen_enc += 1
            elif piece == IMAGE_GEN_FAKE:
                seq.add([ids.gen_fake], train=False)
            elif piece:
                seq.add(self.encode(piece), train=train)
        seq.add([ids.eot], train=train)


_TEXT, _GEN, _ENC = 0, 1, 2  # what a run of the sequence holds


class _Seq:
    """The growing sequence as runs (ids, trained, kind), joined into arrays once at the end; and
    the [start, end) spans of image runs."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, bool, int]] = []
        self.n = 0
        self.spans: list[tuple[int, int]] = []
        self._open: int | None = None
        self.n_images = self.n_gen = self.n_gen_enc = 0

    def add(self, ids: list[int], *, train: bool, span: bool = False, span_start: bool = False,
            span_end: bool = False) -> None:
        if span_start:
            self._open = self.n
        self._push(np.asarray(ids, dtype=np.int64), train, _TEXT, span)
        if span_end and self._open is not None:
            self.spans.append((self._open, self.n))
            self._open = None

    def add_run(self, token: int, count: int, kind: int, span: bool = False) -> None:
        self._push(np.full(count, token, dtype=np.int64), False, kind, span)

    def _push(self, arr: np.ndarray, train: bool, kind: int, span: bool) -> None:
        start = self.n
        self.runs.append((arr, train, kind))
        self.n += len(arr)
        if span:
            self.spans.append((start, self.n))

    def arrays(self, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(input ids, labels, generation-slot mask, edit-source-slot mask), cut at ``limit``."""
        lengths = [len(r[0]) for r in self.runs]
        ids = np.concatenate([r[0] for r in self.runs] or [np.zeros(0, np.int64)])[:limit]
        train = np.repeat(np.array([r[1] for r in self.runs], dtype=bool), lengths)[:limit]
        kind = np.repeat(np.array([r[2] for r in self.runs], dtype=np.int8), lengths)[:limit]
        labels = np.where(train, ids, IGNORE_INDEX)
        return ids, labels, kind == _GEN, kind == _ENC


def _messages(conversations: Any) -> list[tuple[str, str]]:
    if not isinstance(conversations, (list, tuple)) or not conversations:
        raise SampleError("bad_conversations", "conversations must be a non-empty list")
    out = []
    for turn in conversations:
        if not (isinstance(turn, Mapping) and isinstance(turn.get("value"), str)):
            raise SampleError("bad_conversations", "each turn must be {'from': str, 'value': str}")
        role = ROLES.get(turn.get("from"))  # type: ignore[arg-type]
        if role is None:
            raise SampleError("bad_conversations", f"unknown speaker {turn.get('from')!r} (human, gpt or system)")
        out.append((role, turn["value"]))
    return out


def _one_pair(msgs: list[tuple[str, str]], rng: np.random.Generator) -> list[tuple[str, str]]:
    """One user/assistant pair drawn with ``rng``; markers of dropped turns move into its user turn."""
    pairs = []
    i = 0
    while i + 1 < len(msgs):
        if msgs[i][0] == "user" and msgs[i + 1][0] == "assistant":
            pairs.append(i)
            i += 2
        else:
            i += 1
    if not pairs:
        raise SampleError("bad_conversations", "turns='one' needs a human turn followed by a gpt turn")
    gen_total = sum(v.count(IMAGE_GEN) for _, v in msgs)
    if gen_total:  # the pair holding the generation target must stay
        pairs = [p for p in pairs if msgs[p][1].count(IMAGE_GEN) + msgs[p + 1][1].count(IMAGE_GEN) == gen_total]
        if not pairs:
            raise SampleError("bad_conversations", "turns='one': <image_gen> markers span several turn pairs")
    k = pairs[int(rng.integers(len(pairs)))] if len(pairs) > 1 else pairs[0]
    before = "".join(m for _, v in msgs[:k] for m in _CARRIED_RE.findall(v))
    after = "".join(m for _, v in msgs[k + 2:] for m in _CARRIED_RE.findall(v))
    user = before + msgs[k][1] + (" " + after if after else "")
    return [("user", user), msgs[k + 1]]
