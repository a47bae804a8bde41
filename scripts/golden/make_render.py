"""Golden fixtures of the rendering (tokenisation): upstream's ids and labels for every kind of sample.

Not run by the tests; documents how tests/golden/render/*.json were made, to regenerate them for a
later upstream:

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/golden/make_render.py /path/to/LaVida-O [OUT_DIR]

For each sample below (upstream's payload for the kind, as its converter writes it, plus the
``micro_conds_texts`` its image loading makes) this runs upstream's ``preprocess_multimodal``
(only when the sample has an "image" or "image_gen" key, as upstream's ``_get_item``) and
``preprocess_llada`` (``has_image`` = "image" key present) with the tiny tokenizer of
``lavida_data.transforms.tokenizer.build_tiny_tokenizer``, for every combination of upstream's draws:

* each micro-condition placeholder: ``np.random.rand()`` patched to 0.1 (drop, < 0.3) or 0.9 (keep);
* the turn pair: ``preprocess.rng`` replaced by a generator whose ``choice`` returns the k-th
  human turn, for every k (``SELECT_ALL_INDEX`` unset), and once with ``SELECT_ALL_INDEX`` set;
* ``num_gen_image_tokens`` 256 (every sample) and 1024 (a few), ``num_gen_image_tokens_enc_ds`` 1,
  ``is_multimodal`` True, ``mm_use_im_start_end`` False (the released training scripts).

One deliberate translation: upstream compares ids with its constant ``IMAGE_TOKEN_INDEX_GEN_ENC``
(126090 = LLaDA's ``<|reserved_token_6|>``); it is set to the tiny tokenizer's id of that token.

Each case stores the draws and upstream's ``input_ids`` and ``labels`` (or the exception it
raised). Every file carries the SHA-256 of the tiny tokenizer's tokenizer.json: the tests rebuild
the tokenizer and check it first.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import sys
import tempfile
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

UPSTREAM = "adobe-research/LaVida-O@e3a80df"
MICRO = "[[micro_conds_texts]]"
DROP, KEEP = 0.1, 0.9  # np.random.rand() values: < 0.3 drops the micro-condition text

MC = "ORIGINAL WIDTH : 1024; ORIGINAL HEIGHT : 768; TOP : 0; LEFT : 128; LUMINANCE : 0.512; CONTRAST : 0.231"
LOC = "<box_p> the dog </box_p><LOC_BEGIN><LOC_12><LOC_40><LOC_300><LOC_512><LOC_END>"
LOC2 = LOC + " <box_p> a red bus </box_p><LOC_BEGIN><LOC_600><LOC_100><LOC_1000><LOC_900><LOC_END>"
PLAN = "Please first think and plan the layout in LOC format."
FEEDBACK1 = (" Please also consider past generations and their feedbacks. Do not repeat these errors "
             "Generation 1: <image>\n Feedback 1: the dog is missing.")
FEEDBACK2 = FEEDBACK1 + "\nGeneration 2: <image>\n Feedback 2: the bus is blue, not red."


def turns(*pairs: tuple[str, str]) -> list[dict]:
    return [{"from": f, "value": v} for f, v in pairs]


def t2i(caption: str) -> list[dict]:
    return turns(("human", f"Generate an image with the caption: {caption} {MICRO}"), ("gpt", "Sure <image_gen>"))


#: name -> (sample, micro_conds_texts, num_gen_image_tokens values)
SAMPLES: dict[str, tuple[dict, list[str] | None, tuple[int, ...]]] = {
    # text to image (preproces_text_to_image_generation_s3): micro-conditions filled or dropped
    "t2i": ({"image_gen": "s3://b/bus.jpg", "gen_score": [6.25], "conversations": t2i("a red bus on a rainy day")},
            [MC + "; SCORE : 6.250"], (256, 1024)),
    # layout plan (..._s3_loc / layout_sam): LOC text supervised, do_not_mask_text
    "layout_plan": ({"image_gen": "s3://b/dog.jpg", "do_not_mask_text": True, "crop_parms": [[0, 0, 512, 512]],
                     "conversations": turns(
                         ("human", f"Generate an image with the caption: a dog and a bus {MICRO}. {PLAN}"),
                         ("gpt", f"Sure I should place the objects in the following manner {LOC2} <image_gen>"))},
                    [MC], (256,)),
    # layout plan with feedback images: one <image> (moved to the front) or two (left in place)
    "t2i_feedback_one": ({"image_gen": "s3://b/dog.jpg", "do_not_mask_text": True, "image": ["s3://b/neg1.jpg"],
                          "conversations": turns(
                              ("human", f"Generate an image with the caption: a dog and a bus {MICRO}. "
                                        f"{PLAN}{FEEDBACK1}"),
                              ("gpt", f"Sure I should place the objects in the following manner {LOC2} <image_gen>"))},
                         [MC], (256,)),
    "t2i_feedback_two": ({"image_gen": "s3://b/dog.jpg", "do_not_mask_text": True,
                          "image": ["s3://b/neg1.jpg", "s3://b/neg2.jpg"],
                          "conversations": turns(
                              ("human", f"Generate an image with the caption: a dog and a bus {MICRO}. "
                                        f"{PLAN}{FEEDBACK2}"),
                              ("gpt", f"Sure I should place the objects in the following manner {LOC2} <image_gen>"))},
                         [MC], (256,)),
    # plan only: no image / image_gen key -> preprocess_multimodal not called, markers stay text
    "plan_only": ({"conversations": turns(
        ("human", f"Generate an image with the caption: a dog and a bus {MICRO}. {PLAN}"),
        ("gpt", f"Sure I should place the objects in the following manner {LOC2} <image_gen_fake>"))},
        None, (256,)),
    # plan only with a feedback image: preprocess_multimodal called without micro-condition texts
    "plan_only_feedback": ({"image": ["s3://b/neg1.jpg"], "conversations": turns(
        ("human", f"Generate an image with the caption: a dog and a bus {MICRO}. {PLAN}{FEEDBACK1}"),
        ("gpt", f"Sure I should place the objects in the following manner {LOC2} <image_gen_fake>"))},
        None, (256,)),
    # grounding
    "grandf": ({"image": "s3://b/street.jpg", "conversations": turns(
        ("human", "<image>\n Generate a dense image caption with bounding boxes in LOC format."),
        ("gpt", f"A street with {LOC2} parked."))}, None, (256,)),
    "refcoco": ({"image": "s3://b/dog.jpg", "conversations": turns(
        ("human", "<image>\n Please locate the dog in this image. Give bounding boxes in LOC format."),
        ("gpt", LOC))}, None, (256,)),
    # MAmmoTH-VL: one random human/gpt pair; '<image>\n' put in front of a pair without it
    "mammoth_multi": ({"image": "s3://b/kitchen.jpg", "conversations": turns(
        ("human", "<image>\nWhat is shown in the picture?"), ("gpt", "A kitchen with a white table."),
        ("human", "How many chairs are there?"), ("gpt", "Four chairs."),
        ("human", "Answer the question with a single word. Is there a window?"), ("gpt", "Yes."))},
        None, (256,)),
    "mammoth_image_inside": ({"image": "s3://b/cat.jpg", "conversations": turns(
        ("human", "What is this <image> animal doing?"), ("gpt", "The cat is sleeping."),
        ("human", "Where?"), ("gpt", "On a sofa."))}, None, (256,)),
    "mammoth_text_only": ({"conversations": turns(
        ("human", "What is 2 + 2?"), ("gpt", "4."), ("human", "And 3 + 3?"), ("gpt", "6."))}, None, (256,)),
    "mammoth_leading_gpt": ({"image": "s3://b/cat.jpg", "conversations": turns(
        ("gpt", "Hello, I can help."), ("human", "<image>\nDescribe the image in detail."),
        ("gpt", "The image shows a small house with a garden and flowers."))}, None, (256,)),
    # VisualWebInstruct: several images
    "vwi_multi_image": ({"image": ["s3://b/a.png", "s3://b/b.png"], "conversations": turns(
        ("human", "<image>\n<image>\nCompare the two figures. Which one has more cars?\n Please also perform "
                  "detailed reasoning for this problem and provide detailed reasoning traces."),
        ("gpt", "The first figure shows three cars and the second one. So the first has more."))}, None, (256,)),
    "vwi_one_image_inside": ({"image": ["s3://b/chart.png"], "conversations": turns(
        ("human", "Look at the chart. <image> What is the value for 2020?"), ("gpt", "It is 512."))},
        None, (256,)),
    # reflection (preprocess_reflection_und)
    "reflection": ({"image": "s3://b/gen.png", "conversations": turns(
        ("human", "<image>\nPlease evaluate this generated image based on the following prompt: a cat on a mat "
                  "Focus on text alignment and compositionality."),
        ("gpt", "The image matches the prompt well, but the cat is missing."))}, None, (256,)),
    # edits (process_gpt_edit and friends): <image> <image_gen_enc> per source
    "edit": ({"image": ["s3://b/src.jpg"], "image_gen_enc": ["s3://b/src.jpg"], "image_gen": "s3://b/tgt.jpg",
              "pad_image_gen": True, "pixel_diff": False, "reweight": False, "conversations": turns(
                  ("human", "<image> <image_gen_enc>  Make the sky blue."), ("gpt", "Sure <image_gen>"))},
             [MC], (256, 1024)),
    "edit_two_sources": ({"image": ["s3://b/s1.jpg", "s3://b/s2.jpg"],
                          "image_gen_enc": ["s3://b/s1.jpg", "s3://b/s2.jpg"],
                          "image_gen": "s3://b/tgt.jpg", "pad_image_gen": True, "reweight": False,
                          "conversations": turns(
                              ("human", "<image> <image_gen_enc> <image> <image_gen_enc>  Put the hat on the dog."),
                              ("gpt", "Sure <image_gen>"))}, [MC], (256,)),
    "edit_micro_pixel_diff": ({"image": ["s3://b/src.jpg"], "image_gen_enc": ["s3://b/src.jpg"],
                               "image_gen": "s3://b/tgt.jpg", "pad_image_gen": True, "pixel_diff": True,
                               "reweight": False, "conversations": turns(
                                   ("human", f"<image> <image_gen_enc>  Remove the person on the left. {MICRO}"
                                             "; PIXEL_DIFF : 0.123 ;"),
                                   ("gpt", "Sure <image_gen>"))}, [MC + "; HPS : 2.875"], (256,)),
    # edit plan (process_gpt_edit_loc_gnd), with and without plan_only
    "edit_plan": ({"image": ["s3://b/src.jpg"], "image_gen_enc": ["s3://b/src.jpg"], "image_gen": "s3://b/tgt.jpg",
                   "pad_image_gen": True, "pixel_diff": False, "do_not_mask_text": True, "conversations": turns(
                       ("human", f"<image> <image_gen_enc>  Add a hat. {PLAN}  {MICRO}"),
                       ("gpt", f"Sure I should consider adding the objects in these locations :  {LOC} <image_gen>"))},
                  [MC], (256,)),
    "edit_plan_only": ({"image": ["s3://b/src.jpg"], "image_gen_enc": ["s3://b/src.jpg"], "pad_image_gen": True,
                        "pixel_diff": False, "conversations": turns(
                            ("human", f"<image> <image_gen_enc>  Add a hat. {PLAN}  {MICRO}"),
                            ("gpt", f"Sure I should consider adding the objects in these locations :  {LOC} "
                                    "<image_gen_fake>"))}, None, (256,)),
    # UniWorld: "image": None still means has_image (a '<image>' goes in front)
    "uniworld_t2i": ({"image_gen_enc": None, "image": None, "image_gen": ["s3://b/fox.jpg"], "pad_image_gen": False,
                      "reweight": False, "pixel_diff": False, "conversations": turns(
                          ("human", "A watercolor fox in the snow."), ("gpt", "<image_gen>"))}, [MC], (256,)),
    "uniworld_edit": ({"image_gen_enc": ["s3://b/src.jpg"], "image": ["s3://b/src.jpg"],
                       "image_gen": ["s3://b/tgt.jpg"],
                       "pad_image_gen": True, "reweight": True, "pixel_diff": False, "conversations": turns(
                           ("human", "<image> <image_gen_enc> Make it night."), ("gpt", "<image_gen>"))},
                      [MC], (256,)),
    # text only
    "text_only": ({"conversations": turns(("human", "  What is the capital of France?  "),
                                          ("gpt", "Paris is the capital.\n"))}, None, (256,)),
    # rows upstream raises on (ours: SampleError)
    "err_no_gpt": ({"conversations": turns(("human", "Hi"))}, None, (256,)),
    "err_human_human": ({"conversations": turns(("human", "Hi"), ("human", "Hello?"), ("gpt", "Yo"))}, None, (256,)),
    "err_system_first": ({"conversations": turns(("system", "Be brief."), ("human", "Hi"), ("gpt", "Yo"))},
                         None, (256,)),
    "err_micro_short": ({"image_gen": "s3://b/bus.jpg", "conversations": turns(
        ("human", f"Generate an image with the caption: a bus {MICRO} {MICRO}"), ("gpt", "Sure <image_gen>"))},
        [MC], (256,)),
    # the drawn human turn is the last one (error), or followed by another human turn
    "last_turn_human": ({"conversations": turns(("human", "Hi"), ("gpt", "Yo"), ("human", "Bye?"))}, None, (256,)),
    "pair_human_human": ({"conversations": turns(("human", "Hi"), ("gpt", "Yo"), ("human", "Well"),
                                                 ("human", "Bye?"))}, None, (256,)),
}


class NoSuchPair(Exception):
    pass


class PairRng:
    """Stands in for upstream's module-level ``rng``: ``choice`` returns the k-th element."""

    def __init__(self, k: int):
        self.k = k
        self.n: int | None = None
        self.chosen: int | None = None

    def choice(self, seq):
        self.n = len(seq)
        if self.k >= len(seq):
            raise NoSuchPair(self.k)
        self.chosen = int(seq[self.k])
        return seq[self.k]


