"""Text-to-image converters beyond the golden fixtures: registry, columns, options, our extra
options, draw frequencies, determinism, image_root and skip reasons.

The payloads themselves are checked against upstream's in test_golden.py.
"""

from __future__ import annotations

import random
from collections import Counter

import pydantic
import pytest

import lavida_data

S3 = "preproces_text_to_image_generation_s3"
HASH = "preproces_text_to_image_generation_piat_hash"
LOC = "preproces_text_to_image_generation_s3_loc"
SAM = "preproces_text_to_image_generation_layout_sam"

SENTENCES = [f"Sentence number {i:02d} describes the scene." for i in range(20)]
LONG = " ".join(SENTENCES)  # 20 sentences, 859 characters
ROW = {"s3_path": "a.jpg", "caption": "a red cat"}
LOC_ROW = {"s3_path": "t.jpg", "caption": "a fox", "grounding_text": "<LOC_1> fox",
           "negatives": "n0.jpg;n1.jpg;n2.jpg", "negative_reasons": "r0;r1;r2"}
SAM_ROW = {"s3_path": "s.jpg", "caption": "a street", "cap_short": "short plan", "cap_detail": "detailed plan",
           "crop_parms": [1024, 1024, 0, 0, 1024, 1024]}


def options(name, **kw):
    return lavida_data.registry.get(name).parse_options(kw)


def human_text(sample):
    return sample["conversations"][0]["value"]


def caption_of(sample):
    return human_text(sample).removeprefix("Generate an image with the caption: ").split(" [[micro_conds_texts]]")[0]


# ---------------------------------------------------------------- registry and columns


@pytest.mark.parametrize(
    "name, aliases",
    [
        (S3, ["t2i", "preprocess_text_to_image_generation_s3"]),
        (HASH, ["t2i_hash", "preprocess_text_to_image_generation_piat_hash"]),
        (LOC, ["t2i_layout_plan", "preprocess_text_to_image_generation_s3_loc"]),
        (SAM, ["t2i_layout_sam", "preprocess_text_to_image_generation_layout_sam"]),
    ],
)
def test_aliases_resolve_to_the_same_builtin(name, aliases):
    conv = lavida_data.registry.get(name)
    assert conv.name == name and conv.source == "builtin"
    for alias in aliases:
        assert lavida_data.registry.get(alias) is conv


def test_unknown_converter_name_is_a_key_error():
    with pytest.raises(KeyError):
        lavida_data.registry.get("preproces_text_to_image_generation_s4")


@pytest.mark.parametrize(
    "name, opts, required, optional",
    [
        (S3, {}, ["s3_path", "caption"], ["fltLaionAesthScore", "hpsv2"]),
        (S3, {"caption_key": "c2"}, ["s3_path", "c2"], ["fltLaionAesthScore", "hpsv2"]),
        (S3, {"random_caption_keys": ["a", "b"], "caption_key": "c2"}, ["s3_path", "a", "b"],
         ["fltLaionAesthScore", "hpsv2"]),
        (HASH, {}, ["strImagehash", "longLLA_captions"], ["fltLaionAesthScore", "hpsv2"]),
        (HASH, {"caption_key": "llava_next_caption"}, ["strImagehash", "llava_next_caption"],
         ["fltLaionAesthScore", "hpsv2"]),
        (LOC, {}, ["s3_path", "caption", "grounding_text"], ["fltLaionAesthScore", "hpsv2"]),
        (LOC, {"plan_only": True, "no_plan": True}, ["s3_path", "caption", "grounding_text"],
         ["fltLaionAesthScore", "hpsv2"]),
        (LOC, {"add_feedback": True}, ["s3_path", "caption", "grounding_text", "negatives", "negative_reasons"],
         ["fltLaionAesthScore", "hpsv2"]),
        (SAM, {}, ["caption", "s3_path", "cap_short", "cap_detail", "crop_parms"], ["fltLaionAesthScore", "hpsv2"]),
        (SAM, {"caption_key": "cap_long"}, ["caption", "s3_path", "cap_long", "cap_short", "cap_detail", "crop_parms"],
         ["fltLaionAesthScore", "hpsv2"]),
    ],
)
def test_columns_are_what_upstream_reads(name, opts, required, optional):
    conv = lavida_data.registry.get(name)
    o = conv.parse_options(opts)
    assert conv.required_columns(o) == required
    assert conv.optional_columns(o) == optional


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "name, opts",
    [
        # upstream's own data configs (config/data/*.yaml)
        (S3, {"caption_key": "caption", "random_truncate": False}),
        (HASH, {"caption_key": "llava_next_caption"}),
        (LOC, {"plan_only": True}),
        (LOC, {"plan_only": True, "s3_prefix_enc": "s3://b/reflect/", "add_feedback": True, "do_print": False}),
        (LOC, {"s3_prefix_enc": "s3://b/reflect/", "add_feedback": True, "do_print": False, "no_plan": True}),
        (LOC, {"s3_prefix_enc": False}),
        (SAM, {"random_truncate": True, "caption_key": "c", "caption_drop": 0, "plan_only": True, "s3_prefix": "s3://x",
               "do_print": True, "no_plan": True}),
    ],
)
def test_upstream_options_accepted(name, opts):
    options(name, **opts)


