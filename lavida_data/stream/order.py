"""The training order of a prepared mixture, computed without decoding a sample.

It builds the same :class:`~.mixture.BatchPlan` as :class:`~.dataset.MixtureDataset` (from the
manifests and the MDS indexes alone) and lists each step's global batch: its group and the ids
(``<dataset>:<row>``) in order, rank r's share being the r-th contiguous slice. The flat order is
the concatenation of the steps' global batches: the index of a sample in it is its *position*.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lavida_data.prepared.check import prepared_counts
from lavida_data.prepared.layout import join, read_rows, shard_sizes
from lavida_data.spec.config import Mixture
from lavida_data.spec.plan import DatasetPlan
from lavida_data.stream.mixture import BatchPlan, plan_streams


def batch_plan(mixture: Mixture, plans: Mapping[str, DatasetPlan], prepared: str, *, batch_size: int,
               world_size: int = 1, seed: int | None = None, config=None) -> BatchPlan:
    """The plan a loader of per-device ``batch_size`` on ``world_size`` ranks follows."""
    from lavida_data.stream.dataset import LoaderConfig

    cfg = config or LoaderConfig()
    if not isinstance(cfg, LoaderConfig):
        cfg = LoaderConfig.model_validate(cfg)
    streams = plan_streams(mixture, prepared_counts(mixture, plans, prepared))
    counts = [sum(shard_sizes(join(prepared, p.name))) for p in streams]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return BatchPlan(mixture, streams, offsets, seed=mixture.seed if seed is None else seed, batch_size=batch_size,
                     world_size=world_size, epoch_size=cfg.epoch_size, epoch_steps=cfg.epoch_steps,
                     shuffle=cfg.shuffle)


def global_batches(mixture: Mixture, plans: Mapping[str, DatasetPlan], prepared: str, *, batch_size: int,
                   world_size: int = 1, seed: int | None = None, epoch: int = 0, config=None, start: int = 0,
                   steps: int | None = None) -> list[dict[str, Any]]:
    """Steps ``[start, start + steps)`` of an epoch (default: to its end) as ``{"step", "group",
    "ids"}``, ``ids`` the step's global batch in order. ``batch_size`` is per device."""
    plan = batch_plan(mixture, plans, prepared, batch_size=batch_size, world_size=world_size, seed=seed,
                      config=config)
    stop = plan.steps_per_epoch if steps is None else min(plan.steps_per_epoch, start + steps)
    rows = [read_rows(join(prepared, p.name)) for p in plan.streams]
    out = []
    for step in range(start, stop):
        gi, ids, _ = plan.global_batch(epoch, step)
        stream = plan.stream_of(ids)
        names = [f"{plan.streams[s].name}:{int(rows[s][i - plan.offsets[s]])}"
                 for s, i in zip(stream.tolist(), ids.tolist())]
        out.append({"step": step, "group": plan.groups[gi].name, "ids": names})
    return out


def global_order(mixture: Mixture, plans: Mapping[str, DatasetPlan], prepared: str, *, batch_size: int,
                 world_size: int = 1, workers: int = 1, seed: int | None = None, epoch: int = 0,
                 config=None) -> list[str]:
    """Every sample id (``<dataset>:<row>``) of one epoch, in training order (index = position).

    ``batch_size`` is per device; the order does not depend on ``workers`` (kept for callers)."""
    del workers
    return [i for b in global_batches(mixture, plans, prepared, batch_size=batch_size, world_size=world_size,
                                      seed=seed, epoch=epoch, config=config) for i in b["ids"]]
