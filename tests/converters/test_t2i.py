"""Text-to-image converters: plain (s3), by image-store hash, with a layout plan, region-detailed (SAM)."""

from __future__ import annotations

import math
import random

import pydantic
import pytest

import lavida_data

S3 = "preproces_text_to_image_generation_s3"
HASH = "preproces_text_to_image_generation_piat_hash"
LOC = "preproces_text_to_image_generation_s3_loc"
SAM = "preproces_text_to_image_generation_layout_sam"

BUILTINS = [
    "preproces_text_to_image_generation_s3",
    "preproces_text_to_image_generation_piat_hash",
    "preproces_text_to_image_generation_s3_loc",
    "preproces_text_to_image_generation_layout_sam",
    "preproces_und_mammoth_si_10M",
    "preproces_vw_instruct",
    "preproces_grandf",
    "preproces_refcoco_rec",
    "preprocess_reflection_und",
    "process_gpt_edit",
    "process_sharegpt_4o_edit",
    "process_pica_banana",
    "process_gpt_edit_loc_gnd",
    "process_metaquery",
    "process_uniworld",
]


def t2i_prompt(caption: str) -> str:
    return f"Generate an image with the caption: {caption} [[micro_conds_texts]]"


GPT = "Sure <image_gen>"

# 20 sentences, about 540 characters: long enough to be truncated, short enough not to be cut at 800.
SENTENCES = [f"Sentence number {i:02d} describes the scene." for i in range(20)]
LONG = " ".join(SENTENCES)


# ---------------------------------------------------------------- registry


def test_all_fifteen_upstream_names_are_registered_builtins():
    for name in BUILTINS:
        conv = lavida_data.registry.get(name)
        assert conv.name == name
        assert conv.source == "builtin"
    assert len(set(BUILTINS)) == 15


@pytest.mark.parametrize(
    "name, aliases",
    [
        (S3, ["t2i", "preprocess_text_to_image_generation_s3"]),
        (HASH, ["t2i_hash", "preprocess_text_to_image_generation_piat_hash"]),
        (LOC, ["t2i_layout_plan", "preprocess_text_to_image_generation_s3_loc"]),
        (SAM, ["t2i_layout_sam", "preprocess_text_to_image_generation_layout_sam"]),
    ],
)
def test_aliases_resolve_to_the_same_converter(name, aliases):
    conv = lavida_data.registry.get(name)
    for alias in aliases:
        assert lavida_data.registry.get(alias) is conv
        assert alias in lavida_data.registry


def test_unknown_converter_name_is_a_key_error():
    with pytest.raises(KeyError):
        lavida_data.registry.get("preproces_text_to_image_generation_s4")


# ---------------------------------------------------------------- preproces_text_to_image_generation_s3


def test_s3_template_roles_and_id(convert):
    s = convert(S3, {"s3_path": "s3://bucket/a.jpg", "caption": "a red cat"})
    assert s["id"] == "d:7"
    assert s["conversations"] == [
        {"from": "human", "value": "Generate an image with the caption: a red cat [[micro_conds_texts]]"},
        {"from": "gpt", "value": "Sure <image_gen>"},
    ]
    assert s["image_gen"] == "s3://bucket/a.jpg"
    assert s["gen_transform"] == "crop"
    assert "image" not in s and "image_gen_enc" not in s
    assert "gen_score" not in s and "hpsv2" not in s


def test_s3_id_names_dataset_and_row(convert):
    s = convert(S3, {"s3_path": "a.jpg", "caption": "c"}, dataset="laion", row_index=12345)
    assert s["id"] == "laion:12345"


def test_s3_caption_is_stripped(convert):
    s = convert(S3, {"s3_path": "a.jpg", "caption": "  padded caption \n"})
    assert s["conversations"][0]["value"] == t2i_prompt("padded caption")


@pytest.mark.parametrize(
    "path, root, expected",
    [
        ("img/a.jpg", "/data/laion", "/data/laion/img/a.jpg"),
        ("img/a.jpg", "s3://bucket/laion/", "s3://bucket/laion/img/a.jpg"),
        ("s3://other/a.jpg", "/data/laion", "s3://other/a.jpg"),
        ("/abs/a.jpg", "/data/laion", "/abs/a.jpg"),
        ("https://host/a.jpg", "/data/laion", "https://host/a.jpg"),
        ("img/a.jpg", None, "img/a.jpg"),
    ],
)
def test_s3_image_root_joins_relative_paths_only(convert, path, root, expected):
    s = convert(S3, {"s3_path": path, "caption": "c"}, image_root=root)
    assert s["image_gen"] == expected