@pytest.mark.parametrize(
    "name, opts",
    [
        (S3, {"captionkey": "x"}), (S3, {"caption_key": 3}), (S3, {"caption_key": ""}),
        (S3, {"max_caption_length": "800"}), (S3, {"max_caption_length": 0}), (S3, {"max_caption_length": 12.5}),
        (S3, {"truncate_prob": 1.5}), (S3, {"random_caption_keys": []}), (S3, {"random_caption_keys": "a,b"}),
        (S3, {"no_drop_keys": "caption"}), (S3, {"plan_only": True}), (S3, {"random_truncate": "no"}),
        # options upstream's function does not declare
        (HASH, {"random_caption_keys": ["a", "b"]}), (HASH, {"no_drop_keys": ["a"]}),
        (HASH, {"uri_template": "s3://b/{id}.jpg"}), (HASH, {"uri_template": 5}),
        (LOC, {"max_reflection": 0}), (LOC, {"s3_prefix_enc": True}), (LOC, {"s3_prefix": "x"}),
        (SAM, {"gen_size": 1024}), (SAM, {"caption_keys": ["a"]}), (SAM, {"caption_drop": 1.5}),
        (SAM, {"random_caption_keys": ["a"]}), (SAM, {"add_feedback": True}),
    ],
)
def test_bad_or_foreign_options_are_rejected(name, opts):
    with pytest.raises(pydantic.ValidationError):
        options(name, **opts)


def test_option_defaults_are_upstream_defaults():
    s3 = options(S3)
    assert (s3.random_truncate, s3.caption_key) == (True, "caption")
    assert (s3.no_drop_keys, s3.random_caption_keys) == (None, None)
    assert (s3.max_caption_length, s3.truncate_prob, s3.truncate_min_length) == (800, 0.2, 150)
    h = options(HASH)
    assert (h.caption_key, h.random_truncate, h.uri_template) == ("longLLA_captions", True, "piat://{hash}")
    loc = options(LOC)
    assert (loc.plan_only, loc.no_plan, loc.add_feedback, loc.s3_prefix_enc, loc.max_reflection, loc.do_print) == (
        False, False, False, None, 5, False)
    sam = options(SAM)
    assert (sam.random_truncate, sam.caption_key, sam.caption_drop, sam.plan_only, sam.no_plan, sam.s3_prefix) == (
        False, "caption", 0.1, False, False, None)


# ---------------------------------------------------------------- our extra options


def test_max_caption_length_option(convert):
    s = convert(S3, {**ROW, "caption": LONG}, {"max_caption_length": 30, "random_truncate": False})
    assert caption_of(s) == LONG[:30]


