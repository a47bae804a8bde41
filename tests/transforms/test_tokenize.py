"""Tokenisation: the tiny LLaDA-style tokenizer, upstream's chat rendering and labels, image markers,
micro-conditions, LOC tokens, turn selection, lengths.

Everything runs on the tiny offline tokenizer of :func:`lavida_data.transforms.tokenizer.build_tiny_tokenizer`,
built once per module. Exact equality with upstream's outputs: test_render_golden.py.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from lavida_data import SampleError  # noqa: E402
from lavida_data.transforms.tokenizer import (
    LLADA_CHAT_TEMPLATE,
    LLADA_SPECIALS,
    N_RESERVED,
    TokenIds,
    TokenizerError,
    build_tiny_tokenizer,
    loc_tokens,
    reserved_token,
)
from lavida_data.transforms.tokenize import (
    DEFAULT_SYSTEM_PROMPT,
    GEN_CLOSE,
    GEN_OPEN,
    Tokenize,
    TokenizeConfig,
)

LOC = "<box_p> the dog </box_p><LOC_BEGIN><LOC_12><LOC_40><LOC_300><LOC_512><LOC_END>"
HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"
MICRO = "[[micro_conds_texts]]"


@pytest.fixture(scope="module")
def tok_dir_noloc(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tok_noloc"), loc=False)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return transformers.AutoTokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="module")
def ids(tok):
    return TokenIds.from_tokenizer(tok)


@pytest.fixture(scope="module")
def t_all(tok_dir):
    return Tokenize(tokenizer=tok_dir, turns="all")


def enc(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def conv(*turns):
    return [{"from": r, "value": v} for r, v in turns]


def sample(*turns, **keys):
    return {"conversations": conv(*turns), **keys}


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


def trained(tok, out):
    return tok.decode([v for v in out["labels"].tolist() if v != -100])


def rng(seed=0):
    return np.random.default_rng(seed)


class Fixed:
    """A generator stand-in with given draws."""

    def __init__(self, rand=(), pair=0):
        self.rand, self.pair = list(rand), pair

    def random(self):
        return self.rand.pop(0)

    def integers(self, n):
        return self.pair


# ------------------------------------------------------------------------ tokenizer module


def test_loc_tokens_order():
    locs = loc_tokens()
    assert len(locs) == 1029
    assert locs[:2] == ["<LOC_0>", "<LOC_1>"] and locs[1024] == "<LOC_1024>"
    assert locs[1025:] == ["<box_p>", "</box_p>", "<LOC_BEGIN>", "<LOC_END>"]


def test_llada_specials_order():
    assert len(LLADA_SPECIALS) == len(set(LLADA_SPECIALS)) == 2 + N_RESERVED + 1 + 3
    assert LLADA_SPECIALS[:3] == ("<|startoftext|>", "<|endoftext|>", reserved_token(0))
    # <|mdm_mask|> sits where LLaDA has it (126336 = 126084 + 252)
    k = LLADA_SPECIALS.index("<|mdm_mask|>")
    assert LLADA_SPECIALS[k - 1] == reserved_token(251) and LLADA_SPECIALS[k + 1] == reserved_token(252)
    assert LLADA_SPECIALS[-4:] == (reserved_token(255), "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def test_tiny_tokenizer_loads_and_roundtrips(tok, tok_dir):
    import json

    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    vocab = tok.get_vocab()
    got = [vocab[s] for s in LLADA_SPECIALS]
    assert got == sorted(got) and got == list(range(got[0], got[0] + len(got)))  # LLaDA's relative order
    for s in LLADA_SPECIALS:
        assert s in tok.all_special_tokens
        assert len(enc(tok, s)) == 1
    assert tok.bos_token == "<|startoftext|>" and tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.mask_token == "<|mdm_mask|>"
    text = "Zebra ünïcödé 日本語 ✓ 🦓 tabs\tand\nnewlines, 12345!"
    got = enc(tok, text)
    assert tok.unk_token_id not in got or tok.unk_token_id is None
    assert tok.decode(got) == text
    assert tok("hello")["input_ids"][0] != tok.bos_token_id  # no BOS added by the tokenizer itself
    with open(f"{tok_dir}/tokenizer_config.json") as f:
        assert json.load(f)["add_bos_token"] is False
    # upstream's brackets of a generated image are plain text, not tokens
    assert "<|reserved_token_126095|>" not in vocab and len(enc(tok, "<|reserved_token_126095|>")) > 1


def test_tiny_tokenizer_chat_template_is_lladas(tok):
    assert tok.chat_template == LLADA_CHAT_TEMPLATE
    msgs = [{"role": "system", "content": "  Be brief. "}, {"role": "user", "content": "\nHi\n"},
            {"role": "assistant", "content": "Yo"}]
    # content trimmed, BOS first, the assistant header always appended
    assert tok.apply_chat_template(msgs, tokenize=False) == (
        "<|startoftext|>" + HEADER.format("system") + "Be brief.<|eot_id|>" + HEADER.format("user") + "Hi<|eot_id|>"
        + HEADER.format("assistant") + "Yo<|eot_id|>" + HEADER.format("assistant")
    )


def test_tiny_tokenizer_assistant_header_is_six_tokens(tok):
    """As LLaDA's [start_header, 'ass', 'istant', end_header, '\\n', '\\n']: upstream hard-codes 6."""
    pieces = tok.convert_ids_to_tokens(enc(tok, HEADER.format("assistant") + "Sure"))
    assert pieces == ["<|start_header_id|>", "ass", "istant", "<|end_header_id|>", "Ċ", "Ċ", "Sure"]


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
    assert (ids.gen_slot, ids.gen_enc_slot, ids.gen_fake) == tuple(c(reserved_token(k)) for k in (5, 6, 7))
    assert (ids.image, ids.gen) == (-200, -300)
    assert ids.loc_ok is True
    assert set(ids.as_dict()) == set(TokenIds.TOKENS) | {"pad", "image", "gen", "loc_ok"}


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


