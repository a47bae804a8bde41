"""The mixture as training steps, in plain numpy: which samples every global batch holds.

Upstream LaViDa-O (``MultiDatasetBatchSampler``) draws, at every step, ONE length group with
probability ``weight / sum(weights)`` (100 for a group not listed), the same group on every
rank, and takes that step's per-device batch from it: ``max(int(B * factor), 1)`` samples (B the
per-device batch size, ``factor`` the group's ``batch_sizes`` entry, default 1). This module
does the same, deterministically and for any world size or worker count:

* **Selections.** ``first:N``/``end:N`` exact row ranges, ``random:N`` upstream's subset
  (pandas' ``sample(n, random_state=42)`` rows, the same every epoch), ``dup:N`` every selected row N times
  (:func:`plan_streams`). A group's *pool* is the concatenation of its datasets' selections.
* **The group of step s of epoch e** comes from a counter-based generator keyed by (seed, e)
  at counter s: a pure function of (seed, epoch, step), never global state, and the same on
  every rank. Groups are ordered by name (upstream sorts the datasets by length group).
* **Sizes.** A step of group g has ``per_device = max(int(B * factor_g), 1)`` samples per rank
  and ``global = world_size * per_device`` in all.
* **Rows.** Each group's samples of an epoch are a stream of passes over its pool, each pass a
  permutation seeded by (seed, epoch, group, pass): every selected row once per pass (so
  datasets contribute in proportion to their selections), a new order per pass. A step takes
  the next ``global`` entries of its group's stream; rank r takes the r-th contiguous slice.
  (Upstream draws rows uniformly with replacement; a batch that straddles two passes may hold
  one row twice.)
* **Epoch length.** ``steps_per_epoch = epoch samples // (B * world_size)``, the epoch samples
  being the mixture's selected rows (about one pass; upstream's ``len``), or ``epoch_size``;
  ``epoch_steps`` gives it in steps. It does not vary between epochs.
* **Position** of a sample: the sum of the earlier steps' global batches plus its index in its
  step's global batch. For a fixed global batch the steps, groups, samples and positions are the
  same for every world size that divides each group's global batch (``int(B * factor)`` scales
  with B exactly when world_size divides ``int(global B * factor)``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from lavida_data.errors import LavidaDataError
from lavida_data.spec.config import Mixture
from lavida_data.spec.strategy import stable_hash

_GROUP_TAG = 0x67726F7570  # separates the group draws from other uses of (seed, epoch)
_PASS_TAG = 0x70617373


@dataclass(frozen=True)
class StreamPlan:
    """One dataset's selection: ``base`` (kept-row positions of one pass, sorted) x ``repeat``."""

    name: str
    group: str
    kept: int  # prepared rows
    base: np.ndarray | range  # a range when the selection is contiguous (all, first, end, dup)
    repeat: int  # dup factor

    @property
    def natural(self) -> int:
        return len(self.base) * self.repeat

    def rows(self, local: np.ndarray) -> np.ndarray:
        """Kept-row positions of selection entries ``local`` (in ``[0, len(base))``)."""
        if isinstance(self.base, range):
            return self.base.start + local
        return self.base[local]


def _compact(base: np.ndarray) -> np.ndarray | range:
    """A sorted selection as a range when it is contiguous: nothing to copy into each worker."""
    if len(base) and int(base[-1]) - int(base[0]) + 1 == len(base):
        return range(int(base[0]), int(base[-1]) + 1)
    return base


def plan_streams(mixture: Mixture, kept: dict[str, int]) -> list[StreamPlan]:
    """Every dataset's selection, in the mixture's dataset order."""
    out = []
    for spec in mixture.datasets:
        if kept[spec.name] == 0:
            raise LavidaDataError(f"dataset {spec.name!r} has no rows after its filters: nothing to sample")
        base = spec.sampling_strategy.select(kept[spec.name], seed=mixture.seed, dataset=spec.name)
        out.append(StreamPlan(spec.name, spec.length_group, kept[spec.name], _compact(base),
                              spec.sampling_strategy.repeat))
    return out