def test_truncate_prob_and_min_length_options(convert):
    row = {**ROW, "caption": LONG}
    never = {caption_of(convert(S3, row, {"truncate_prob": 0.0}, position=p)) for p in range(200)}
    assert never == {LONG[:800]}
    always = {caption_of(convert(S3, row, {"truncate_prob": 1.0}, position=p)) for p in range(200)}
    assert SENTENCES[0] in always and len(always) > 10
    short = {caption_of(convert(S3, {**ROW, "caption": "A. B. C."}, {"truncate_prob": 1.0, "truncate_min_length": 3},
                                position=p)) for p in range(100)}
    assert short == {"A.", "A. B.", "A. B. C."}


def test_uri_template_option(convert):
    row = {"strImagehash": "abc", "longLLA_captions": "c"}
    assert convert(HASH, row)["image_gen"] == "piat://abc"
    s = convert(HASH, row, {"uri_template": "store/{hash}.jpg"}, image_root="/data")
    assert s["image_gen"] == "/data/store/abc.jpg"


# ---------------------------------------------------------------- draw frequencies (upstream's numbers)


def test_truncation_is_drawn_about_one_time_in_five_with_k_uniform(convert):
    row = {**ROW, "caption": LONG}
    caps = [caption_of(convert(S3, row, position=p)) for p in range(4000)]
    cut = [c for c in caps if c != LONG[:800]]
    assert 0.17 < len(cut) / len(caps) < 0.23
    lengths = Counter(c.count("Sentence number") for c in cut)
    assert set(lengths) >= set(range(1, 15))  # k = 15..20 sentences are cut at 800 characters anyway


def test_layout_sam_detail_and_caption_drop_frequencies(convert):
    out = [convert(SAM, SAM_ROW, {"caption_drop": 0.25}, position=p) for p in range(4000)]
    detail = sum("detailed plan" in s["conversations"][1]["value"] for s in out) / len(out)
    dropped = sum(caption_of(s) == "an image with region captions." for s in out) / len(out)
    assert 0.37 < detail < 0.43 and 0.22 < dropped < 0.28


def test_feedback_count_is_uniform_and_picks_repeat(convert):
    out = [convert(LOC, LOC_ROW, {"add_feedback": True, "max_reflection": 3}, position=p) for p in range(3000)]
    counts = Counter(len(s["image"]) for s in out)
    assert set(counts) == {1, 2, 3} and all(900 < n < 1100 for n in counts.values())
    assert any(len(set(s["image"])) < len(s["image"]) for s in out)  # drawn with repetition, as upstream


def test_random_caption_keys_are_drawn_uniformly(convert):
    row = {"s3_path": "a.jpg", "a": "A", "b": "B", "c": "C"}
    opts = {"random_caption_keys": ["a", "b", "c"]}
    caps = Counter(caption_of(convert(S3, row, opts, position=p)) for p in range(3000))
    assert set(caps) == {"A", "B", "C"} and all(900 < n < 1100 for n in caps.values())


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "name, row, opts",
    [(S3, {**ROW, "caption": LONG}, {}), (HASH, {"strImagehash": "h", "longLLA_captions": LONG}, {}),
     (LOC, LOC_ROW, {"add_feedback": True}), (SAM, SAM_ROW, {})],
)
def test_draws_depend_on_seed_epoch_position_only(convert, check_deterministic, name, row, opts):
    for p in range(20):
        check_deterministic(name, row, opts, position=p)
        a = convert(name, row, opts, position=p, dataset="x", row_index=1)
        b = convert(name, row, opts, position=p, dataset="y", row_index=2)
        assert {**a, "id": None} == {**b, "id": None}
    assert len({repr(convert(name, row, opts, position=p)) for p in range(60)}) > 2
    assert len({repr(convert(name, row, opts, epoch=e)) for e in range(60)}) > 2


