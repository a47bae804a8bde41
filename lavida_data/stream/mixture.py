"""The epoch's mixture, as plain numpy: which kept rows of each dataset an epoch holds.

* ``first:N``/``end:N``: exact row ranges; ``random:N``: a subset fixed by the mixture's seed
  (the same rows every epoch, as upstream); ``dup:N``: every selected row N times.
* Without ``weights`` every dataset contributes its selection (the concatenation upstream
  samples uniformly). With ``weights``, each length group's share of the epoch is its weight
  over the sum of the weights of the groups in use (100 for a group not listed), as upstream's
  per-step group draw gives in expectation; within a group, datasets keep the ratio of their
  selections. A dataset whose share exceeds its selection repeats it; the rows of a partial
  repeat are drawn per epoch from (seed, epoch, dataset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Mixture
from ..strategy import stable_hash


@dataclass(frozen=True)
class StreamPlan:
    name: str
    group: str
    kept: int  # prepared rows
    base: np.ndarray  # selected positions of one pass (before dup), sorted
    repeat: int  # dup factor
    count: int  # samples per epoch

    @property
    def natural(self) -> int:
        return len(self.base) * self.repeat


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` that sum to ``total`` exactly."""
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), np.int64)
    exact = weights / weights.sum() * total
    out = np.floor(exact).astype(np.int64)
    short = total - int(out.sum())
    order = np.argsort(-(exact - out), kind="stable")
    out[order[:short]] += 1
    return out


def plan_streams(mixture: Mixture, kept: dict[str, int], *, epoch_size: int | None = None) -> list[StreamPlan]:
    """Per-dataset selections and per-epoch counts, in the mixture's dataset order."""
    specs = mixture.datasets
    bases, naturals = [], []
    for spec in specs:
        if kept[spec.name] == 0:
            raise ValueError(f"dataset {spec.name!r} has no rows after its filters: nothing to sample")
        base = spec.sampling_strategy.select(kept[spec.name], seed=mixture.seed, dataset=spec.name)
        bases.append(base)
        naturals.append(len(base) * spec.sampling_strategy.repeat)
    naturals_arr = np.array(naturals, np.int64)
    total = int(epoch_size if epoch_size is not None else naturals_arr.sum())
    if not mixture.weights:
        counts = naturals_arr if epoch_size is None else _largest_remainder(total, naturals_arr.astype(float))
    else:
        groups = list(dict.fromkeys(s.length_group for s in specs))
        group_w = np.array([mixture.group_weight(g) for g in groups], float)
        per_group = _largest_remainder(total, group_w)
        counts = np.zeros(len(specs), np.int64)
        for g, n in zip(groups, per_group):
            idx = [i for i, s in enumerate(specs) if s.length_group == g]
            counts[idx] = _largest_remainder(int(n), naturals_arr[idx].astype(float))
    return [
        StreamPlan(s.name, s.length_group, kept[s.name], b, s.sampling_strategy.repeat, int(c))
        for s, b, c in zip(specs, bases, counts)
    ]


def epoch_positions(plan: StreamPlan, seed: int, epoch: int) -> list[np.ndarray]:
    """The kept-row positions of one epoch, as sorted runs (one per pass over the selection)."""
    n = len(plan.base)
    full, rest = divmod(plan.count, n)
    runs = [plan.base] * full
    if rest:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, stable_hash(plan.name)])))
        runs.append(np.sort(plan.base[rng.choice(n, rest, replace=False)]))
    return runs


def resample(plans: list[StreamPlan], shard_sizes: list[list[int]], seed: int, epoch: int,
             stream_offsets: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """streaming's (shuffle units, sample ids) for one epoch of the mixture.

    Sample ids index the concatenation of every stream's shards; shuffle units are the runs of
    consecutive ids that come from one shard (streaming keeps them together while shuffling).
    """
    units, ids = [], []
    offset = 0
    for i, (plan, sizes) in enumerate(zip(plans, shard_sizes)):
        if stream_offsets is not None:
            offset = stream_offsets[i]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        for run in epoch_positions(plan, seed, epoch):
            ids.append(offset + run)
            per_shard = np.bincount(np.searchsorted(starts, run, side="right") - 1, minlength=len(sizes))
            units.append(per_shard[per_shard > 0])
        offset += int(sum(sizes))
    return np.concatenate(units).astype(np.int64), np.concatenate(ids).astype(np.int64)
