"""Collation: right padding, labels on padding, attention, pixels, skipped samples."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lavida_data.transforms.collate import collate  # noqa: E402

PAD = 7


def item(ids, labels=None, gen=None, **kw):
    n = len(ids)
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels if labels is not None else [-100] * n),
        "gen_mask": torch.tensor(gen if gen is not None else [False] * n),
        "gen_enc_mask": torch.zeros(n, dtype=torch.bool),
        "n_images": 0, "n_gen": int(sum(gen or [])), "n_gen_enc": 0,
        **kw,
    }


def test_right_pad_labels_attention():
    a = item([1, 2, 3], [-100, 2, 3], [False, True, False], id="d:0")
    b = item([4, 5, 6, 8, 9], [-100, -100, 6, 8, 9], id="d:1")
    batch = collate([a, b], PAD)
    assert batch["input_ids"].tolist() == [[1, 2, 3, PAD, PAD], [4, 5, 6, 8, 9]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, -100], [-100, -100, 6, 8, 9]]  # upstream: -100
    assert batch["gen_mask"].tolist() == [[False, True, False, False, False], [False] * 5]
    assert batch["gen_enc_mask"].dtype == torch.bool and not batch["gen_enc_mask"].any()
    assert batch["attention_mask"].shape == (2, 5) and bool((batch["attention_mask"] == 1).all())
    assert batch["lengths"].tolist() == [3, 5]
    assert batch["input_ids"].dtype == torch.long and batch["labels"].dtype == torch.long
    assert batch["ids"] == ["d:0", "d:1"] and batch["skipped"] == []
    assert batch["n_gen"].tolist() == [1, 0]

    eos = collate([a, b], PAD, pad_label="eos")  # LLaDA's own SFT: padding is a target
    assert eos["labels"].tolist()[0] == [-100, 2, 3, PAD, PAD]
    assert torch.equal(eos["input_ids"], batch["input_ids"])
    with pytest.raises(ValueError):
        collate([a], PAD, pad_label="pad")


def test_extra_pad():
    a, b = item([1, 2, 3], id="d:0"), item([4], id="d:1")
    wide = collate([a, b], PAD, extra_pad=3)
    assert wide["input_ids"].tolist() == [[1, 2, 3, PAD, PAD, PAD], [4] + [PAD] * 5]
    assert (wide["labels"][:, 3:] == -100).all() and wide["lengths"].tolist() == [3, 1]
    assert torch.equal(collate([a, b], PAD, extra_pad=-50)["input_ids"], collate([a, b], PAD)["input_ids"])


def test_extra_pad_draw_in_upstream_range():
    from lavida_data.transforms.collate import extra_pad

    draws = [extra_pad(np.random.default_rng(s)) for s in range(2000)]
    assert min(draws) == -128 and max(draws) == 127  # randint(-128, 128): 128 excluded
    assert draws == [extra_pad(np.random.default_rng(s)) for s in range(2000)]


def test_bad_items_dropped_and_reported():
    bad = {"bad": True, "id": "x:3", "dataset": "x", "reason": "too_long"}
    batch = collate([item([1], id="d:0"), bad, item([2, 3], id="d:2")], PAD)
    assert batch["ids"] == ["d:0", "d:2"] and batch["input_ids"].shape == (2, 2)
    assert batch["skipped"] == [{"id": "x:3", "dataset": "x", "reason": "too_long"}]
    assert "bad" not in batch


def test_all_bad():
    bad = [{"bad": True, "id": f"x:{i}", "dataset": "x", "reason": "missing_image"} for i in range(2)]
    batch = collate(bad, PAD)
    assert set(batch) == {"ids", "skipped", "input_ids"}
    assert batch["ids"] == [] and len(batch["skipped"]) == 2 and batch["skipped"][1]["id"] == "x:1"
    assert batch["input_ids"].shape == (0, 0) and batch["input_ids"].dtype == torch.long


def test_pixels_and_passthrough():
    g = [torch.rand(3, 8, 8) for _ in range(2)]
    und = [torch.rand(2, 3, 4, 4), torch.rand(3, 4, 4)]
    a = item([1], id="a", gen_pixels=g[0], und_pixels=[und[0][0], und[0][1]], dataset="da", extra=1)
    b = item([2], id="b", gen_pixels=g[1], und_pixels=[und[1]], dataset="db")
    batch = collate([a, b], PAD)
    assert [len(p) for p in batch["gen_pixels"]] == [1, 1] and torch.equal(batch["gen_pixels"][1][0], g[1])
    assert [len(u) for u in batch["und_pixels"]] == [2, 1] and torch.equal(batch["und_pixels"][1][0], und[1])
    assert batch["dataset"] == ["da", "db"] and batch["extra"] == [1, None]

    c = item([3], id="c", gen_enc_pixels=[torch.rand(3, 8, 8)])
    batch = collate([a, c], PAD)
    assert batch["gen_pixels"][1] == [] and torch.equal(batch["gen_pixels"][0][0], g[0])
    assert batch["und_pixels"][1] == [] and batch["gen_enc_pixels"][0] == [] and len(batch["gen_enc_pixels"][1]) == 1

    d = item([4], id="d", gen_pixels=[torch.rand(3, 16, 16), torch.rand(3, 16, 16)])  # a list per sample
    assert [len(p) for p in collate([a, d], PAD)["gen_pixels"]] == [1, 2]


def test_length_mismatch_raises():
    a = item([1, 2], id="a")
    a["labels"] = torch.tensor([-100])
    with pytest.raises(ValueError, match="labels"):
        collate([a], PAD)


def test_with_tokenize(tmp_path):
    pytest.importorskip("transformers")
    from lavida_data.transforms.tokenizer import build_tiny_tokenizer
    from lavida_data.transforms.tokenize import Tokenize

    t = Tokenize(tokenizer=build_tiny_tokenizer(tmp_path / "tok"), gen_tokens=16)
    rng = np.random.default_rng(0)
    items = [
        {**t({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}, rng),
         "id": "t:0"},
        {**t({"conversations": [{"from": "human", "value": "Draw a cat"}, {"from": "gpt", "value": "Sure <image_gen>"}],
              "image_gen": "cat.png", "micro_conds_texts": ["TOP : 0"]}, rng),
         "id": "t:1", "gen_pixels": [torch.rand(3, 8, 8)]},
    ]
    pad = t.token_ids.pad
    batch = collate(items, pad)
    n0, n1 = (len(i["input_ids"]) for i in items)
    width = max(n0, n1)
    assert batch["input_ids"].shape == (2, width)
    short = 0 if n0 < n1 else 1
    n = min(n0, n1)
    assert (batch["input_ids"][short, n:] == pad).all() and (batch["labels"][short, n:] == -100).all()
    assert batch["gen_mask"].sum().item() == 16 and batch["n_gen"].tolist() == [0, 1]
    assert (batch["input_ids"][batch["gen_mask"]] == -300).all()
    assert batch["gen_pixels"][0] == [] and len(batch["gen_pixels"][1]) == 1
