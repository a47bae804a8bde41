"""Stage files: the examples carry the reference's settings; overrides; every error positioned."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lavida_data.errors import ConfigError
from lavida_data.spec.validate import validate_file
from lavida_train.config import STAGES, StageConfig, batch_plan, load_stage, validate_stage
from lavida_train.model.config import tiny_config
from lavida_train.overrides import parse_override

ROOT = Path(__file__).resolve().parents[2]
STAGE_DIR = ROOT / "examples" / "stages"


def stage_file(name: str) -> Path:
    return STAGE_DIR / f"{name}.yaml"


def errors(text: str, overrides=(), file: str = "/tmp/stage.yaml") -> list:
    with pytest.raises(ConfigError) as e:
        validate_stage(text, file, overrides)
    return e.value.issues


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


S2 = stage_file("s2-256").read_text()


# -- the example stages ---------------------------------------------------------------------------


def test_every_stage_has_a_file():
    assert sorted(p.stem for p in STAGE_DIR.glob("*.yaml")) == sorted(STAGES)


@pytest.mark.parametrize("name", STAGES)
def test_stage_file_validates_with_common_settings(name):
    cfg = load_stage(stage_file(name))
    assert cfg.stage == name
    assert cfg.precision == "amp_bf16" and cfg.tf32 is True  # --bf16 True, --tf32 True
    assert cfg.device_train_microbatch_size == 2  # --per_device_train_batch_size 2
    assert cfg.global_train_batch_size is None  # 2 x world size: --gradient_accumulation_steps 1
    assert cfg.optimizer.weight_decay == 0.0 and cfg.optimizer.max_grad_norm == 1.0
    assert (cfg.optimizer.betas, cfg.optimizer.eps) == ((0.9, 0.999), 1e-8)
    assert (cfg.schedule.warmup, cfg.schedule.t_warmup, cfg.schedule.alpha_f) == ("3%", "0.03dur", 0.1)
    assert cfg.train.prompt_drop == 0.1 and cfg.train.plan_unmasked_prob == 0.8 and cfg.train.min_mask == 1e-3
    assert cfg.save_interval == "500ba" and cfg.autoresume is True and cfg.seed == 42
    assert cfg.data.num_workers == 4
    fsdp = cfg.parallelism["fsdp"]
    assert fsdp["sharding_strategy"] == "FULL_SHARD" and fsdp["activation_checkpointing"] is True
    assert cfg.model.preset == "full" and cfg.model.d_model == 4096
    # relative paths are relative to the stage file's folder, returned absolute
    mixture = "s2-256" if name == "s2-1024" else name  # s2-1024 trains on s2-256's data
    assert cfg.data.mixture == str(STAGE_DIR / "mixtures" / f"{mixture}.yaml")
    assert os.path.isabs(cfg.data.prepared) and os.path.isabs(cfg.save_folder)
    assert cfg.model.tokenizer == "/models/lavida-o"  # the release: LLaDA's tokenizer plus the LOC tokens


# upstream's scripts/train/*.sh, stage by stage (s1-gnd: base.sh with s1-gnd.sh's arguments)
UPSTREAM = {
    "s1-gnd": dict(trainable={"vision_tower": 2e-6, "projector": 2e-5, "resampler": 2e-5, "language_model": 2e-5},
                   time_policy="cosine", text_loss=True, turns="all", max_length=8192, image_size=1024,
                   edit_source_drop=0.5, max_duration="100000ba", keep=3, pad_base=True),
    "s2-256": dict(trainable={"generation_branch": 1e-4}, time_policy="uniform", text_loss=False, turns="one",
                   max_length=4096, image_size=256, edit_source_drop=0.5, max_duration="300000ba", keep=2,
                   pad_base=False),
    "s2-1024": dict(trainable={"generation_branch": 5e-6}, time_policy="cosine", text_loss=True, turns="all",
                    max_length=8192, image_size=1024, edit_source_drop=0.5, max_duration="100000ba", keep=3,
                    pad_base=True),
    "s3-unified": dict(trainable={"vision_tower": 2e-6, "projector": 5e-6, "resampler": 5e-6, "language_model": 5e-6},
                       time_policy="cosine", text_loss=True, turns="all", max_length=8192, image_size=1024,
                       edit_source_drop=0.5, max_duration="100000ba", keep=3, pad_base=True),
}


@pytest.mark.parametrize("name", STAGES)
def test_stage_carries_upstream_values(name):
    cfg = load_stage(stage_file(name))
    want = UPSTREAM[name]
    got = dict(trainable=cfg.train.trainable, time_policy=cfg.train.time_policy, text_loss=cfg.train.text_loss,
               turns=cfg.train.turns, max_length=cfg.train.max_length, image_size=cfg.train.image_size,
               edit_source_drop=cfg.train.edit_source_drop, max_duration=cfg.max_duration,
               keep=cfg.save_num_checkpoints_to_keep,
               pad_base=cfg.data.anyres_pad_base)  # base.sh exports DEBUG_FIX_PADDING=1; s2-256.sh does not
    assert got == want
    if "vision_tower" in cfg.train.trainable:  # --mm_vision_tower_lr=2e-6 in every stage that trains it
        assert cfg.train.trainable["vision_tower"] == 2e-6


def test_every_stage_value_is_traced_to_upstream():
    """Each setting line of a stage file carries a comment (on it or just above) naming where
    upstream sets it."""
    skip = ("stage:", "model:", "data:", "train:", "trainable:", "parallelism:", "fsdp:", "sharding_strategy:",
            "mixed_precision:", "use_orig_params:", "state_dict_type:", "save_folder:", "prepared:")
    for name in STAGES:
        lines = stage_file(name).read_text().splitlines()
        for n, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#") or text.startswith(skip) or text.endswith(":"):
                continue
            above = lines[n - 2].strip() if n > 1 else ""
            assert "#" in line or above.startswith("#"), f"{name}.yaml:{n} has no upstream source: {line!r}"


def test_stage_mixtures_follow_upstreams_data_files():
    from lavida_data import load_mixture

    s1 = load_mixture(STAGE_DIR / "mixtures" / "s1-gnd.yaml").mixture
    assert s1.weights == {"default": 100, "grounding": 100} and s1.batch_sizes == {}
    s2 = load_mixture(STAGE_DIR / "mixtures" / "s2-256.yaml").mixture
    assert {d.length_group for d in s2.datasets} == {"default"} and s2.weights == {} and s2.batch_sizes == {}
    s3 = load_mixture(STAGE_DIR / "mixtures" / "s3-unified.yaml").mixture
    # config/data/s3_interleaved.yaml's weights and batch factors (mjv6 and picabanana have no dataset there)
    assert s3.weights == {
        "t2i": 250, "blip60k": 80, "mj": 100, "laion_coyo": 150, "edit": 200, "edit_gpt": 250,
        "edit_gpt_reason_txt": 30, "edit_gpt_reason": 170, "und": 250, "grounding": 100, "und_vw": 150,
        "reflect_dit_judge": 150, "reflect_dit_plan_t2i": 200, "reflect_dit_plan_text": 20,
        "reflect_dit_plan_feedback_text": 20, "reflect_dit_plan_feedback_t2i": 150, "reflect_dit_feedback_t2i": 30}
    assert s3.batch_sizes == {
        "t2i": 1, "mj": 1, "edit": 1, "blip60k": 1, "edit_gpt": 1, "edit_gpt_reason_txt": 1, "edit_gpt_reason": 0.5,
        "und": 0.5, "grounding": 0.5, "reflect_dit_judge": 1, "reflect_dit_plan_t2i": 1, "reflect_dit_plan_text": 1,
        "reflect_dit_plan_feedback_text": 0.5, "reflect_dit_plan_feedback_t2i": 0.5, "reflect_dit_feedback_t2i": 0.5}
    assert {d.length_group for d in s3.datasets} == set(s3.weights)


def test_stages_chain_their_checkpoints():
    cfgs = {n: load_stage(stage_file(n)) for n in STAGES}
    assert cfgs["s1-gnd"].init_from is None and cfgs["s1-gnd"].model.checkpoint
    for prev, nxt in zip(STAGES, STAGES[1:]):
        assert cfgs[nxt].init_from == os.path.join(cfgs[prev].save_folder, "latest-rank0.pt")


@pytest.mark.parametrize("name", STAGES)
def test_stage_mixture_validates(name):
    cfg = load_stage(stage_file(name))
    report = validate_file(cfg.data.mixture)
    assert report.valid, report.errors


def test_config_round_trips():
    cfg = load_stage(stage_file("s3-unified"))
    assert StageConfig.model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize("overrides, world, want", [
    ([], 1, (2, 1, 2, 2)),                                   # upstream: per-device 2, no accumulation
    ([], 64, (2, 1, 128, 2)),
    (["global_train_batch_size=512"], 64, (2, 4, 512, 8)),   # 4 forward passes of 2 per step
    (["device_train_microbatch_size=1", "global_train_batch_size=6"], 2, (1, 3, 6, 3)),
])
def test_batch_plan(overrides, world, want):
    plan = batch_plan(load_stage(stage_file("s3-unified"), overrides), world)
    assert (plan.micro, plan.accumulation, plan.global_batch, plan.per_device) == want


def test_batch_plan_refuses_a_global_batch_that_is_no_multiple_of_one_pass():
    cfg = load_stage(stage_file("s3-unified"), ["global_train_batch_size=12"])
    with pytest.raises(ConfigError) as e:
        batch_plan(cfg, 4)
    (i,) = e.value.issues
    assert i.field == "global_train_batch_size" and "2 x 4 = 8" in i.message and "leave it out" in i.message


# -- overrides ------------------------------------------------------------------------------------


def test_required_overrides_are_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mix = tmp_path / "m.yaml"
    cfg = load_stage(stage_file("s2-256"), [
        "model.preset=tiny", f"data.mixture={mix}", "data.prepared=prep", "max_duration=6ba",
        "save_folder=ckpt", "save_interval=3ba", "seed=5", "init_from=null", "parallelism=null",
    ])
    assert cfg.max_duration == "6ba" and isinstance(cfg.max_duration, str)
    assert cfg.seed == 5 and isinstance(cfg.seed, int)
    assert cfg.save_interval == "3ba"
    assert cfg.data.mixture == str(mix)
    # paths given in overrides are relative to the current directory
    assert cfg.data.prepared == str(tmp_path / "prep") and cfg.save_folder == str(tmp_path / "ckpt")
    assert cfg.init_from is None and cfg.parallelism is None
    assert cfg.model == tiny_config()


def test_tiny_preset_wins_over_file_sizes_and_paths():
    text = S2.replace("model:\n", "model:\n  preset: tiny\n  d_model: 128\n  n_layers: 7\n")
    cfg = validate_stage(text, "/tmp/stage.yaml")
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.model.tokenizer, cfg.model.vq.path) == (64, 2, None, None)
    # a key the model lacks is still an error under the preset
    (i,) = errors(text.replace("  d_model: 128", "  d_modle: 128"))
    assert i.field == "model.d_modle" and "did you mean 'd_model'" in i.message
    cfg = load_stage(stage_file("s2-256"), ["model.preset=tiny", "model.activation_checkpointing=true"])
    assert cfg.model.activation_checkpointing is True and cfg.model.d_model == 64


@pytest.mark.parametrize("text, value", [
    ("a=6ba", "6ba"), ("a=3", 3), ("a=true", True), ("a=[1,2]", [1, 2]), ("a=null", None), ("a=", None),
    ("a.b=s3://bucket/x", "s3://bucket/x"), ("a= 0.5", 0.5),
])
def test_override_values_parse_as_yaml(text, value):
    assert parse_override(text).value == value


def test_override_sets_nested_and_whole_sections():
    cfg = load_stage(stage_file("s2-256"), [
        "train.trainable.projector=2e-5", "data.loader={shuffle: false}", "schedule.warmup=100ba",
        "parallelism.fsdp.sharding_strategy=SHARD_GRAD_OP",
    ])
    assert cfg.train.trainable == {"generation_branch": 1e-4, "projector": 2e-5}
    assert cfg.data.loader.shuffle is False and cfg.schedule.t_warmup == "100ba"
    assert cfg.parallelism["fsdp"]["sharding_strategy"] == "SHARD_GRAD_OP"
    assert cfg.parallelism["fsdp"]["activation_checkpointing"] is True  # the rest of the file's section stays


def test_s3_and_absolute_paths_are_kept():
    cfg = load_stage(stage_file("s2-256"), ["data.prepared=s3://bucket/prep", "save_folder=/abs/ckpt"])
    assert (cfg.data.prepared, cfg.save_folder) == ("s3://bucket/prep", "/abs/ckpt")


def test_unknown_override_key_suggests():
    (i,) = errors(S2, ["optimiser.eps=1e-6"])
    assert i.file == "<override 'optimiser.eps=1e-6'>" and i.field == "optimiser.eps"
    assert "did you mean 'optimizer'" in i.message
    (i,) = errors(S2, ["train.trainable.projecter=1e-5"])
    assert "did you mean 'projector'" in i.message
    (i,) = errors(S2.replace("generation_branch:", "vq:"))
    assert "unknown group 'vq'" in i.message and "never trains" in i.message
    (i,) = errors(S2, ["seed.x=1"])
    assert "not a section" in i.message


def test_bad_override_value_type():
    (i,) = errors(S2, ["seed=abc"])
    assert (i.file, i.field, i.line) == ("<override 'seed=abc'>", "seed", None)
    assert "integer" in i.message
    (i,) = errors(S2, ["train.text_loss=maybe"])
    assert i.field == "train.text_loss" and "boolean" in i.message


@pytest.mark.parametrize("text, words", [
    ("a.b", "no '='"), ("=x", "key before '='"), ("a..b=1", "empty part"), (".a=1", "empty part"),
    ("a b=1", "not a plain name"), ("seed=[1", "not valid YAML"),
])
def test_malformed_override(text, words):
    (i,) = errors(S2, [text])
    assert i.file == f"<override {text!r}>" and words in i.message


@pytest.mark.parametrize("value, words", [
    ("6", "has no unit"), ("6 ba", "not a Composer duration"), ("1.5ep", "not a Composer duration"),
    ("0ba", "not a Composer duration"), ("6batches", "not a Composer duration"),
])
def test_bad_max_duration(value, words):
    (i,) = errors(S2, [f"max_duration={value}"])
    assert i.field == "max_duration" and words in i.message
    text = S2.replace("max_duration: 300000ba", f"max_duration: {value}")
    (i,) = errors(text)
    assert (i.line, i.field) == (line_of(text, "max_duration:"), "max_duration") and words in i.message


# -- errors in the file ------------------------------------------------------------------------------


def test_unknown_key_in_file_has_position_and_suggestion():
    text = S2.replace("  turns: one", "  turns: one\n  prompt_dorp: 0.2")
    (i,) = errors(text)
    assert (i.file, i.line, i.column, i.field) == ("/tmp/stage.yaml", line_of(text, "prompt_dorp"), 3,
                                                   "train.prompt_dorp")
    assert "did you mean 'prompt_drop'" in i.message


def test_unknown_top_level_key_and_group():
    text = S2.replace("optimizer:", "optimiser:").replace("    generation_branch:", "    generation_brnch:")
    a, b = errors(text)
    assert (a.field, a.line) == ("train.trainable.generation_brnch", line_of(text, "generation_brnch"))
    assert "did you mean 'generation_branch'" in a.message
    assert (b.field, b.line, b.column) == ("optimiser", line_of(text, "optimiser"), 1)
    assert "did you mean 'optimizer'" in b.message


def test_wrong_type_in_file_has_line():
    text = S2.replace("max_length: 4096", "max_length: long")
    (i,) = errors(text)
    assert (i.line, i.field) == (line_of(text, "max_length"), "train.max_length") and "integer" in i.message
    text = S2.replace("image_size: 256", "image_size: 512")
    (i,) = errors(text)
    assert (i.line, i.field) == (line_of(text, "image_size"), "train.image_size")


def test_duplicate_key_in_file():
    text = S2.replace("seed: 42", "seed: 42\nseed: 43")
    (i,) = errors(text)
    assert (i.line, i.field) == (line_of(text, "seed: 43"), "seed") and "duplicate key" in i.message


def test_unknown_parallelism_key():
    text = S2.replace("    use_orig_params: true", "    use_orig_param: true")
    (i,) = errors(text)
    assert (i.line, i.column, i.field) == (line_of(text, "use_orig_param:"), 5, "parallelism.fsdp.use_orig_param")
    assert "did you mean 'use_orig_params'" in i.message
    (i,) = errors(S2, ["parallelism.tp={}"])
    assert "unknown key 'tp'" in i.message
    (i,) = errors(S2, ["parallelism.fsdp.sharding_strategy=FULL"])
    assert i.field == "parallelism.fsdp.sharding_strategy"


def test_reentrant_activation_checkpointing_is_refused():
    """It would give a block no gradient when its input needs none (an all-skipped micro-batch's
    stand-in in a generation-only stage), and FSDP would wait for that block's reduction."""
    (i,) = errors(S2, ["parallelism.fsdp.activation_checkpointing_reentrant=true"])
    assert i.field == "parallelism.fsdp.activation_checkpointing_reentrant" and "must stay false" in i.message
    assert validate_stage(S2).parallelism["fsdp"]["activation_checkpointing_reentrant"] is False


def test_missing_required_key_and_all_errors_at_once():
    text = re.sub(r"  time_policy: uniform.*\n", "", S2).replace("seed: 42", "seed: -1")
    issues = errors(text, ["precision=bf16"])
    fields = [i.field for i in issues]
    assert fields == ["seed", "train.time_policy", "precision"]
    assert issues[2].file == "<override 'precision=bf16'>"


def test_cross_field_checks():
    (i,) = errors(S2, ["global_train_batch_size=3"])
    assert i.field == "global_train_batch_size" and "multiple" in i.message
    (i,) = errors(S2, ["schedule.warmup=100%"])
    assert i.field == "schedule.warmup"


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_stage(tmp_path / "nope.yaml")
    (i,) = errors("stage: s1-gnd\n  seed: [1\n")
    assert "YAML syntax error" in i.message and i.line is not None
    (i,) = errors("- a\n- b\n")
    assert "mapping" in i.message
