"""Stage files: the examples carry the reference's settings; overrides; every error positioned."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lavida_data.errors import ConfigError
from lavida_data.validate import validate_file
from lavida_train.config import STAGES, StageConfig, load_stage, validate_stage
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
    assert cfg.precision == "amp_bf16"
    assert cfg.device_train_microbatch_size == 2
    assert cfg.optimizer.weight_decay == 0.0
    assert (cfg.schedule.warmup, cfg.schedule.t_warmup, cfg.schedule.alpha_f) == ("3%", "0.03dur", 0.1)
    assert cfg.train.prompt_drop == 0.1
    assert cfg.save_interval == "500ba" and cfg.autoresume is True
    fsdp = cfg.parallelism["fsdp"]
    assert fsdp["sharding_strategy"] == "FULL_SHARD" and fsdp["activation_checkpointing"] is True
    assert cfg.model.preset == "full" and cfg.model.d_model == 4096
    # relative paths are relative to the stage file's folder, returned absolute
    assert cfg.data.mixture == str(STAGE_DIR / "mixtures" / f"{name}.yaml")
    assert os.path.isabs(cfg.data.prepared) and os.path.isabs(cfg.save_folder)
    assert cfg.model.tokenizer == "/models/LLaDA-8B-Instruct"


REFERENCE = {  # stage: (trainable, time policy, text loss, turns, image size, max length)
    "s1-gnd": ({"vision_tower": 2e-5, "projector": 2e-5, "resampler": 2e-5, "language_model": 2e-5},
               "uniform", True, "all", None, 8192),
    "s2-256": ({"generation_branch": 1e-4}, "uniform", False, "one", 256, 4096),
    "s2-1024": ({"generation_branch": 5e-6}, "cosine", True, "all", 1024, 8192),
    "s3-unified": ({"vision_tower": 2e-6, "projector": 5e-6, "resampler": 5e-6, "language_model": 5e-6},
                   "cosine", True, "all", 1024, 8192),
}


@pytest.mark.parametrize("name", STAGES)
def test_stage_carries_reference_values(name):
    cfg = load_stage(stage_file(name))
    trainable, policy, text_loss, turns, size, max_length = REFERENCE[name]
    assert cfg.train.trainable == trainable
    assert cfg.train.time_policy == policy
    assert cfg.train.text_loss is text_loss
    assert cfg.train.turns == turns
    assert cfg.train.max_length == max_length
    if size is not None:
        assert cfg.train.image_size == size
    if cfg.train.image_size == 1024 and name != "s1-gnd":
        assert cfg.train.edit_source_drop == 0.5


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
    text = S2.replace("max_duration: 1ep", f"max_duration: {value}")
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


def test_missing_required_key_and_all_errors_at_once():
    text = S2.replace("  time_policy: uniform\n", "").replace("seed: 42", "seed: -1")
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
