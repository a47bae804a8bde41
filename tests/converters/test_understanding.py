"""Understanding and grounding converters, and the pass-through (UniWorld)."""

from __future__ import annotations

import json

import pydantic
import pytest

import lavida_data

MAMMOTH = "preproces_und_mammoth_si_10M"
VW = "preproces_vw_instruct"
GRANDF = "preproces_grandf"
REFCOCO = "preproces_refcoco_rec"
REFLECTION = "preprocess_reflection_und"
UNIWORLD = "process_uniworld"

REASONING = "\nPlease provide detailed reasoning before giving the final answer."


@pytest.mark.parametrize(
    "name, aliases",
    [
        (MAMMOTH, ["und_mammoth", "preprocess_und_mammoth_si_10M"]),
        (VW, ["und_vw_instruct", "preprocess_vw_instruct"]),
        (GRANDF, ["grounding_grandf", "preprocess_grandf"]),
        (REFCOCO, ["grounding_refcoco", "preprocess_refcoco_rec"]),
        (REFLECTION, ["und_reflection"]),
        (UNIWORLD, ["passthrough"]),
    ],
)
def test_aliases_resolve_to_the_same_converter(name, aliases):
    conv = lavida_data.registry.get(name)
    assert conv.name == name
    for alias in aliases:
        assert lavida_data.registry.get(alias) is conv


# ---------------------------------------------------------------- preproces_und_mammoth_si_10M

TURNS = [
    {"from": "human", "value": "<image>\nWhat is shown?"},
    {"from": "gpt", "value": "A dog."},
    {"from": "human", "value": "What colour?"},
    {"from": "gpt", "value": "Brown."},
]


def test_mammoth_json_conversations_with_image_and_prefix(convert):
    row = {"conversations": json.dumps(TURNS), "image": "coco/1.jpg"}
    s = convert(MAMMOTH, row, {"s3_prefix": "s3://bucket/mammoth"}, image_root="/ignored")
    assert s["conversations"] == TURNS
    assert s["image"] == "s3://bucket/mammoth/coco/1.jpg"
    assert s["id"] == "d:7"
    assert "image_gen" not in s and "image_gen_enc" not in s


def test_mammoth_list_conversations_and_image_root(convert):
    row = {"conversations": TURNS, "image": "coco/1.jpg"}
    assert convert(MAMMOTH, row, image_root="/data/mammoth")["image"] == "/data/mammoth/coco/1.jpg"
    assert convert(MAMMOTH, row, {"s3_prefix": "rel"}, image_root="/data")["image"] == "/data/rel/coco/1.jpg"
    assert convert(MAMMOTH, {**row, "image": "s3://b/x.jpg"}, {"s3_prefix": "s3://p"})["image"] == "s3://b/x.jpg"
    assert convert(MAMMOTH, {**row, "image": "/abs/x.jpg"}, image_root="/data")["image"] == "/abs/x.jpg"


def test_mammoth_adds_missing_image_marker_to_first_human_turn(convert):
    turns = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "What is it?"}, {"from": "gpt", "value": "A cat."}]
    s = convert(MAMMOTH, {"conversations": json.dumps(turns), "image": "a.jpg"})
    assert s["conversations"] == [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "<image>\nWhat is it?"},
        {"from": "gpt", "value": "A cat."},
    ]


def test_mammoth_several_images(convert):
    turns = [{"from": "human", "value": "Compare."}, {"from": "gpt", "value": "Same."}]
    s = convert(MAMMOTH, {"conversations": turns, "image": ["a.jpg", "b.jpg"]}, {"s3_prefix": "s3://p/"})
    assert s["image"] == ["s3://p/a.jpg", "s3://p/b.jpg"]
    assert s["conversations"][0]["value"] == "<image>\n<image>\nCompare."
    s = convert(MAMMOTH, {"conversations": turns, "image": '["a.jpg", "b.jpg"]'})
    assert s["image"] == ["a.jpg", "b.jpg"]


def test_mammoth_text_only(convert, reason):
    turns = [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]
    for image in (None, "", float("nan")):
        s = convert(MAMMOTH, {"conversations": json.dumps(turns), "image": image})
        assert "image" not in s
        assert s["conversations"] == turns
    assert "image" not in convert(MAMMOTH, {"conversations": turns})
    # a text-only row whose text marks an image is inconsistent
    bad = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "x"}]
    assert reason(MAMMOTH, {"conversations": bad}) == "image_marker_mismatch"


def test_mammoth_more_markers_than_images(reason):
    turns = [{"from": "human", "value": "<image>\n<image>\nCompare."}, {"from": "gpt", "value": "x"}]
    assert reason(MAMMOTH, {"conversations": turns, "image": "a.jpg"}) == "image_marker_mismatch"