class Rand:
    """Stands in for ``np.random.rand``: returns the given values in order, records the calls."""

    def __init__(self, values):
        self.values = list(values)
        self.used: list[float] = []

    def __call__(self, *args):
        assert not args
        v = self.values[len(self.used)] if len(self.used) < len(self.values) else KEEP
        self.used.append(v)
        return v


def run_upstream(pp, tokenizer, sample, micro, n_gen, *, rand, pair_rng, select_all):
    import numpy as np

    data_args = SimpleNamespace(is_multimodal=True, mm_use_im_start_end=False, num_gen_image_tokens=n_gen,
                                num_gen_image_tokens_enc_ds=1)
    saved = np.random.rand, pp.rng, pp.SELECT_ALL_INDEX
    np.random.rand, pp.rng, pp.SELECT_ALL_INDEX = rand, pair_rng, select_all
    try:
        if "image" in sample or "image_gen" in sample:
            sources = pp.preprocess_multimodal(copy.deepcopy([sample["conversations"]]), data_args,
                                               micro_conds_texts=copy.deepcopy(micro))
        else:
            sources = copy.deepcopy([sample["conversations"]])
        out = pp.preprocess_llada(sources, tokenizer, has_image="image" in sample)
        return {"input_ids": out["input_ids"][0].tolist(), "labels": out["labels"][0].tolist()}
    except NoSuchPair:
        raise
    except Exception as e:  # noqa: BLE001 - upstream's failure is the recorded outcome
        return {"error": type(e).__name__}
    finally:
        np.random.rand, pp.rng, pp.SELECT_ALL_INDEX = saved


