"""The prepared mixture as a deterministic, resumable stream of training steps.

:class:`MixtureDataset` is a torch ``IterableDataset`` that yields one collated batch per
training step (the DataLoader runs with ``batch_size=None``): the steps of
:class:`~.mixture.BatchPlan`, one length group per step on every rank, ``max(int(B * factor), 1)``
samples per rank. DataLoader workers take whole steps round-robin (worker w of n yields steps
w, w+n, ...; the DataLoader returns them in step order), so the steps are the same for any
number of workers.

Reading samples: one mosaicml-streaming ``StreamingDataset`` over the prepared datasets (one
stream each, local or ``s3://``) is used for **random access** (``get_item``): it keeps its
index, its shared per-node shard states, downloads and local caching (``cache_limit`` eviction
included) and its retries, across worker processes and ranks. Each worker runs a small
download-ahead thread that prepares the shards of its next ``predownload`` samples. Streaming's
own iteration is not used: its work partition assumes fixed-size per-rank batches and keeps its
epoch and resume state in node-wide shared memory behind barriers, while our steps have
variable sizes and are assigned to workers by us; feeding it our sample ids (overriding
``_get_work``) would keep all that machinery only to bypass it.

Shards are downloaded through :mod:`lavida_data.io` (:class:`StorageStream`): the same retry
policy and length checks as every other read; a transient fault never fails a shard.

Around that: a sample's place in training, ``position`` (see :mod:`.mixture`), seeds every
random choice of the sample from (seed, epoch, position); a bad sample is dropped from its batch
and reported in ``batch["skipped"]`` (never replaced) with its id, dataset, reason, path and
error, counted per dataset and reason, and a dataset whose bad fraction passes
``max_bad_fraction`` stops the run (:class:`~lavida_data.errors.TooManyBadSamples`, with the
counts and a few examples of each reason). ``state_dict`` /
``load_state_dict`` (which Composer calls with the world-summed samples of the epoch) resume
exactly mid-epoch; shared memory of killed runs is cleaned at start; local folders are per job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lavida_data import io as storage
from lavida_data.errors import LavidaDataError, SampleError, TooManyBadSamples
from lavida_data.prepared.check import check_prepared
from lavida_data.prepared.layout import join
from lavida_data.rng import sample_np_rng
from lavida_data.spec.config import Mixture
from lavida_data.spec.plan import DatasetPlan
from lavida_data.stream.mixture import BatchPlan, StreamPlan, plan_streams
from lavida_data.stream.process import SampleProcessor
from lavida_data.stream.shm import clean_stale_filelocks, clean_stale_shared_memory
from lavida_data.transforms.collate import extra_pad

try:
    import torch.utils.data
    from streaming import Stream, StreamingDataset
except ImportError as e:  # pragma: no cover
    from lavida_data.errors import MissingDependencyError

    raise MissingDependencyError("mosaicml-streaming is needed to stream: pip install lavida-data") from e

log = logging.getLogger(__name__)
STATE_VERSION = 2
BAD_EXAMPLES = 3  # examples kept per dataset and reason


class StorageStream(Stream):
    """A streaming ``Stream`` whose files (index, shards) are fetched by :func:`lavida_data.io.download`."""

    def _download_file(self, from_basename: str, to_basename: str | None = None) -> str:
        local = os.path.join(self.local, self.split, to_basename or from_basename)
        if self.remote is None:
            return super()._download_file(from_basename, to_basename)
        storage.download(storage.join(self.remote, self.split, from_basename), local)
        return local


class LoaderConfig(BaseModel):
    """Loader settings; the defaults suit most runs."""

    model_config = ConfigDict(extra="forbid")

    shuffle: bool = Field(True, description="each pass over a length group's rows in a new seeded order "
                                            "(off: the datasets' order)")
    epoch_size: int | None = Field(
        None, ge=1, description="samples per epoch; steps per epoch = epoch_size // (batch x world size). "
        "Default: the mixture's selected rows (about one pass)")
    epoch_steps: int | None = Field(None, ge=1, description="steps per epoch (instead of epoch_size)")
    predownload: int | None = Field(
        None, ge=1, description="samples whose shards each worker prepares ahead; default max(8 x batch, 1024)")
    cache_limit: str | None = None
    cache_dir: str | None = None
    max_bad_fraction: float = Field(0.05, ge=0, le=1)
    min_samples_for_bad_check: int = Field(200, ge=1)
    extra_pad: bool = Field(True, description="upstream's random extra padding: each step's batch is padded "
                            "randint(-128, 128) columns further when positive, drawn from (seed, epoch, step)")

    @model_validator(mode="after")
    def _one_length(self) -> "LoaderConfig":
        if self.epoch_size is not None and self.epoch_steps is not None:
            raise ValueError("give epoch_size (samples) or epoch_steps (steps), not both")
        return self


def detect_world(world_size: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """(world size, rank): as given, else from the launcher's environment (WORLD_SIZE, RANK)."""
    w = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    r = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    if w < 1 or not 0 <= r < w:
        raise LavidaDataError(f"rank {r} is not in a world of {w}")
    return w, r