def test_config_is_strict_and_defaults_are_upstreams(tok_dir):
    with pytest.raises(Exception):
        TokenizeConfig(tokenizer=tok_dir, max_lenght=10)
    with pytest.raises(Exception):
        TokenizeConfig(tokenizer=tok_dir, turns="some")
    cfg = TokenizeConfig(tokenizer=tok_dir)
    got = (cfg.max_length, cfg.gen_tokens, cfg.gen_enc_tokens, cfg.enc_tokens, cfg.turns)
    assert got == (4096, 256, None, 256, "one")
    assert cfg.loc_tokens is True and cfg.truncate == "error" and cfg.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert TokenizeConfig(tokenizer=tok_dir, gen_tokens=1024).enc_tokens == 1024
    assert TokenizeConfig(tokenizer=tok_dir, gen_tokens=1024, gen_enc_tokens=256).enc_tokens == 256


def test_two_turn_template_exact(tok_dir, tok, ids):
    out = Tokenize(tokenizer=tok_dir)(sample(("human", "What is the capital of France?"),
                                             ("gpt", " Paris is the capital.\n")), rng())
    got, y = out["input_ids"].tolist(), out["labels"].tolist()
    # each message tokenised as one string, header and content together
    system = tok("<|startoftext|>" + HEADER.format("system") + DEFAULT_SYSTEM_PROMPT + "<|eot_id|>")["input_ids"]
    user = tok(HEADER.format("user") + "What is the capital of France?<|eot_id|>")["input_ids"]
    assistant = tok(HEADER.format("assistant") + "Paris is the capital.<|eot_id|>")["input_ids"]
    assert got == system + user + assistant
    assert got[0] == ids.bos and got.count(ids.bos) == 1
    assert y == [-100] * (len(system) + len(user) + 6) + assistant[6:]
    assert tok.decode(got) == tok.apply_chat_template(
        [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
         {"role": "user", "content": "What is the capital of France?"},
         {"role": "assistant", "content": "Paris is the capital."}], tokenize=False
    )[: -len(HEADER.format("assistant"))]
    assert trained(tok, out) == "Paris is the capital.<|eot_id|>"
    assert out["input_ids"].dtype == torch.long and out["labels"].dtype == torch.long
    assert out["gen_mask"].dtype == torch.bool and not out["gen_mask"].any() and not out["gen_enc_mask"].any()
    assert (out["n_images"], out["n_gen"], out["n_gen_enc"]) == (0, 0, 0)


