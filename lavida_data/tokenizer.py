"""LLaDA tokenizer conventions: special-token names, the LOC vocabulary, a tiny offline tokenizer.

The model is trained with the LLaDA-8B-Instruct tokenizer (a Hugging Face fast tokenizer). This
module never hard-codes its ids: :class:`TokenIds` resolves every special token by its *string*
from whatever tokenizer is given, so the same code runs on the real tokenizer and on the tiny one
that :func:`build_tiny_tokenizer` writes for tests and dry runs (no model hub needed).

Sentinels (our choice; LLaDA only reserves ``<|reserved_token_0|>`` .. ``<|reserved_token_9|>``):

==============================  ==========================  ===================================
token                           :class:`TokenIds` field     meaning
==============================  ==========================  ===================================
``<|reserved_token_3|>``        ``gen_begin``               opens a generated image's slots
``<|reserved_token_4|>``        ``gen_end``                 closes them
``<|reserved_token_5|>``        ``gen_slot``                one slot per generated VQ token
``<|reserved_token_6|>``        ``gen_enc_slot``            one slot per edit-source VQ token
``<|reserved_token_7|>``        ``gen_fake``                ``<image_gen_fake>`` (plan only)
==============================  ==========================  ===================================

Slot, edit-source and fake ids follow upstream LaViDa-O (126089, 126090, 126091 in LLaDA); the
begin / end sentinels are the two reserved tokens just before them.

``transformers`` and ``tokenizers`` are training dependencies (``pip install 'lavida-data[train]'``);
they are imported only when a function here needs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .errors import LavidaDataError

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
MASK = "<|mdm_mask|>"

#: LLaDA's special tokens, by name (BOS, EOS = pad, chat headers, end of turn, mask, reserved 0..9).
LLADA_SPECIALS: tuple[str, ...] = (
    BOS, EOS, START_HEADER, END_HEADER, EOT, MASK, *(f"<|reserved_token_{k}|>" for k in range(10)),
)

#: Placeholder id of an understanding image (LLaVA's ``IMAGE_TOKEN_INDEX``); the model swaps in
#: the SigLIP features. Never a real vocabulary id.
IMAGE_TOKEN_INDEX = -200

N_LOC = 1025  # <LOC_0> .. <LOC_1024>: a 0..1024 grid


def loc_tokens() -> list[str]:
    """The optional LOC vocabulary, in id order: ``<LOC_0>`` .. ``<LOC_1024>``, ``<box_p>``,
    ``</box_p>``, ``<LOC_BEGIN>``, ``<LOC_END>`` (1029 tokens)."""
    return [f"<LOC_{i}>" for i in range(N_LOC)] + ["<box_p>", "</box_p>", "<LOC_BEGIN>", "<LOC_END>"]


class TokenizerError(LavidaDataError, ValueError):
    """A tokenizer lacks what this library needs (a special token, the LOC vocabulary)."""


# --------------------------------------------------------------------------------------------
# Token ids


@dataclass(frozen=True)
class TokenIds:
    """Ids of the special tokens in one tokenizer, looked up by token string.

    ``pad`` is ``eos`` (LLaDA pads with end-of-text). ``image`` is the placeholder
    :data:`IMAGE_TOKEN_INDEX` (-200), not a vocabulary id. ``loc_ok`` tells whether every LOC
    token is one token of this tokenizer.
    """

    bos: int
    eos: int
    pad: int
    start_header: int
    end_header: int
    eot: int
    mask: int
    gen_slot: int
    gen_enc_slot: int
    gen_fake: int
    gen_begin: int
    gen_end: int
    image: int = IMAGE_TOKEN_INDEX
    loc_ok: bool = False

    #: field -> token string (pad is eos; image and loc_ok are not tokens)
    TOKENS: ClassVar[dict[str, str]] = {
        "bos": BOS,
        "eos": EOS,
        "start_header": START_HEADER,
        "end_header": END_HEADER,
        "eot": EOT,
        "mask": MASK,
        "gen_slot": "<|reserved_token_5|>",
        "gen_enc_slot": "<|reserved_token_6|>",
        "gen_fake": "<|reserved_token_7|>",
        "gen_begin": "<|reserved_token_3|>",
        "gen_end": "<|reserved_token_4|>",
    }

    @classmethod
    def from_tokenizer(cls, tok: Any) -> "TokenIds":
        """Resolve the ids from a Hugging Face tokenizer; raises :class:`TokenizerError` naming
        every special token it lacks."""
        vocab = tok.get_vocab()
        missing = [f"{s!r} ({name})" for name, s in cls.TOKENS.items() if s not in vocab]
        if missing:
            name = getattr(tok, "name_or_path", "") or type(tok).__name__
            raise TokenizerError(
                f"tokenizer {name!r} lacks the special token{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}: a LLaDA-style tokenizer is needed "
                "(see lavida_data.tokenizer.LLADA_SPECIALS)"
            )
        ids = {name: int(vocab[s]) for name, s in cls.TOKENS.items()}
        return cls(pad=ids["eos"], loc_ok=_loc_ok(tok, vocab), **ids)

    def as_dict(self) -> dict[str, int | bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _loc_ok(tok: Any, vocab: dict[str, int]) -> bool:
    locs = loc_tokens()
    if not all(t in vocab for t in locs):
        return False
    probe = ["<LOC_BEGIN>", "<LOC_0>", "<LOC_12>", "<LOC_1024>", "<LOC_END>", "<box_p>", "</box_p>"]
    got = tok("".join(probe) + " a <LOC_7>b", add_special_tokens=False)["input_ids"]
    want = [vocab[t] for t in probe]
    return got[: len(want)] == want and vocab["<LOC_7>"] in got[len(want):]


# --------------------------------------------------------------------------------------------
# A tiny tokenizer for tests and dry runs

#: The built-in training text of :func:`build_tiny_tokenizer`: enough English for a few hundred
#: merges; any other text still tokenizes (byte level), only in more pieces.
TINY_CORPUS: tuple[str, ...] = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language.",
    "system user assistant",
    "Question:\n\nWhat is it?\n\nAnswer:\n\nA cat.\n",
    "Generate an image with the caption: a red bus parked next to a tall building on a rainy day.",
    "Sure. Sure, here is the image. Sure I should place the objects in the following manner",
    "Please locate the dog in this image. Give bounding boxes in LOC format.",
    "Generate a dense image caption with bounding boxes in LOC format.",
    "Please evaluate this generated image based on the following prompt: Focus on text alignment and "
    "compositionality. The image matches the prompt well, but the cat is missing.",
    "Make the sky blue. Remove the person on the left. Replace the apple with an orange. Add a hat.",
    "What is shown in the picture? The picture shows two people walking along a beach at sunset.",
    "How many cars are there? There are three cars in the street, one of them is white.",
    "ORIGINAL WIDTH : 1024; ORIGINAL HEIGHT : 768; TOP : 0; LEFT : 128; LUMINANCE : 0.512; "
    "CONTRAST : 0.231; SCORE : 6.250; HPS : 2.875",
    "The quick brown fox jumps over the lazy dog. A man is riding a horse in a green field.",
    "This is a photo of a kitchen with a white table, four chairs and a window.",
    "0 1 2 3 4 5 6 7 8 9 10 100 256 512 1000 1024",
    "Describe the image in detail. The image shows a small house with a garden and flowers.",
    "Answer the question with a single word. Yes. No. Left. Right. Top. Bottom.",
)

_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] "
    "+ '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def build_tiny_tokenizer(
    out_dir: str | os.PathLike,
    *,
    loc: bool = True,
    corpus: list[str] | None = None,
    vocab_size: int = 1000,
) -> str:
    """Write a small LLaDA-style fast tokenizer to ``out_dir`` and return ``out_dir``.

    A byte-level BPE trained on :data:`TINY_CORPUS` (or ``corpus``), so every string tokenizes
    (unknown characters fall back to bytes); :data:`LLADA_SPECIALS` are added as special tokens
    and, with ``loc``, :func:`loc_tokens` as added (single) tokens, in that id order after the
    BPE vocabulary. Like LLaDA's tokenizer it adds no BOS by itself. Loads offline with
    ``transformers.AutoTokenizer.from_pretrained(out_dir)``; the files are identical every run.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out_dir = os.fspath(out_dir)
    texts = list(TINY_CORPUS if corpus is None else corpus)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("corpus must be a list of strings")

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=sorted(pre_tokenizers.ByteLevel.alphabet()),
        special_tokens=[],
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in LLADA_SPECIALS])
    if loc:
        bpe.add_tokens([AddedToken(s, special=False, normalized=False) for s in loc_tokens()])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        mask_token=MASK,
        additional_special_tokens=[s for s in LLADA_SPECIALS if s not in (BOS, EOS, MASK)],
        model_max_length=1 << 20,
        chat_template=_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)  # BPE training and serialisation are deterministic
    return out_dir
