"""Stage files: every setting of one LaViDa-O training stage, strictly typed.

A stage file is YAML (see ``examples/stages/*.yaml``)::

    stage: s2-256                   # s1-gnd | s2-256 | s2-1024 | s3-unified
    seed: 42
    model: {...}                    # lavida_train.model.config.ModelConfig
    data: {mixture, prepared, eval_mixture, num_workers, loader}
    train: {trainable, time_policy, text_loss, turns, max_length, image_size, ...}
    optimizer: {betas, eps, weight_decay, max_grad_norm}   # AdamW, gradients clipped at 1.0
    schedule: {warmup, alpha_f}                     # cosine with linear warm-up
    precision: amp_bf16
    tf32: true
    parallelism: {fsdp: {...}}                      # Composer's parallelism_config
    device_train_microbatch_size: 2                 # upstream's per_device_train_batch_size
    global_train_batch_size: null                   # default: 2 x world size (no accumulation)
    max_duration: 300000ba
    save_folder: ../../out/stages/s2-256
    save_interval: 500ba
    save_num_checkpoints_to_keep: 2
    autoresume: true
    init_from: ../../out/stages/s1-gnd/latest-rank0.pt

Batches. ``device_train_microbatch_size`` B is one forward pass's batch before the length
group's factor, upstream's ``per_device_train_batch_size``; a step of length group g runs
``max(int(B * f_g), 1)`` samples per device per forward pass. ``global_train_batch_size``
defaults to B x world size (one forward pass per optimizer step, as upstream's scripts); a
multiple k of that accumulates gradients over k forward passes (:func:`batch_plan`).

Unknown keys are errors at every level. :func:`load_stage` reads a file, applies command-line
overrides (:mod:`lavida_train.overrides`) and reports every problem at once as a
:class:`lavida_data.errors.ConfigError` whose issues carry file, line, column and dotted field.

Relative paths. In a stage file, ``data.mixture``, ``data.eval_mixture``, ``data.prepared``,
``data.loader.cache_dir``, ``save_folder``, ``init_from`` and the model's paths
(``model.tokenizer``, ``model.checkpoint``, ``model.siglip.path``, ``model.vq.path``) are
relative to the folder of the stage file; in an override they are relative to the current
directory. :func:`load_stage` returns them absolute; ``s3://`` (any ``scheme://``) and absolute
paths are kept as given, ``~`` is expanded. (A config built with ``StageConfig(...)`` directly
keeps its paths as given.)

The ``tiny`` preset. ``model.preset: tiny`` (or the override ``model.preset=tiny``) makes the
model exactly :func:`lavida_train.model.config.tiny_config` (sizes and no paths): the preset wins
over any size or path the file gives; only ``model.activation_checkpointing`` is kept.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Iterable, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lavida_data.errors import ConfigError, Issue, suggest
from lavida_data.spec.yamlpos import Located, load_yaml, syntax_issue
from lavida_data.stream.dataset import LoaderConfig

from .model.config import ModelConfig, tiny_config
from .overrides import Override, apply_overrides, children, label, parse_overrides

STAGES = ("s1-gnd", "s2-256", "s2-1024", "s3-unified")
GROUPS = ("vision_tower", "projector", "resampler", "language_model", "generation_branch")
Group = Literal["vision_tower", "projector", "resampler", "language_model", "generation_branch"]

# dotted paths that name files or folders (resolved against the stage file's folder)
PATH_FIELDS: tuple[tuple[str, ...], ...] = (
    ("data", "mixture"), ("data", "eval_mixture"), ("data", "prepared"), ("data", "loader", "cache_dir"),
    ("save_folder",), ("init_from",),
    ("model", "tokenizer"), ("model", "checkpoint"), ("model", "siglip", "path"), ("model", "vq", "path"),
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- Composer time strings -----------------------------------------------------------------------

_TIME = re.compile(r"(\d+)(ep|ba|sp|tok)")
_DUR = re.compile(r"(\d*\.?\d+)dur")
_PERCENT = re.compile(r"(\d*\.?\d+)%")


def _duration(value: str) -> str:
    m = _TIME.fullmatch(value)
    if m is None or int(m.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a Composer duration: a positive whole number with a unit, "
                         "ep (epochs), ba (batches), sp (samples) or tok (tokens), e.g. '1000ba' or '1ep'")
    return value


def _unit_needed(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"{value!r} has no unit: write e.g. '{value}ba' (batches) or '{value}ep' (epochs)")
    return value


def _warmup(value: str) -> str:
    p, d, t = _PERCENT.fullmatch(value), _DUR.fullmatch(value), _TIME.fullmatch(value)
    if p is not None and float(p.group(1)) < 100 or d is not None and float(d.group(1)) < 1 or t is not None:
        return value
    raise ValueError(f"{value!r} is not a warm-up: a percentage of the run below 100 ('3%'), a fraction of "
                     "it ('0.03dur') or a Composer time ('100ba', '1ep', '1000sp')")


Duration = Annotated[str, BeforeValidator(_unit_needed), AfterValidator(_duration)]
"""A Composer time string: ``6ba``, ``1ep``, ``2000sp``, ``100000tok``."""


# -- sections ---------------------------------------------------------------------------------------


class DataConfig(Strict):
    """Where the samples come from: a mixture file and its prepared shards."""

    mixture: str = Field(description="the mixture file (lavida-data)")
    prepared: str = Field(description="the folder or s3:// prefix that `lavida-data prepare` wrote")
    eval_mixture: str | None = Field(None, description="a mixture to evaluate on, prepared into `prepared` too")
    num_workers: int = Field(8, ge=0, description="DataLoader workers per rank")
    loader: LoaderConfig = Field(default_factory=LoaderConfig, description="lavida-data's loader settings")
    anyres_pad_base: bool = Field(
        False, description="understanding images' first anyres crop padded to a square before resizing "
        "(upstream's DEBUG_FIX_PADDING=1, exported by base.sh: s1, s2-1024, s3)")


class TrainConfig(Strict):
    """What trains and the masked-diffusion objective's settings."""

    trainable: dict[Group, Annotated[float, Field(gt=0)]] = Field(
        min_length=1,
        description="parameter groups that train, each with its learning rate; every other parameter is "
        "frozen and the VQ-VAE never trains. `language_model` includes the generation branch; when both "
        "are named, the generation branch's parameters take `generation_branch`'s rate")
    time_policy: Literal["uniform", "cosine", "logit_normal"] = Field(
        description="how t is drawn: U(0,1); cos(pi u / 2); sigmoid(N(mean, std))")
    logit_normal_mean: float = 0.0
    logit_normal_std: float = Field(1.0, gt=0)
    text_loss: bool = Field(description="add the text loss (off in s2-256: image loss only)")
    turns: Literal["all", "one"] = Field(description="'one' keeps one random user/assistant pair per conversation")
    max_length: int = Field(gt=0, description="longest sequence, in tokens")
    image_size: Literal[256, 1024] = Field(description="side of a generated image (256: 256 tokens; 1024: 1024)")
    prompt_drop: float = Field(0.1, ge=0, le=1, description="per-sample probability of dropping the prompt (CFG)")
    edit_source_drop: float = Field(0.5, ge=0, le=1, description="per-sample probability of dropping edit sources")
    edit_reweight: bool = Field(True, description="use the data's edit-area token weights (upstream's `reweight` "
                                "samples; upstream always does); false ignores them")
    plan_unmasked_prob: float = Field(0.8, ge=0, le=1, description="'plan then generate' text left unmasked")
    min_mask: float = Field(1e-3, gt=0, le=1, description="mask probability p = (1 - min_mask) t + min_mask")