def test_labels_all_turns(t_all, tok):
    out = t_all(sample(("human", "Hi there"), ("gpt", "Hello you"), ("human", "Again"), ("gpt", "Bye now")))
    x, y = out["input_ids"].tolist(), out["labels"].tolist()
    assert len(x) == len(y)
    assert all(y[i] == x[i] for i, v in enumerate(y) if v != -100)
    spans = runs([v != -100 for v in y], True)
    assert [tok.decode(x[a:b]) for a, b in spans] == ["Hello you<|eot_id|>", "Bye now<|eot_id|>"]
    for a, _ in spans:  # each run starts right after the six header tokens
        assert tok.decode(x[:a]).endswith(HEADER.format("assistant"))


def test_custom_system_prompt(tok_dir, tok):
    out = Tokenize(tokenizer=tok_dir, system_prompt="Be brief.")(sample(("human", "Hi"), ("gpt", "Yo")), rng())
    text = tok.decode(out["input_ids"].tolist())
    assert text.startswith("<|startoftext|>" + HEADER.format("system") + "Be brief.<|eot_id|>")
    assert DEFAULT_SYSTEM_PROMPT not in text


def test_leading_gpt_turn_dropped(t_all, tok):
    out = t_all(sample(("gpt", "Welcome!"), ("human", "Hi"), ("gpt", "Yo")))
    text = tok.decode(out["input_ids"].tolist())
    assert "Welcome" not in text and text.count(HEADER.format("assistant")) == 1


def test_bad_conversations(tok_dir):
    t = Tokenize(tokenizer=tok_dir)
    bad = [[], [{"from": "human"}], "text", conv(("human", "x")), conv(("human", "a"), ("human", "b"), ("gpt", "c")),
           conv(("system", "Be brief."), ("human", "Hi"), ("gpt", "Yo")), conv(("robot", "x"), ("gpt", "y"))]
    for c in bad:
        with pytest.raises(SampleError) as e:
            t({"conversations": c}, rng())
        assert e.value.reason == "bad_conversations"
    with pytest.raises(TypeError, match="whole sample"):
        t(conv(("human", "Hi"), ("gpt", "Yo")), rng())


def test_sample_not_modified(tok_dir):
    s = sample(("human", "Draw <image> a bus " + MICRO), ("gpt", "Sure <image_gen>"), image="a.jpg",
               image_gen="b.jpg", micro_conds_texts=["SCORE : 6.000"])
    before = copy.deepcopy(s)
    Tokenize(tokenizer=tok_dir)(s, rng())
    assert s == before


# ------------------------------------------------------------------------ image markers


def test_image_moved_to_front_when_one(t_all, tok, ids):
    out = t_all(sample(("human", "What is shown here? <image>"), ("gpt", "A cat."), image="a.jpg"))
    x, y = out["input_ids"].tolist(), out["labels"].tolist()
    assert x.count(-200) == 1 and out["n_images"] == 1
    k = x.index(-200)
    assert tok.decode(x[:k]).endswith(HEADER.format("user"))
    assert x[k + 1 : x.index(ids.eot, k)] == enc(tok, "\nWhat is shown here?")
    assert y[k] == -100
    # two markers: left where they are
    out = t_all(sample(("human", "Compare <image> and <image> please"), ("gpt", "Same."), image=["a", "b"]))
    x = out["input_ids"].tolist()
    assert out["n_images"] == 2
    a, b = (i for i, v in enumerate(x) if v == -200)
    assert tok.decode(x[:a]).endswith(HEADER.format("user") + "Compare ") and tok.decode(x[a + 1 : b]) == " and "