def test_s3_scores_kept_for_micro_conditions(convert):
    s = convert(S3, {"s3_path": "a.jpg", "caption": "c", "fltLaionAesthScore": 5.75, "hpsv2": "0.31"})
    assert s["gen_score"] == 5.75
    assert s["hpsv2"] == pytest.approx(0.31)


def test_s3_nan_score_is_absent(convert):
    s = convert(S3, {"s3_path": "a.jpg", "caption": "c", "fltLaionAesthScore": math.nan, "hpsv2": None})
    assert "gen_score" not in s and "hpsv2" not in s


def test_s3_non_numeric_score_is_a_bad_value(reason):
    assert reason(S3, {"s3_path": "a.jpg", "caption": "c", "hpsv2": "high"}) == "bad_value:hpsv2"
    assert reason(S3, {"s3_path": "a.jpg", "caption": "c", "fltLaionAesthScore": "x"}) == "bad_value:fltLaionAesthScore"


@pytest.mark.parametrize(
    "row, why",
    [
        ({"s3_path": "a.jpg"}, "missing:caption"),
        ({"s3_path": "a.jpg", "caption": "   "}, "missing:caption"),
        ({"s3_path": "a.jpg", "caption": None}, "missing:caption"),
        ({"s3_path": "a.jpg", "caption": math.nan}, "missing:caption"),
        ({"caption": "c"}, "missing:s3_path"),
        ({"s3_path": "", "caption": "c"}, "missing:s3_path"),
    ],
)
def test_s3_bad_rows(reason, row, why):
    assert reason(S3, row) == why


def test_s3_caption_key(convert, reason):
    row = {"s3_path": "a.jpg", "caption": "short one", "long_caption": "the long one"}
    s = convert(S3, row, {"caption_key": "long_caption"})
    assert s["conversations"][0]["value"] == t2i_prompt("the long one")
    assert reason(S3, {"s3_path": "a.jpg", "caption": "c"}, {"caption_key": "long_caption"}) == "missing:long_caption"


def test_s3_columns_follow_caption_options():
    conv = lavida_data.registry.get(S3)
    assert conv.required_columns() == ["s3_path", "caption"]
    assert conv.required_columns(conv.parse_options({"caption_key": "c2"})) == ["s3_path", "c2"]
    assert conv.required_columns(conv.parse_options({"random_caption_keys": ["a", "b"]})) == ["s3_path", "a", "b"]
    assert set(conv.optional_columns()) == {"fltLaionAesthScore", "hpsv2"}


def test_s3_random_caption_keys_cover_every_key(convert):
    row = {"s3_path": "a.jpg", "a": "caption A", "b": "caption B", "c": "caption C", "caption": "never"}
    seen = {
        convert(S3, row, {"random_caption_keys": ["a", "b", "c"]}, position=p)["conversations"][0]["value"]
        for p in range(200)
    }
    assert seen == {t2i_prompt("caption A"), t2i_prompt("caption B"), t2i_prompt("caption C")}


def test_s3_random_caption_keys_skip_empty_columns(convert):
    row = {"s3_path": "a.jpg", "a": "", "b": "caption B", "c": None}
    seen = {
        convert(S3, row, {"random_caption_keys": ["a", "b", "c"]}, position=p)["conversations"][0]["value"]
        for p in range(50)
    }
    assert seen == {t2i_prompt("caption B")}


def test_s3_random_caption_keys_all_empty(reason):
    row = {"s3_path": "a.jpg", "a": "", "b": None, "caption": "not used"}
    assert reason(S3, row, {"random_caption_keys": ["a", "b"]}) == "missing:caption"


def test_s3_single_random_caption_key_is_that_column(convert, reason):
    row = {"s3_path": "a.jpg", "a": "caption A", "caption": "other"}
    s = convert(S3, row, {"random_caption_keys": ["a"]})
    assert s["conversations"][0]["value"] == t2i_prompt("caption A")
    assert reason(S3, {"s3_path": "a.jpg", "caption": "x"}, {"random_caption_keys": ["a"]}) == "missing:a"


