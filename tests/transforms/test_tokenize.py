"""Tokenisation: LLaDA chat template, labels, image markers, LOC tokens, turn selection, lengths.

Everything runs on the tiny offline tokenizer of :func:`lavida_data.tokenizer.build_tiny_tokenizer`,
built once per module.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from lavida_data import SampleError  # noqa: E402
from lavida_data.tokenizer import (  # noqa: E402
    LLADA_SPECIALS,
    TokenIds,
    TokenizerError,
    build_tiny_tokenizer,
    loc_tokens,
)
from lavida_data.transforms.tokenize import DEFAULT_SYSTEM_PROMPT, Tokenize, TokenizeConfig  # noqa: E402

LOC = "<box_p> the dog </box_p><LOC_BEGIN><LOC_12><LOC_40><LOC_300><LOC_512><LOC_END>"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tok"))


@pytest.fixture(scope="module")
def tok_dir_noloc(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tok_noloc"), loc=False)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return transformers.AutoTokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="module")
def ids(tok):
    return TokenIds.from_tokenizer(tok)


def enc(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def conv(*turns):
    return [{"from": r, "value": v} for r, v in turns]


def runs(values, target):
    """[start, end) runs where values == target."""
    out, start = [], None
    for i, v in enumerate(list(values) + [None]):
        if v == target and start is None:
            start = i
        elif v != target and start is not None:
            out.append((start, i))
            start = None
    return out


RNG = np.random.default_rng(0)

# ------------------------------------------------------------------------ tokenizer module


def test_loc_tokens_order():
    locs = loc_tokens()
    assert len(locs) == 1029
    assert locs[:2] == ["<LOC_0>", "<LOC_1>"] and locs[1024] == "<LOC_1024>"
    assert locs[1025:] == ["<box_p>", "</box_p>", "<LOC_BEGIN>", "<LOC_END>"]


def test_tiny_tokenizer_loads_and_roundtrips(tok):
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    for s in LLADA_SPECIALS:
        assert s in tok.all_special_tokens
        assert len(enc(tok, s)) == 1
    assert tok.bos_token == "<|startoftext|>" and tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.mask_token == "<|mdm_mask|>"
    text = "Zebra ünïcödé 日本語 ✓ 🦓 tabs\tand\nnewlines, 12345!"
    got = enc(tok, text)
    assert tok.unk_token_id not in got or tok.unk_token_id is None
    assert tok.decode(got) == text
    assert enc(tok, "hello")[0] != tok.bos_token_id  # no BOS added by the tokenizer itself


def test_tiny_tokenizer_is_deterministic(tok_dir, tmp_path):
    again = build_tiny_tokenizer(tmp_path / "again")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "again" / name).read_bytes() == open(f"{tok_dir}/{name}", "rb").read(), name
    assert again == str(tmp_path / "again")


def test_tiny_tokenizer_custom_corpus(tmp_path):
    a = build_tiny_tokenizer(tmp_path / "a", corpus=["zzyzx zzyzx zzyzx"] * 3, loc=False)
    t = transformers.AutoTokenizer.from_pretrained(a)
    assert t.convert_ids_to_tokens(enc(t, "zzyzx")) == ["zzyzx"]
    assert "<LOC_0>" not in t.get_vocab()


def test_token_ids_resolved_by_string(tok, ids):
    c = tok.convert_tokens_to_ids
    assert ids.bos == c("<|startoftext|>") and ids.eos == ids.pad == c("<|endoftext|>")
    assert (ids.start_header, ids.end_header, ids.eot, ids.mask) == tuple(
        c(s) for s in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|mdm_mask|>")
    )
    assert (ids.gen_begin, ids.gen_end, ids.gen_slot, ids.gen_enc_slot, ids.gen_fake) == tuple(
        c(f"<|reserved_token_{k}|>") for k in (3, 4, 5, 6, 7)
    )
    assert ids.image == -200
    assert ids.loc_ok is True


def test_token_ids_loc_ok_false_without_loc(tok_dir_noloc):
    t = transformers.AutoTokenizer.from_pretrained(tok_dir_noloc)
    assert TokenIds.from_tokenizer(t).loc_ok is False


def test_token_ids_names_missing_special():
    from tokenizers import Tokenizer, models, pre_tokenizers

    keep = [s for s in LLADA_SPECIALS if s not in ("<|mdm_mask|>", "<|reserved_token_6|>")]
    vocab = {"<unk>": 0, "a": 1, **{s: i + 2 for i, s in enumerate(keep)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    t = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    with pytest.raises(TokenizerError) as e:
        TokenIds.from_tokenizer(t)
    msg = str(e.value)
    assert "<|mdm_mask|>" in msg and "mask" in msg and "<|reserved_token_6|>" in msg
    assert "<|eot_id|>" not in msg


# ------------------------------------------------------------------------ template and labels


def test_config_is_strict(tok_dir):
    with pytest.raises(Exception):
        TokenizeConfig(tokenizer=tok_dir, max_lenght=10)
    with pytest.raises(Exception):
        TokenizeConfig(tokenizer=tok_dir, turns="some")
    cfg = TokenizeConfig(tokenizer=tok_dir)
    assert (cfg.max_length, cfg.gen_tokens, cfg.gen_enc_tokens, cfg.turns) == (4096, 256, 1024, "all")
    assert cfg.loc_tokens is True and cfg.truncate == "error" and cfg.system_prompt == DEFAULT_SYSTEM_PROMPT


def test_two_turn_template_exact(tok_dir, tok, ids):
    t = Tokenize(tokenizer=tok_dir)
    out = t(conv(("human", "What is the capital of France?"), ("gpt", "Paris is the capital.")), RNG)
    got = out["input_ids"].tolist()
    H = lambda role: [ids.start_header] + enc(tok, role) + [ids.end_header] + enc(tok, "\n\n")  # noqa: E731
    want = (
        [ids.bos]
        + H("system") + enc(tok, DEFAULT_SYSTEM_PROMPT) + [ids.eot]
        + H("user") + enc(tok, "What is the capital of France?") + [ids.eot]
        + H("assistant") + enc(tok, "Paris is the capital.") + [ids.eot]
    )
    assert got == want
    text = (
        "<|startoftext|><|start_header_id|>system<|end_header_id|>\n\n" + DEFAULT_SYSTEM_PROMPT + "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nParis is the capital.<|eot_id|>"
    )
    assert tok.decode(got) == text
    msgs = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital."},
    ]
    assert tok.apply_chat_template(msgs, tokenize=False) == text
    assert out["input_ids"].dtype == torch.long and out["labels"].dtype == torch.long
    assert out["gen_mask"].dtype == torch.bool and not out["gen_mask"].any() and not out["gen_enc_mask"].any()
    assert (out["n_images"], out["n_gen"], out["n_gen_enc"]) == (0, 0, 0)


def test_labels_mask_exact_spans(tok_dir, tok, ids):
    t = Tokenize(tokenizer=tok_dir)
    out = t(conv(("human", "Hi there"), ("gpt", "Hello you"), ("human", "Again"), ("gpt", "Bye now")), RNG)
    x, y = out["input_ids"].tolist(), out["labels"].tolist()
    assert len(x) == len(y)
    trained = [i for i, v in enumerate(y) if v != -100]
    assert all(y[i] == x[i] for i in trained)
    # exactly the assistant contents and their <|eot_id|>: two contiguous runs
    spans = runs([v != -100 for v in y], True)
    assert len(spans) == 2
    assert [tok.decode(x[a:b]) for a, b in spans] == ["Hello you<|eot_id|>", "Bye now<|eot_id|>"]
    for a, _ in spans:  # each run starts right after "<|end_header_id|>\n\n" of an assistant header
        head = x[:a]
        assert tok.decode(head).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert y[0] == -100 and ids.eot in x


def test_system_turn_replaces_prompt_and_empty_prompt_drops_it(tok_dir, tok):
    out = Tokenize(tokenizer=tok_dir)(conv(("system", "Be brief."), ("human", "Hi"), ("gpt", "Yo")), RNG)
    text = tok.decode(out["input_ids"].tolist())
    assert "system<|end_header_id|>\n\nBe brief.<|eot_id|>" in text and DEFAULT_SYSTEM_PROMPT not in text
    out = Tokenize(tokenizer=tok_dir, system_prompt="")(conv(("human", "Hi"), ("gpt", "Yo")), RNG)
    assert tok.decode(out["input_ids"].tolist()).startswith("<|startoftext|><|start_header_id|>user")


def test_bad_conversations(tok_dir):
    t = Tokenize(tokenizer=tok_dir)
    for bad in ([], conv(("robot", "x")), [{"from": "human"}], "text"):
        with pytest.raises(SampleError) as e:
            t(bad, RNG)
        assert e.value.reason == "bad_conversations"


# ------------------------------------------------------------------------ image markers


def test_image_moved_to_front(tok_dir, tok, ids):
    t = Tokenize(tokenizer=tok_dir)
    out = t(conv(("human", "What is shown here? <image>"), ("gpt", "A cat.")), RNG)
    x, y = out["input_ids"].tolist(), out["labels"].tolist()
    assert x.count(-200) == 1 and out["n_images"] == 1
    k = x.index(-200)
    assert tok.decode(x[:k]).endswith("<|start_header_id|>user<|end_header_id|>\n\n")
    end = x.index(ids.eot, k)
    assert x[k + 1 : end] == enc(tok, "\nWhat is shown here?")
    assert y[k] == -100
    # two markers: both at the front, one id each
    out = t(conv(("human", "Compare <image> and <image> please"), ("gpt", "Same.")), RNG)
    x = out["input_ids"].tolist()
    k = x.index(-200)
    assert x[k : k + 2] == [-200, -200] and out["n_images"] == 2
    assert x[k + 2 : x.index(ids.eot, k)] == enc(tok, "\nCompare  and  please")


@pytest.mark.parametrize("n", [256, 1024])
def test_image_gen_expansion(tok_dir, tok, ids, n):
    t = Tokenize(tokenizer=tok_dir, gen_tokens=n)
    out = t(conv(("human", "Generate an image with the caption: a red bus"), ("gpt", "Sure <image_gen>")), RNG)
    x, y, g = out["input_ids"].tolist(), out["labels"].tolist(), out["gen_mask"].tolist()
    assert x.count(ids.gen_slot) == n and out["n_gen"] == 1
    (a, b), = runs(x, ids.gen_slot)
    assert x[a - 1] == ids.gen_begin and x[b] == ids.gen_end and x[b + 1] == ids.eot
    assert [i for i, v in enumerate(g) if v] == list(range(a, b))
    assert all(v == -100 for v in y[a - 1 : b + 1])  # sentinels and slots ignored
    assert y[b + 1] == ids.eot  # <|eot_id|> still a target
    assert tok.decode([v for v in y if v != -100]) == "Sure <|eot_id|>"
    assert not out["gen_enc_mask"].any()


def test_image_gen_enc_two_sources(tok_dir, ids):
    t = Tokenize(tokenizer=tok_dir)
    out = t(conv(("human", "<image> <image_gen_enc> <image> <image_gen_enc> Make the sky blue."),
                 ("gpt", "Sure <image_gen>")), RNG)
    x, y, e = out["input_ids"].tolist(), out["labels"].tolist(), out["gen_enc_mask"].tolist()
    assert (out["n_images"], out["n_gen_enc"], out["n_gen"]) == (2, 2, 1)
    assert [b - a for a, b in runs(x, ids.gen_enc_slot)] == [1024, 1024]
    assert sum(e) == 2048 and all(x[i] == ids.gen_enc_slot for i, v in enumerate(e) if v)
    assert all(y[i] == -100 for i, v in enumerate(e) if v)
    assert out["gen_mask"].sum().item() == 256
    assert not (out["gen_mask"] & out["gen_enc_mask"]).any()


def test_image_gen_fake(tok_dir, ids):
    out = Tokenize(tokenizer=tok_dir)(conv(("human", "Plan it"), ("gpt", "Sure I should <image_gen_fake>")), RNG)
    x, y = out["input_ids"].tolist(), out["labels"].tolist()
    assert x.count(ids.gen_fake) == 1 and y[x.index(ids.gen_fake)] == -100
    assert out["n_gen"] == 0 and not out["gen_mask"].any()


# ------------------------------------------------------------------------ LOC tokens


def test_loc_tokens_single_ids(tok_dir, tok):
    out = Tokenize(tokenizer=tok_dir)(conv(("human", "<image>\nFind the dog."), ("gpt", LOC)), RNG)
    x, y = out["input_ids"].tolist(), out["labels"].tolist()
    want = tok.convert_tokens_to_ids(["<box_p>", "</box_p>", "<LOC_BEGIN>", "<LOC_12>", "<LOC_40>", "<LOC_300>",
                                      "<LOC_512>", "<LOC_END>"])
    for i in want:
        assert i in x and y[x.index(i)] == i  # one id each, trained
    k = x.index(want[2])
    assert x[k : k + 6] == [want[2], *want[3:7], want[7]]


def test_loc_tokens_off_stays_text(tok_dir, tok):
    out = Tokenize(tokenizer=tok_dir, loc_tokens=False)(conv(("human", "Find the dog."), ("gpt", LOC)), RNG)
    x = out["input_ids"].tolist()
    loc_ids = set(tok.convert_tokens_to_ids(loc_tokens()))
    assert not loc_ids & set(x)
    trained = [v for v in out["labels"].tolist() if v != -100]
    assert tok.decode(trained) == LOC + "<|eot_id|>"


def test_loc_tokens_on_needs_them(tok_dir_noloc):
    t = Tokenize(tokenizer=tok_dir_noloc)
    with pytest.raises(TokenizerError, match="loc_tokens"):
        t(conv(("human", "a"), ("gpt", "b")), RNG)
    out = Tokenize(tokenizer=tok_dir_noloc, loc_tokens=False)(conv(("human", "a"), ("gpt", LOC)), RNG)
    assert out["input_ids"].numel() > 0


# ------------------------------------------------------------------------ turns="one"

MULTI = conv(("human", "<image>\nQuestion alpha"), ("gpt", "Answer alpha"), ("human", "Question beta"),
             ("gpt", "Answer beta"), ("human", "Question gamma"), ("gpt", "Answer gamma"))


def test_turns_one_keeps_one_pair_by_rng(tok_dir, tok):
    t = Tokenize(tokenizer=tok_dir, turns="one")
    chosen = set()
    for seed in range(12):
        a = t(MULTI, np.random.default_rng(seed))
        b = t(MULTI, np.random.default_rng(seed))
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
        text = tok.decode([v for v in a["input_ids"].tolist() if v >= 0])
        assert text.count("<|start_header_id|>user") == 1 and text.count("<|start_header_id|>assistant") == 1
        names = [w for w in ("alpha", "beta", "gamma") if f"Answer {w}" in text]
        assert len(names) == 1 and f"Question {names[0]}" in text
        assert a["n_images"] == 1  # the dropped turn's <image> moves into the kept one
        chosen.add(names[0])
    assert chosen == {"alpha", "beta", "gamma"}
    full = Tokenize(tokenizer=tok_dir)(MULTI, RNG)
    assert tok.decode([v for v in full["input_ids"].tolist() if v >= 0]).count("<|start_header_id|>user") == 3


def test_turns_one_needs_rng(tok_dir):
    with pytest.raises(TypeError):
        Tokenize(tokenizer=tok_dir, turns="one")(MULTI)


# ------------------------------------------------------------------------ lengths


def test_too_long_error(tok_dir):
    t = Tokenize(tokenizer=tok_dir, max_length=40)
    with pytest.raises(SampleError) as e:
        t(conv(("human", "Describe."), ("gpt", "word " * 50)), RNG)
    assert e.value.reason == "too_long"
    t = Tokenize(tokenizer=tok_dir, gen_tokens=1024, max_length=1000, system_prompt="")
    with pytest.raises(SampleError, match="max_length"):
        t(conv(("human", "Draw"), ("gpt", "Sure <image_gen>")), RNG)


def test_truncate_right(tok_dir, ids):
    short = dict(tokenizer=tok_dir, system_prompt="", gen_tokens=8)
    full = Tokenize(**short)(conv(("human", "Draw"), ("gpt", "Sure <image_gen> and some more words here")), RNG)
    n = len(full["input_ids"])
    x = full["input_ids"].tolist()
    end = x.index(ids.gen_end) + 1
    t = Tokenize(**short, max_length=end + 1, truncate="right")
    out = t(conv(("human", "Draw"), ("gpt", "Sure <image_gen> and some more words here")), RNG)
    assert len(out["input_ids"]) == end + 1 < n
    for k in ("input_ids", "labels", "gen_mask", "gen_enc_mask"):
        assert torch.equal(out[k], full[k][: end + 1])
    assert out["n_gen"] == 1
    t = Tokenize(**short, max_length=end - 3, truncate="right")  # would cut inside the slots
    with pytest.raises(SampleError) as e:
        t(conv(("human", "Draw"), ("gpt", "Sure <image_gen> and some more words here")), RNG)
    assert e.value.reason == "too_long"


# ------------------------------------------------------------------------ pickling


def test_pickle_lazy(tok_dir):
    t = Tokenize(TokenizeConfig(tokenizer=tok_dir))
    a = t(MULTI, RNG)
    t2 = pickle.loads(pickle.dumps(t))
    assert t2._state is None and t2.config == t.config
    b = t2(MULTI, RNG)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert Tokenize({"tokenizer": tok_dir}).config == t.config
    with pytest.raises(TypeError):
        Tokenize(TokenizeConfig(tokenizer=tok_dir), max_length=3)