class OptimizerConfig(Strict):
    """AdamW (learning rates come from ``train.trainable``); the defaults are upstream's (the
    Hugging Face Trainer's ``adamw_torch``, ``max_grad_norm`` 1.0)."""

    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="clip the gradients' global L2 norm to this before each step; null: no clipping")


class ScheduleConfig(Strict):
    """Linear warm-up, then cosine decay to ``alpha_f`` of the peak learning rate."""

    warmup: Annotated[str, AfterValidator(_warmup)] = Field(
        "3%", description="'3%' of the run, '0.03dur', or a Composer time like '100ba'")
    alpha_f: float = Field(0.1, ge=0, le=1, description="final learning rate as a fraction of the peak")

    @property
    def t_warmup(self) -> str:
        """The warm-up as Composer takes it (``3%`` -> ``0.03dur``)."""
        m = _PERCENT.fullmatch(self.warmup)
        return f"{float(m.group(1)) / 100:g}dur" if m else self.warmup


class FSDPOptions(Strict):
    """The FSDP options of Composer's ``parallelism_config`` that stage files may set (Composer's
    defaults); any other key is an error."""

    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD",
                               "_HYBRID_SHARD_ZERO2"] = "FULL_SHARD"
    mixed_precision: Literal["DEFAULT", "PURE", "FULL"] = "DEFAULT"
    activation_checkpointing: bool = False
    activation_checkpointing_reentrant: bool = False
    activation_cpu_offload: bool = False
    cpu_offload: bool = False
    sync_module_states: bool = False
    use_orig_params: bool = True
    state_dict_type: Literal["full", "sharded"] = "full"
    limit_all_gathers: bool = True
    backward_prefetch: Literal["BACKWARD_PRE", "BACKWARD_POST", "NONE"] = "BACKWARD_POST"
    forward_prefetch: bool = False
    load_monolith_rank0_only: bool = False
    verbose: bool = False

    @field_validator("use_orig_params")
    @classmethod
    def _orig_params(cls, v: bool) -> bool:
        if not v:
            raise ValueError("must stay true: every stage freezes part of the model, and FSDP allows frozen and "
                             "trained parameters in one wrapped module only with use_orig_params")
        return v

    @field_validator("activation_checkpointing_reentrant")
    @classmethod
    def _non_reentrant(cls, v: bool) -> bool:
        if v:
            raise ValueError("must stay false: reentrant checkpointing gives a block no gradient when its input "
                             "needs none (a pass whose embeddings are all frozen, e.g. the stand-in of an all-skipped "
                             "micro-batch in a generation-only stage), and FSDP then waits for a reduction that one "
                             "rank never makes")
        return v