def test_s3_max_caption_length_default_800(convert):
    caption = "x" * 1000  # one "sentence": truncation to sentences leaves it whole
    s = convert(S3, {"s3_path": "a.jpg", "caption": caption})
    assert s["conversations"][0]["value"] == t2i_prompt("x" * 800)


def test_s3_max_caption_length_option(convert):
    s = convert(S3, {"s3_path": "a.jpg", "caption": "abcdefghijklmnop"}, {"max_caption_length": 5})
    assert s["conversations"][0]["value"] == t2i_prompt("abcde")
    # applied to short captions too, at every position
    for p in range(20):
        s = convert(S3, {"s3_path": "a.jpg", "caption": "abcdefghij"}, {"max_caption_length": 5}, position=p)
        assert s["conversations"][0]["value"] == t2i_prompt("abcde")


def _caption_of(sample) -> str:
    v = sample["conversations"][0]["value"]
    head, tail = "Generate an image with the caption: ", " [[micro_conds_texts]]"
    assert v.startswith(head) and v.endswith(tail)
    return v[len(head): -len(tail)]


def test_s3_truncation_about_20_percent_into_first_k_sentences(convert):
    assert 150 < len(LONG) < 800
    n = 2000
    cut = []
    for p in range(n):
        c = _caption_of(convert(S3, {"s3_path": "a.jpg", "caption": LONG}, position=p))
        if c != LONG:
            # always the first k sentences, k < 20 (k = 20 gives the whole caption back)
            k = next(k for k in range(1, 20) if c == " ".join(SENTENCES[:k]))
            cut.append(k)
    # P(cut) = 0.2 * P(k < 20) = 0.2 * 19/20 = 0.19
    assert 0.14 * n <= len(cut) <= 0.26 * n
    assert 1 in cut and 19 in cut
    assert len(set(cut)) >= 15  # k is spread over 1..n


def test_s3_caption_of_150_characters_is_never_truncated(convert):
    caption = ("Short one. " * 20)[:149] + "."
    assert len(caption) == 150
    for p in range(300):
        assert _caption_of(convert(S3, {"s3_path": "a.jpg", "caption": caption}, position=p)) == caption


def test_s3_caption_of_151_characters_may_be_truncated(convert):
    caption = ("Short one. " * 20)[:150] + "."
    assert len(caption) == 151
    seen = {_caption_of(convert(S3, {"s3_path": "a.jpg", "caption": caption}, position=p)) for p in range(300)}
    assert caption in seen
    assert "Short one." in seen
    assert all(caption.startswith(c) for c in seen)


def test_s3_truncate_probability_options(convert):
    for p in range(100):
        assert _caption_of(convert(S3, {"s3_path": "a.jpg", "caption": LONG}, {"truncate_prob": 0.0}, position=p)) == LONG
    always = [
        _caption_of(convert(S3, {"s3_path": "a.jpg", "caption": LONG}, {"truncate_prob": 1.0}, position=p))
        for p in range(100)
    ]
    assert sum(c != LONG for c in always) >= 85  # all but the k = n draws
    assert all(any(c == " ".join(SENTENCES[:k]) for k in range(1, 21)) for c in always)


def test_s3_truncation_k_is_uniform_in_1_to_n(convert):
    first = "The first sentence is long enough to matter here, describing a wide green valley at dawn."
    second = "The second one adds a river, some trees and a small wooden bridge."
    caption = f"{first} {second}"
    assert len(caption) > 150
    out = [
        _caption_of(convert(S3, {"s3_path": "a.jpg", "caption": caption}, {"truncate_prob": 1.0}, position=p))
        for p in range(200)
    ]
    assert set(out) == {first, caption}  # k = 1 or k = n = 2
    assert 60 <= out.count(first) <= 140


def test_s3_truncation_then_max_length(convert):
    # a truncated caption is still cut at max_caption_length
    out = {
        _caption_of(convert(S3, {"s3_path": "a.jpg", "caption": LONG}, {"max_caption_length": 30}, position=p))
        for p in range(100)
    }
    assert all(len(c) <= 30 for c in out)
    assert LONG[:30] in out