@pytest.mark.parametrize(
    "conversations, why",
    [
        (None, "missing:conversations"),
        ("[]", "missing:conversations"),
        ([], "missing:conversations"),
        ("{not json", "bad_value:conversations"),
        ('[{"from": "human"}]', "bad_value:conversations"),
        ([{"from": "human", "value": 3}], "bad_value:conversations"),
        (["just text"], "bad_value:conversations"),
    ],
)
def test_mammoth_bad_conversations(reason, conversations, why):
    assert reason(MAMMOTH, {"conversations": conversations, "image": "a.jpg"}) == why


def test_mammoth_image_without_human_turn(reason):
    turns = [{"from": "gpt", "value": "hello"}]
    assert reason(MAMMOTH, {"conversations": turns, "image": "a.jpg"}) == "bad_conversations"


def test_mammoth_deterministic(check_deterministic):
    s = check_deterministic(MAMMOTH, {"conversations": json.dumps(TURNS), "image": "a.jpg"})
    assert s["image"] == "a.jpg"


@pytest.mark.parametrize("opts", [{"s3_prefix": 1}, {"prefix": "s3://x"}, {"folder": "x"}])
def test_mammoth_bad_options(opts):
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(MAMMOTH).parse_options(opts)


# ---------------------------------------------------------------- preproces_vw_instruct


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_vw_long_answer_gets_reasoning_request(convert):
    turns = [{"from": "human", "value": "<image>\nSolve it."}, {"from": "gpt", "value": _words(151)}]
    s = convert(VW, {"conversations": turns, "image": ["q/1.png"]}, {"s3_prefix": "s3://vw"})
    assert s["conversations"][0] == {
        "from": "human",
        "value": "<image>\nSolve it.\nPlease provide detailed reasoning before giving the final answer.",
    }
    assert s["conversations"][1]["value"] == _words(151)
    assert s["image"] == ["s3://vw/q/1.png"]
    assert s["id"] == "d:7"


def test_vw_answer_of_150_words_is_left_alone(convert):
    turns = [{"from": "human", "value": "<image>\nSolve it."}, {"from": "gpt", "value": _words(150)}]
    s = convert(VW, {"conversations": turns, "image": ["a.png"]})
    assert s["conversations"][0]["value"] == "<image>\nSolve it."


def test_vw_only_the_question_of_the_long_answer(convert):
    turns = [
        {"from": "human", "value": "<image>\nShort?"},
        {"from": "gpt", "value": "Yes."},
        {"from": "human", "value": "Explain."},
        {"from": "gpt", "value": _words(200)},
    ]
    s = convert(VW, {"conversations": turns, "image": ["a.png"]})
    assert [t["value"] for t in s["conversations"]] == [
        "<image>\nShort?", "Yes.", "Explain." + REASONING, _words(200),
    ]
    assert turns[2]["value"] == "Explain."  # the row is not mutated


