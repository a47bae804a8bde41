"""``lavida-data prepare --engine ray``: the same preparation, spread over a Ray cluster with Ray Data.

For each dataset (in mixture order):

1. the table is split into blocks of rows (parquet row groups, line ranges of csv/jsonl);
2. Ray Data tasks read, filter and encode the blocks in parallel (fetching images when
   embedding) and persist each one in the work folder with its samples' sizes and its counts;
3. the driver cuts the shards where the local engine's writer would (from the sizes alone);
4. Ray Data tasks write groups of whole shards from the blocks that hold their rows;
5. the driver writes the index, the row map and the manifest, and commits as the local engine
   does (a rename; on S3 the shards first, the manifest last).

The files are byte-identical to the local engine's (same fingerprint: either engine sees the
other's output as up to date). A killed run started again reuses the finished blocks and shards:
they are kept in ``{out}/.{name}.partial/`` (``.ray/`` holds the plan and the blocks) with a plan
keyed by the fingerprint; work for another fingerprint is discarded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from lavida_data import io as storage
from lavida_data.errors import LavidaDataError
from lavida_data.io.policy import ENV as STORAGE_ENV
from lavida_data.io.tables import read_schema, table_format
from lavida_data.prepare import local as local_engine
from lavida_data.prepare.blocks import (
    Job,
    count_block,
    count_missing,
    encode_block,
    get_bytes,
    load_block_meta,
    parquet_blocks,
    shard_nbytes,
    text_blocks,
    write_shards,
)
from lavida_data.prepare.local import DEFAULT_SHARD_SIZE, Prepared, row_kinds, up_to_date
from lavida_data.prepare.rows import NUMERIC_COLUMNS, Stats
from lavida_data.prepared.commit import KILL_AFTER, commit_local, commit_s3
from lavida_data.prepared.layout import (
    INDEX,
    MANIFEST,
    ROWS,
    build_manifest,
    fingerprint,
    join,
    read_manifest,
    write_index,
    write_manifest,
    write_rows,
)
from lavida_data.prepared.mds import shard_bounds, shard_name
from lavida_data.spec.plan import DatasetPlan

RAY_MISSING = "the ray engine needs Ray: pip install 'lavida-data[ray]'"
# KILL_AFTER, test hook: "blocks:N" or "shard_groups:N" kills the driver
PLAN = "plan.json"
PLAN_VERSION = 1
_killed_count: Counter = Counter()


@dataclass
class PreparedRay(Prepared):
    """A dataset's outcome, with what the run reused and computed."""

    engine: dict = field(default_factory=dict)


def forwarded_env() -> dict[str, str]:
    """The S3 settings (endpoint, credentials, retry policy) of the driver that the workers get
    (names only are ever shown)."""
    names = {"S3_ENDPOINT_URL", KILL_AFTER, *STORAGE_ENV.values()}
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k in names}


def connect(address: str | None) -> bool:
    """Attach to Ray (``address``, or ``RAY_ADDRESS``, or a new local Ray); True when started here."""
    try:
        import ray
    except ImportError as e:
        raise LavidaDataError(RAY_MISSING) from e
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    env = forwarded_env()
    if env:
        kwargs["runtime_env"] = {"env_vars": env}
    if not address and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False
    ray.init(address=address or None, **kwargs)
    return True


def prepare_ray(plans: Iterable[DatasetPlan], out: str, *, embed: bool = False,
                shard_size: int = DEFAULT_SHARD_SIZE, address: str | None = None, block_rows: int | None = None,
                on_done: Callable[[Prepared], None] | None = None,
                on_rows: Callable[[str, int], None] | None = None, fetch_workers: int = 16) -> dict[str, PreparedRay]:
    """Prepare every dataset on a Ray cluster; the same files as :func:`lavida_data.prepare.local.prepare`."""
    plans = list(plans)
    started = connect(address)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.enable_progress_bars
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    results: dict[str, PreparedRay] = {}
    try:
        for plan in plans:
            cb = (lambda n, name=plan.name: on_rows(name, n)) if on_rows else None
            results[plan.name] = r = prepare_dataset_ray(plan, out, embed=embed, shard_size=shard_size,
                                                         block_rows=block_rows, on_rows=cb,
                                                         fetch_workers=fetch_workers)
            if on_done:
                on_done(r)
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        if started:
            ray.shutdown()
    return results