class ParallelismOptions(Strict):
    """Composer's ``parallelism_config``; only FSDP is supported."""

    fsdp: FSDPOptions | None = None

    def to_composer(self) -> dict[str, Any] | None:
        return None if self.fsdp is None else {"fsdp": self.fsdp.model_dump()}


def _parallelism_dict(p: ParallelismOptions) -> dict[str, Any] | None:
    return p.to_composer()


Parallelism = Annotated[ParallelismOptions, AfterValidator(_parallelism_dict), PlainSerializer(lambda v: v)]
"""Validated as :class:`ParallelismOptions`, kept as the plain dict Composer's Trainer takes."""


class StageConfig(Strict):
    """One training stage: model, data, objective, optimisation and checkpointing."""

    stage: Literal["s1-gnd", "s2-256", "s2-1024", "s3-unified"]
    seed: int = Field(ge=0, lt=2**32, description="Composer's seed; also the data order's")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    train: TrainConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    precision: Literal["fp32", "amp_bf16", "amp_fp16"] = "amp_bf16"
    tf32: bool = Field(True, description="TF32 matmuls and convolutions on GPUs that have them (upstream: --tf32 True)")
    parallelism: Parallelism | None = Field(
        None, description="e.g. {fsdp: {sharding_strategy: FULL_SHARD, activation_checkpointing: true}}; "
        "after validation the dict Composer takes (every FSDP option filled in), or None")
    device_train_microbatch_size: int = Field(
        2, gt=0, description="samples per device per forward pass before the length group's batch factor "
        "(upstream's per_device_train_batch_size)")
    global_train_batch_size: int | None = Field(
        None, gt=0, description="samples per optimizer step over all ranks (before batch factors); default "
        "device_train_microbatch_size x world size; a multiple k of that accumulates k forward passes")
    max_duration: Duration = Field(description="length of the run: '6ba', '1ep', '2000sp'")
    save_folder: str = Field(description="checkpoints (folder or s3://); Composer's {run_name} is allowed")
    save_interval: Duration = "500ba"
    save_num_checkpoints_to_keep: int = Field(-1, ge=-1, description="-1 keeps all")
    autoresume: bool = Field(False, description="resume from the latest checkpoint in save_folder if any")
    init_from: str | None = Field(
        None, description="weights to start from: the previous stage's checkpoint (loaded weights only)")

    @field_validator("global_train_batch_size")
    @classmethod
    def _global_batch(cls, v: int | None, info: ValidationInfo) -> int | None:
        micro = info.data.get("device_train_microbatch_size")
        if v is not None and isinstance(micro, int) and v % micro:
            raise ValueError(f"{v} is not a multiple of device_train_microbatch_size ({micro})")
        return v

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """``model.preset: tiny`` replaces the model section by :func:`tiny_config` before it is
        validated (so sizes that only a full model would reject do not matter); keys that
        ModelConfig lacks stay, to be reported."""
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and model.get("preset") == "tiny":
            tiny = tiny_config().model_dump()
            unknown = {k: v for k, v in model.items() if k not in ModelConfig.model_fields}
            keep = {k: model[k] for k in ("activation_checkpointing",) if k in model}
            data = {**data, "model": {**tiny, **keep, **unknown}}
        return data


