"""Upstream's converter outputs (tests/golden/converters/*.json) and ours over many seeds.

The fixtures are made by scripts/golden/make_converters.py from upstream LaViDa-O's own
functions; each case holds the SET of payloads upstream can produce for a row and options (its
random draws enumerated) and the exception types it can raise. ``DEVIATIONS`` lists the cases
where ours differs on purpose (see the README's "Differences from upstream").
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import lavida_data
from lavida_data import SampleError

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "converters")
REASON = re.compile(r"^(missing|bad_value):\w+$|^feedback_mismatch$")

#: the keyword options each upstream function declares (its signature, bar data/*args/**kwargs)
UPSTREAM_KWARGS: dict[str, set[str]] = {
    "preproces_text_to_image_generation_s3": {"random_truncate", "caption_key", "no_drop_keys", "random_caption_keys"},
    "preproces_text_to_image_generation_s3_loc": {
        "random_truncate", "caption_key", "no_drop_keys", "random_caption_keys", "plan_only", "add_feedback",
        "s3_prefix_enc", "max_reflection", "do_print", "no_plan",
    },
    "preproces_text_to_image_generation_piat_hash": {"caption_key", "random_truncate"},
    "preproces_text_to_image_generation_layout_sam": {
        "random_truncate", "caption_key", "caption_drop", "plan_only", "s3_prefix", "do_print", "no_plan",
    },
    "preproces_und_mammoth_si_10M": {"s3_prefix"},
    "preproces_vw_instruct": {"s3_prefix"},
    "preproces_grandf": {"s3_prefix"},
    "preproces_refcoco_rec": {"s3_prefix"},
    "preprocess_reflection_und": {"s3_prefix"},
    "process_metaquery": {"s3_prefix"},
    "process_uniworld": {"s3_prefix", "pixel_diff", "do_reweight"},
    "process_sharegpt_4o_edit": {"s3_prefix", "no_template", "reweight", "t2i"},
    "process_gpt_edit": {"s3_prefix", "no_template", "reweight", "t2i", "pixel_diff"},
    "process_pica_banana": {"s3_prefix", "no_template", "reweight", "t2i", "pixel_diff"},
    "process_gpt_edit_loc_gnd": {"s3_prefix", "no_template", "reweight", "t2i", "task", "plan_only", "pixel_diff"},
}


@dataclass
class Case:
    function: str
    id: str
    row: dict
    options: dict
    outputs: list[dict]
    raises: list[str]

    def __str__(self) -> str:
        return f"{self.function}/{self.id}"


@dataclass
class Expected:
    """What ours must produce: these outputs (without "id"), and skips iff ``skips``."""

    outputs: set[str]
    skips: bool
    reason: str | None = None  # when given, every skip has this reason
    options_rejected: bool = False


def canon(sample: dict) -> str:
    return json.dumps({k: v for k, v in sample.items() if k != "id"}, sort_keys=True)


def load_cases() -> list[Case]:
    cases = []
    for name in sorted(os.listdir(GOLDEN)):
        with open(os.path.join(GOLDEN, name)) as f:
            doc = json.load(f)
        assert doc["max_cap_length"] == 800
        for c in doc["cases"]:
            cases.append(Case(doc["function"], c["id"], c["row"], c["options"], c["outputs"], c["raises"]))
    return cases


def _gpt_has_none(o: dict) -> bool:
    return o["conversations"][-1]["value"].split(" <image_gen")[0].endswith("None")


def _skip_all(reason: str) -> Callable[[Case], Expected]:
    return lambda case: Expected(set(), True, reason)


def _skip_where(reason: str, bad: Callable[[dict], bool]) -> Callable[[Case], Expected]:
    return lambda case: Expected({canon(o) for o in case.outputs if not bad(o)}, True, reason)


def _drop_key(key: str) -> Callable[[Case], Expected]:
    return lambda case: Expected({canon({k: v for k, v in o.items() if k != key}) for o in case.outputs}, False)


def _options_rejected(case: Case) -> Expected:
    return Expected(set(), True, options_rejected=True)


def _reflection_pairs(case: Case) -> Expected:
    """Ours draws one (prompt, result) pair of two equal-length JSON lists; upstream writes the
    lists' text into the prompt and the answer."""
    prompts, results = json.loads(case.row["prompts"]), json.loads(case.row["results"])
    [up] = case.outputs
    out = set()
    for p, r in zip(prompts, results):
        human = up["conversations"][0]["value"].replace(case.row["prompts"], p)
        out.add(canon({**up, "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": r}]}))
    return Expected(out, False)