def prepare_dataset_ray(plan: DatasetPlan, out: str, *, embed: bool = False, shard_size: int = DEFAULT_SHARD_SIZE,
                        block_rows: int | None = None, on_rows: Callable[[int], None] | None = None,
                        fetch_workers: int = 16) -> PreparedRay:
    """Prepare one dataset into ``{out}/{name}`` unless its manifest is up to date."""
    local = not storage.is_s3(out)
    work = join(out, f".{plan.name}.partial")
    digest, what = fingerprint(plan, read_schema(plan.table), embed, shard_size)
    done = up_to_date(plan, out, digest)  # (on S3 it also removes what a run killed after its commit left)
    if done is not None:
        return PreparedRay(**asdict(done), engine=_engine_stats(0, 0, 0, 0))
    if local:
        os.makedirs(out, exist_ok=True)
        finished = read_manifest(work)
        if finished is not None and finished.get("fingerprint") == digest:  # killed just before the rename
            commit_local(work, join(out, plan.name))
            r = up_to_date(plan, out, digest)
            return PreparedRay(**{**asdict(r), "up_to_date": False}, engine=_engine_stats(0, 0, 0, 0))

    columns = what["columns"]
    job = Job(plan=plan, fmt=table_format(plan.table), columns=columns, numeric=[c for c in columns if c in NUMERIC_COLUMNS],
              kinds=row_kinds(plan, columns), embed=embed, shard_size=shard_size,
              batch_rows=local_engine.BATCH_ROWS, work=work, scratch=join(work, ".ray"), fetch_workers=fetch_workers)
    blocks = _plan(job, digest, block_rows)

    # pass 1: every block read, filtered, encoded and persisted (those a killed run finished are kept)
    metas = _load_metas(job, len(blocks))
    todo = [i for i, m in enumerate(metas) if m is None]
    positions = _positions(job, blocks, metas, todo) if embed else [0] * len(blocks)
    if on_rows:
        on_rows(sum(m["rows_read"] for m in metas if m is not None))
    _run(job, "blocks", [{"i": i, "block": blocks[i], "position": positions[i]} for i in todo], _encode_task,
         lambda r: on_rows(r["rows_read"]) if on_rows else None)
    fresh = _load_metas(job, len(blocks), only=todo)
    for i in todo:
        metas[i] = fresh[i]
    if any(m is None for m in metas):
        raise LavidaDataError(f"{plan.name}: a block was not persisted in {job.scratch}")

    # the shards, cut where the local engine's writer cuts them
    writer = job.writer()
    bounds = shard_bounds((m["sizes"] for m in metas), shard_size, writer.extra_per_shard)
    sizes = np.concatenate([m["sizes"] for m in metas]) if metas else np.zeros(0, np.int64)
    csum = np.concatenate([[0], np.cumsum(sizes)])
    nbytes = [shard_nbytes(writer, b - a, int(csum[b] - csum[a])) for a, b in bounds]
    present = storage.listdir(work)
    missing = [k for k in range(len(bounds)) if present.get(shard_name(k)) != nbytes[k]]
    kept = np.concatenate([[0], np.cumsum([m["rows_kept"] for m in metas])]).astype(np.int64)
    groups = _groups(missing, bounds, nbytes)
    items = [{"shards": [[k, *bounds[k]] for k in g], "sources": _sources(metas, kept, bounds[g[0]][0],
                                                                          bounds[g[-1]][1])} for g in groups]
    _run(job, "shard_groups", items, _shards_task, lambda r: None)

    # the index, the row map and the manifest; then the commit
    stats = Stats(rows_read=sum(m["rows_read"] for m in metas), rows_kept=int(kept[-1]))
    for m in metas:
        stats.dropped.update(m["dropped"])
    embedded = sum(m["images_embedded"] for m in metas)
    images_missing = count_missing(metas)
    manifest = build_manifest(plan, digest, what, job.kinds, stats, len(bounds), embedded, images_missing)
    entries = [writer.shard_entry(shard_name(k), b - a, nbytes[k]) for k, (a, b) in enumerate(bounds)]
    rows = np.concatenate([m["rows"] for m in metas]) if metas else np.zeros(0, np.int64)
    dest = join(out, plan.name)
    if local:
        _finish_local(work, job.scratch, dest, entries, rows, manifest)
    else:
        tmp = tempfile.mkdtemp(prefix="lavida-prepare-")
        try:
            _write_final(tmp, entries, rows, manifest)
            commit_s3(tmp, dest, copies={e["raw_data"]["basename"]: join(work, e["raw_data"]["basename"])
                                          for e in entries})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        storage.remove_tree(work)
    return PreparedRay(plan.name, dest, digest, stats.rows_read, stats.rows_kept, manifest["dropped"], len(bounds),
                       images_embedded=embedded, images_missing=images_missing,
                       engine=_engine_stats(len(blocks), len(todo), len(bounds), len(missing)))