def test_s3_determinism(convert, check_deterministic):
    row = {"s3_path": "a.jpg", "a": LONG, "b": LONG + " Extra.", "c": "short"}
    opts = {"random_caption_keys": ["a", "b", "c"]}
    for p in range(30):
        check_deterministic(S3, row, opts, position=p)
    # other positions, epochs and seeds draw differently
    by_pos = {repr(convert(S3, row, opts, position=p)) for p in range(40)}
    by_epoch = {repr(convert(S3, row, opts, epoch=e)) for e in range(40)}
    by_seed = {repr(convert(S3, row, opts, seed=s)) for s in range(40)}
    assert len(by_pos) > 3 and len(by_epoch) > 3 and len(by_seed) > 3


def test_s3_determinism_does_not_depend_on_dataset_or_row_index(convert):
    row = {"s3_path": "a.jpg", "a": "A", "b": "B", "c": "C"}
    opts = {"random_caption_keys": ["a", "b", "c"]}
    for p in range(20):
        a = convert(S3, row, opts, position=p, dataset="x", row_index=1)
        b = convert(S3, row, opts, position=p, dataset="y", row_index=2)
        assert a["conversations"] == b["conversations"]


@pytest.mark.parametrize(
    "opts",
    [
        {"captionkey": "x"},
        {"caption_key": 3},
        {"caption_key": ""},
        {"max_caption_length": "800"},
        {"max_caption_length": 0},
        {"max_caption_length": 12.5},
        {"truncate_prob": 1.5},
        {"random_caption_keys": []},
        {"random_caption_keys": "a,b"},
    ],
)
def test_s3_bad_options(opts):
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(S3).parse_options(opts)


def test_s3_options_defaults():
    o = lavida_data.registry.get(S3).parse_options({})
    assert (o.caption_key, o.random_caption_keys, o.max_caption_length) == ("caption", None, 800)
    assert (o.truncate_prob, o.truncate_min_length) == (0.2, 150)


# ---------------------------------------------------------------- preproces_text_to_image_generation_piat_hash


def test_hash_default_caption_column_and_uri(convert):
    row = {"strImagehash": "abc123", "longLLA_captions": "a long caption", "caption": "not this"}
    s = convert(HASH, row, image_root="/store")
    assert s["conversations"] == [
        {"from": "human", "value": "Generate an image with the caption: a long caption [[micro_conds_texts]]"},
        {"from": "gpt", "value": "Sure <image_gen>"},
    ]
    assert s["image_gen"] == "/store/abc123"
    assert s["id"] == "d:7"


def test_hash_uri_template(convert):
    row = {"strImagehash": "abc123", "longLLA_captions": "c"}
    s = convert(HASH, row, {"uri_template": "s3://bucket/images/{hash}.jpg"}, image_root="/store")
    assert s["image_gen"] == "s3://bucket/images/abc123.jpg"
    s = convert(HASH, row, {"uri_template": "ab/{hash}/{hash}.png"}, image_root="/store")
    assert s["image_gen"] == "/store/ab/abc123/abc123.png"


def test_hash_scores_and_caption_key(convert):
    row = {"strImagehash": "h", "cap": "cap text", "fltLaionAesthScore": 6, "hpsv2": 0.28}
    s = convert(HASH, row, {"caption_key": "cap"})
    assert s["conversations"][0]["value"] == t2i_prompt("cap text")
    assert s["gen_score"] == 6.0 and s["hpsv2"] == 0.28


def test_hash_bad_rows(reason):
    assert reason(HASH, {"longLLA_captions": "c"}) == "missing:strImagehash"
    assert reason(HASH, {"strImagehash": "h", "caption": "c"}) == "missing:longLLA_captions"


def test_hash_truncation_and_determinism(convert, check_deterministic):
    row = {"strImagehash": "h", "longLLA_captions": LONG}
    caps = [_caption_of(convert(HASH, row, position=p)) for p in range(500)]
    assert 0.12 * 500 <= sum(c != LONG for c in caps) <= 0.28 * 500
    for p in range(10):
        check_deterministic(HASH, row, position=p)


@pytest.mark.parametrize("opts", [{"uri_template": "s3://b/{id}.jpg"}, {"uri_template": 5}, {"hash": "x"}])
def test_hash_bad_options(opts):
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(HASH).parse_options(opts)


# ---------------------------------------------------------------- preproces_text_to_image_generation_s3_loc

LOC_TEXT = "<box_p> a cat </box_p><LOC_BEGIN><LOC_10><LOC_20><LOC_300><LOC_400><LOC_END>"
LOC_ROW = {"s3_path": "imgs/a.jpg", "caption": "a cat on a mat", "grounding_text": LOC_TEXT}


