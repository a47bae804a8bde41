"""LLaDA tokenizer conventions: special-token names, the LOC vocabulary, a tiny offline tokenizer.

The model is trained with the LLaDA-8B-Instruct tokenizer (a Hugging Face fast tokenizer). This
module never hard-codes its ids: :class:`TokenIds` resolves every special token by its *string*
from whatever tokenizer is given, so the same code runs on the real tokenizer and on the tiny one
that :func:`build_tiny_tokenizer` writes for tests and dry runs (no model hub needed).

Tokens with a role in LaViDa-O (upstream's names; LLaDA ids in brackets):

==============================  ==========================  ===================================
token                           :class:`TokenIds` field     meaning
==============================  ==========================  ===================================
``<|mdm_mask|>``                ``mask``                    the text mask token (126336)
``<|reserved_token_5|>``        ``gen_slot``                what the model puts at a ``-300``
                                                            generation slot (126089)
``<|reserved_token_6|>``        ``gen_enc_slot``            one slot per edit-source VQ token
                                                            (126090)
``<|reserved_token_7|>``        ``gen_fake``                ``<image_gen_fake>`` (plan only)
                                                            (126091)
==============================  ==========================  ===================================

A generated image is no vocabulary token: :mod:`lavida_data.transforms.tokenize` writes
upstream's text ``<|reserved_token_126095|>`` (not a token: plain text), one placeholder id
:data:`GEN_TOKEN_INDEX` (``-300``) per slot, and ``<|reserved_token_126096|>``.

``transformers`` and ``tokenizers`` are training dependencies (``pip install 'lavida-data[train]'``);
they are imported only when a function here needs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from lavida_data.errors import LavidaDataError

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
MASK = "<|mdm_mask|>"

#: Number of LLaDA's reserved tokens ``<|reserved_token_0|>`` .. ``<|reserved_token_255|>``.
N_RESERVED = 256


def reserved_token(k: int) -> str:
    """``<|reserved_token_k|>``."""
    return f"<|reserved_token_{k}|>"


#: LLaDA's special tokens in LLaDA's id order: BOS (126080), EOS = pad (126081), the reserved
#: tokens from 126084 (``<|reserved_token_1|>`` = 126085, ``_6`` = 126090 in upstream's code),
#: the mask (126336, the id ``<|reserved_token_252|>`` would have if they were contiguous: here
#: the last four reserved tokens are assumed to follow the mask), the chat headers (126346,
#: 126347) and end of turn (126348).
LLADA_SPECIALS: tuple[str, ...] = (
    BOS, EOS,
    *(reserved_token(k) for k in range(252)),
    MASK,
    *(reserved_token(k) for k in range(252, N_RESERVED)),
    START_HEADER, END_HEADER, EOT,
)

#: Placeholder id of an understanding image (LLaVA's ``IMAGE_TOKEN_INDEX``); the model swaps in
#: the SigLIP features. Never a real vocabulary id.
IMAGE_TOKEN_INDEX = -200
#: Placeholder id of one generated-image slot (upstream's ``IMAGE_TOKEN_INDEX_GEN``); upstream's
#: model replaces it by ``<|reserved_token_5|>`` (:attr:`TokenIds.gen_slot`) and the image
#: tokens. Never a real vocabulary id.
GEN_TOKEN_INDEX = -300

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

    ``pad`` is ``eos`` (LLaDA pads with end-of-text). ``image`` and ``gen`` are the placeholders
    :data:`IMAGE_TOKEN_INDEX` (-200) and :data:`GEN_TOKEN_INDEX` (-300), not vocabulary ids.
    ``loc_ok`` tells whether every LOC token is one token of this tokenizer.
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
    image: int = IMAGE_TOKEN_INDEX
    gen: int = GEN_TOKEN_INDEX
    loc_ok: bool = False

    #: field -> token string (pad is eos; image, gen and loc_ok are not tokens)
    TOKENS: ClassVar[dict[str, str]] = {
        "bos": BOS,
        "eos": EOS,
        "start_header": START_HEADER,
        "end_header": END_HEADER,
        "eot": EOT,
        "mask": MASK,
        "gen_slot": reserved_token(5),
        "gen_enc_slot": reserved_token(6),
        "gen_fake": reserved_token(7),
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
                "(see lavida_data.transforms.tokenizer.LLADA_SPECIALS)"
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
    # LLaDA splits the bare role name into "ass" + "istant": the assistant header is then six
    # tokens here too (upstream ignores the first six tokens of an assistant message)
    "ass\nistant\nass\nistant",
)

#: LLaDA-8B-Instruct's chat template (its tokenizer_config.json): the content is trimmed, the
#: first message gets the BOS, and the assistant header is always appended.
LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
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
    BPE vocabulary. Like LLaDA's tokenizer it adds no BOS by itself (``add_bos_token`` false)
    and has LLaDA's chat template (:data:`LLADA_CHAT_TEMPLATE`). Loads offline with
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
        chat_template=LLADA_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        add_bos_token=False,
        add_eos_token=False,
    )
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)  # BPE training and serialisation are deterministic
    return out_dir


def build_tiny_tokenizer_once(path: str) -> str:
    """The tiny tokenizer at ``path``, built unless it is there: into a folder of its own beside
    it, then renamed into place (a rename onto a folder another process or node completed first
    fails, and that one is kept), so nobody reads a half-written tokenizer."""
    import shutil
    import socket
    import tempfile

    if os.path.exists(os.path.join(path, "tokenizer.json")):
        return path
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tiny-tokenizer-{socket.gethostname()}-", dir=parent)
    try:
        build_tiny_tokenizer(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not os.path.exists(os.path.join(path, "tokenizer.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