def test_image_key_decides(t_all, tok):
    # no "image" key: <image> is plain text, not a placeholder
    out = t_all(sample(("human", "<image>\nWhat is it?"), ("gpt", "A cat.")))
    assert out["n_images"] == 0 and -200 not in out["input_ids"].tolist()
    assert "<image>" in tok.decode(out["input_ids"].tolist())
    # "image": None still counts (upstream's has_image): '<image>\n' goes in front
    out = t_all(sample(("human", "A fox."), ("gpt", "<image_gen>"), image=None, image_gen=["f.jpg"],
                       micro_conds_texts=["SCORE : 5.000"]))
    x = out["input_ids"].tolist()
    assert out["n_images"] == 1 and x[x.index(-200) + 1 : x.index(-200) + 1 + len(enc(tok, "\nA fox."))] == enc(
        tok, "\nA fox.")


@pytest.mark.parametrize("n", [256, 1024])
def test_image_gen_expansion(tok_dir, tok, ids, n):
    t = Tokenize(tokenizer=tok_dir, gen_tokens=n)
    s = sample(("human", f"Generate an image with the caption: a red bus {MICRO}"), ("gpt", "Sure <image_gen>"),
               image_gen="bus.jpg", micro_conds_texts=["SCORE : 6.250"])
    out = t(s, Fixed(rand=[0.9]))
    x, y, g = out["input_ids"].tolist(), out["labels"].tolist(), out["gen_mask"].tolist()
    assert x.count(-300) == n and out["n_gen"] == 1
    (a, b), = runs(x, -300)
    assert [i for i, v in enumerate(g) if v] == list(range(a, b))
    assert all(v == -100 for v in y[a:b])
    assert x[b:] == enc(tok, GEN_CLOSE + "<|eot_id|>")  # upstream's bracket text, then end of turn
    # the bracket texts are trained, the slots are not
    assert trained(tok, out) == "Sure " + GEN_OPEN + GEN_CLOSE + "<|eot_id|>"
    assert "SCORE : 6.250" in tok.decode([v for v in x if v >= 0])
    assert not out["gen_enc_mask"].any() and ids.gen_slot not in x


def test_markers_stay_text_without_image_keys(t_all, tok):
    out = t_all(sample(("human", f"Plan it {MICRO}"), ("gpt", "Sure <image_gen> <image_gen_fake>")))
    x = out["input_ids"].tolist()
    assert out["n_gen"] == 0 and not out["gen_mask"].any() and -300 not in x
    assert trained(tok, out) == "Sure <image_gen> <image_gen_fake><|eot_id|>"
    assert MICRO in tok.decode(x)


def test_image_gen_enc_two_sources(tok_dir, ids):
    t = Tokenize(tokenizer=tok_dir)
    out = t(sample(("human", "<image> <image_gen_enc> <image> <image_gen_enc> Make the sky blue."),
                   ("gpt", "Sure <image_gen>"), image=["a", "b"], image_gen_enc=["a", "b"], image_gen="c",
                   micro_conds_texts=["x"]), rng())
    x, y, e = out["input_ids"].tolist(), out["labels"].tolist(), out["gen_enc_mask"].tolist()
    assert (out["n_images"], out["n_gen_enc"], out["n_gen"]) == (2, 2, 1)
    assert [b - a for a, b in runs(x, ids.gen_enc_slot)] == [256, 256]  # gen_tokens // enc_ds (1)
    assert sum(e) == 512 and all(x[i] == ids.gen_enc_slot for i, v in enumerate(e) if v)
    assert all(y[i] == -100 for i, v in enumerate(e) if v)
    assert out["gen_mask"].sum().item() == 256
    assert not (out["gen_mask"] & out["gen_enc_mask"]).any()
    t = Tokenize(tokenizer=tok_dir, gen_tokens=1024, gen_enc_tokens=256)
    out = t(sample(("human", "<image> <image_gen_enc> Edit."), ("gpt", "<image_gen>"), image=["a"],
                   image_gen_enc=["a"], image_gen="c"), rng())
    assert (out["gen_enc_mask"].sum().item(), out["gen_mask"].sum().item()) == (256, 1024)


def test_image_gen_fake_is_trained(t_all, tok, ids):
    out = t_all(sample(("human", "<image> <image_gen_enc> Add a hat."), ("gpt", "Sure I should <image_gen_fake>"),
                       image=["a"], image_gen_enc=["a"]))
    x, y = out["input_ids"].tolist(), out["labels"].tolist()
    k = x.index(ids.gen_fake)
    assert x.count(ids.gen_fake) == 1 and y[k] == ids.gen_fake  # upstream trains on it
    assert out["n_gen"] == 0 and not out["gen_mask"].any()