def test_loc_plan_template(convert):
    s = convert(LOC, LOC_ROW, image_root="s3://bucket/root")
    assert s["conversations"] == [
        {"from": "human", "value": "Generate an image with the caption: a cat on a mat [[micro_conds_texts]]"},
        {
            "from": "gpt",
            "value": "Sure I should place the objects in the following manner "
            "<box_p> a cat </box_p><LOC_BEGIN><LOC_10><LOC_20><LOC_300><LOC_400><LOC_END> <image_gen>",
        },
    ]
    assert s["image_gen"] == "s3://bucket/root/imgs/a.jpg"
    assert s["gen_transform"] == "crop"
    assert s["plan"] is True
    assert "image" not in s
    assert s["id"] == "d:7"


def test_loc_plan_only(convert):
    row = {"caption": "a cat on a mat", "grounding_text": LOC_TEXT}  # no target needed
    s = convert(LOC, row, {"plan_only": True})
    assert s["conversations"][1] == {
        "from": "gpt",
        "value": f"Sure I should place the objects in the following manner {LOC_TEXT} <image_gen_fake>",
    }
    assert s["conversations"][0]["value"] == t2i_prompt("a cat on a mat")
    assert "image_gen" not in s and "gen_transform" not in s
    assert s["plan"] is True
    s2 = convert(LOC, LOC_ROW, {"plan_only": True})  # a target present is ignored
    assert "image_gen" not in s2


def test_loc_no_plan(convert):
    row = {"s3_path": "a.jpg", "caption": "a cat"}  # no grounding_text needed
    s = convert(LOC, row, {"no_plan": True})
    assert s["conversations"] == [
        {"from": "human", "value": "Generate an image with the caption: a cat [[micro_conds_texts]]"},
        {"from": "gpt", "value": "Sure <image_gen>"},
    ]
    assert s["image_gen"] == "a.jpg"
    assert "plan" not in s


def test_loc_columns_follow_options():
    conv = lavida_data.registry.get(LOC)
    assert conv.required_columns() == ["s3_path", "caption", "grounding_text"]
    assert conv.required_columns(conv.parse_options({"plan_only": True})) == ["caption", "grounding_text"]
    assert conv.required_columns(conv.parse_options({"no_plan": True})) == ["s3_path", "caption"]
    assert conv.required_columns(conv.parse_options({"add_feedback": True}))[-2:] == ["negatives", "negative_reasons"]


def test_loc_bad_rows(reason):
    assert reason(LOC, {"s3_path": "a.jpg", "caption": "c"}) == "missing:grounding_text"
    assert reason(LOC, {"caption": "c", "grounding_text": LOC_TEXT}) == "missing:s3_path"
    assert reason(LOC, {"s3_path": "a.jpg", "grounding_text": LOC_TEXT}) == "missing:caption"


FEEDBACK_ROW = {
    **LOC_ROW,
    "negatives": "neg/n0.png; neg/n1.png;neg/n2.png ;s3://other/n3.png",
    "negative_reasons": "too dark; cat missing;wrong colour ;blurry",
}
REASONS = ["too dark", "cat missing", "wrong colour", "blurry"]
NEGS = ["neg/n0.png", "neg/n1.png", "neg/n2.png", "s3://other/n3.png"]


def _feedback_prompt(caption, reasons):
    return (
        f"Generate an image with the caption: {caption}"
        "\nHere are previous attempts and feedback on them:"
        + "".join(f"\n<image> Feedback: {r}" for r in reasons)
        + " [[micro_conds_texts]]"
    )


def test_loc_add_feedback_pairs_images_with_their_feedback(convert):
    ks = set()
    for p in range(200):
        s = convert(LOC, FEEDBACK_ROW, {"add_feedback": True}, position=p)
        images = s["image"]
        assert isinstance(images, list) and 1 <= len(images) <= 4
        picks = [NEGS.index(i) for i in images]
        assert picks == sorted(picks) and len(set(picks)) == len(picks)
        assert s["conversations"][0]["value"] == _feedback_prompt("a cat on a mat", [REASONS[i] for i in picks])
        assert s["conversations"][1]["value"] == f"Sure I should place the objects in the following manner {LOC_TEXT} <image_gen>"
        assert s["image_gen"] == "imgs/a.jpg"
        ks.add(len(images))
    assert ks == {1, 2, 3, 4}


