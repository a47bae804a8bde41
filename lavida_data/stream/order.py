"""The global sample order of a prepared mixture, computed without decoding a sample.

It replays what :class:`MixtureDataset` does in its workers (the mixture's resampling, then
streaming's partition and shuffle) for a given global batch size and world size, and lists each
global batch's sample ids in canonical order (by sample id), so that global batch ``i`` is
entries ``[i*B, (i+1)*B)`` whatever the world size.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..config import Mixture
from ..errors import LavidaDataError
from ..plan import DatasetPlan
from ..shards import join, read_rows, shard_sizes
from .mixture import plan_streams, resample


def global_order(mixture: Mixture, plans: Mapping[str, DatasetPlan], prepared: str, *, batch_size: int,
                 world_size: int = 1, workers: int = 1, seed: int | None = None, epoch: int = 0,
                 config=None) -> list[str]:
    """Every sample id (``<dataset>:<row>``) of one epoch, in training order."""
    from streaming.base.partition import get_partitions
    from streaming.base.shuffle import get_shuffle

    from .dataset import LoaderConfig, canonical_nodes, prepared_counts

    cfg = config or LoaderConfig()
    seed = mixture.seed if seed is None else seed
    if batch_size % world_size:
        raise LavidaDataError(f"the global batch size {batch_size} is not divisible by the world size {world_size}")
    streams = plan_streams(mixture, prepared_counts(mixture, plans, prepared), epoch_size=cfg.epoch_size)
    sizes = [shard_sizes(join(prepared, p.name)) for p in streams]
    units, small_per_big = resample(streams, sizes, seed, epoch)
    epoch_size = int(sum(p.count for p in streams))
    ncn = canonical_nodes(cfg, epoch_size)
    big = get_partitions(cfg.partition_algo, epoch_size, ncn, 1, world_size, workers,
                         batch_size // world_size, 0)
    if cfg.shuffle:
        block = cfg.shuffle_block_size or max(4_000_000 // ncn, 1 << 18)
        shuffle = get_shuffle(cfg.shuffle_algo, units, ncn, seed, epoch, block)
        big = np.where(big != -1, shuffle[big], -1)
    work = np.where(big != -1, small_per_big[big], -1)
    nodes, ranks, wk, batches, size = work.shape
    content = work.transpose(3, 2, 0, 1, 4).reshape(batches * wk, nodes * ranks * size)
    content = np.sort(np.where(content < 0, np.iinfo(np.int64).max, content), axis=-1).reshape(-1)
    ids = content[content != np.iinfo(np.int64).max]
    offsets = np.concatenate([[0], np.cumsum([sum(s) for s in sizes])])
    stream = np.searchsorted(offsets, ids, side="right") - 1
    rows = [read_rows(join(prepared, p.name)) for p in streams]
    return [f"{streams[s].name}:{int(rows[s][i - offsets[s]])}" for s, i in zip(stream.tolist(), ids.tolist())]