def test_vw_long_answer_words_option(convert):
    turns = [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": _words(11)}]
    s = convert(VW, {"conversations": turns, "image": ["a.png"]}, {"long_answer_words": 10})
    assert s["conversations"][0]["value"] == "<image>\nQ" + REASONING
    s = convert(VW, {"conversations": turns, "image": ["a.png"]}, {"long_answer_words": 10, "reasoning_prompt": " Think."})
    assert s["conversations"][0]["value"] == "<image>\nQ Think."


def test_vw_images_list_markers_and_root(convert):
    turns = [{"from": "human", "value": "Which differs?"}, {"from": "gpt", "value": "The second."}]
    s = convert(VW, {"conversations": json.dumps(turns), "image": ["a.png", "s3://x/b.png"]}, image_root="/vw")
    assert s["image"] == ["/vw/a.png", "s3://x/b.png"]
    assert s["conversations"][0]["value"] == "<image>\n<image>\nWhich differs?"
    s = convert(VW, {"conversations": turns, "image": "single.png"})
    assert s["image"] == ["single.png"]


def test_vw_bad_rows(reason):
    turns = [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]
    assert reason(VW, {"conversations": turns}) == "missing:image"
    assert reason(VW, {"conversations": turns, "image": []}) == "missing:image"
    assert reason(VW, {"conversations": turns, "image": [1, 2]}) == "bad_value:image"
    assert reason(VW, {"conversations": None, "image": ["a.png"]}) == "missing:conversations"
    two = [{"from": "human", "value": "<image>\n<image>\nQ"}, {"from": "gpt", "value": "A"}]
    assert reason(VW, {"conversations": two, "image": ["a.png"]}) == "image_marker_mismatch"


def test_vw_deterministic(check_deterministic):
    turns = [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": _words(160)}]
    s = check_deterministic(VW, {"conversations": turns, "image": ["a.png"]})
    assert s["conversations"][0]["value"].endswith(REASONING)


@pytest.mark.parametrize(
    "opts", [{"long_answer_words": 0}, {"long_answer_words": "150"}, {"reasoning_prompt": None}, {"x": 1}]
)
def test_vw_bad_options(opts):
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(VW).parse_options(opts)


# ---------------------------------------------------------------- preproces_grandf

LOC_CAPTION = (
    "<box_p> A man </box_p><LOC_BEGIN><LOC_1><LOC_2><LOC_500><LOC_1000><LOC_END> rides "
    "<box_p> a horse </box_p><LOC_BEGIN><LOC_10><LOC_300><LOC_900><LOC_1024><LOC_END>."
)


def test_grandf_template(convert):
    s = convert(GRANDF, {"s3_path": "grand/1.jpg", "loc_caption": LOC_CAPTION}, image_root="s3://gr")
    assert s["conversations"] == [
        {"from": "human", "value": "<image>\n Generate a dense image caption with bounding boxes in LOC format."},
        {"from": "gpt", "value": LOC_CAPTION},
    ]
    assert s["image"] == "s3://gr/grand/1.jpg"
    assert s["id"] == "d:7"
    assert "image_gen" not in s


def test_grandf_bad_rows_and_options(reason):
    assert reason(GRANDF, {"s3_path": "a.jpg"}) == "missing:loc_caption"
    assert reason(GRANDF, {"loc_caption": "x"}) == "missing:s3_path"
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(GRANDF).parse_options({"anything": 1})


def test_grandf_deterministic(check_deterministic):
    check_deterministic(GRANDF, {"s3_path": "a.jpg", "loc_caption": LOC_CAPTION})


# ---------------------------------------------------------------- preproces_refcoco_rec

LOC_STRING = "<LOC_BEGIN><LOC_12><LOC_34><LOC_560><LOC_780><LOC_END>"


def test_refcoco_template(convert):
    row = {"s3_path": "/coco/train2014/1.jpg", "label": "the man in red", "loc_string": LOC_STRING}
    s = convert(REFCOCO, row, image_root="/ignored")
    assert s["conversations"] == [
        {
            "from": "human",
            "value": "<image>\n Please locate the man in red in this image. Give bounding boxes in LOC format.",
        },
        {"from": "gpt", "value": LOC_STRING},
    ]
    assert s["image"] == "/coco/train2014/1.jpg"
    assert s["id"] == "d:7"


def test_refcoco_bad_rows_and_options(reason):
    row = {"s3_path": "a.jpg", "label": "x", "loc_string": LOC_STRING}
    assert reason(REFCOCO, {**row, "label": ""}) == "missing:label"
    assert reason(REFCOCO, {**row, "loc_string": None}) == "missing:loc_string"
    assert reason(REFCOCO, {k: v for k, v in row.items() if k != "s3_path"}) == "missing:s3_path"
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(REFCOCO).parse_options({"label": "x"})


def test_refcoco_deterministic(check_deterministic):
    check_deterministic(REFCOCO, {"s3_path": "a.jpg", "label": "cat", "loc_string": LOC_STRING})


# ---------------------------------------------------------------- preprocess_reflection_und


def _reflection_prompt(prompt: str) -> str:
    return (
        "<image>\nPlease evaluate this generated image based on the following prompt: "
        f"{prompt} Focus on text alignment and compositionality."
    )


def test_reflection_template(convert):
    row = {"image": "gen/1.png", "prompts": "a red cube on a blue ball", "results": "The cube is green. No."}
    s = convert(REFLECTION, row, image_root="/refl")
    assert s["conversations"] == [
        {
            "from": "human",
            "value": "<image>\nPlease evaluate this generated image based on the following prompt: "
            "a red cube on a blue ball Focus on text alignment and compositionality.",
        },
        {"from": "gpt", "value": "The cube is green. No."},
    ]
    assert s["image"] == "/refl/gen/1.png"
    assert s["id"] == "d:7"


def test_reflection_draws_one_pair(convert):
    prompts = ["p0", "p1", "p2"]
    results = ["r0", "r1", "r2"]
    for row in ({"image": "a.png", "prompts": prompts, "results": results},
                {"image": "a.png", "prompts": json.dumps(prompts), "results": json.dumps(results)}):
        seen = set()
        for p in range(100):
            conv = convert(REFLECTION, row, position=p)["conversations"]
            i = int(conv[1]["value"][1])
            assert conv[0]["value"] == _reflection_prompt(f"p{i}")
            seen.add(i)
        assert seen == {0, 1, 2}


def test_reflection_text_starting_with_bracket_is_one_text(convert):
    # a plain prompt or result that merely starts with "[" is not a malformed JSON list
    row = {"image": "a.png", "prompts": "[photo] a cat", "results": "[Score 3] the cat is missing"}
    s = convert(REFLECTION, row)
    assert s["conversations"][0]["value"] == _reflection_prompt("[photo] a cat")
    assert s["conversations"][1]["value"] == "[Score 3] the cat is missing"


@pytest.mark.parametrize(
    "row, why",
    [
        ({"image": "a.png", "results": "r"}, "missing:prompts"),
        ({"image": "a.png", "prompts": "p", "results": ""}, "missing:results"),
        ({"image": "a.png", "prompts": ["p1", "p2"], "results": ["r1"]}, "bad_value:results"),
        ({"image": "a.png", "prompts": [], "results": ["r1"]}, "missing:prompts"),
        ({"prompts": "p", "results": "r"}, "missing:image"),
    ],
)
def test_reflection_bad_rows(reason, row, why):
    assert reason(REFLECTION, row) == why


def test_reflection_deterministic(convert, check_deterministic):
    row = {"image": "a.png", "prompts": ["p0", "p1", "p2", "p3"], "results": ["r0", "r1", "r2", "r3"]}
    for p in range(20):
        check_deterministic(REFLECTION, row, position=p)
    assert len({convert(REFLECTION, row, epoch=e)["conversations"][1]["value"] for e in range(40)}) == 4


def test_reflection_takes_no_options():
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(REFLECTION).parse_options({"prompt_key": "p"})


# ---------------------------------------------------------------- process_uniworld

UW_EDIT = {
    "conversations": [
        {"from": "human", "value": "<image> <image_gen_enc> make the sky pink"},
        {"from": "gpt", "value": "Sure <image_gen>"},
    ],
    "image": "src/1.png",
    "image_gen": "tgt/1.png",
    "image_gen_enc": "src/1.png",
}


def test_uniworld_passes_sample_through(convert):
    s = convert(UNIWORLD, UW_EDIT)
    assert s["conversations"] == UW_EDIT["conversations"]
    assert s["image"] == "src/1.png"
    assert s["image_gen"] == "tgt/1.png"
    assert s["image_gen_enc"] == ["src/1.png"]  # always a list
    assert s["id"] == "d:7"


def test_uniworld_folder_then_image_root(convert):
    s = convert(UNIWORLD, UW_EDIT, {"folder": "uniworld/part1"}, image_root="/data")
    assert s["image"] == "/data/uniworld/part1/src/1.png"
    assert s["image_gen"] == "/data/uniworld/part1/tgt/1.png"
    assert s["image_gen_enc"] == ["/data/uniworld/part1/src/1.png"]
    s = convert(UNIWORLD, {**UW_EDIT, "image_gen": "s3://b/t.png"}, {"folder": "s3://uw/"})
    assert s["image"] == "s3://uw/src/1.png" and s["image_gen"] == "s3://b/t.png"


def test_uniworld_lists_and_json_conversations(convert):
    row = {
        "conversations": json.dumps([
            {"from": "human", "value": "<image> <image_gen_enc> <image> <image_gen_enc> merge them"},
            {"from": "gpt", "value": "Sure <image_gen>"},
        ]),
        "image": ["a.png", "b.png"],
        "image_gen_enc": '["a.png", "b.png"]',
        "image_gen": "t.png",
    }
    s = convert(UNIWORLD, row, {"folder": "/uw"})
    assert s["image"] == ["/uw/a.png", "/uw/b.png"]
    assert s["image_gen_enc"] == ["/uw/a.png", "/uw/b.png"]
    assert s["image_gen"] == "/uw/t.png"


def test_uniworld_text_only_and_understanding(convert):
    turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    s = convert(UNIWORLD, {"conversations": turns})
    assert s == {"conversations": turns, "id": "d:7"}
    und = [{"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "a dog"}]
    s = convert(UNIWORLD, {"conversations": und, "image": ["x.png"]})
    assert s["image"] == ["x.png"] and "image_gen" not in s


def test_uniworld_markers_are_checked(reason):
    assert reason(UNIWORLD, {**UW_EDIT, "image_gen": None}) == "image_marker_mismatch"
    assert reason(UNIWORLD, {**UW_EDIT, "image_gen_enc": ["a.png", "b.png"]}) == "image_marker_mismatch"
    assert reason(UNIWORLD, {**UW_EDIT, "image": None}) == "image_marker_mismatch"
    assert reason(UNIWORLD, {**UW_EDIT, "conversations": "nope"}) == "bad_value:conversations"
    assert reason(UNIWORLD, {"image": "a.png"}) == "missing:conversations"


def test_uniworld_deterministic(check_deterministic):
    check_deterministic(UNIWORLD, UW_EDIT, {"folder": "f"})


@pytest.mark.parametrize("opts", [{"folder": 3}, {"s3_prefix": "x"}])
def test_uniworld_bad_options(opts):
    with pytest.raises(pydantic.ValidationError):
        lavida_data.registry.get(UNIWORLD).parse_options(opts)