def test_loc_add_feedback_s3_prefix_enc_and_image_root(convert):
    s = convert(LOC, FEEDBACK_ROW, {"add_feedback": True, "s3_prefix_enc": "s3://negs/run1"}, image_root="/data")
    for img in s["image"]:
        assert img.startswith("s3://negs/run1/neg/n") or img == "s3://other/n3.png"
    assert s["image_gen"] == "/data/imgs/a.jpg"
    s = convert(LOC, FEEDBACK_ROW, {"add_feedback": True}, image_root="/data")
    for img in s["image"]:
        assert img.startswith("/data/neg/n") or img == "s3://other/n3.png"


def test_loc_max_reflection(convert):
    row = {
        **LOC_ROW,
        "negatives": ";".join(f"n{i}.png" for i in range(8)),
        "negative_reasons": ";".join(f"r{i}" for i in range(8)),
    }
    default_ks = {len(convert(LOC, row, {"add_feedback": True}, position=p)["image"]) for p in range(300)}
    assert default_ks == {1, 2, 3, 4, 5}  # at most 5 past generations by default
    two = {len(convert(LOC, row, {"add_feedback": True, "max_reflection": 2}, position=p)["image"]) for p in range(100)}
    assert two == {1, 2}


def test_loc_add_feedback_with_plan_only(convert):
    s = convert(LOC, FEEDBACK_ROW, {"add_feedback": True, "plan_only": True})
    assert "image_gen" not in s
    assert s["conversations"][1]["value"].endswith(" <image_gen_fake>")
    assert s["conversations"][0]["value"].count("<image>") == len(s["image"]) >= 1


@pytest.mark.parametrize(
    "negatives, reasons",
    [("a.png;b.png;c.png", "r1;r2"), ("a.png", "r1;r2"), ("a.png;b.png", "r1;;")],
)
def test_loc_feedback_mismatch(reason, negatives, reasons):
    row = {**LOC_ROW, "negatives": negatives, "negative_reasons": reasons}
    assert reason(LOC, row, {"add_feedback": True}) == "feedback_mismatch"


def test_loc_feedback_missing_columns(reason, convert):
    assert reason(LOC, LOC_ROW, {"add_feedback": True}) == "missing:negatives"
    assert reason(LOC, {**LOC_ROW, "negatives": "a.png"}, {"add_feedback": True}) == "missing:negative_reasons"
    # without add_feedback the columns are ignored
    s = convert(LOC, FEEDBACK_ROW)
    assert "image" not in s and "<image>" not in s["conversations"][0]["value"]


def test_loc_scores_and_caption_options(convert):
    row = {**LOC_ROW, "alt": "another caption", "fltLaionAesthScore": 5.9, "hpsv2": 0.3}
    s = convert(LOC, row, {"caption_key": "alt"})
    assert s["conversations"][0]["value"] == t2i_prompt("another caption")
    assert s["gen_score"] == 5.9 and s["hpsv2"] == 0.3
    s = convert(LOC, row, {"max_caption_length": 5})
    assert s["conversations"][0]["value"] == t2i_prompt("a cat")


def test_loc_determinism(convert, check_deterministic):
    row = {**FEEDBACK_ROW, "caption": LONG}
    for p in range(20):
        check_deterministic(LOC, row, {"add_feedback": True}, position=p)
    assert len({repr(convert(LOC, row, {"add_feedback": True}, position=p)) for p in range(50)}) > 10


@pytest.mark.parametrize(
    "opts",
    [
        {"plan_only": True, "no_plan": True},
        {"plan_only": "yes"},
        {"plan_only": 1},
        {"add_feedback": "true"},
        {"max_reflection": 0},
        {"max_reflection": 6},
        {"s3_prefix_enc": 3},
        {"s3_prefix": "s3://x"},
    ],
)
def test_loc_bad_options(opts):
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(LOC).parse_options(opts)


# ---------------------------------------------------------------- preproces_text_to_image_generation_layout_sam

SAM_ROW = {
    "s3_path": "sam/sa_1.jpg",
    "caption": "a street",
    "cap_short": "street",
    "cap_detail": "a busy street with cars",
    "crop_parms": [0, 128, 1024, 1024],
}