def job_key() -> str:
    """Same for every rank of one job, different for two jobs on one machine."""
    explicit = os.environ.get("LAVIDA_JOB")
    if explicit:
        return explicit
    if os.environ.get("MASTER_PORT"):
        return f"{os.environ.get('MASTER_ADDR', 'local')}-{os.environ['MASTER_PORT']}"
    return f"pid{os.getpid()}"


def stream_dirs(prepared: str, name: str, cache_dir: str | None) -> tuple[str | None, str]:
    """(remote, local) for streaming; local dirs are per job so two jobs never share one."""
    root = cache_dir or os.environ.get("LAVIDA_CACHE") or os.path.join(tempfile.gettempdir(), "lavida-cache")
    base = os.path.join(root, job_key(), hashlib.blake2b(prepared.encode(), digest_size=6).hexdigest())
    os.makedirs(base, exist_ok=True)
    local = os.path.join(base, name)
    if storage.is_s3(prepared):
        return join(prepared, name), local
    target = os.path.abspath(join(prepared, name))
    if not os.path.islink(local) or os.readlink(local) != target:
        # a link made under a private name and renamed over: ranks of one node making the same
        # link at once each succeed, and a reader never sees a missing or half-made link
        tmp = f"{local}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        os.symlink(target, tmp)
        os.replace(tmp, local)
    return None, local


class _Prefetch:
    """A worker's download-ahead thread: prepares the shards of its next ``ahead`` samples."""

    def __init__(self, store: StreamingDataset, ids: Iterable[int], ahead: int):
        self.store, self.ahead = store, ahead
        self.consumed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iter(ids),), daemon=True)
        self._thread.start()

    def _run(self, ids: Iterator[int]) -> None:
        done: set[int] = set()
        issued = 0
        try:
            for sample_id in ids:
                while issued - self.consumed >= self.ahead:
                    if self._stop.wait(0.01):
                        return
                if self._stop.is_set():
                    return
                issued += 1
                shard_id, _ = self.store.spanner[int(sample_id)]
                if shard_id not in done:
                    done.add(shard_id)
                    self.store.prepare_shard(shard_id, blocking=False)
        except Exception as e:  # the sample read downloads (and reports) whatever this missed
            log.debug("download-ahead stopped: %s", e)

    def stop(self) -> None:
        self._stop.set()


