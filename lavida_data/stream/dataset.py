"""One ``StreamingDataset`` over a prepared mixture: exact selections, weighted proportions,
a deterministic global order and exact mid-epoch resumption.

On top of streaming's partitioning, shuffling, downloading and resumption this class:

* replaces streaming's per-stream resampling with the mixture's own (``random:N`` is a fixed
  subset; ``first``/``end`` exact ranges; weights give group shares; see :mod:`.mixture`);
* gives each sample its place in training, ``position`` = global batch x global batch size +
  its rank among the sample ids of that global batch, which is the same for any number of
  workers or ranks, and seeds every random choice of the sample from (seed, epoch, position);
* processes each sample in the worker; a bad one is yielded as ``{"bad": True, ...}`` so every
  rank keeps its batch layout (collation drops it and reports it), and counted per dataset and
  reason; a dataset whose bad fraction passes ``max_bad_fraction`` stops the run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import Counter
from typing import Any, Iterator, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import s3
from ..config import Mixture
from ..errors import LavidaDataError, SampleError
from ..plan import DatasetPlan
from ..shards import join, read_manifest
from .mixture import StreamPlan, plan_streams, resample
from .process import SampleProcessor
from .shm import clean_stale_shared_memory

try:
    from streaming import StreamingDataset, Stream
except ImportError as e:  # pragma: no cover
    from ..errors import MissingDependencyError

    raise MissingDependencyError("mosaicml-streaming is needed to stream: pip install lavida-data") from e


class LoaderConfig(BaseModel):
    """Loader settings; the defaults suit most runs."""

    model_config = ConfigDict(extra="forbid")

    shuffle: bool = True
    num_canonical_nodes: int | None = Field(
        None, ge=1, description="the global order depends on it, not on the world size; default: "
        "canonical_nodes(epoch size), 64 for all but small mixtures")
    shuffle_algo: str = "py1e"
    shuffle_block_size: int | None = Field(None, ge=1)
    partition_algo: str = "orig"
    epoch_size: int | None = Field(None, ge=1, description="samples per epoch; default: the mixture's natural size")
    predownload: int | None = Field(
        None, ge=1, description="samples made ready ahead; default max(8 x batch, 1024): a ready "
        "thread that falls behind makes the sample loop sleep")
    cache_limit: str | None = None
    cache_dir: str | None = None
    max_bad_fraction: float = Field(0.05, ge=0, le=1)
    min_samples_for_bad_check: int = Field(200, ge=1)


def canonical_nodes(cfg: LoaderConfig, epoch_size: int) -> int:
    """``num_canonical_nodes``: as configured, else 64, fewer (a power of two) for small epochs so
    that each canonical node holds at least 256 samples."""
    if cfg.num_canonical_nodes is not None:
        return cfg.num_canonical_nodes
    n = 64
    while n > 1 and epoch_size < n * 256:
        n //= 2
    return n


def job_key() -> str:
    """Same for every rank of one job, different for two jobs on one machine."""
    explicit = os.environ.get("LAVIDA_JOB")
    if explicit:
        return explicit
    if os.environ.get("MASTER_PORT"):
        return f"{os.environ.get('MASTER_ADDR', 'local')}-{os.environ['MASTER_PORT']}"
    return f"pid{os.getpid()}"


def _stream_dirs(prepared: str, name: str, cache_dir: str | None) -> tuple[str | None, str]:
    """(remote, local) for streaming; local dirs are per job so two jobs never share one."""
    root = cache_dir or os.environ.get("LAVIDA_CACHE") or os.path.join(tempfile.gettempdir(), "lavida-cache")
    base = os.path.join(root, job_key(), hashlib.blake2b(prepared.encode(), digest_size=6).hexdigest())
    os.makedirs(base, exist_ok=True)
    local = os.path.join(base, name)
    if s3.is_s3(prepared):
        return join(prepared, name), local
    target = os.path.abspath(join(prepared, name))
    if not os.path.islink(local) or os.readlink(local) != target:
        if os.path.lexists(local):
            os.unlink(local)
        os.symlink(target, local)
    return None, local


def prepared_counts(mixture: Mixture, plans: Mapping[str, DatasetPlan], prepared: str) -> dict[str, int]:
    """Kept rows per dataset, from the manifests; refuses missing or out-of-date preparations."""
    return {name: int(m["rows_kept"]) for name, m in prepared_manifests(mixture, plans, prepared).items()}


def prepared_manifests(mixture: Mixture, plans: Mapping[str, DatasetPlan], prepared: str) -> dict[str, dict]:
    """Each dataset's manifest; refuses missing or out-of-date preparations."""
    from ..prepare import fingerprint
    from ..tables import read_schema

    out = {}
    for spec in mixture.datasets:
        folder = join(prepared, spec.name)
        manifest = read_manifest(folder)
        if manifest is None:
            raise LavidaDataError(f"dataset {spec.name!r} is not prepared in {prepared}: run `lavida-data prepare`")
        plan = plans[spec.name]
        digest, _ = fingerprint(plan, read_schema(plan.table), manifest["embed_images"], _shard_size(folder))
        if digest != manifest["fingerprint"]:
            raise LavidaDataError(
                f"dataset {spec.name!r} changed since it was prepared (source, columns or filters): "
                f"run `lavida-data prepare` again"
            )
        out[spec.name] = manifest
    return out


