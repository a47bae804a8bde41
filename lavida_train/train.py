"""Train one LaViDa-O stage: ``composer -n N -m lavida_train.train STAGE.yaml [a.b=value ...]``.

A recipe that reads top to bottom: ``setup`` (:func:`preflight`: the files the stage needs;
tokenizer, checked; model, from ``model.checkpoint``; trainable groups, optimizer, schedule,
data), ``train`` (Composer's Trainer), ``cleanup``. A configuration problem (a bad override, a
missing ``init_from`` or folder, a tokenizer without LaViDa-O's tokens) stops the run before any
model is built, with one line per problem and exit status 2.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from typing import Any, Sequence

import torch

from lavida_data.errors import ConfigError, Issue
from lavida_data.transforms.tokenize import gen_token_count
from lavida_data.transforms.tokenizer import build_tiny_tokenizer_once
from lavida_train.passes import num_samples, split_step

log = logging.getLogger("lavida_train")

#: the stage whose last checkpoint each stage's ``init_from`` names in the example chain
PREVIOUS_STAGE = {"s2-256": "s1-gnd", "s2-1024": "s2-256", "s3-unified": "s2-1024"}

GROUPS = ("vision_tower", "projector", "resampler", "language_model", "generation_branch")


def _local(path: str | None) -> bool:
    return bool(path) and "://" not in path


def _init_from_issue(cfg: Any) -> Issue | None:
    """``init_from`` names a local file that is not there (and no autoresume checkpoint replaces it)."""
    path = cfg.init_from
    if not _local(path) or os.path.exists(path):
        return None
    if cfg.autoresume and _local(cfg.save_folder) and os.path.exists(os.path.join(cfg.save_folder, "latest-rank0.pt")):
        return None  # Composer resumes from save_folder and ignores load_path
    prev = PREVIOUS_STAGE.get(cfg.stage)
    start = "from random weights (model.preset=tiny)" if cfg.model.preset == "tiny" else \
        "from model.checkpoint (the released model)"
    if prev is None:
        why = f"{cfg.stage} is the first stage: its init_from is normally null. Point init_from at a checkpoint"
    else:
        why = (f"it is stage {prev}'s last checkpoint ({prev} writes it into its save_folder). Train "
               f"examples/stages/{prev}.yaml first, point init_from at a checkpoint")
    return Issue(f"init_from {path} does not exist: {why}, or set init_from=null to start {start}",
                 field="init_from")


def preflight(cfg: Any) -> None:
    """Check, before anything is built, the files the stage reads: ``init_from`` (naming the
    stage that writes it), ``model.checkpoint`` and ``model.tokenizer`` (full preset),
    ``data.mixture`` and ``data.prepared``. Local paths only (``s3://`` is not checked).
    Raises :class:`ConfigError` listing every problem."""
    issues = [i for i in (_init_from_issue(cfg),) if i is not None]
    if cfg.model.preset != "tiny":
        if not cfg.model.tokenizer:
            issues.append(Issue("model.tokenizer is not set: the released LaViDa-O folder (its tokenizer is "
                                "LLaDA's plus the LOC tokens), or use model.preset=tiny", field="model.tokenizer"))
        elif _local(cfg.model.tokenizer) and not os.path.exists(cfg.model.tokenizer):
            issues.append(Issue(f"model.tokenizer {cfg.model.tokenizer} does not exist: the released LaViDa-O "
                                "folder (its tokenizer is LLaDA's plus the LOC tokens)", field="model.tokenizer"))
        ckpt = cfg.model.checkpoint
        if ckpt and not cfg.init_from:
            if _local(ckpt) and not os.path.exists(ckpt):
                issues.append(Issue(f"model.checkpoint {ckpt} does not exist: the released LaViDa-O folder "
                                    "(safetensors shards and their index), one .safetensors or .pt file, or a "
                                    "Composer checkpoint", field="model.checkpoint"))
            elif _local(ckpt):
                from .checkpoint import CheckpointError, read_checkpoint

                try:  # headers only: a folder without shards or an index that disagrees with them
                    read_checkpoint(ckpt)
                except CheckpointError as e:
                    issues.append(Issue(f"model.checkpoint {ckpt}: {e}", field="model.checkpoint"))
    if _local(cfg.data.mixture) and not os.path.exists(cfg.data.mixture):
        issues.append(Issue(f"data.mixture {cfg.data.mixture} does not exist", field="data.mixture"))
    if _local(cfg.data.prepared) and not os.path.exists(cfg.data.prepared):
        issues.append(Issue(f"data.prepared {cfg.data.prepared} does not exist: run `lavida-data prepare "
                            f"{cfg.data.mixture} --out {cfg.data.prepared}` first, or set data.prepared=DIR",
                            field="data.prepared"))
    if issues:
        raise ConfigError(issues)


class Recipe:
    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.trainer = None

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        from composer.utils import dist

        from .config import batch_plan

        cfg = self.cfg
        preflight(cfg)
        self.batch_plan = batch_plan(cfg, dist.get_world_size())
        torch.manual_seed(cfg.seed)
        self._init_dist()
        self.tokenizer_dir = self._tokenizer()
        self.vocab_size = self._check_tokenizer()
        self.model_cfg, self.model = self._model()
        self.trainable = self._freeze()
        self.composer_model = self._composer_model()
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self.train_data = self._data()

    @staticmethod
    def _init_dist() -> None:
        """With several ranks, the process group (Composer's ``initialize_dist``: NCCL on GPUs,
        gloo on CPUs, from the launcher's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) before
        anything uses it: setup's barrier and the loader (streaming would otherwise start and
        tear down a group of its own). Nothing before this touches ``torch.distributed``:
        :func:`preflight` and :func:`~lavida_train.config.batch_plan` read files and the
        environment only. The Trainer's own call later finds the group ready."""
        from composer.utils import dist

        if dist.get_world_size() > 1:
            dist.initialize_dist("gpu" if torch.cuda.is_available() else "cpu")

    def _tokenizer(self) -> str:
        """The tokenizer's folder: ``model.tokenizer``, or (tiny preset) ``{save_folder}/tiny-tokenizer``,
        which every node's local rank 0 builds (when it is not there) while the other ranks wait.
        The files are identical on every build, and each build is written beside the folder and
        renamed into place, so nodes sharing one save folder never see a half-written tokenizer."""
        cfg = self.cfg
        if cfg.model.preset == "tiny":
            from composer.utils import dist

            path = os.path.join(cfg.save_folder, "tiny-tokenizer")
            if dist.get_local_rank() == 0:
                build_tiny_tokenizer_once(path)
            dist.barrier()
            return path
        return cfg.model.tokenizer  # preflight checked that it is set

    def _check_tokenizer(self) -> int:
        """The tokenizer's length, after checking that it is the release's: LLaDA's special
        tokens, the LOC vocabulary (upstream's ``--add_loc_tokens``) as single tokens, and (full
        preset) as many tokens as the model's vocabulary. Raises :class:`ConfigError`."""
        from transformers import AutoTokenizer

        from lavida_data.transforms.tokenizer import TokenIds, TokenizerError

        path, field = self.tokenizer_dir, "model.tokenizer"
        try:
            tok = AutoTokenizer.from_pretrained(path)
            ids = TokenIds.from_tokenizer(tok)
        except (OSError, ValueError, TokenizerError) as e:
            raise ConfigError([Issue(f"cannot use the tokenizer {path}: {e}", field=field)]) from e
        problems = []
        if not ids.loc_ok:
            problems.append("it lacks the LOC tokens (<LOC_0> .. <LOC_1024>, <box_p>, </box_p>, <LOC_BEGIN>, "
                            "<LOC_END>, each one token) that LaViDa-O adds to LLaDA's")
        mcfg = self.cfg.model
        if mcfg.preset != "tiny" and len(tok) != mcfg.vocab_size:
            problems.append(f"it has {len(tok)} tokens and the model's vocabulary (model.vocab_size) is "
                            f"{mcfg.vocab_size}")
        if problems:
            raise ConfigError([Issue(f"the tokenizer {path} is not LaViDa-O's: {'; '.join(problems)}. Use the "
                                     "released model's folder (LLaDA's tokenizer plus the LOC tokens)", field=field)])
        return len(tok)

    def _model(self):
        from .model.lavida import LavidaO

        mcfg = self.cfg.model
        model = LavidaO.from_config(mcfg, vocab_size=self.vocab_size, seed=self.cfg.seed,
                                    anyres_grid=self._anyres_grid())
        if mcfg.checkpoint and not self.cfg.init_from:
            load_checkpoint(model, mcfg.checkpoint, vq=mcfg.checkpoint_vq)
        return mcfg, model

    def _anyres_grid(self) -> list[tuple[int, int]]:
        """LLaVA-NeXT's pinpoints, scaled to the SigLIP input size (384 for the released model)."""
        und = self.cfg.model.siglip.image_size
        return [(w * und // 384, h * und // 384) for w, h in
                [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]]

    def _freeze(self) -> dict[str, list[str]]:
        groups = self.model.param_groups()
        wanted = self.cfg.train.trainable
        names = {n for g in wanted for n in groups[g]}
        for n, p in self.model.named_parameters():
            p.requires_grad = n in names
        return {g: groups[g] for g in wanted}

    def _composer_model(self):
        from .composer_model import LavidaComposerModel

        # upstream's objective ids from the tokenizer: text mask, end-of-text (padding is a target),
        # the infill token (never masked)
        return LavidaComposerModel.for_tokenizer(self.model, self.tokenizer_dir, train=self.cfg.train,
                                                 seed=self.cfg.seed)

    def _optimizer(self) -> torch.optim.Optimizer:
        opt = self.cfg.optimizer
        params = dict(self.composer_model.model.named_parameters())
        groups, taken = [], set()
        # the narrower groups first, so a parameter goes to the most specific group named
        order = sorted(self.trainable, key=lambda g: len(self.trainable[g]))
        for g in order:
            ps = [params[n] for n in self.trainable[g] if n not in taken]
            taken.update(self.trainable[g])
            if ps:
                groups.append({"params": ps, "lr": self.cfg.train.trainable[g], "name": g})
        return torch.optim.AdamW(groups, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay)

    def _scheduler(self):
        from composer.optim import CosineAnnealingWithWarmupScheduler

        s = self.cfg.schedule
        warmup = s.warmup if not str(s.warmup).endswith("%") else f"{float(str(s.warmup)[:-1]) / 100}dur"
        return CosineAnnealingWithWarmupScheduler(t_warmup=warmup, alpha_f=s.alpha_f)

    def _data(self):
        from composer.core import DataSpec

        from lavida_data import build_dataloader, build_dataset, load_mixture

        cfg, m = self.cfg, self.model_cfg
        und = m.siglip.image_size
        grid = self._anyres_grid()
        slots = gen_token_count(cfg.train.image_size, m.vq.downsample)
        process = {
            "image": {"gen_size": cfg.train.image_size, "und_size": und, "anyres_grid": grid,
                      "anyres_pad_base": cfg.data.anyres_pad_base},
            "tokenize": {"tokenizer": self.tokenizer_dir, "max_length": cfg.train.max_length, "gen_tokens": slots,
                         "gen_enc_tokens": slots, "turns": cfg.train.turns, "truncate": "error"},
        }
        plan = self.batch_plan
        # a step of length group g: max(int(B * k * batch_sizes[g]), 1) samples on every rank, run in
        # up to k forward passes
        report = load_mixture(cfg.data.mixture)
        dataset = build_dataset(report, cfg.data.prepared, batch_size=plan.per_device, seed=cfg.seed,
                                process=process, loader=cfg.data.loader)
        loader = build_dataloader(dataset, num_workers=cfg.data.num_workers)
        return DataSpec(loader, get_num_samples_in_batch=num_samples,
                        split_batch=functools.partial(split_step, parts=plan.accumulation))

    # -- train ------------------------------------------------------------------------------
    def trainer_kwargs(self) -> dict[str, Any]:
        """Composer Trainer's arguments for this stage (gradient clipping as an algorithm)."""
        from composer.algorithms import GradientClipping

        from .callbacks import DieAtBatch, MetricsJsonl, ZeroUnusedGrads

        cfg = self.cfg
        gpu = torch.cuda.is_available()
        algorithms = []
        if cfg.optimizer.max_grad_norm is not None:
            algorithms.append(GradientClipping(clipping_type="norm", clipping_threshold=cfg.optimizer.max_grad_norm))
        callbacks = [MetricsJsonl(os.path.join(cfg.save_folder, "metrics.jsonl")), ZeroUnusedGrads()]
        for var, mode in (("LAVIDA_DIE_AT_BATCH", "die"), ("LAVIDA_HANG_AT_BATCH", "hang")):
            if os.environ.get(var):
                callbacks.append(DieAtBatch(int(os.environ[var]), mode=mode))
        return dict(
            model=self.composer_model,
            train_dataloader=self.train_data,
            optimizers=self.optimizer,
            schedulers=self.scheduler,
            max_duration=cfg.max_duration,
            device="gpu" if gpu else "cpu",
            precision=cfg.precision if gpu else "fp32",
            parallelism_config=self.parallelism() if gpu else None,
            device_train_microbatch_size=cfg.device_train_microbatch_size,  # split_step forms the passes
            save_folder=cfg.save_folder,
            save_interval=cfg.save_interval,
            save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
            save_overwrite=not cfg.autoresume,
            autoresume=cfg.autoresume,
            run_name=cfg.stage,
            load_path=cfg.init_from,
            load_weights_only=True,
            load_strict_model_weights=False,
            seed=cfg.seed,
            callbacks=callbacks,
            algorithms=algorithms,
            loggers=[],
            progress_bar=False,
            log_to_console=False,
            spin_dataloaders=False,
        )

    def parallelism(self) -> dict[str, Any] | None:
        """Composer's ``parallelism_config``: the stage's FSDP options, with the frozen VQ-VAE
        left out of FSDP (``ignored_modules``: the objective encodes targets with it outside the
        model's forward; it never trains). The wrap policy and activation checkpointing come
        from :meth:`LavidaO.fsdp_wrap_fn` and :meth:`LavidaO.activation_checkpointing_fn`.
        Without FSDP, several ranks run DDP, with ``find_unused_parameters`` off: the model's
        zero anchor gives every trainable parameter a gradient in every step."""
        par = self.cfg.parallelism
        if not par or not par.get("fsdp"):
            return None
        return {**par, "fsdp": {**par["fsdp"], "ignored_modules": [self.model.vq]}}

    def train(self) -> None:
        from composer import Trainer

        cfg = self.cfg
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
        elif cfg.precision != "fp32" or cfg.parallelism:
            log.warning("no GPU: running in fp32 without FSDP (the stage asks for %s%s)", cfg.precision,
                        ", FSDP" if cfg.parallelism else "")
        self.trainer = Trainer(**self.trainer_kwargs())
        self.trainer.fit()

    def cleanup(self) -> None:
        if self.trainer is not None:
            self.trainer.close()


def die_with_launcher() -> None:
    """A rank started by a launcher (``LOCAL_RANK`` set) is killed when its launcher dies
    (Linux ``PR_SET_PDEATHSIG``), so ``kill -9`` of ``composer`` (or of torchrun) leaves no rank
    training, or waiting in a collective, behind; the same command then resumes."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() == 1:  # the launcher was already gone
        os._exit(1)


def load_checkpoint(model: torch.nn.Module, path: str, vq: str = "auto") -> None:
    """``model.checkpoint`` into ``model``: :func:`lavida_train.checkpoint.load_checkpoint` (the
    released folder of safetensors shards with its index, one file, or a Composer checkpoint;
    the VQ-VAE as ``model.checkpoint_vq`` says); a checkpoint it cannot read is a
    :class:`ConfigError` on ``model.checkpoint``."""
    from .checkpoint import CheckpointError
    from .checkpoint import load_checkpoint as load

    try:
        load(model, path, vq=vq)
    except CheckpointError as e:
        raise ConfigError([Issue(f"model.checkpoint {path}: {e}", field="model.checkpoint")]) from e


def main(argv: Sequence[str] | None = None) -> int:
    from .config import load_stage

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: composer -n N -m lavida_train.train STAGE.yaml [a.b=value ...]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    die_with_launcher()
    try:
        cfg = load_stage(argv[0], argv[1:])
        recipe = Recipe(cfg)
        recipe.setup()
    except ConfigError as e:
        for issue in e.issues:
            print(str(issue if issue.file else dataclasses.replace(issue, file=argv[0])), file=sys.stderr)
        return 2
    try:
        recipe.train()
    finally:
        recipe.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