def cases_for(pp, tokenizer, sample, micro, n_gen) -> list[dict]:
    # how many placeholders upstream fills, and how many human turns it draws from
    probe_rand, probe_pair = Rand([]), PairRng(0)
    run_upstream(pp, tokenizer, sample, micro, n_gen, rand=probe_rand, pair_rng=probe_pair, select_all=False)
    n_rand, n_pairs = len(probe_rand.used), probe_pair.n or 0
    out = []
    for rands in itertools.product((KEEP, DROP), repeat=n_rand):
        for select_all in (False, True):
            for k in ([None] if select_all else range(max(n_pairs, 1))):
                rand, pair = Rand(rands), PairRng(k or 0)
                res = run_upstream(pp, tokenizer, sample, micro, n_gen, rand=rand, pair_rng=pair,
                                   select_all=select_all)
                draws = {"micro_rand": rand.used}
                if not select_all and pair.n is not None:
                    draws.update(pair=k, n_pairs=pair.n, pair_turn=pair.chosen)
                out.append({"num_gen_image_tokens": n_gen, "num_gen_image_tokens_enc_ds": 1,
                            "turns": "all" if select_all else "one", "draws": draws, **res})
    return out


def main(checkout: str, out_dir: str) -> None:
    from upstream_env import load_upstream

    load_upstream(checkout)
    from transformers import AutoTokenizer

    import llava.conversation as conversation_lib
    import llava.train.data.preprocess as pp

    from lavida_data.transforms.tokenizer import build_tiny_tokenizer

    conversation_lib.default_conversation = conversation_lib.conv_templates["llada"]
    tok_dir = build_tiny_tokenizer(tempfile.mkdtemp(prefix="tiny-tok-"))
    with open(os.path.join(tok_dir, "tokenizer.json"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    pp.IMAGE_TOKEN_INDEX_GEN_ENC = tokenizer.convert_tokens_to_ids("<|reserved_token_6|>")

    os.makedirs(out_dir, exist_ok=True)
    for name, (sample, micro, n_gens) in SAMPLES.items():
        cases = [c for n in n_gens for c in cases_for(pp, tokenizer, sample, micro, n)]
        doc = {"upstream": UPSTREAM, "tokenizer_sha256": digest, "name": name, "sample": sample,
               "micro_conds_texts": micro, "cases": cases}
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        outcomes = sorted({c.get("error", "ok") for c in cases})
        print(f"{name}: {len(cases)} cases {outcomes}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else os.path.join(REPO, "tests", "golden", "render"))
