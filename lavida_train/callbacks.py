"""Training callbacks: one JSON line per batch, so a loss spike can be traced to its samples."""

from __future__ import annotations

import json
import os
import signal

import torch

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist


LOSSES = ("loss", "text_loss", "image_loss", "mask_ratio")


def _last(model) -> dict:
    """The Composer model's ``last`` (its last forward pass's losses and ids), through wrappers."""
    return getattr(model, "last", None) or getattr(getattr(model, "module", None), "last", None) or {}


def merge_passes(parts: list[dict]) -> dict:
    """One step's record from its forward passes' ``last``: sample ids and skipped samples
    concatenated; losses averaged with each pass weighted by its samples (kept + skipped), as
    Composer weights their gradients."""
    if not parts:
        return {}
    weights = [len(p.get("sample_ids") or []) + len(p.get("skipped") or []) for p in parts]
    out = {"group": parts[0].get("group"), "passes": len(parts),
           "sample_ids": [i for p in parts for i in p.get("sample_ids") or []],
           "skipped": [s for p in parts for s in p.get("skipped") or []]}
    for k in LOSSES:
        vals = [(w, p[k]) for w, p in zip(weights, parts) if p.get(k) is not None]
        out[k] = sum(w * v for w, v in vals) / max(sum(w for w, _ in vals), 1) if vals else None
    return out


class MetricsJsonl(Callback):
    """Appends ``{batch, epoch, group, passes, loss, text_loss, image_loss, mask_ratio, lr,
    sample_ids, skipped}`` to ``{save_folder}/metrics.jsonl`` after every batch (``group``: the
    step's length group; ``passes``: its forward passes on rank 0; sample ids of every rank, in
    rank order; rank 0 writes). With gradient accumulation a step's forward passes are merged
    (:func:`merge_passes`).
    A resumed run appends after the last checkpointed batch, dropping lines of batches that the
    resume replays."""

    def __init__(self, path: str):
        self.path = path
        self._parts: list[dict] = []

    def fit_start(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0 or not os.path.exists(self.path):
            return
        done = int(state.timestamp.batch)
        with open(self.path, encoding="utf-8") as f:
            kept = [line for line in f if line.strip() and json.loads(line)["batch"] <= done]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(kept)

    def batch_start(self, state: State, logger: Logger) -> None:
        self._parts = []

    def after_loss(self, state: State, logger: Logger) -> None:
        self._parts.append(dict(_last(state.model)))

    def batch_end(self, state: State, logger: Logger) -> None:
        last = merge_passes(self._parts) if self._parts else _last(state.model)
        self._parts = []
        ids = dist.all_gather_object(last.get("sample_ids", []))
        skipped = dist.all_gather_object(last.get("skipped", []))
        losses = dist.all_gather_object({k: last.get(k) for k in LOSSES})
        if dist.get_global_rank() != 0:
            return
        line = {"batch": int(state.timestamp.batch), "epoch": int(state.timestamp.epoch), "group": last.get("group"),
                "passes": last.get("passes", 1)}
        for k in LOSSES:
            vals = [x[k] for x in losses if x.get(k) is not None]
            line[k] = sum(vals) / len(vals) if vals else None
        line["lr"] = [g["lr"] for g in state.optimizers[0].param_groups] if state.optimizers else None
        line["sample_ids"] = [i for rank in ids for i in rank]
        line["skipped"] = [s for rank in skipped for s in rank]
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        logger.log_metrics({f"train/{k}": v for k, v in line.items() if isinstance(v, float)})


class DieAtBatch(Callback):
    """Test hook: SIGKILL this process at the end of a batch (``LAVIDA_DIE_AT_BATCH``), as a node
    failure would, to prove that autoresume continues exactly."""

    def __init__(self, batch: int):
        self.batch = batch

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch) == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class ZeroUnusedGrads(Callback):
    """Give every trainable parameter a gradient each step (zeros when the batch did not use it:
    an up-sampling layer at 256 px, the vision path in a batch without understanding images), so
    the optimizer holds state for every parameter and checkpoints load back exactly."""

    def after_backward(self, state: State, logger: Logger) -> None:
        for p in state.model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