def test_fast_run_encoding_equals_plain(tok_dir, ids):
    t = Tokenize(tokenizer=tok_dir)
    _, _, vocabs = t._load()
    xtd, r6 = "<image_gen_xtd>", reserved_token(6)
    for v in vocabs.values():
        texts = (xtd * 5, f"a{xtd * 3} b{r6}{r6}c", f"{r6 * 4}{xtd * 2}{r6}", f" {xtd} {xtd}{xtd}\n", "plain <image>")
        for text in texts:
            assert v.encode(text).tolist() == v.backend.encode(text).ids, text


# ------------------------------------------------------------------------ micro-conditions


def test_micro_conditions_filled_or_dropped(t_all, tok):
    s = sample(("human", f"Draw a bus {MICRO}"), ("gpt", f"Sure <image_gen> {MICRO}"), image_gen=["a", "b"],
               micro_conds_texts=["TOP : 1", "TOP : 2"])

    def text(draws):
        return tok.decode([v for v in t_all(s, Fixed(rand=draws))["input_ids"].tolist() if v >= 0])

    assert "Draw a bus TOP : 1<|eot_id|>" in text([0.9, 0.9]) and "TOP : 2<|eot_id|>" in text([0.9, 0.9])
    dropped = text([0.1, 0.9])  # < 0.3 drops (content trimmed afterwards)
    assert "Draw a bus<|eot_id|>" in dropped and "TOP : 1" not in dropped and "TOP : 2" in dropped
    with pytest.raises(TypeError):
        t_all(s)
    kept = sum("TOP : 1" in tok.decode([v for v in t_all(s, rng(k))["input_ids"].tolist() if v >= 0])
               for k in range(200))
    assert 110 < kept < 170  # kept with probability 0.7


def test_micro_conditions_errors_and_none(t_all, tok):
    s = sample(("human", f"Draw {MICRO} {MICRO}"), ("gpt", "<image_gen>"), image_gen="a", micro_conds_texts=["A"])
    with pytest.raises(SampleError) as e:
        t_all(s, rng())
    assert e.value.reason == "micro_conds_mismatch"
    # no texts (no image_gen): the placeholder stays, as upstream
    s = sample(("human", f"<image> Plan {MICRO}"), ("gpt", "Sure <image_gen_fake>"), image=["a"])
    assert MICRO in tok.decode([v for v in t_all(s)["input_ids"].tolist() if v >= 0])


# ------------------------------------------------------------------------ LOC tokens


def test_loc_tokens_single_ids(t_all, tok):
    out = t_all(sample(("human", "<image>\nFind the dog."), ("gpt", LOC), image="a.jpg"))
    x, y = out["input_ids"].tolist(), out["labels"].tolist()
    want = tok.convert_tokens_to_ids(["<box_p>", "</box_p>", "<LOC_BEGIN>", "<LOC_12>", "<LOC_40>", "<LOC_300>",
                                      "<LOC_512>", "<LOC_END>"])
    for i in want:
        assert i in x and y[x.index(i)] == i  # one id each, trained
    k = x.index(want[2])
    assert x[k : k + 6] == [want[2], *want[3:7], want[7]]


def test_loc_tokens_off_stays_text(tok_dir, tok):
    out = Tokenize(tokenizer=tok_dir, loc_tokens=False)(sample(("human", "Find the dog."), ("gpt", LOC)), rng())
    x = out["input_ids"].tolist()
    assert not set(tok.convert_tokens_to_ids(loc_tokens())) & set(x)
    assert trained(tok, out) == LOC + "<|eot_id|>"
    assert x.count(tok.convert_tokens_to_ids("<|eot_id|>")) == 3  # the special tokens still are


def test_loc_tokens_on_needs_them(tok_dir_noloc):
    t = Tokenize(tokenizer=tok_dir_noloc)
    with pytest.raises(TokenizerError, match="loc_tokens"):
        t(sample(("human", "a"), ("gpt", "b")), rng())
    out = Tokenize(tokenizer=tok_dir_noloc, loc_tokens=False)(sample(("human", "a"), ("gpt", LOC)), rng())
    assert out["input_ids"].numel() > 0