# ------------------------------------------------------------------------------------------- driver


def _engine_stats(blocks: int, blocks_done: int, shards: int, shards_done: int) -> dict:
    return {"name": "ray",
            "blocks": {"total": blocks, "reused": blocks - blocks_done, "computed": blocks_done},
            "shards": {"total": shards, "reused": shards - shards_done, "computed": shards_done}}


def _plan(job: Job, digest: str, block_rows: int | None) -> list[dict]:
    """The blocks of this preparation: the stored plan when it is for this fingerprint, else a new
    one (and the work of another fingerprint is discarded)."""
    path = join(job.scratch, PLAN)
    text = get_bytes(path)
    doc = json.loads(text) if text else None
    if doc and (doc.get("version"), doc.get("fingerprint"), doc.get("batch_rows")) == (PLAN_VERSION, digest,
                                                                                        job.batch_rows):
        return doc["blocks"]
    storage.remove_tree(job.work)
    rows = block_rows or (4096 if job.embed else 1 << 16)
    if job.fmt == "parquet":
        blocks = parquet_blocks(job.plan.table, rows)
    elif job.fmt in ("csv", "jsonl"):
        if job.fmt == "jsonl":  # jsonl values are typed per read batch: blocks hold whole batches
            rows = -(-rows // job.batch_rows) * job.batch_rows
        blocks = _remote(text_blocks, job.plan.table, job.fmt, rows)
    else:
        blocks = [{"start": 0, "end": None}]
    storage.write_bytes(path, json.dumps({"version": PLAN_VERSION, "fingerprint": digest, "batch_rows": job.batch_rows,
                                "blocks": blocks}).encode())
    return blocks


def _remote(fn: Callable, *args: Any) -> Any:
    import ray

    opts: dict[str, Any] = {"num_cpus": 1}
    env = forwarded_env()
    if env:
        opts["runtime_env"] = {"env_vars": env}
    return ray.get(ray.remote(fn).options(**opts).remote(*args))


def _positions(job: Job, blocks: list[dict], metas: list[dict | None], todo: list[int]) -> list[int]:
    """Index of each block's first kept row among all kept rows (embedding resolves images there):
    from finished blocks, the row counts when nothing is filtered, or a pass over the filter columns."""
    last = max(todo, default=-1)
    kept: dict[int, int] = {i: m["rows_kept"] for i, m in enumerate(metas) if m is not None}
    need = [i for i in range(last) if i not in kept]
    if need and not job.plan.filters.columns():
        kept.update({i: blocks[i]["end"] - blocks[i]["start"] for i in need})
    elif need:
        paths = [join(job.scratch, "counts", f"{i:06d}.json") for i in need]
        with ThreadPoolExecutor(16) as pool:
            found = dict(zip(need, pool.map(get_bytes, paths)))
        kept.update({i: json.loads(t)["rows_kept"] for i, t in found.items() if t})
        items = [{"i": i, "block": blocks[i]} for i in need if i not in kept]
        _run(job, "counts", items, _count_task, lambda r: kept.__setitem__(r["i"], r["rows_kept"]))
    positions, pos = [], 0
    for i in range(len(blocks)):
        positions.append(pos)
        pos += kept.get(i, 0) if i < last else 0
    return positions


def _load_metas(job: Job, n: int, only: list[int] | None = None) -> list[dict | None]:
    wanted = list(range(n)) if only is None else only
    out: list[dict | None] = [None] * n
    with ThreadPoolExecutor(16) as pool:
        for i, m in zip(wanted, pool.map(lambda i: load_block_meta(job, i), wanted)):
            out[i] = m
    return out


def _groups(missing: list[int], bounds: list[tuple[int, int]], nbytes: list[int]) -> list[list[int]]:
    """Runs of consecutive missing shards, cut into tasks of at most ~1 GiB (and enough tasks to
    keep the cluster busy)."""
    import ray

    if not missing:
        return []
    cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
    per = max(1, -(-len(missing) // (4 * cpus)))
    groups: list[list[int]] = []
    size = 0
    for k in missing:
        g = groups[-1] if groups else None
        if g and g[-1] == k - 1 and len(g) < per and size + nbytes[k] <= 1 << 30:
            g.append(k)
            size += nbytes[k]
        else:
            groups.append([k])
            size = nbytes[k]
    return groups


def _sources(metas: list[dict], kept: np.ndarray, start: int, end: int) -> list[list]:
    """The blocks holding kept rows ``[start, end)``: index, first kept row, record batch lengths."""
    first = max(int(np.searchsorted(kept, start, side="right")) - 1, 0)
    last = int(np.searchsorted(kept, end, side="left"))
    return [[i, int(kept[i]), metas[i]["batches"].tolist()] for i in range(first, min(last, len(metas)))
            if kept[i] < end and kept[i + 1] > start]


def _run(job: Job, phase: str, items: list[dict], fn: Callable, on_result: Callable[[dict], Any]) -> None:
    """Map ``fn`` over ``items`` with Ray Data (one task each), results in order."""
    if not items:
        return
    import ray.data

    remote: dict[str, Any] = {"num_cpus": 1}
    env = forwarded_env()
    if env:
        remote["runtime_env"] = {"env_vars": env}
    items = [{"i": k, **it} for k, it in enumerate(items)]  # shard groups are numbered here
    rows = [{"i": it["i"], "spec": json.dumps(it)} for it in items]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map(fn, fn_kwargs={"job": job}, **remote)
    for row in ds.iter_rows():
        out = json.loads(row["out"])
        if "error" in out:  # a task's own error, without Ray's wrappers (the traceback with LAVIDA_DEBUG=1)
            trace = f"\n{out['trace']}" if os.environ.get("LAVIDA_DEBUG") else ""
            raise LavidaDataError(f"{job.plan.name}: {out['error']}{trace}")
        on_result(out)
        _maybe_die(phase)


def _task(fn: Callable[[dict, Job], dict]) -> Callable[[dict, Job], dict]:
    """A Ray Data task: its result, or its error, as JSON text."""
    def run(row: dict, job: Job) -> dict:
        try:
            out = fn(json.loads(row["spec"]), job)
        except Exception as e:
            import traceback

            out = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        return {"i": row["i"], "out": json.dumps(out)}

    run.__name__ = run.__qualname__ = fn.__name__
    return run


def _hold(phase: str, index: int) -> None:
    """Test hook, in the tasks: those after the driver's kill point wait, so that it dies first."""
    spec = os.environ.get(KILL_AFTER, "")
    if spec.startswith(phase + ":") and index >= int(spec.split(":", 1)[1]):
        import time

        time.sleep(2)


def _maybe_die(phase: str) -> None:
    spec = os.environ.get(KILL_AFTER, "")
    if not spec.startswith(phase + ":"):
        return
    _killed_count[phase] += 1
    if _killed_count[phase] >= int(spec.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


def _write_final(folder: str, entries: list[dict], rows: np.ndarray, manifest: dict) -> None:
    write_index(folder, entries)
    write_rows(folder, rows)
    write_manifest(folder, manifest)


def _finish_local(work: str, scratch: str, dest: str, entries: list[dict], rows: np.ndarray, manifest: dict) -> None:
    names = {e["raw_data"]["basename"] for e in entries} | {INDEX, ROWS, MANIFEST}
    for name in storage.listdir(work):
        if name not in names:  # the temporary file of a task that was killed
            os.unlink(os.path.join(work, name))
    _write_final(work, entries, rows, manifest)
    shutil.rmtree(scratch, ignore_errors=True)
    commit_local(work, dest)


# -------------------------------------------------------------------------------------------- tasks


@_task
def _encode_task(spec: dict, job: Job) -> dict:
    _hold("blocks", spec["i"])
    return {"i": spec["i"], **encode_block(job, spec["i"], spec["block"], spec["position"])}


@_task
def _count_task(spec: dict, job: Job) -> dict:
    counts = count_block(job, spec["block"])
    storage.write_bytes(join(job.scratch, "counts", f"{spec['i']:06d}.json"), json.dumps(counts).encode())
    return {"i": spec["i"], **counts}


@_task
def _shards_task(spec: dict, job: Job) -> dict:
    _hold("shard_groups", spec["i"])
    return {"i": spec["i"], **write_shards(job, spec["shards"], spec["sources"])}
