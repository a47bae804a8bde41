"""Train one LaViDa-O stage: ``composer -n N -m lavida_train.train STAGE.yaml [a.b=value ...]``.

A recipe that reads top to bottom: ``setup`` (stage file, tokenizer, model, trainable groups,
optimizer, schedule, data), ``train`` (Composer's Trainer), ``cleanup``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Sequence

import torch

log = logging.getLogger("lavida_train")

GROUPS = ("vision_tower", "projector", "resampler", "language_model", "generation_branch")


def gen_tokens(image_size: int, downsample: int) -> int:
    """Sequence slots of one generated image: the VQ grid, merged 2x2 past 32x32 (1024 px)."""
    side = image_size // downsample
    return (side // 2) ** 2 if side > 32 else side * side


class Recipe:
    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.trainer = None

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self._init_dist()
        self.tokenizer_dir = self._tokenizer()
        self.model_cfg, self.model = self._model()
        self.trainable = self._freeze()
        self.composer_model = self._composer_model()
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self.train_data = self._data()

    @staticmethod
    def _init_dist() -> None:
        """With several ranks, the process group before setup's barriers and the loader (which
        the Trainer would only create later; its own call then finds it ready)."""
        from composer.utils import dist

        if dist.get_world_size() > 1:
            dist.initialize_dist("gpu" if torch.cuda.is_available() else "cpu")

    def _tokenizer(self) -> str:
        cfg = self.cfg
        if cfg.model.preset == "tiny":
            from composer.utils import dist

            from lavida_data.tokenizer import build_tiny_tokenizer

            path = os.path.join(cfg.save_folder, "tiny-tokenizer")
            if dist.get_local_rank() == 0 and not os.path.exists(os.path.join(path, "tokenizer.json")):
                build_tiny_tokenizer(path)
            dist.barrier()
            return path
        if not cfg.model.tokenizer:
            raise ValueError("model.tokenizer must name the LLaDA tokenizer folder (or use model.preset=tiny)")
        return cfg.model.tokenizer

    def _model(self):
        from transformers import AutoTokenizer

        from .model.lavida import LavidaO
        from .model.mapping import load_reference_state_dict

        vocab = len(AutoTokenizer.from_pretrained(self.tokenizer_dir))
        mcfg = self.cfg.model
        model = LavidaO.from_config(mcfg, vocab_size=vocab, seed=self.cfg.seed, anyres_grid=self._anyres_grid())
        if mcfg.checkpoint and not self.cfg.init_from:
            state = torch.load(mcfg.checkpoint, map_location="cpu", weights_only=True)
            load_reference_state_dict(model, state, strict=True)
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
        from lavida_data.transforms.tokenize import load_tokenizer

        from .composer_model import LavidaComposerModel

        _, ids = load_tokenizer(self.tokenizer_dir)
        return LavidaComposerModel(self.model, text_mask_id=ids.mask, train=self.cfg.train, seed=self.cfg.seed)

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

        from lavida_data import build_dataloader, build_dataset

        cfg, m = self.cfg, self.model_cfg
        und = m.siglip.image_size
        grid = self._anyres_grid()
        slots = gen_tokens(cfg.train.image_size, m.vq.downsample)
        process = {
            "image": {"gen_size": cfg.train.image_size, "und_size": und, "anyres_grid": grid},
            "tokenize": {"tokenizer": self.tokenizer_dir, "max_length": cfg.train.max_length, "gen_tokens": slots,
                         "gen_enc_tokens": slots, "turns": cfg.train.turns, "truncate": "error"},
        }
        from composer.utils import dist

        world = dist.get_world_size()
        if cfg.global_train_batch_size % world:
            raise ValueError(f"global_train_batch_size {cfg.global_train_batch_size} is not divisible by the world "
                             f"size {world}")
        per_device = cfg.global_train_batch_size // world
        if cfg.device_train_microbatch_size < per_device:
            raise ValueError(
                f"device_train_microbatch_size ({cfg.device_train_microbatch_size}) is below the per-device batch "
                f"({per_device} = global_train_batch_size / world size): a step's batch is one forward pass, as "
                "upstream's (no gradient accumulation)")
        # a step of length group g: max(int(per_device * batch_sizes[g]), 1) samples on every rank
        dataset = build_dataset(cfg.data.mixture, cfg.data.prepared, batch_size=per_device, seed=cfg.seed,
                                process=process, loader=cfg.data.loader)
        loader = build_dataloader(dataset, num_workers=cfg.data.num_workers)
        return DataSpec(loader, get_num_samples_in_batch=lambda b: len(b["ids"]) + len(b["skipped"]),
                        split_batch=_one_micro_batch)

    # -- train ------------------------------------------------------------------------------
    def train(self) -> None:
        from composer import Trainer

        from .callbacks import DieAtBatch, MetricsJsonl, ZeroUnusedGrads

        cfg = self.cfg
        gpu = torch.cuda.is_available()
        callbacks = [MetricsJsonl(os.path.join(cfg.save_folder, "metrics.jsonl")), ZeroUnusedGrads()]
        if os.environ.get("LAVIDA_DIE_AT_BATCH"):
            callbacks.append(DieAtBatch(int(os.environ["LAVIDA_DIE_AT_BATCH"])))
        if not gpu and (cfg.precision != "fp32" or cfg.parallelism):
            log.warning("no GPU: running in fp32 without FSDP (the stage asks for %s%s)", cfg.precision,
                        ", FSDP" if cfg.parallelism else "")
        self.trainer = Trainer(
            model=self.composer_model,
            train_dataloader=self.train_data,
            optimizers=self.optimizer,
            schedulers=self.scheduler,
            max_duration=cfg.max_duration,
            device="gpu" if gpu else "cpu",
            precision=cfg.precision if gpu else "fp32",
            parallelism_config=cfg.parallelism if gpu else None,
            device_train_microbatch_size=cfg.device_train_microbatch_size,
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
            loggers=[],
            progress_bar=False,
            log_to_console=False,
            spin_dataloaders=False,
        )
        self.trainer.fit()

    def cleanup(self) -> None:
        if self.trainer is not None:
            self.trainer.close()


def _one_micro_batch(batch: Any, microbatch_size: int) -> list:
    """A step's batch is one micro-batch, whatever its length group's size (upstream runs each
    step's batch in one forward pass). Every rank has as many samples (kept + skipped) in a step,
    so Composer's scaling (micro-batch samples / mean samples per rank) is 1 and the loss stays
    the batch's own mean, as upstream's."""
    return [batch]


def main(argv: Sequence[str] | None = None) -> int:
    from .config import load_stage

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: composer -n N -m lavida_train.train STAGE.yaml [a.b=value ...]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_stage(argv[0], argv[1:])
    recipe = Recipe(cfg)
    recipe.setup()
    try:
        recipe.train()
    finally:
        recipe.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