def test_converters_never_touch_global_random(convert):
    random.seed(5)
    before = random.getstate()
    for p in range(20):
        convert(S3, {**ROW, "caption": LONG}, {"random_caption_keys": ["caption"]}, position=p)
        convert(LOC, LOC_ROW, {"add_feedback": True}, position=p)
        convert(SAM, SAM_ROW, position=p)
    assert random.getstate() == before


# ---------------------------------------------------------------- ids, image_root, skips


def test_id_names_dataset_and_row(convert):
    s = convert(S3, ROW, dataset="laion", row_index=12345)
    assert s["id"] == "laion:12345" and "source_id" not in s


@pytest.mark.parametrize(
    "path, root, expected",
    [
        ("img/a.jpg", "/data/laion", "/data/laion/img/a.jpg"),
        ("img/a.jpg", "s3://bucket/laion/", "s3://bucket/laion/img/a.jpg"),
        ("s3://other/a.jpg", "/data/laion", "s3://other/a.jpg"),
        ("/abs/a.jpg", "/data/laion", "/abs/a.jpg"),
        ("img/a.jpg", None, "img/a.jpg"),
    ],
)
def test_image_root_joins_relative_paths_only(convert, path, root, expected):
    assert convert(S3, {**ROW, "s3_path": path}, image_root=root)["image_gen"] == expected


def test_image_root_joins_feedback_images_and_leaves_piat_alone(convert):
    s = convert(LOC, LOC_ROW, {"add_feedback": True, "max_reflection": 1}, image_root="/r")
    assert s["image"][0] in {"/r/n0.jpg", "/r/n1.jpg", "/r/n2.jpg"} and s["image_gen"] == "/r/t.jpg"
    assert convert(HASH, {"strImagehash": "h", "longLLA_captions": "c"}, image_root="/r")["image_gen"] == "piat://h"


@pytest.mark.parametrize(
    "name, row, opts, why",
    [
        (S3, {**ROW, "hpsv2": "high"}, {}, "bad_value:hpsv2"),
        (S3, {**ROW, "fltLaionAesthScore": True}, {}, "bad_value:fltLaionAesthScore"),
        (S3, {**ROW, "s3_path": ""}, {}, "bad_image_path:image_gen"),
        (S3, {**ROW, "s3_path": ["a.jpg", "b.jpg"]}, {}, "bad_value:s3_path"),
        (HASH, {"strImagehash": 12, "longLLA_captions": "c"}, {}, "bad_value:strImagehash"),
        (LOC, {**LOC_ROW, "negative_reasons": None}, {"add_feedback": True}, "missing:negative_reasons"),
        (SAM, {**SAM_ROW, "crop_parms": "1024,1024,0,0,1024,1024"}, {}, "bad_value:crop_parms"),
        (SAM, {**SAM_ROW, "crop_parms": [1024, 1024, 0, 0, 1024, "x"]}, {}, "bad_value:crop_parms"),
        (SAM, {**SAM_ROW, "s3_path": None}, {"plan_only": True, "s3_prefix": "s3://x"}, "missing:s3_path"),
    ],
)
def test_skip_reasons(reason, name, row, opts, why):
    assert reason(name, row, opts) == why


def test_nan_score_is_left_out(convert):
    s = convert(S3, {**ROW, "fltLaionAesthScore": float("nan"), "hpsv2": 0.5})
    assert "gen_score" not in s and s["hpsv2"] == [0.5]


def test_plans_without_target_are_samples(convert):
    s = convert(LOC, {**LOC_ROW, "s3_path": None}, {"plan_only": True})
    assert "image_gen" not in s and s["conversations"][1]["value"].endswith("<image_gen_fake>")
    s = convert(SAM, {**SAM_ROW, "s3_path": None}, {"plan_only": True})
    assert "image_gen" not in s and s["crop_parms"] == [SAM_ROW["crop_parms"]]