class BatchPlan(Strict):
    """How a stage's batch is formed on ``world`` ranks (see the module doc, "Batches")."""

    micro: int = Field(description="samples per device per forward pass, before the group's factor (B)")
    accumulation: int = Field(description="forward passes per optimizer step (k)")
    world: int
    global_batch: int = Field(description="samples per optimizer step over all ranks, before factors")

    @property
    def per_device(self) -> int:
        """The loader's per-device batch before factors: B x k (a step of group g holds
        ``max(int(B * k * f_g), 1)`` samples per device, run in up to k forward passes)."""
        return self.micro * self.accumulation


def batch_plan(cfg: "StageConfig", world: int) -> BatchPlan:
    """The batch plan of ``cfg`` on ``world`` ranks; raises :class:`ConfigError` (field
    ``global_train_batch_size``) when the global batch is not a multiple of B x world."""
    micro = cfg.device_train_microbatch_size
    one_pass = micro * world
    total = one_pass if cfg.global_train_batch_size is None else cfg.global_train_batch_size
    if total % one_pass:
        raise ConfigError([Issue(
            f"global_train_batch_size {total} is not a multiple of device_train_microbatch_size x world size "
            f"= {micro} x {world} = {one_pass}: leave it out ({one_pass}, one forward pass per step, as upstream) "
            f"or set a multiple k x {one_pass} to accumulate k forward passes per step",
            field="global_train_batch_size")])
    return BatchPlan(micro=micro, accumulation=total // one_pass, world=world, global_batch=total)


def resolve_model(model: ModelConfig) -> ModelConfig:
    """``model`` itself, or, with ``preset: tiny``, :func:`tiny_config` (which wins over the
    given sizes and paths; ``activation_checkpointing`` is kept)."""
    if model.preset == "tiny":
        return tiny_config(activation_checkpointing=model.activation_checkpointing)
    return model


# -- loading ----------------------------------------------------------------------------------------


def resolve_path(value: Any, base: str) -> Any:
    """``value`` made absolute against folder ``base``; URLs (``s3://...``), absolute paths and
    non-strings are returned as given (``~`` expanded)."""
    if not isinstance(value, str) or not value or "://" in value:
        return value
    value = os.path.expanduser(value)
    if os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(base, value))


def _get(data: Any, path: tuple) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False, None
        data = data[key]
    return True, data