def test_sam_sample(convert):
    s = convert(SAM, SAM_ROW, image_root="s3://sam-bucket")
    assert s["conversations"][0]["value"] in {
        "Generate an image with the caption: a street [[micro_conds_texts]]",
        "Generate an image with the caption: street [[micro_conds_texts]]",
        "Generate an image with the caption: a busy street with cars [[micro_conds_texts]]",
    }
    assert s["conversations"][1] == {"from": "gpt", "value": "Sure <image_gen>"}
    assert s["image_gen"] == "s3://sam-bucket/sam/sa_1.jpg"
    assert s["gen_transform"] == "fixed_crop"
    assert s["gen_crop"] == [0, 128, 1024, 1024]
    assert s["gen_size"] == 1024
    assert s["id"] == "d:7"


def test_sam_caption_drawn_among_the_three_columns(convert):
    seen = {_caption_of(convert(SAM, SAM_ROW, position=p)) for p in range(200)}
    assert seen == {"a street", "street", "a busy street with cars"}
    row = {**SAM_ROW, "cap_short": "", "cap_detail": None}
    assert {_caption_of(convert(SAM, row, position=p)) for p in range(50)} == {"a street"}


def test_sam_caption_keys_option(convert):
    seen = {_caption_of(convert(SAM, SAM_ROW, {"caption_keys": ["cap_detail"]}, position=p)) for p in range(30)}
    assert seen == {"a busy street with cars"}


@pytest.mark.parametrize(
    "crop, expected",
    [
        ([0, 128, 1024, 1024], [0, 128, 1024, 1024]),
        ((1.6, 2.4, 3, 4), [2, 2, 3, 4]),
        ("[10, 20, 512, 768]", [10, 20, 512, 768]),
        ("10 20 512 768", [10, 20, 512, 768]),
        ("10,20,512,768", [10, 20, 512, 768]),
        (" 10, 20, 512.0, 768 ", [10, 20, 512, 768]),
        ({"top": 1, "left": 2, "height": 3, "width": 4}, [1, 2, 3, 4]),
        ('{"width": 4, "height": 3, "left": 2, "top": 1}', [1, 2, 3, 4]),
        (["5", "6", "7", "8"], [5, 6, 7, 8]),
    ],
)
def test_sam_crop_parms_parsing(convert, crop, expected):
    assert convert(SAM, {**SAM_ROW, "crop_parms": crop})["gen_crop"] == expected


@pytest.mark.parametrize(
    "crop",
    [
        None,
        "",
        "1 2 3",
        [1, 2, 3, 4, 5],
        "a b c d",
        "[1, 2, 3",
        '{"top": 1, "left": 2, "height": 3}',
        ["a", 1, 2, 3],
        [None, 1, 2, 3],
        "inf 0 10 10",
        "nan 0 10 10",
        42,
    ],
)
def test_sam_bad_crop_parms(reason, crop):
    assert reason(SAM, {**SAM_ROW, "crop_parms": crop}) == "bad_value:crop_parms"


def test_sam_gen_size_option_and_bad_rows(convert, reason):
    assert convert(SAM, SAM_ROW, {"gen_size": 256})["gen_size"] == 256
    assert reason(SAM, {**SAM_ROW, "s3_path": None}) == "missing:s3_path"
    assert reason(SAM, {**SAM_ROW, "caption": "", "cap_short": " ", "cap_detail": None}) == "missing:caption"


def test_sam_determinism(convert, check_deterministic):
    row = {**SAM_ROW, "cap_detail": LONG}
    for p in range(20):
        check_deterministic(SAM, row, position=p)
    caps = [_caption_of(convert(SAM, row, position=p)) for p in range(600)]
    long_draws = [c for c in caps if c not in ("a street", "street")]
    assert long_draws and any(c != LONG for c in long_draws) and LONG in long_draws


@pytest.mark.parametrize(
    "opts", [{"gen_size": 512}, {"caption_keys": []}, {"caption_key": "caption"}, {"crop": [0, 0, 1, 1]}]
)
def test_sam_bad_options(opts):
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(SAM).parse_options(opts)


def test_converters_never_touch_global_random(convert):
    random.seed(5)
    before = random.getstate()
    for p in range(20):
        convert(S3, {"s3_path": "a.jpg", "caption": LONG}, position=p)
        convert(LOC, FEEDBACK_ROW, {"add_feedback": True}, position=p)
        convert(SAM, SAM_ROW, position=p)
    assert random.getstate() == before