class MixtureDataset(torch.utils.data.IterableDataset):
    """The mixture's prepared datasets as training steps: see the module doc."""

    def __init__(self, mixture: Mixture, plans: Mapping[str, DatasetPlan], prepared: str, *, batch_size: int,
                 processor: SampleProcessor | None = None, seed: int | None = None,
                 config: LoaderConfig | None = None, world_size: int | None = None, rank: int | None = None,
                 schemas: Mapping[str, list[str]] | None = None):
        cfg = config or LoaderConfig()
        clean_stale_shared_memory()
        clean_stale_filelocks()
        self.mixture = mixture
        self.seed = mixture.seed if seed is None else seed
        self.prepared = prepared
        self.batch_size = batch_size
        self.world_size, self.rank = detect_world(world_size, rank)
        self.lavida_config = cfg
        manifests = check_prepared(mixture, plans, prepared, schemas)
        self.stream_plans: list[StreamPlan] = plan_streams(mixture, {n: int(m["rows_kept"]) for n, m in manifests.items()})
        self.processor = processor if processor is not None else SampleProcessor(plans, self.seed)
        from lavida_data.prepared.layout import RowCodec

        self.processor.codecs = {n: RowCodec.from_manifest(m) for n, m in manifests.items()}
        dirs = [stream_dirs(prepared, p.name, cfg.cache_dir) for p in self.stream_plans]
        self.predownload = cfg.predownload or max(8 * batch_size, 1024)
        self.store = _open_store(lambda: [StorageStream(remote=r, local=l) for r, l in dirs],
                                 self.predownload, cfg.cache_limit)
        for p, n in zip(self.stream_plans, self.store.samples_per_stream):
            if int(n) != p.kept:
                raise LavidaDataError(f"dataset {p.name!r}: the shards hold {int(n)} rows, its manifest {p.kept}: "
                                      "run `lavida-data prepare` again")
        self.plan = BatchPlan(mixture, self.stream_plans, self.store.sample_offset_per_stream, seed=self.seed,
                              batch_size=batch_size, world_size=self.world_size, epoch_size=cfg.epoch_size,
                              epoch_steps=cfg.epoch_steps, shuffle=cfg.shuffle)
        self.names = [p.name for p in self.stream_plans]
        tok = self.processor._tokenize
        self.pad_id = tok.token_ids.pad if tok is not None else None
        # where the next iteration starts, and the iteration under way (kept in the main process)
        self._next = (0, 0)
        self._epoch: int | None = None
        self._start = 0
        self._done = False  # every step of the iteration's epoch was handed out
        self._active = False
        self._handoff: tuple[int, int] | None = None
        self.seen: Counter = Counter()
        self.bad: dict[str, Counter] = {}
        self.bad_examples: dict[str, dict[str, list[dict]]] = {}

    def __len__(self) -> int:
        """Steps per epoch: each rank's batches of one epoch."""
        return self.plan.steps_per_epoch

    @property
    def epoch(self) -> int:
        """The epoch of the iteration under way (or the next one, before any)."""
        return self._next[0] if self._epoch is None else self._epoch

    # -- iteration ----------------------------------------------------------------------------------
    def begin_epoch(self) -> tuple[int, int]:
        """Start the next iteration: (epoch, first step). Called in the main process."""
        epoch, start = self._next
        self._epoch, self._start, self._done = epoch, start, False
        self._next = (epoch + 1, 0)
        return epoch, start

    def end_epoch(self) -> None:
        self._done, self._active = True, False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        handoff, self._handoff = self._handoff, None
        epoch, start = handoff if handoff is not None else self.begin_epoch()
        return self._steps(epoch, start)

    def worker_steps(self, start: int) -> range:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return range(start + worker, self.plan.steps_per_epoch, workers)

    def _upcoming(self, epoch: int, steps: range) -> Iterator[int]:
        for s in steps:
            yield from self.plan.rank_batch(epoch, s, self.rank)[1].tolist()

    def _steps(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        steps = self.worker_steps(start)
        prefetch = _Prefetch(self.store, self._upcoming(epoch, steps), self.predownload)
        try:
            for s in steps:
                gi, ids, positions = self.plan.rank_batch(epoch, s, self.rank)
                items = []
                for sample_id, stream, position in zip(ids.tolist(), self.plan.stream_of(ids).tolist(),
                                                       positions.tolist()):
                    items.append(self._process(self.names[stream], self.store[sample_id], epoch, position))
                    prefetch.consumed += 1
                extra = extra_pad(sample_np_rng(self.seed, epoch, s, salt="collate")) \
                    if self.lavida_config.extra_pad else 0
                batch = collate_samples(items, self.pad_id, extra)
                batch["skipped"] = [skipped_record(i) for i in items if i.get("bad")]
                batch["step"], batch["group"] = s, self.plan.groups[gi].name
                yield batch
        finally:
            prefetch.stop()

    def _process(self, name: str, raw: Mapping[str, Any], epoch: int, position: int) -> dict:
        self.seen[name] += 1
        try:
            return self.processor(name, raw, epoch, position)
        except SampleError as e:
            plan = getattr(self.processor, "plans", {}).get(name)
            reason, message, path = e.reason, str(e), e.path or (plan.table if plan is not None else None)
        item = {"bad": True, "id": f"{name}:{int(raw['row_index'])}", "dataset": name, "reason": reason,
                "position": position, "path": path, "error": message}
        bad = self.bad.setdefault(name, Counter())
        bad[reason] += 1
        examples = self.bad_examples.setdefault(name, {}).setdefault(reason, [])
        if len(examples) < BAD_EXAMPLES:
            examples.append({"id": item["id"], "path": path, "error": message})
        n_bad, n = sum(bad.values()), self.seen[name]
        cfg = self.lavida_config
        if n >= cfg.min_samples_for_bad_check and n_bad / n > cfg.max_bad_fraction:
            raise TooManyBadSamples(bad_report(name, n_bad, n, cfg.max_bad_fraction, bad, self.bad_examples[name]))
        return item

    # -- resumption -----------------------------------------------------------------------------------
    def state_at(self, epoch: int, step: int) -> dict[str, Any]:
        """The state that resumes at ``step`` of ``epoch`` (the end of an epoch: the next one's start)."""
        if step >= self.plan.steps_per_epoch:
            epoch, step = epoch + 1, 0
        return {"version": STATE_VERSION, "epoch": epoch, "step": step,
                "sample_in_epoch": int(self.plan.layout(epoch).start[step]), "seed": self.seed,
                "global_batch": self.batch_size * self.world_size}

    def state_dict(self, num_samples: int, from_beginning: bool) -> dict[str, Any]:
        """Composer's call: ``num_samples`` samples of the epoch were trained (summed over ranks),
        counted from its start (``from_beginning``) or from where this run's iteration began."""
        if self._epoch is None:
            epoch, origin = self._next
        elif self._done and num_samples == 0:  # the epoch ended; Composer's count starts again
            return self.state_at(*self._next)
        else:
            epoch, origin = self._epoch, self._start
        lay = self.plan.layout(epoch)
        samples = int(num_samples) if from_beginning else int(lay.start[origin]) + int(num_samples)
        return self.state_at(epoch, lay.step_at(samples))

    def load_state_dict(self, obj: Mapping[str, Any]) -> None:
        """Resume at the state's step at the next iteration (before any iteration began)."""
        if self._active:
            raise LavidaDataError(
                "load_state_dict() after iteration began: the workers already hold their work for this epoch. "
                "Load the state before the first batch (or build a new loader)."
            )
        epoch = int(obj["epoch"])
        if "step" in obj:
            step = int(obj["step"])
            if obj.get("global_batch") not in (None, self.batch_size * self.world_size):
                log.warning("resuming a run of global batch %s with global batch %s: from step %d of epoch %d",
                            obj["global_batch"], self.batch_size * self.world_size, step, epoch)
        else:  # a state that only counts samples
            step = self.plan.layout(epoch).step_at(int(obj["sample_in_epoch"]))
        if step >= self.plan.steps_per_epoch:
            epoch, step = epoch + 1, 0
        self._next = (epoch, step)
        self._epoch, self._done = None, False


def skipped_record(item: Mapping[str, Any]) -> dict:
    """What a batch reports of a bad sample: id, dataset, reason, its position in training, path, error."""
    return {k: item.get(k) for k in ("id", "dataset", "reason", "position", "path", "error")}


def bad_report(name: str, n_bad: int, n: int, limit: float, counts: Mapping[str, int],
               examples: Mapping[str, list[dict]]) -> str:
    """The message of :class:`TooManyBadSamples`: counts per reason, then examples of each."""
    lines = [f"dataset {name!r}: {n_bad} of {n} samples were bad ({n_bad / n:.1%}, limit {limit:.1%}): "
             f"{dict(counts)}"]
    for reason, exs in examples.items():
        for ex in exs:
            lines.append(f"  {reason}: {ex['id']} {ex['path']}: {ex['error']}")
    return "\n".join(lines)


def _open_store(make_streams: Callable[[], list], predownload: int, cache_limit: str | None,
                attempts: int = 5) -> StreamingDataset:
    """streaming's dataset over the prepared streams. streaming picks the first free shared-memory
    prefix and then creates it: another job on the machine taking the same prefix in between
    raises FileExistsError, so try again (the next attempt finds the next free prefix). Each
    attempt gets new stream objects: streaming writes its weights into the ones it was given."""
    for attempt in range(attempts):
        try:
            return StreamingDataset(streams=make_streams(), shuffle=False, predownload=predownload,
                                    cache_limit=cache_limit)
        except FileExistsError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def collate_samples(items: list[Mapping[str, Any]], pad_id: int | None, extra: int = 0) -> dict:
    """Tokenized samples are padded into tensors (``extra`` > 0 pad columns beyond the longest);
    untokenized ones are kept as a list."""
    if pad_id is not None:
        from lavida_data.transforms.collate import collate

        return collate(items, pad_id, extra_pad=extra)
    skipped = [skipped_record(i) for i in items if i.get("bad")]
    kept = [dict(i) for i in items if not i.get("bad")]
    return {"ids": [i["id"] for i in kept], "skipped": skipped, "samples": kept}