# ------------------------------------------------------------------------ turns="one"

MULTI = sample(("human", "<image>\nQuestion alpha"), ("gpt", "Answer alpha"), ("human", "Question beta"),
               ("gpt", "Answer beta"), ("human", "Question gamma"), ("gpt", "Answer gamma"), image="a.jpg")


def test_turns_one_keeps_one_pair_by_rng(tok_dir, tok, t_all):
    t = Tokenize(tokenizer=tok_dir)
    chosen = set()
    for seed in range(12):
        a, b = t(MULTI, rng(seed)), t(MULTI, rng(seed))
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
        text = tok.decode([v for v in a["input_ids"].tolist() if v >= 0])
        assert text.count(HEADER.format("user")) == 1 and text.count(HEADER.format("assistant")) == 1
        names = [w for w in ("alpha", "beta", "gamma") if f"Answer {w}" in text]
        assert len(names) == 1 and f"Question {names[0]}" in text
        assert a["n_images"] == 1  # '<image>\n' goes in front of a pair without it
        chosen.add(names[0])
    assert chosen == {"alpha", "beta", "gamma"}
    out = t(MULTI, Fixed(pair=2))
    assert "Answer gamma" in tok.decode([v for v in out["input_ids"].tolist() if v >= 0])
    full = t_all(MULTI)
    assert tok.decode([v for v in full["input_ids"].tolist() if v >= 0]).count(HEADER.format("user")) == 3
    assert full["n_images"] == 1


def test_turns_one_needs_rng(tok_dir):
    with pytest.raises(TypeError):
        Tokenize(tokenizer=tok_dir)(MULTI)


# ------------------------------------------------------------------------ lengths


def test_too_long_error(tok_dir):
    t = Tokenize(tokenizer=tok_dir, max_length=40)
    with pytest.raises(SampleError) as e:
        t(sample(("human", "Describe."), ("gpt", "word " * 50)), rng())
    assert e.value.reason == "too_long"
    t = Tokenize(tokenizer=tok_dir, gen_tokens=1024, max_length=1000)
    with pytest.raises(SampleError, match="max_length"):
        t(sample(("human", "Draw"), ("gpt", "Sure <image_gen>"), image_gen="a"), rng())


def test_truncate_right(tok_dir):
    short = dict(tokenizer=tok_dir, gen_tokens=8)
    s = sample(("human", "Draw"), ("gpt", "Sure <image_gen> and some more words here"), image_gen="a")
    full = Tokenize(**short)(s, rng())
    n = len(full["input_ids"])
    x = full["input_ids"].tolist()
    end = runs(x, -300)[0][1]
    out = Tokenize(**short, max_length=end + 1, truncate="right")(s, rng())
    assert len(out["input_ids"]) == end + 1 < n
    for k in ("input_ids", "labels", "gen_mask", "gen_enc_mask"):
        assert torch.equal(out[k], full[k][: end + 1])
    assert out["n_gen"] == 1
    with pytest.raises(SampleError) as e:  # would cut inside the slots
        Tokenize(**short, max_length=end - 3, truncate="right")(s, rng())
    assert e.value.reason == "too_long"


# ------------------------------------------------------------------------ pickling


def test_pickle_lazy(tok_dir):
    t = Tokenize(TokenizeConfig(tokenizer=tok_dir))
    a = t(MULTI, rng())
    t2 = pickle.loads(pickle.dumps(t))
    assert t2._state is None and t2.config == t.config
    b = t2(MULTI, rng())
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert Tokenize({"tokenizer": tok_dir}).config == t.config
    with pytest.raises(TypeError):
        Tokenize(TokenizeConfig(tokenizer=tok_dir), max_length=3)


def test_generation_slots_merge_2x2_past_32x32_codes_as_the_trainer():
    import lavida_train.train
    from lavida_data.transforms.tokenize import gen_token_count

    assert [gen_token_count(s) for s in (256, 512, 1024)] == [256, 1024, 1024]
    assert lavida_train.train.gen_token_count is gen_token_count  # the trainer counts the same slots