def _shard_size(folder: str) -> int:
    import json

    from ..shards import INDEX, read_text

    index = json.loads(read_text(join(folder, INDEX)) or '{"shards": []}')
    return int(index["shards"][0]["size_limit"]) if index["shards"] else 64 << 20


class MixtureDataset(StreamingDataset):
    """The mixture's prepared datasets as one deterministic, resumable StreamingDataset."""

    def __init__(self, mixture: Mixture, plans: Mapping[str, DatasetPlan], prepared: str, *, batch_size: int,
                 processor: SampleProcessor | None = None, seed: int | None = None,
                 config: LoaderConfig | None = None):
        cfg = config or LoaderConfig()
        if any(f != 1 for f in mixture.batch_sizes.values()):
            raise LavidaDataError(
                "batch_sizes factors need batches of one length group with their own size; this loader builds "
                f"fixed-size mixed batches and will not ignore them: {mixture.batch_sizes}. Remove `batch_sizes` "
                "(or set every factor to 1) to stream this mixture."
            )
        if s3.is_s3(prepared) and not os.environ.get("S3_ENDPOINT_URL") and os.environ.get("AWS_ENDPOINT_URL"):
            os.environ["S3_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]  # streaming reads this one
        clean_stale_shared_memory()
        self.mixture = mixture
        self.seed = mixture.seed if seed is None else seed
        self.prepared = prepared
        manifests = prepared_manifests(mixture, plans, prepared)
        self.stream_plans: list[StreamPlan] = plan_streams(
            mixture, {n: int(m["rows_kept"]) for n, m in manifests.items()}, epoch_size=cfg.epoch_size)
        for p in self.stream_plans:
            if p.count == 0:
                raise LavidaDataError(f"dataset {p.name!r} gets no sample in an epoch: raise epoch_size or its weight")
        self.processor = processor if processor is not None else SampleProcessor(plans, self.seed)
        from ..shards import RowCodec

        self.processor.codecs = {n: RowCodec.from_manifest(m) for n, m in manifests.items()}
        self.lavida_config = cfg
        streams = []
        for p in self.stream_plans:
            remote, local = _stream_dirs(prepared, p.name, cfg.cache_dir)
            streams.append(Stream(remote=remote, local=local, choose=p.count))
        super().__init__(
            streams=streams, batch_size=batch_size, shuffle=cfg.shuffle, shuffle_seed=self.seed,
            shuffle_algo=cfg.shuffle_algo, shuffle_block_size=cfg.shuffle_block_size,
            num_canonical_nodes=canonical_nodes(cfg, sum(p.count for p in self.stream_plans)),
            partition_algo=cfg.partition_algo,
            predownload=cfg.predownload or max(8 * batch_size, 1024), cache_limit=cfg.cache_limit,
            sampling_method="fixed",
        )
        self.names = [p.name for p in self.stream_plans]
        self._positions = np.zeros(0, np.int64)
        self._epoch = 0
        self._index = -1
        self.seen: Counter = Counter()
        self.bad: dict[str, Counter] = {}

    # -- the epoch's samples ----------------------------------------------------------------
    def resample_streams(self, epoch: int, stream_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        which = range(self.num_streams) if stream_id is None else [stream_id]
        sizes = [self.samples_per_shard[self.shard_offset_per_stream[i] + np.arange(self.shards_per_stream[i])]
                 for i in which]
        return resample([self.stream_plans[i] for i in which], sizes, self.seed, epoch,
                        [int(self.sample_offset_per_stream[i]) for i in which])

    def _get_work(self, epoch: int, sample_in_epoch: int) -> np.ndarray:
        # streaming 0.13's _get_work, keeping the whole epoch to place this worker's samples
        from filelock import FileLock
        from streaming.base.batching import generate_work

        if not hasattr(self._shared_barrier, "lock"):
            self._shared_barrier.lock = FileLock(self._shared_barrier.filelock_path)
        u_world, p_world = self._unique_worker_world, self._parallel_worker_world
        if u_world.is_local_leader:
            work = generate_work(self.batching_method, self, p_world, epoch, sample_in_epoch)
            shape_shm, data_shm = self._share_work(work)
            self._shared_barrier(u_world.workers_per_node)
        else:
            self._shared_barrier(u_world.workers_per_node)
            work, shape_shm, data_shm = self._attach_work()
        mine = work[p_world.node, p_world.rank_of_node, p_world.worker_of_rank].flatten()
        self._positions = global_positions(work, p_world.node, p_world.rank_of_node, p_world.worker_of_rank,
                                           sample_in_epoch)
        self._epoch = epoch
        self._shared_barrier(u_world.workers_per_node)
        shape_shm.cleanup()
        if data_shm is not None:
            data_shm.cleanup()
        return mine

    def _each_sample_id(self, it) -> Iterator[int]:  # remember which slot is being yielded
        for sample_id in super()._each_sample_id(it):
            self._index = it.yield_index
            yield sample_id

    def stream_of(self, sample_id: int) -> int:
        return int(np.searchsorted(self.sample_offset_per_stream, sample_id, side="right") - 1)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for raw in super().__iter__():
            position = int(self._positions[self._index])
            name = self.names[self.stream_of(int(self._iterator.sample_ids[self._index]))]
            yield self._process(name, raw, position)

    def _process(self, name: str, raw: Mapping[str, Any], position: int) -> dict:
        self.seen[name] += 1
        try:
            return self.processor(name, raw, self._epoch, position)
        except SampleError as e:
            reason, message = e.reason, str(e)
        bad = self.bad.setdefault(name, Counter())
        bad[reason] += 1
        n_bad, n = sum(bad.values()), self.seen[name]
        cfg = self.lavida_config
        if n >= cfg.min_samples_for_bad_check and n_bad / n > cfg.max_bad_fraction:
            raise LavidaDataError(
                f"dataset {name!r}: {n_bad} of {n} samples were bad ({n_bad / n:.1%}, limit "
                f"{cfg.max_bad_fraction:.1%}): {dict(bad)}; last: {message}"
            )
        return {"bad": True, "id": f"{name}:{int(raw['row_index'])}", "dataset": name, "reason": reason,
                "position": position}


def global_positions(work: np.ndarray, node: int, rank: int, worker: int, sample_in_epoch: int) -> np.ndarray:
    """Each of one worker's slots' place in the epoch's global order.

    ``work`` is streaming's epoch layout [nodes, ranks, workers, batches, batch]. A rank's k-th
    batch comes from worker ``k % workers``; global batch ``g`` is the k = g batches of every
    rank. Within a global batch, samples are ranked by sample id (padding, -1, last), which does
    not depend on how the batch is split over ranks.
    """
    nodes, ranks, workers, batches, size = work.shape
    per_global = nodes * ranks * size
    # [workers, batches, nodes*ranks*size]: the content of global batch g = b * workers + w
    content = work.transpose(2, 3, 0, 1, 4).reshape(workers, batches, per_global)
    key = np.where(content < 0, np.iinfo(np.int64).max, content)
    order = np.argsort(key, axis=-1, kind="stable")
    rank_in_batch = np.empty_like(order)
    np.put_along_axis(rank_in_batch, order, np.arange(per_global)[None, None, :], axis=-1)
    mine = rank_in_batch[worker, :, (node * ranks + rank) * size : (node * ranks + rank + 1) * size]
    g = np.arange(batches)[:, None] * workers + worker
    return (sample_in_epoch + g * per_global + mine).reshape(-1)
