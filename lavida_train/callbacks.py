"""Training callbacks: one JSON line per batch, so a loss spike can be traced to its samples."""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

log = logging.getLogger("lavida_train")
LOSSES = ("loss", "text_loss", "image_loss", "mask_ratio")


def _last(model) -> dict:
    """The Composer model's ``last`` (its last forward pass's losses and ids), through wrappers."""
    return getattr(model, "last", None) or getattr(getattr(model, "module", None), "last", None) or {}


def merge_passes(parts: list[dict]) -> dict:
    """One step's record from its forward passes' ``last`` (or from the ranks' records, in rank
    order): sample ids and skipped samples concatenated; losses averaged with each part weighted
    by its samples (kept + skipped), as Composer weights their gradients (DDP then averages the
    ranks' gradients, each rank's already scaled by its samples over the mean per rank)."""
    if not parts:
        return {}
    weights = [len(p.get("sample_ids") or []) + len(p.get("skipped") or []) for p in parts]
    out = {"group": parts[0].get("group"), "passes": sum(p.get("passes", 1) for p in parts),
           "sample_ids": [i for p in parts for i in p.get("sample_ids") or []],
           "skipped": [s for p in parts for s in p.get("skipped") or []]}
    for k in LOSSES:
        vals = [(w, p[k]) for w, p in zip(weights, parts) if p.get(k) is not None]
        out[k] = sum(w * v for w, v in vals) / max(sum(w for w, _ in vals), 1) if vals else None
    return out


def grad_norm(model: torch.nn.Module, sharded: bool = False) -> float:
    """The L2 norm of the gradient of every trainable parameter, before clipping: DDP's
    gradients are the same on every rank after its all-reduce; FSDP's are shards, whose squared
    norms are summed over the ranks."""
    total = None
    for p in model.parameters():
        if p.grad is not None and p.grad.numel():
            sq = p.grad.detach().float().pow(2).sum()
            total = sq if total is None else total + sq
    if total is None:
        total = torch.zeros((), device=next(model.parameters()).device)
    if sharded and dist.get_world_size() > 1:
        dist.all_reduce(total, reduce_operation="SUM")
    return float(total.sqrt())


class MetricsJsonl(Callback):
    """Appends ``{batch, epoch, group, passes, loss, text_loss, image_loss, mask_ratio, grad_norm,
    lr, sample_ids, skipped}`` to ``{save_folder}/metrics.jsonl`` after every batch (``group``: the
    step's length group; ``passes``: its forward passes over all ranks; ``sample_ids`` and
    ``skipped``: the whole global batch's, rank after rank, which is the global batch's order;
    ``grad_norm``: the gradient's norm before clipping). Rank 0 writes. A step's forward passes,
    then the ranks' records, are merged by :func:`merge_passes` (losses weighted by samples, as
    Composer weights the gradients), so the line of a step is the same for any number of ranks
    that splits it into the same forward passes.
    A resumed run appends after the last checkpointed batch, dropping lines of batches that the
    resume replays."""

    def __init__(self, path: str):
        self.path = path
        self._parts: list[dict] = []

    def fit_start(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0 or not os.path.exists(self.path):
            return
        done = int(state.timestamp.batch)
        log.info("metrics: %s continuing after batch %d", self.path, done)
        with open(self.path, encoding="utf-8") as f:
            kept = [line for line in f if line.strip() and json.loads(line)["batch"] <= done]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(kept)

    def batch_start(self, state: State, logger: Logger) -> None:
        self._parts = []
        self._grad_norm = None

    def after_loss(self, state: State, logger: Logger) -> None:
        self._parts.append(dict(_last(state.model)))

    def after_backward(self, state: State, logger: Logger) -> None:
        # after the last pass's backward the gradient is complete (and reduced): keep the last
        self._grad_norm = grad_norm(state.model, sharded=state.fsdp_enabled)

    def batch_end(self, state: State, logger: Logger) -> None:
        mine = merge_passes(self._parts) if self._parts else dict(_last(state.model))
        self._parts = []
        ranks = dist.all_gather_object({k: mine.get(k) for k in ("group", "passes", "sample_ids", "skipped", *LOSSES)})
        if dist.get_global_rank() != 0:
            return
        last = merge_passes(ranks)
        line = {"batch": int(state.timestamp.batch), "epoch": int(state.timestamp.epoch), "group": last.get("group"),
                "passes": last.get("passes", 1)}
        for k in LOSSES:
            line[k] = last.get(k)
        line["grad_norm"] = self._grad_norm
        line["lr"] = [g["lr"] for g in state.optimizers[0].param_groups] if state.optimizers else None
        line["sample_ids"] = last["sample_ids"]
        line["skipped"] = last["skipped"]
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        logger.log_metrics({f"train/{k}": v for k, v in line.items() if isinstance(v, float)})


class DieAtBatch(Callback):
    """Test hook, at the end of batch ``batch`` (after its metrics line, before Composer's
    checkpoint saver, which runs last): ``die`` (``LAVIDA_DIE_AT_BATCH``) SIGKILLs this process,
    as a node failure would; ``hang`` (``LAVIDA_HANG_AT_BATCH``) stops every rank there for good,
    so that a test can ``kill -9`` the launcher at a known place mid-run."""

    def __init__(self, batch: int, mode: str = "die"):
        if mode not in ("die", "hang"):
            raise ValueError(f"mode must be 'die' or 'hang', not {mode!r}")
        self.batch, self.mode = batch, mode

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch) != self.batch:
            return
        if self.mode == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        while True:  # until the launcher is killed (the ranks die with it)
            time.sleep(1)


class ZeroUnusedGrads(Callback):
    """Give every trainable parameter a gradient each step, so that the optimizer holds state
    for every parameter and checkpoints load back exactly. The model's zero anchor already does
    (a zero gradient for what the batch did not use: an up-sampling layer at 256 px, the vision
    path in a batch without understanding images), on every rank; this is the safety net of one
    process. Under FSDP gradients are FSDP's own shards and are left alone."""

    def after_backward(self, state: State, logger: Logger) -> None:
        if state.fsdp_enabled:
            return
        for p in state.model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
