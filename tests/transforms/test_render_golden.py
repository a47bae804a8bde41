"""Tokenize equals upstream's rendering (preprocess_multimodal + preprocess_llada), fixture by fixture.

tests/golden/render/*.json hold upstream LaViDa-O's ``input_ids`` and ``labels`` for samples of
every kind, made by scripts/golden/make_render.py with the tiny tokenizer for every combination of
upstream's draws (micro-condition drops, the human/gpt pair). Here (a) ours, given the same draws,
gives the same ids and labels (or skips the sample where upstream raised), and (b) ours with real
per-sample generators only produces outputs of that set and reaches all of them.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from lavida_data import SampleError  # noqa: E402
from lavida_data.transforms.tokenize import Tokenize  # noqa: E402

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "golden" / "render").glob("*.json"))
DOCS = {p.stem: json.loads(p.read_text()) for p in FIXTURES}
CASES = [(name, i) for name, doc in DOCS.items() for i in range(len(doc["cases"]))]
SEEDS = 120


def test_fixtures_present():
    assert len(DOCS) >= 25 and len(CASES) >= 80
    kinds = {"t2i", "edit", "plan_only", "mammoth_multi", "uniworld_t2i", "vwi_multi_image", "refcoco"}
    assert kinds <= set(DOCS)


@pytest.fixture(scope="module")
def tok_dir(tiny_tokenizer):
    path = tiny_tokenizer
    digest = hashlib.sha256((Path(path) / "tokenizer.json").read_bytes()).hexdigest()
    stale = sorted(name for name, doc in DOCS.items() if doc["tokenizer_sha256"] != digest)
    assert not stale, (
        f"the tiny tokenizer changed since the fixtures {stale} were made (tokenizer.json sha256 {digest}): "
        "regenerate them with scripts/golden/make_render.py"
    )
    return path


@pytest.fixture(scope="module")
def tokenizers(tok_dir):
    @functools.lru_cache(maxsize=None)
    def get(gen_tokens: int, enc_ds: int, turns: str) -> Tokenize:
        return Tokenize(tokenizer=tok_dir, gen_tokens=gen_tokens, gen_enc_tokens=gen_tokens // enc_ds,
                        turns=turns, max_length=1 << 20)

    return get


class Draws:
    """A stand-in for the sample's generator that gives upstream's recorded draws."""

    def __init__(self, draws: dict):
        self.rand = list(draws.get("micro_rand", []))
        self.pair = draws.get("pair")
        self.n_pairs = draws.get("n_pairs")
        self.pair_used = False

    def random(self) -> float:
        assert self.rand, "more micro-condition draws than upstream made"
        return self.rand.pop(0)

    def integers(self, n: int) -> int:
        assert self.pair is not None and not self.pair_used, "a pair draw upstream did not make"
        assert n == self.n_pairs, f"drawing among {n} human turns, upstream among {self.n_pairs}"
        self.pair_used = True
        return self.pair

    def check_spent(self) -> None:
        assert not self.rand, "fewer micro-condition draws than upstream made"
        assert self.pair is None or self.pair_used, "upstream drew a pair, ours did not"


def sample_of(doc: dict) -> dict:
    return {**doc["sample"], "micro_conds_texts": doc["micro_conds_texts"]}


def run(t: Tokenize, sample: dict, rng) -> tuple:
    """Our output as a hashable value: (input_ids, labels), or the skip."""
    try:
        out = t(sample, rng)
    except SampleError:
        return ("error",)
    return tuple(out["input_ids"].tolist()), tuple(out["labels"].tolist())


@pytest.mark.parametrize("name,i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_same_draws_same_output(tokenizers, name, i):
    doc = DOCS[name]
    case = doc["cases"][i]
    t = tokenizers(case["num_gen_image_tokens"], case["num_gen_image_tokens_enc_ds"], case["turns"])
    rng = Draws(case["draws"])
    if "error" in case:
        with pytest.raises(SampleError):
            t(sample_of(doc), rng)
        return
    out = t(sample_of(doc), rng)
    rng.check_spent()
    x, y = out["input_ids"].tolist(), out["labels"].tolist()
    assert x == case["input_ids"]
    assert y == case["labels"]
    # the masks and counts follow from the ids
    n = case["num_gen_image_tokens"]
    enc_id = t.token_ids.gen_enc_slot
    assert out["gen_mask"].tolist() == [v == -300 for v in x]
    assert out["gen_enc_mask"].tolist() == [v == enc_id for v in x]
    assert out["n_images"] == x.count(-200)
    assert out["n_gen"] * n == x.count(-300)
    assert out["n_gen_enc"] * (n // case["num_gen_image_tokens_enc_ds"]) == x.count(enc_id)


GROUPS = sorted({(name, c["num_gen_image_tokens"], c["num_gen_image_tokens_enc_ds"], c["turns"])
                 for name, doc in DOCS.items() for c in doc["cases"]})


@pytest.mark.parametrize("name,n,ds,turns", GROUPS, ids=[f"{g[0]}-{g[1]}-{g[3]}" for g in GROUPS])
def test_real_draws_cover_upstream_set(tokenizers, name, n, ds, turns):
    doc = DOCS[name]
    want = {("error",) if "error" in c else (tuple(c["input_ids"]), tuple(c["labels"]))
            for c in doc["cases"]
            if (c["num_gen_image_tokens"], c["num_gen_image_tokens_enc_ds"], c["turns"]) == (n, ds, turns)}
    t = tokenizers(n, ds, turns)
    got = {run(t, sample_of(doc), np.random.default_rng(seed)) for seed in range(SEEDS if len(want) > 1 else 2)}
    assert got <= want, "an output upstream cannot produce"
    assert got == want, f"reached {len(got)} of upstream's {len(want)} outputs"