def _set(data: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _resolve_paths(data: dict, base: str, within: tuple = ()) -> None:
    """Resolve every path field (below ``within``) in place."""
    for path in PATH_FIELDS:
        if path[: len(within)] != within:
            continue
        found, value = _get(data, path)
        if found:
            _set(data, path, resolve_path(value, base))


def _choices(path: tuple) -> list[str]:
    node: Any = StageConfig
    for key in path:
        named, wildcard = children(node)
        if named is not None and key in named:
            node = named[key]
        elif wildcard is not None:
            node = wildcard
        else:
            return []
    named, _ = children(node)
    return sorted(named or [])


def _issues(err: ValidationError, loc: Located, overrides: list[Override]) -> list[Issue]:
    """Each pydantic error as an issue at its place in the file, or naming the override that set it."""
    out = []
    for e in err.errors():
        path = tuple(e["loc"])
        bad_key = bool(path) and path[-1] == "[key]"
        if bad_key:
            path = path[:-1]
        dotted = ".".join(str(p) for p in path) or None
        src = next((o for o in reversed(overrides) if path[: len(o.path)] == o.path), None)

        def issue(message: str, at: tuple, key: bool = False) -> Issue:
            if src is not None:
                return Issue(message, file=src.label, field=dotted)
            line, col = loc.where(at, key=key)
            return Issue(message, file=loc.file, line=line, column=col, field=dotted)

        typ = e["type"]
        parent = path[:-1]
        inside = f"`{'.'.join(str(p) for p in parent)}`" if parent else "the stage file"
        if typ == "extra_forbidden" or bad_key:
            name = path[-1]
            valid = _choices(parent)
            what = "group" if parent == ("train", "trainable") else "key"
            note = "; the VQ-VAE never trains" if what == "group" and "vq" in str(name).lower() else ""
            msg = f"unknown {what} {name!r} in {inside}{suggest(str(name), valid)}; valid: {', '.join(valid)}{note}"
            out.append(issue(msg, path, key=True))
        elif typ == "missing":
            out.append(issue(f"missing required key {path[-1]!r} in {inside}", parent))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if typ not in ("value_error", "assertion_error") and "input" in e:
                msg += f" (got {e['input']!r})"
            out.append(issue(msg, path))
    return out


def validate_stage(text: str, file: str = "<string>", overrides: Iterable[str] = (),
                   base: str | None = None) -> StageConfig:
    """Validate a stage given as YAML text (``file`` names it in issues); relative paths resolve
    against ``base`` (default: ``file``'s folder). Raises :class:`ConfigError` with every issue."""
    base = base if base is not None else os.path.dirname(os.path.abspath(file))
    try:
        loc = load_yaml(text, file)
    except yaml.YAMLError as e:
        raise ConfigError([syntax_issue(e, file)]) from e
    issues: list[Issue] = list(loc.issues)
    data = loc.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(issues + [Issue("a stage file must be a mapping of settings", file=file, line=1, column=1)])
    _resolve_paths(data, base)
    parsed, bad = parse_overrides(overrides)
    issues += bad
    issues += apply_overrides(data, parsed, StageConfig)
    cwd = os.getcwd()
    for ov in parsed:  # an override's own paths are relative to the current directory
        found, _ = _get(data, ov.path)
        if found:
            _resolve_paths(data, cwd, within=ov.path)
    cfg = None
    try:
        cfg = StageConfig.model_validate(data)
    except ValidationError as e:
        issues += _issues(e, loc, parsed)
    if issues or cfg is None:
        in_file = sorted((i for i in issues if i.file == file), key=lambda i: (i.line or 0, i.column or 0))
        raise ConfigError(in_file + [i for i in issues if i.file != file])
    return cfg


def load_stage(path: str | os.PathLike, overrides: Iterable[str] = ()) -> StageConfig:
    """Read a stage file, apply ``a.b=value`` overrides and validate; relative paths in the file
    are relative to its folder, in overrides to the current directory (returned absolute).

    Raises :class:`ConfigError` listing every problem (file, line, column, dotted field, and the
    nearest valid name for an unknown key; an override's issues name the override).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([Issue(f"cannot read the stage file: {e.strerror or e}", file=path)]) from e
    return validate_stage(text, path, overrides)


__all__ = [
    "STAGES", "GROUPS", "PATH_FIELDS", "DataConfig", "TrainConfig", "OptimizerConfig", "ScheduleConfig",
    "FSDPOptions", "ParallelismOptions", "StageConfig", "BatchPlan", "batch_plan", "resolve_model", "resolve_path",
    "validate_stage", "load_stage", "label",
]