@dataclass(frozen=True)
class Group:
    name: str
    weight: float
    factor: float
    per_device: int  # max(int(B * factor), 1)
    global_size: int  # world_size * per_device
    streams: tuple[int, ...]  # indices of its datasets in the mixture
    rows: int  # pool size: its selected rows, dup repeats included


@dataclass(frozen=True)
class EpochLayout:
    """Step ``s`` of the epoch: group ``group[s]``, global samples ``[start[s], start[s+1])``,
    entries ``[offset[s], offset[s] + size)`` of its group's stream."""

    epoch: int
    group: np.ndarray  # [steps] group index
    start: np.ndarray  # [steps + 1] global sample offset of each step
    offset: np.ndarray  # [steps] offset in the group's stream

    def step_at(self, samples: int) -> int:
        """The step that begins after ``samples`` samples of the epoch (exact, else an error)."""
        k = int(np.searchsorted(self.start, samples, side="left"))
        if k >= len(self.start) or int(self.start[k]) != samples:
            raise LavidaDataError(f"{samples} samples is not the end of a step of epoch {self.epoch} "
                                  "(was the global batch size changed?)")
        return k


def step_uniforms(seed: int, epoch: int, steps: np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per step: splitmix64 of the step counter, keyed by (seed, epoch)."""
    key = np.random.SeedSequence([seed, epoch, _GROUP_TAG]).generate_state(1, np.uint64)[0]
    x = np.asarray(steps, np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class BatchPlan:
    """The steps of every epoch for one (mixture, seed, per-device batch, world size).

    ``offsets[i]`` is the first sample id of dataset i in the concatenation of the prepared
    datasets (streaming's sample ids). Picklable; its caches are rebuilt in each process.
    """

    def __init__(self, mixture: Mixture, streams: list[StreamPlan], offsets: list[int] | np.ndarray, *, seed: int,
                 batch_size: int, world_size: int = 1, epoch_size: int | None = None,
                 epoch_steps: int | None = None, shuffle: bool = True):
        if batch_size < 1 or world_size < 1:
            raise LavidaDataError(f"batch_size ({batch_size}) and world_size ({world_size}) must be at least 1")
        self.streams = streams
        self.offsets = np.asarray(offsets, np.int64)
        self.seed, self.batch_size, self.world_size, self.shuffle = seed, batch_size, world_size, shuffle
        names = sorted({s.group for s in streams})
        groups = []
        for g in names:
            factor = float(mixture.group_batch_factor(g))
            per_device = max(int(batch_size * factor), 1)
            idx = tuple(i for i, s in enumerate(streams) if s.group == g)
            groups.append(Group(g, float(mixture.group_weight(g)), factor, per_device, world_size * per_device, idx,
                                sum(streams[i].natural for i in idx)))
        self.groups = groups
        w = np.array([g.weight for g in groups], np.float64)
        self.cumulative = np.cumsum(w / w.sum())
        self.cumulative[-1] = 1.0
        self.sizes = np.array([g.global_size for g in groups], np.int64)
        self.natural = sum(s.natural for s in streams)
        if epoch_steps is not None:
            self.steps_per_epoch = int(epoch_steps)
        else:
            self.steps_per_epoch = int(epoch_size if epoch_size is not None else self.natural) // (batch_size * world_size)
        if self.steps_per_epoch < 1:
            raise LavidaDataError(
                f"an epoch of {epoch_size or self.natural} samples holds no step of {batch_size * world_size} "
                f"(per-device batch {batch_size} x world size {world_size}): lower the batch size or set "
                "loader.epoch_steps")
        self._init_caches()

    # -- caches (not pickled) ---------------------------------------------------------------------
    def _init_caches(self) -> None:
        self._lock = threading.Lock()
        self._layouts: OrderedDict = OrderedDict()
        self._perms: OrderedDict = OrderedDict()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for k in ("_lock", "_layouts", "_perms"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_caches()

    # -- the epoch --------------------------------------------------------------------------------
    def step_groups(self, epoch: int, steps: np.ndarray) -> np.ndarray:
        """The group index of each of ``steps`` (a pure function of seed, epoch and step)."""
        u = step_uniforms(self.seed, epoch, steps)
        return np.minimum(np.searchsorted(self.cumulative, u, side="right"), len(self.groups) - 1)

    def layout(self, epoch: int) -> EpochLayout:
        with self._lock:
            if epoch in self._layouts:
                self._layouts.move_to_end(epoch)
                return self._layouts[epoch]
        group = self.step_groups(epoch, np.arange(self.steps_per_epoch, dtype=np.int64))
        size = self.sizes[group]
        start = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
        offset = np.zeros(len(group), np.int64)
        for gi in range(len(self.groups)):
            mask = group == gi
            offset[mask] = np.cumsum(size[mask]) - size[mask]
        out = EpochLayout(epoch, group, start, offset)
        with self._lock:
            self._layouts[epoch] = out
            while len(self._layouts) > 2:
                self._layouts.popitem(last=False)
        return out

    def entries(self, gi: int, index: np.ndarray) -> np.ndarray:
        """Entries ``index`` of group ``gi``'s pool (its datasets' selections one after the other,
        each ``dup`` repeat in turn) as sample ids, computed without building the pool."""
        members = self.groups[gi].streams
        sizes = np.array([self.streams[i].natural for i in members], np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        which = np.searchsorted(starts, index, side="right") - 1
        out = np.empty(len(index), np.int64)
        for j, i in enumerate(members):
            mask = which == j
            if mask.any():
                stream = self.streams[i]
                out[mask] = self.offsets[i] + stream.rows((index[mask] - starts[j]) % len(stream.base))
        return out

    def _order(self, epoch: int, gi: int, p: int) -> np.ndarray | None:
        """Pass ``p`` of group ``gi``'s stream as indices into its pool (None: the pool's order)."""
        if not self.shuffle:
            return None
        key = (epoch, gi, p)
        with self._lock:
            if key in self._perms:
                self._perms.move_to_end(key)
                return self._perms[key]
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [self.seed, epoch, stable_hash(self.groups[gi].name), p, _PASS_TAG])))
        n = self.groups[gi].rows
        perm = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)  # half the memory of permutation(n)
        rng.shuffle(perm)
        with self._lock:
            self._perms[key] = perm
            while len(self._perms) > 2 * len(self.groups) + 2:
                self._perms.popitem(last=False)
        return perm

    def group_entries(self, epoch: int, gi: int, begin: int, count: int) -> np.ndarray:
        """Entries ``[begin, begin + count)`` of group ``gi``'s stream, as sample ids."""
        n = self.groups[gi].rows
        index, k = [], begin
        while k < begin + count:
            p, i = divmod(k, n)
            take = min(n - i, begin + count - k)
            order = self._order(epoch, gi, p)
            index.append(np.arange(i, i + take, dtype=np.int64) if order is None else order[i: i + take])
            k += take
        if not index:
            return np.zeros(0, np.int64)
        return self.entries(gi, np.concatenate(index).astype(np.int64))

    def global_batch(self, epoch: int, step: int) -> tuple[int, np.ndarray, int]:
        """(group index, sample ids of the step's global batch, position of its first sample)."""
        lay = self.layout(epoch)
        gi = int(lay.group[step])
        return gi, self.group_entries(epoch, gi, int(lay.offset[step]), int(self.sizes[gi])), int(lay.start[step])

    def rank_batch(self, epoch: int, step: int, rank: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(group index, sample ids, positions) of ``rank``'s share of the step."""
        lay = self.layout(epoch)
        gi = int(lay.group[step])
        per = self.groups[gi].per_device
        ids = self.group_entries(epoch, gi, int(lay.offset[step]) + rank * per, per)
        first = int(lay.start[step]) + rank * per
        return gi, ids, np.arange(first, first + per, dtype=np.int64)

    def stream_of(self, sample_ids: np.ndarray) -> np.ndarray:
        """The dataset index of each sample id."""
        return np.searchsorted(self.offsets, sample_ids, side="right") - 1