def _json_list_images(case: Case) -> Expected:
    """Ours reads a JSON list in `image` as several images; upstream joins its text as one path."""
    prefix = case.options.get("s3_prefix", "")
    [up] = case.outputs
    return Expected({canon({**up, "image": [prefix + p for p in json.loads(case.row["image"])]})}, False)


T2I, LOC, SAM = ("preproces_text_to_image_generation_" + s for s in ("s3", "s3_loc", "layout_sam"))
#: Cases where ours differs from upstream on purpose, each a bullet of the differences list.
DEVIATIONS: dict[tuple[str, str], Callable[[Case], Expected]] = {
    # a null target path: upstream keeps "image_gen": None under a <image_gen> answer; ours skips
    (T2I, "s3_path_none"): _skip_all("missing:s3_path"),
    (LOC, "s3_path_none"): _skip_all("missing:s3_path"),
    ("preproces_grandf", "s3_path_none"): _skip_all("missing:s3_path"),
    # a null text written into the prompt: upstream writes "None"; ours skips
    (LOC, "grounding_text_none"): _skip_all("missing:grounding_text"),
    (SAM, "cap_short_none"): _skip_where("missing:cap_short", _gpt_has_none),
    ("preproces_grandf", "loc_caption_none"): _skip_all("missing:loc_caption"),
    ("preprocess_reflection_und", "results_none"): _skip_all("missing:results"),
    ("process_gpt_edit", "instruction_none"): _skip_all("missing:instruction"),
    ("process_pica_banana", "instruction_none"): _skip_all("missing:text"),
    ("process_sharegpt_4o_edit", "instruction_none"): _skip_all("missing:input_prompt"),
    ("process_gpt_edit_loc_gnd", "grounding_text_none"): _skip_all("missing:grounding_text"),
    # a null score: upstream carries [None] / [nan] into the micro-conditions; ours leaves it out
    (T2I, "score_none"): _drop_key("hpsv2"),
    ("process_gpt_edit", "hpsv2_none"): _drop_key("hpsv2"),
    ("process_pica_banana", "hpsv2_none"): _drop_key("hpsv2"),
    # crop_parms that are not six numbers: upstream fails later, cropping; ours skips now
    (SAM, "crop_parms_none"): _skip_all("missing:crop_parms"),
    (SAM, "crop_parms_short"): _skip_all("bad_value:crop_parms"),
    # several values as JSON lists (our importers' form): upstream loses or garbles them
    ("preproces_und_mammoth_si_10M", "json_list_image"): _json_list_images,
    ("preprocess_reflection_und", "paired_json_lists"): _reflection_pairs,
    # max_reflection 0: upstream raises on every row; ours rejects the option
    (LOC, "feedback_max_reflection_0"): _options_rejected,
}


def expected(case: Case) -> Expected:
    deviation = DEVIATIONS.get((case.function, case.id))
    if deviation is not None:
        return deviation(case)
    return Expected({canon(o) for o in case.outputs}, bool(case.raises))


@dataclass
class Seen:
    outputs: set[str] = field(default_factory=set)
    reasons: set[str] = field(default_factory=set)
    runs: int = 0


def run_ours(case: Case, want: Expected, *, min_runs: int = 40, max_runs: int = 20000) -> Seen:
    """Our converter on the case's row for seeds 0, 1, ... until it has shown every expected
    output (and a skip, when expected) and at least ``min_runs`` seeds ran."""
    conv = lavida_data.registry.get(case.function)
    opts = conv.parse_options(case.options)
    seen = Seen()
    for seed in range(max_runs):
        seen.runs += 1
        try:
            sample = lavida_data.convert_row(conv, opts, case.row, dataset="golden", row_index=0, seed=seed)
        except SampleError as e:
            seen.reasons.add(e.reason)
        else:
            seen.outputs.add(canon(sample))
        done = seen.outputs >= want.outputs and (bool(seen.reasons) or not want.skips)
        if done and seen.runs >= min_runs:
            break
    return seen


def describe(strings: set[str], n: int = 2) -> Any:
    return [s[:400] for s in sorted(strings)[:n]]
