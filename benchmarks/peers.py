"""lavida-data beside the loaders people would pick instead: same table, same work, same workers.

    python benchmarks/peers.py [--small] [--json OUT.json] [--work DIR] [--rounds N] [--only SECTIONS]

Loaders (peers): lavida-data (``lavida-data prepare --embed-images``, ``build_dataset`` and
``build_dataloader``); Lightning's litData (``optimize``, ``StreamingDataset``,
``StreamingDataLoader``); NVIDIA's Megatron-Energon (WebDataset shards, ``energon prepare``, a
task encoder on crude samples, ``get_savable_loader``); Hugging Face ``datasets``
(``Dataset.from_parquet``, ``filter``, ``map``, ``save_to_disk``, then ``load_from_disk`` +
``with_transform`` in a torch DataLoader); and an upstream-style loader (the whole table in pandas,
filtered at start, rows by ``iloc``, images read from their paths, a torch DataLoader).

Every loader does the same work per sample through the same functions: the row filtered at
preparation (``fltLaionAesthScore > 5``, both sides >= 256 px), upstream's t2i conversion
(``lavida_data.convert_row``), the JPEG decoded in full by PIL, the random crop to 256 px with its
micro-conditions (``lavida_data.transforms.images``), the caption through the same tokenizer and
chat rendering (``lavida_data.transforms.tokenize``), and the collation
(``lavida_data.transforms.collate``). Images are stored inside each peer's format (lavida-data with
``--embed-images``; WebDataset shards hold them by design).

Sections (``--only``, comma-separated; all by default; torch on one thread per process, as in
loader workers):
  prepare   rows/s and bytes written per peer (each peer's modules imported beforehand), rounds
            interleaved, the best counts
  loaders   samples/s over one epoch at 0, 1 and 2 DataLoader workers, peers interleaved (a
            different one first each round), best of ``--rounds`` rounds
  startup   a fresh process per peer: time to first batch (2 workers; imports excluded, building
            the loader and loading the tokenizer included), peak memory over one epoch (PSS of the
            main process and its workers, peak RSS of each)
  resume    exact resumption (2 workers) after the first batch and at half the epoch: the batches
            after a restore against an uninterrupted run's, batch for batch
  decode    PIL's full JPEG decode beside simplejpeg and PyTurboJPEG (pixels compared, other JPEG
            kinds too), and the common per-sample work timed step by step: the work bound
  padding   padded share of tokens per batch, one length group per batch (the real loader)
            against the same samples in mixed batches of the same sizes, for the demo mixture and
            an upstream-style one (stage s3's)
``--small``: 32 rows, one round, the fresh-process measures for lavida-data and the upstream-style
loader only (the tests run it). Progress goes to stderr, the tables (markdown) to stdout, every
figure to ``--json``. A peer whose package is missing is reported as "not installed".
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import datetime
import gc
import io
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers: one tokenizer thread each

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATASET = "laion"
SEED = 7
BATCH = 8
GEN_SIZE = 256
GEN_TOKENS = 256  # upstream's 256-px stage: one token per 16 x 16 pixels
AES_CUTOFF = 5.0
MIN_SIZE = 256
COLUMNS = ["s3_path", "caption", "fltLaionAesthScore", "hpsv2", "intHeight", "intWidth"]
PEERS = ("lavida-data", "litdata", "energon", "datasets", "upstream-style")
ALWAYS = ("lavida-data", "upstream-style")  # installed with lavida-data[test]: checked by every run
WORKERS = (0, 1, 2)
#: (width, height) of the photo-like JPEGs, drawn with these weights; 320 x 200 falls under min_size
SIZES = ((1024, 768), (768, 1024), (1280, 720), (640, 480), (1600, 1200), (512, 512), (2048, 1365), (320, 200))
SIZE_WEIGHTS = (0.25, 0.1, 0.15, 0.15, 0.1, 0.1, 0.05, 0.1)
WORDS = ("a photo of the red bus parked near an old stone bridge at sunset with people walking along the river "
         "and trees in autumn colours portrait of smiling woman in a blue coat close up studio lighting vintage "
         "poster design minimalist living room interior wooden table plants mountain landscape snow lake").split()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ============================================================================================
# the data: photo-like JPEGs at several sizes, a LAION-like table, a one-dataset mixture


def photo_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    """A photo-like JPEG: a smooth colour field, a few hard-edged shapes, sensor-like grain."""
    from PIL import Image, ImageDraw

    w, h = size
    rng = np.random.default_rng(seed)
    field_ = rng.integers(0, 255, (max(2, h // 96), max(2, w // 96), 3), dtype=np.uint8)
    img = Image.fromarray(field_).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = [x, y, x + int(rng.integers(8, max(9, w // 3))), y + int(rng.integers(8, max(9, h // 3)))]
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    grain = rng.normal(0, 5, (h, w, 3)).astype(np.int16)
    pixels = np.clip(np.asarray(img, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90, progressive=bool(rng.random() < 0.2))


def laion_table(folder: Path, rows: int) -> Path:
    """``rows`` LAION-like rows (key, url, s3_path, caption, scores, sizes, safety columns) whose
    ``s3_path`` are local photo-like JPEGs, made once per folder."""
    table = folder / "laion.parquet"
    if table.exists() and pq.read_metadata(table).num_rows == rows:
        return table
    rng = np.random.default_rng(0)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    sizes = [SIZES[k] for k in rng.choice(len(SIZES), rows, p=SIZE_WEIGHTS)]
    paths = []
    for i, size in enumerate(sizes):
        p = images / f"{i:06d}.jpg"
        if not p.exists():
            photo_jpeg(p, size, seed=i)
        paths.append(str(p))
        if i % 200 == 199:
            log(f"   images {i + 1}/{rows}")
    words = np.array(WORDS)
    captions = [" ".join(words[rng.integers(0, len(words), k)]) for k in rng.integers(5, 40, rows)]
    pq.write_table(pa.table({
        "key": [f"{i:09d}" for i in range(rows)],
        "url": [f"https://images.example.com/{i // 1000}/{i}.jpg" for i in range(rows)],
        "s3_path": paths,
        "caption": captions,
        "fltLaionAesthScore": rng.normal(5.5, 0.8, rows),
        "hpsv2": rng.normal(0.27, 0.02, rows),
        "intHeight": [h for _, h in sizes],
        "intWidth": [w for w, _ in sizes],
        "similarity": rng.uniform(0.28, 0.4, rows),
        "punsafe": rng.uniform(0, 0.1, rows),
        "pwatermark": rng.uniform(0, 0.5, rows),
    }), table, row_group_size=4096)
    return table


def mixture_file(folder: Path, table: Path) -> Path:
    path = folder / "mixture.yaml"
    path.write_text(
        f"seed: {SEED}\ndatasets:\n"
        f"  - {{name: {DATASET}, path: {table.name}, preprocess_fn: t2i, aes_cutoff: {AES_CUTOFF}, "
        f"min_size: {MIN_SIZE}, columns: [{', '.join(COLUMNS)}]}}\n")
    return path


def keep_mask(scores: Sequence[Any], heights: Sequence[Any], widths: Sequence[Any]) -> list[bool]:
    """The mixture's filters, for the peers that filter with their own code."""
    return [s is not None and h is not None and w is not None and s > AES_CUTOFF and h >= MIN_SIZE and w >= MIN_SIZE
            for s, h, w in zip(scores, heights, widths)]


# ============================================================================================
# lavida-data's public entry points: the installed command (in this process) and the API


def lavida_cli(argv: list[str]) -> tuple[int, str]:
    """The installed ``lavida-data`` command, run in this process: (exit status, stdout)."""
    from importlib.metadata import entry_points

    main = entry_points(group="console_scripts")["lavida-data"].load()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return int(rc or 0), out.getvalue()


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Environment variables set for the block, then restored."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def tiny_tokenizer(work: Path, mixture: Path, prepared: Path) -> str:
    """lavida-data's small offline tokenizer (LLaDA's special tokens and chat template). Its
    builder is no public name yet: ``lavida-data stream --tiny-tokenizer`` builds it into
    ``$LAVIDA_CACHE/tiny-tokenizer``, so it is made that way, with the cache in ``work``."""
    import lavida_data

    path = work / "cache" / "tiny-tokenizer"
    builder = getattr(lavida_data, "build_tiny_tokenizer", None)
    if builder is not None:
        return str(builder(path)) if not (path / "tokenizer.json").exists() else str(path)
    if not (path / "tokenizer.json").exists():
        with environ(LAVIDA_CACHE=str(work / "cache")):
            rc, out = lavida_cli(["stream", str(mixture), "--prepared", str(prepared), "--tiny-tokenizer", "-n", "0",
                                  "--workers", "0", "--json"])
        if rc or not (path / "tokenizer.json").exists():
            raise RuntimeError(f"`lavida-data stream --tiny-tokenizer` made no tokenizer in {path}: {out[-500:]}")
    return str(path)


# ============================================================================================
# the work every loader does per sample, and the collation


class Work:
    """Convert, decode, crop, tokenize one row; collate a batch. Picklable (DataLoader workers)."""

    def __init__(self, mixture: str, tokenizer: str):
        from lavida_data import load_mixture
        from lavida_data.transforms.images import ImageConfig, ImageTransform
        from lavida_data.transforms.tokenize import Tokenize, TokenizeConfig

        self.plan = load_mixture(mixture).plans[DATASET]
        self.images = ImageTransform(ImageConfig(gen_size=GEN_SIZE))
        self.tokenize = Tokenize(TokenizeConfig(tokenizer=tokenizer, gen_tokens=GEN_TOKENS,
                                                max_length=2048))
        self.tokenize.token_ids  # noqa: B018  loaded here, before workers fork (as lavida-data's loader does)

    def sample(self, row: Mapping[str, Any], row_index: int, image: bytes) -> dict:
        from PIL import Image

        from lavida_data import SampleError, convert_row, sample_np_rng

        try:
            sample = convert_row(self.plan.converter, self.plan.options, {c: row[c] for c in COLUMNS},
                                 dataset=DATASET, row_index=row_index, seed=SEED, position=row_index,
                                 image_root=self.plan.image_root)
            rng = sample_np_rng(SEED, 0, row_index)
            img = Image.open(io.BytesIO(image))
            img.load()
            out = self.images(sample, {sample["image_gen"]: img}, rng)
            out.update(self.tokenize(out, rng))
            return out
        except SampleError as e:
            return {"bad": True, "id": f"{DATASET}:{row_index}", "dataset": DATASET, "reason": e.reason}

    def collate(self, items: list[dict]) -> dict:
        from lavida_data import sample_np_rng
        from lavida_data.transforms.collate import collate, extra_pad

        first = int(str(items[0]["id"]).rsplit(":", 1)[1]) if items else 0
        extra = extra_pad(sample_np_rng(SEED, 0, first, "collate"))  # upstream's random extra padding
        return collate(items, self.tokenize.token_ids.pad, extra_pad=extra)


# ============================================================================================
# the peers: prepare (in this process, modules imported beforehand), loader, resume


@dataclass
class Setup:
    """Paths shared by every section (and by the child processes)."""

    work: str
    table: str
    mixture: str
    tokenizer: str = ""
    rows: int = 0
    kept: int = 0

    def prepared(self, peer: str) -> Path:
        return Path(self.work) / "prepared" / peer


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink())


#: what the job needs beside speed, per peer (from each one's API as used here; the benchmark's data
#: has one dataset, so mixtures are not measured)
ABILITIES = ("per-sample ids", "filters at preparation", "seeded weighted mixture", "one length group per batch")


class Peer(abc.ABC):
    """One loader. ``module``: what must import for it to run; ``abilities``: one text per
    :data:`ABILITIES`; ``notes``: what the harness had to do for it."""

    name = ""
    module = ""
    abilities: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def missing(self) -> str | None:
        import importlib

        try:
            importlib.import_module(self.module)
        except Exception as e:  # not installed, or broken by another package's version
            return f"not installed ({type(e).__name__}: {e})"[:200]
        return None

    @abc.abstractmethod
    def prepare(self, s: Setup, out: Path) -> dict:
        """Prepare the table into ``out`` in this peer's format."""

    @abc.abstractmethod
    def loader(self, s: Setup, work: Work | None, workers: int) -> Iterable[dict]:
        """One epoch of collated batches with ``workers`` DataLoader workers."""

    @abc.abstractmethod
    def resume(self, s: Setup, work: Work, workers: int, stop: int, after: int | None = None) -> dict:
        """``stop`` batches from a fresh loader, its state, then ``after`` batches (None: the rest
        of the epoch) from a new loader restored from it: {"before": [ids per batch], "after":
        [...], "how": ...}."""


def batch_ids(batch: Mapping[str, Any]) -> list[str]:
    return [str(i) for i in batch["ids"]] + [str(s["id"]) for s in batch.get("skipped") or []]


class LavidaData(Peer):
    name, module = "lavida-data", "lavida_data"
    abilities = ("built in (`<dataset>:<row>`)", "declared (`aes_cutoff`, `min_size`)", "yes (mixture file, seed)",
                 "yes (weighted draw per step)")

    def prepare(self, s: Setup, out: Path) -> dict:
        rc, text = lavida_cli(["prepare", s.mixture, "--out", str(out), "--embed-images", "--json"])
        if rc:
            raise RuntimeError(f"lavida-data prepare failed ({rc}): {text[-800:]}")
        return {"rows_kept": json.loads(text)["datasets"][DATASET]["rows_kept"]}

    def _dataset(self, s: Setup):
        from lavida_data import build_dataset

        return build_dataset(s.mixture, str(s.prepared(self.name)), batch_size=BATCH, loader={"shuffle": True},
                             process={"image": {"gen_size": GEN_SIZE},
                                      "tokenize": {"tokenizer": s.tokenizer, "gen_tokens": GEN_TOKENS,
                                                   "max_length": 2048}})

    def loader(self, s: Setup, work: Work | None, workers: int) -> Iterable[dict]:
        from lavida_data import build_dataloader

        return build_dataloader(self._dataset(s), num_workers=workers)

    def resume(self, s: Setup, work: Work, workers: int, stop: int, after: int | None = None) -> dict:
        from lavida_data import build_dataloader

        first = build_dataloader(self._dataset(s), num_workers=workers)
        before, state = take(first, stop, first.state_dict)
        second = build_dataloader(self._dataset(s), num_workers=workers)
        second.load_state_dict(state)
        return {"before": before, "after": take(second, after)[0], "how": "loader.state_dict() / load_state_dict()"}


class LitData(Peer):
    name, module = "litdata", "litdata"
    abilities = ("no: a field written by the optimize function", "own code in the optimize function",
                 "`CombinedStreamingDataset(weights, seed)`", "no")
    notes = ("the row's columns stored as one JSON text: litData stores any string naming an existing image file "
             "as that image (here s3_path is a local path) and gives it back decoded",)

    def prepare(self, s: Setup, out: Path) -> dict:
        from litdata import optimize

        meta = pq.read_metadata(s.table)
        starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        chunks = [(s.table, g, int(starts[g])) for g in range(meta.num_row_groups)]  # one input per row group
        method = multiprocessing.get_start_method(allow_none=True)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                optimize(fn=lit_rows, inputs=chunks, output_dir=str(out), chunk_bytes="64MB", num_workers=1,
                         mode="overwrite", verbose=False)
        finally:  # optimize sets the process-wide start method to spawn: every later loader would use it
            multiprocessing.set_start_method(method, force=True)
        return {}

    def _dataset(self, s: Setup, work: Work):
        from litdata import StreamingDataset

        return StreamingDataset(str(s.prepared(self.name)), shuffle=True, seed=SEED, transform=LitTransform(work),
                                cache_dir=str(Path(s.work) / "cache" / "litdata"))

    def loader(self, s: Setup, work: Work | None, workers: int) -> Iterable[dict]:
        from litdata import StreamingDataLoader

        return StreamingDataLoader(self._dataset(s, work), batch_size=BATCH, num_workers=workers,
                                   collate_fn=work.collate)

    def resume(self, s: Setup, work: Work, workers: int, stop: int, after: int | None = None) -> dict:
        first = self.loader(s, work, workers)
        before, state = take(first, stop, first.state_dict)
        second = self.loader(s, work, workers)
        second.load_state_dict(state)
        return {"before": before, "after": take(second, after)[0],
                "how": "StreamingDataLoader.state_dict() / load_state_dict()"}


def lit_rows(chunk: tuple[str, int, int]) -> Iterator[dict]:
    """litData's ``optimize`` function: one row group of the table, filtered, with the image bytes."""
    path, group, start = chunk
    t = pq.ParquetFile(path).read_row_group(group, columns=COLUMNS).to_pydict()
    for i, keep in enumerate(keep_mask(t["fltLaionAesthScore"], t["intHeight"], t["intWidth"])):
        if keep:
            row = {c: t[c][i] for c in COLUMNS}
            yield {"row_index": start + i, "row": json.dumps(row), "image": Path(row["s3_path"]).read_bytes()}


class LitTransform:
    def __init__(self, work: Work):
        self.work = work

    def __call__(self, item: dict) -> dict:
        return self.work.sample(json.loads(item["row"]), int(item["row_index"]), item["image"])


class Energon(Peer):
    name, module = "energon", "megatron.energon"
    abilities = ("the shard key (`__key__`), written by hand", "no: own code before the shards are written",
                 "metadataset blend weights", "`batch_group_criterion` buckets (no weighted draw per step)")
    notes = ("filter written by hand before the shards (energon filters nothing at preparation)",
             "a training dataset loops: epochs cut at ceil(rows / batch) batches (virtual_epoch_length)")

    def prepare(self, s: Setup, out: Path) -> dict:
        import webdataset as wds
        from click.testing import CliRunner
        from megatron.energon.tools.prepare import command

        shards = out / "shards"
        shards.mkdir(parents=True, exist_ok=True)
        kept = 0
        with contextlib.redirect_stdout(sys.stderr), \
                wds.ShardWriter(str(shards / "shard-%06d.tar"), maxsize=64 << 20, maxcount=10**9, encoder=False,
                                verbose=0) as sink:
            start = 0
            for batch in pq.ParquetFile(s.table).iter_batches(batch_size=4096, columns=COLUMNS):
                t = batch.to_pydict()
                for i, keep in enumerate(keep_mask(t["fltLaionAesthScore"], t["intHeight"], t["intWidth"])):
                    if keep:
                        row = {c: t[c][i] for c in COLUMNS}
                        sink.write({"__key__": f"{start + i:09d}", "jpg": Path(row["s3_path"]).read_bytes(),
                                    "json": json.dumps(row).encode()})
                        kept += 1
                start += batch.num_rows
            n_shards = sink.shard
        last = max(n_shards - 1, 0)
        parts = f"train:shards/shard-{{000000..{last:06d}}}.tar"
        result = CliRunner().invoke(command, [str(out), "--split-parts", parts, "--num-workers", "1", "--no-progress"],
                                    input="n\n")  # no interactive dataset.yaml: written below
        if result.exit_code or not (out / ".nv-meta" / ".info.yaml").exists():
            raise RuntimeError(f"energon prepare failed: {result.output[-800:]} {result.exception!r}")
        # what `energon prepare` asks for when the sample type is crude: a dataset.yaml by hand
        (out / ".nv-meta" / "dataset.yaml").write_text("__module__: megatron.energon\n__class__: CrudeWebdataset\n")
        return {"rows_kept": kept}

    def _loader(self, s: Setup, work: Work, workers: int):
        from megatron.energon import WorkerConfig, get_savable_loader, get_train_dataset

        ds = get_train_dataset(str(s.prepared(self.name)), worker_config=WorkerConfig(rank=0, world_size=1,
                                                                                     num_workers=workers),
                               batch_size=BATCH, shuffle_buffer_size=100, max_samples_per_sequence=100,
                               task_encoder=energon_encoder(work), auto_decode=False,
                               virtual_epoch_length=-(-s.kept // BATCH))  # it loops: an epoch cut by batches
        return get_savable_loader(ds)

    def loader(self, s: Setup, work: Work | None, workers: int) -> Iterable[dict]:
        return self._loader(s, work, workers)

    def resume(self, s: Setup, work: Work, workers: int, stop: int, after: int | None = None) -> dict:
        first = self._loader(s, work, workers)
        before, state = take(first, stop, first.save_state_rank)
        second = self._loader(s, work, workers)
        second.restore_state_rank(state)
        return {"before": before, "after": take(second, after)[0], "how": "save_state_rank() / restore_state_rank()"}


def energon_encoder(work: Work):
    """A task encoder over crude samples: the cooker parses the row, ``encode_sample`` does the
    common work, ``batch`` the common collation."""
    from megatron.energon import Cooker, DefaultTaskEncoder

    class Encoder(DefaultTaskEncoder):
        cookers = [Cooker(cook_energon)]

        def encode_sample(self, sample):  # type: ignore[override]
            return work.sample(sample.row, int(str(sample.__key__).rsplit("/", 1)[-1]), sample.image)

        def batch(self, samples):  # type: ignore[override]
            return work.collate(samples)

        def encode_batch(self, batch):  # type: ignore[override]
            return batch

    return Encoder()


def energon_row_type() -> type:
    """Energon's cooked sample type for a row and its JPEG bytes (made on first use: energon is
    an optional import)."""
    if "EnergonRow" not in globals():
        from megatron.energon import Sample

        @dataclass
        class EnergonRow(Sample):
            row: dict
            image: bytes

        EnergonRow.__qualname__ = "EnergonRow"  # picklable by name, as a module-level class
        globals()["EnergonRow"] = EnergonRow
    return globals()["EnergonRow"]


def cook_energon(crude: dict):
    from megatron.energon import basic_sample_keys

    return energon_row_type()(**basic_sample_keys(crude), row=json.loads(crude["json"]), image=crude["jpg"])


class HFDatasets(Peer):
    name, module = "datasets", "datasets"
    abilities = ("no: a column added by `map(with_indices=True)`", "own function (`filter`)",
                 "`interleave_datasets(probabilities, seed)`", "no")
    notes = ("no loader state: a map-style Dataset in a torch DataLoader restarts its epoch",)

    def prepare(self, s: Setup, out: Path) -> dict:
        import datasets

        datasets.disable_progress_bars()
        cache = out / "cache"
        ds = datasets.Dataset.from_parquet(s.table, columns=COLUMNS, cache_dir=str(cache))
        ds = ds.map(lambda b, idx: {"row_index": idx}, with_indices=True, batched=True, batch_size=4096)
        ds = ds.filter(lambda b: keep_mask(b["fltLaionAesthScore"], b["intHeight"], b["intWidth"]), batched=True,
                       batch_size=4096)
        ds = ds.map(lambda b: {"image": [Path(p).read_bytes() for p in b["s3_path"]]}, batched=True, batch_size=64)
        ds.save_to_disk(str(out / "dataset"))
        return {"rows_kept": len(ds), "bytes_kept": folder_bytes(out / "dataset")}

    def _dataset(self, s: Setup, work: Work):
        import datasets

        ds = datasets.load_from_disk(str(s.prepared(self.name) / "dataset"))
        return ds.with_transform(HFTransform(work))

    def loader(self, s: Setup, work: Work | None, workers: int) -> Iterable[dict]:
        import torch

        return torch.utils.data.DataLoader(self._dataset(s, work), batch_size=BATCH, shuffle=True,
                                           generator=torch.Generator().manual_seed(SEED), num_workers=workers,
                                           collate_fn=HFCollate(work))

    def resume(self, s: Setup, work: Work, workers: int, stop: int, after: int | None = None) -> dict:
        before, _ = take(self.loader(s, work, workers), stop)
        second = self.loader(s, work, workers)  # nothing to restore: a new DataLoader starts its epoch again
        return {"before": before, "after": take(second, after)[0], "how": "none (no state_dict on the DataLoader)"}


class HFTransform:
    def __init__(self, work: Work):
        self.work = work

    def __call__(self, batch: dict) -> dict:
        n = len(batch["row_index"])
        rows = [{c: batch[c][i] for c in COLUMNS} for i in range(n)]
        return {"sample": [self.work.sample(r, int(i), b) for r, i, b in zip(rows, batch["row_index"], batch["image"])]}


class HFCollate:
    def __init__(self, work: Work):
        self.work = work

    def __call__(self, items: list[dict]) -> dict:
        return self.work.collate([it["sample"] for it in items])


class UpstreamStyle(Peer):
    name, module = "upstream-style", "pandas"
    abilities = ("no (upstream: one constant id)", "at every start (pandas masks)",
                 "weights per length group, global random state", "yes (weighted draw per step)")
    notes = ("no preparation step: the whole table is read and filtered at start",
             "no loader state: restarts its epoch")

    def prepare(self, s: Setup, out: Path) -> dict:
        return {"skipped": "no preparation step"}

    def _dataset(self, s: Setup, work: Work):
        return UpstreamDataset(s.table, work)

    def loader(self, s: Setup, work: Work | None, workers: int) -> Iterable[dict]:
        import torch

        return torch.utils.data.DataLoader(self._dataset(s, work), batch_size=BATCH, shuffle=True,
                                           generator=torch.Generator().manual_seed(SEED), num_workers=workers,
                                           collate_fn=work.collate)

    def resume(self, s: Setup, work: Work, workers: int, stop: int, after: int | None = None) -> dict:
        before, _ = take(self.loader(s, work, workers), stop)
        second = self.loader(s, work, workers)
        return {"before": before, "after": take(second, after)[0],
                "how": "none (upstream restarts the epoch's sampler)"}


class UpstreamDataset:
    """Upstream's shape: every table read whole into pandas and concatenated, filtered by boolean
    masks, a row taken by ``iloc`` per sample, its image read from the path in the row."""

    def __init__(self, table: str, work: Work):
        import pandas as pd

        df = pd.concat([pd.read_parquet(table)])
        df = df[(df["fltLaionAesthScore"] > AES_CUTOFF) & (df["intHeight"] >= MIN_SIZE) & (df["intWidth"] >= MIN_SIZE)]
        self.df, self.work = df, work

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, i: int) -> dict:
        row = self.df.iloc[i]
        with open(row["s3_path"], "rb") as f:
            data = f.read()
        return self.work.sample(row, int(self.df.index[i]), data)


ALL: dict[str, Peer] = {p.name: p for p in (LavidaData(), LitData(), Energon(), HFDatasets(), UpstreamStyle())}


@contextlib.contextmanager
def closing(loader: Iterable[dict]) -> Iterator[Iterator[dict]]:
    """An iterator over ``loader`` whose worker processes are stopped on exit (persistent ones
    too: Energon's keep prefetching its looping dataset, taking a core from the next loader)."""
    it = iter(loader)
    try:
        yield it
    finally:
        for obj in (it, getattr(it, "_iterator", None), getattr(loader, "_iterator", None)):
            stop = getattr(obj, "_shutdown_workers", None)
            if stop is not None:
                stop()
        for attr in ("_iterator", "_persistent_iterator"):
            if getattr(loader, attr, None) is not None:
                setattr(loader, attr, None)
        del it
        gc.collect()


def take(loader: Iterable[dict], n: int | None,
         snapshot: Callable[[], Any] | None = None) -> tuple[list[list[str]], Any]:
    """The ids of the first ``n`` batches (all with None), and ``snapshot()`` taken after the
    last of them while the loader still runs."""
    out: list[list[str]] = []
    state = None
    with closing(loader) as it:
        for batch in it:
            out.append(batch_ids(batch))
            if n is not None and len(out) >= n:
                break
        if snapshot is not None:
            state = snapshot()
    return out, state


def flat(batches: list[list[str]]) -> list[str]:
    return [i for b in batches for i in b]


# ============================================================================================
# sections


def section_prepare(s: Setup, peers: list[str], rounds: int) -> dict:
    """Each peer prepares the same table (images embedded), ``rounds`` times interleaved; the best
    time counts, the last output stays for the loaders."""
    best: dict[str, float] = {}
    info: dict[str, dict] = {}
    for r in range(rounds):
        for name in peers:
            folder = s.prepared(name)
            shutil.rmtree(folder, ignore_errors=True)
            folder.parent.mkdir(parents=True, exist_ok=True)
            log(f"== prepare {name} (round {r + 1}/{rounds})")
            t0 = time.perf_counter()
            info[name] = ALL[name].prepare(s, folder)
            dt = time.perf_counter() - t0
            best[name] = min(best.get(name, dt), dt)
    out: dict[str, dict] = {}
    for name in peers:
        if "skipped" in info[name]:
            out[name] = {"status": info[name]["skipped"]}
            continue
        out[name] = {"seconds": best[name], "rows_per_s": s.rows / best[name],
                     "bytes_written": folder_bytes(s.prepared(name)), **info[name]}
    return out


@dataclass
class Epoch:
    samples: int
    seconds: float
    first_batch_s: float
    ids: list[list[str]] = field(repr=False)


def run_epoch(make: Callable[[], Iterable[dict]], on_batch: Callable[[int], None] | None = None) -> Epoch:
    """One pass: the loader made (counted in the first batch's time), every batch pulled."""
    t0 = time.perf_counter()
    loader = make()
    t1 = time.perf_counter()
    first = None
    ids: list[list[str]] = []
    with closing(loader) as it:
        for batch in it:
            if first is None:
                first = time.perf_counter() - t0
            ids.append(batch_ids(batch))
            if on_batch is not None:
                on_batch(len(ids))
    t2 = time.perf_counter()
    return Epoch(len(flat(ids)), t2 - t1, first if first is not None else float("nan"), ids)


def section_loaders(s: Setup, work: Work, peers: list[str], rounds: int, workers: Sequence[int]) -> dict:
    """samples/s over one epoch per peer and worker count: rounds interleaved, the best counts."""
    best: dict[tuple[str, int], Epoch] = {}
    every: dict[tuple[str, int], list[float]] = {}
    for r in range(rounds):
        for w in workers:
            order = peers[r % len(peers):] + peers[:r % len(peers)]  # a different peer first each round
            for name in order:
                ep = run_epoch(lambda: ALL[name].loader(s, work, w))
                log(f"   round {r + 1}/{rounds} workers {w} {name}: {ep.samples / ep.seconds:.1f} samples/s "
                    f"({ep.samples} samples, first batch {ep.first_batch_s:.2f} s)")
                key = (name, w)
                every.setdefault(key, []).append(ep.samples / ep.seconds)
                if key not in best or ep.seconds < best[key].seconds:
                    best[key] = ep
    return {name: {str(w): {"samples_per_s": best[name, w].samples / best[name, w].seconds,
                            "samples": best[name, w].samples, "first_batch_s": best[name, w].first_batch_s,
                            "rounds_samples_per_s": every[name, w], "ids": best[name, w].ids}
                   for w in workers} for name in peers}


CHILD_WORKERS = 2


def proc_kb(pid: int, file: str, key: str) -> int:
    """A ``key:  N kB`` line of /proc/<pid>/<file> (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(x) for x in (task / "children").read_text().split()]
                out += kids
                todo += kids
    return out


class TreeMemory(threading.Thread):
    """Samples this process and its descendants (loader workers): RSS every 50 ms (the largest
    worker's peak), the tree's summed PSS (shared pages counted once; reading it costs about 10 ms
    a process) each second and whenever :meth:`now` asks."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopped = threading.Event()
        self.asked = threading.Event()
        self.taken = threading.Event()
        self.peak_pss_kb = self.peak_worker_rss_kb = 0

    def now(self) -> None:
        """A PSS sample now; returns once it is taken (at most half a second later)."""
        self.taken.clear()
        self.asked.set()
        self.taken.wait(0.5)

    def run(self) -> None:
        me, last = os.getpid(), 0.0
        while not self.stopped.wait(0.05):
            kids = descendants(me)
            self.peak_worker_rss_kb = max([self.peak_worker_rss_kb] + [proc_kb(p, "status", "VmRSS") for p in kids])
            if self.asked.is_set() or time.monotonic() - last >= 1.0:
                self.asked.clear()
                last = time.monotonic()
                self.peak_pss_kb = max(self.peak_pss_kb, sum(proc_kb(p, "smaps_rollup", "Pss") for p in [me] + kids))
                self.taken.set()


def child_startup(s: Setup, name: str) -> dict:
    """In a fresh process: imports, then the loader made and one epoch pulled (2 workers), its
    memory sampled."""
    t0 = time.perf_counter()
    import torch
    from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: F401  (lazy modules: a second)

    import lavida_data
    import lavida_data.transforms.collate  # noqa: F401
    import lavida_data.transforms.images  # noqa: F401
    import lavida_data.transforms.tokenize  # noqa: F401

    torch.set_num_threads(1)
    if name == "lavida-data":
        lavida_data.build_dataset  # noqa: B018  (a lazy name: imports the loader's modules)
    ALL[name].missing()  # imports the peer's package
    t1 = time.perf_counter()
    rss_ready = proc_kb(os.getpid(), "status", "VmRSS") / 1024
    mem = TreeMemory()
    mem.start()
    # the peers' loaders count loading the tokenizer (lavida-data's loads it inside build_dataset)
    ep = run_epoch(lambda: ALL[name].loader(s, None if name == "lavida-data" else Work(s.mixture, s.tokenizer),
                                            CHILD_WORKERS), on_batch=lambda k: mem.now() if k == 1 else None)
    mem.stopped.set()
    mem.join()
    return {"imports_s": t1 - t0, "first_batch_s": ep.first_batch_s, "samples": ep.samples,
            "samples_per_s": ep.samples / ep.seconds, "rss_after_imports_mb": rss_ready,
            "peak_rss_mb": proc_kb(os.getpid(), "status", "VmHWM") / 1024,
            "peak_rss_worker_mb": mem.peak_worker_rss_kb / 1024, "peak_pss_tree_mb": mem.peak_pss_kb / 1024}


def section_startup(s: Setup, peers: list[str], parallel: int = 1) -> dict:
    """One fresh process per peer (``parallel`` at once: only --small runs them side by side)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> dict:
        log(f"== startup {name} (fresh process)")
        proc = subprocess.run([sys.executable, __file__, "--child", "startup", "--peer", name, "--work", s.work],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise RuntimeError(f"startup child for {name} failed: {proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(parallel) as pool:
        return dict(zip(peers, pool.map(one, peers)))


def section_resume(s: Setup, work: Work, peers: list[str], refs: Mapping[str, list[list[str]]]) -> dict:
    """Resume with 2 workers after the first batch (the next four compared) and at half the epoch
    (the rest compared): exact when the batches before the save and after the restore are an
    uninterrupted run's (a fresh loader's epoch: ``refs``, else run here), batch for batch."""
    out = {}
    for name in peers:
        log(f"== resume {name}")
        ref = refs.get(name) or run_epoch(lambda: ALL[name].loader(s, work, CHILD_WORKERS)).ids
        points = {}
        for stop, after in dict.fromkeys([(1, 4), (len(ref) // 2, None)]) if len(ref) // 2 > 1 else [(1, None)]:
            got = ALL[name].resume(s, work, CHILD_WORKERS, stop, after)
            want_after = ref[stop:] if after is None else ref[stop:stop + after]
            points[str(stop)] = {"exact": got["before"] == ref[:stop] and got["after"] == want_after,
                                 "order_reproducible": got["before"] == ref[:stop],
                                 "batches_after_restore": len(got["after"]), "expected_after": len(want_after)}
            if after is None:
                seen = flat(got["before"]) + flat(got["after"])
                points[str(stop)]["no_loss_no_repeat"] = sorted(seen) == sorted(flat(ref))
            how = got["how"]
        half = points[str(len(ref) // 2)]
        out[name] = {"exact": all(p["exact"] for p in points.values()),
                     "order_reproducible": all(p["order_reproducible"] for p in points.values()),
                     "no_loss_no_repeat": half["no_loss_no_repeat"], "batches": len(ref), "points": points, "how": how}
    return out


def timeit(fn: Callable[[], Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def section_decode(s: Setup, work: Work, n: int, rounds: int) -> dict:
    """JPEG decoders compared on the benchmark's own kept images, then the common per-sample work
    split into its steps (one core, no loader): what a loader could reach if it added nothing."""
    t = pq.read_table(s.table, columns=COLUMNS).to_pydict()
    kept = [i for i, k in enumerate(keep_mask(t["fltLaionAesthScore"], t["intHeight"], t["intWidth"])) if k][:n]
    rows = [{c: t[c][i] for c in COLUMNS} for i in kept]
    blobs = [Path(r["s3_path"]).read_bytes() for r in rows]

    decoders, versions = jpeg_decoders()
    ref = [np.asarray(decoders["pil"](d)) for d in blobs]
    dec: dict[str, dict] = {}
    for name, fn in decoders.items():
        diffs = [int(np.abs(np.asarray(fn(d), dtype=np.int16) - r).max()) for d, r in zip(blobs, ref)]
        dec[name] = {"images_per_s": 0.0, "identical": sum(x == 0 for x in diffs), "max_level_diff": max(diffs),
                     "variants": jpeg_variants(fn, decoders["pil"])}
    arrays = {name: fn for name, fn in array_decoders().items() if name in decoders}
    for _ in range(rounds):  # interleaved
        for name, fn in decoders.items():
            sec = timeit(lambda: [fn(d) for d in blobs], 1)
            dec[name]["images_per_s"] = max(dec[name]["images_per_s"], len(blobs) / sec)
            if name in arrays:  # the decode alone, into an array (no PIL image for the transforms)
                sec = timeit(lambda: [arrays[name](d) for d in blobs], 1)
                dec[name]["array_only_per_s"] = max(dec[name].get("array_only_per_s", 0.0), len(blobs) / sec)

    return {"images": len(blobs), "decoders": dec, "decoder_versions": versions,
            **work_steps(work, rows, kept, blobs, rounds)}


def jpeg_decoders() -> tuple[dict[str, Callable[[bytes], Any]], dict[str, str]]:
    """JPEG bytes -> a PIL image, as the transforms take it: PIL itself, and the libjpeg-turbo
    bindings that are installed (their arrays wrapped by ``Image.fromarray``)."""
    from PIL import Image

    def pil(data: bytes) -> Any:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img

    decoders: dict[str, Callable[[bytes], Any]] = {"pil": pil}
    versions = {"pil": Image.__version__}
    try:
        import simplejpeg

        decoders["simplejpeg"] = lambda d: Image.fromarray(simplejpeg.decode_jpeg(d, colorspace="RGB"))
        versions["simplejpeg"] = simplejpeg.__version__
    except ImportError:
        versions["simplejpeg"] = "not installed"
    try:
        import turbojpeg

        tj = turbojpeg.TurboJPEG()
        decoders["pyturbojpeg"] = lambda d: Image.fromarray(tj.decode(d, pixel_format=turbojpeg.TJPF_RGB))
        versions["pyturbojpeg"] = turbojpeg.__version__
    except (ImportError, RuntimeError, OSError) as e:  # the package, or its system library (libturbojpeg), missing
        versions["pyturbojpeg"] = f"not available ({type(e).__name__}: {e})"[:160]
    return decoders, versions


def array_decoders() -> dict[str, Callable[[bytes], np.ndarray]]:
    """The same decoders into a bare RGB array."""
    out: dict[str, Callable[[bytes], np.ndarray]] = {}
    with contextlib.suppress(ImportError):
        import simplejpeg

        out["simplejpeg"] = lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB")
    with contextlib.suppress(ImportError, RuntimeError, OSError):
        import turbojpeg

        tj = turbojpeg.TurboJPEG()
        out["pyturbojpeg"] = lambda d: tj.decode(d, pixel_format=turbojpeg.TJPF_RGB)
    return out


def jpeg_variants(fn: Callable[[bytes], Any], pil: Callable[[bytes], Any]) -> dict[str, str]:
    """The decoder against PIL (converted to RGB, as the transforms do) on JPEG kinds other than
    the benchmark's: 4:4:4 and 4:2:2 chroma, progressive, greyscale, CMYK."""
    from PIL import Image

    base = Image.fromarray(np.random.default_rng(3).integers(0, 255, (37, 53, 3), dtype=np.uint8)).resize((301, 203))
    kinds = {"4:4:4": (base, {"subsampling": 0}), "4:2:2": (base, {"subsampling": 1}),
             "progressive": (base, {"progressive": True}), "greyscale": (base.convert("L"), {}),
             "CMYK": (base.convert("CMYK"), {})}
    out = {}
    for kind, (img, opts) in kinds.items():
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90, **opts)
        want = np.asarray(pil(buf.getvalue()).convert("RGB"))
        try:
            got = np.asarray(fn(buf.getvalue()).convert("RGB"))
        except Exception as e:  # a kind the decoder refuses
            out[kind] = f"error: {type(e).__name__}"
            continue
        diff = int(np.abs(got.astype(int) - want).max())
        out[kind] = "identical" if diff == 0 else f"differs (max {diff})"
    return out


def work_steps(work: Work, rows: list[dict], kept: list[int], blobs: list[bytes], rounds: int) -> dict:
    """The common per-sample work timed step by step (best of ``rounds``, interleaved), in ms per
    sample; its sum is the work bound, decode + resize the decode bound."""
    from PIL import Image

    from lavida_data import convert_row, sample_np_rng
    from lavida_data.transforms.images import crop_resize_size

    def convert() -> list[dict]:
        return [convert_row(work.plan.converter, work.plan.options, r, dataset=DATASET, row_index=i, seed=SEED,
                            position=i, image_root=work.plan.image_root) for r, i in zip(rows, kept)]

    def decode() -> list[Image.Image]:
        out = []
        for d in blobs:
            img = Image.open(io.BytesIO(d))
            img.load()
            out.append(img)
        return out

    samples, imgs = convert(), decode()

    def transform() -> list[dict]:
        return [work.images(sm, {sm["image_gen"]: im}, sample_np_rng(SEED, 0, i))
                for sm, im, i in zip(samples, imgs, kept)]

    transformed = transform()
    work.tokenize.token_ids  # noqa: B018  the tokenizer loaded before the timings
    tokenized = [{**x, **work.tokenize(x, sample_np_rng(SEED, 0, i))} for x, i in zip(transformed, kept)]
    steps: dict[str, Callable[[], Any]] = {
        "read bytes": lambda: [Path(r["s3_path"]).read_bytes() for r in rows],
        "convert (t2i)": convert,
        "decode (PIL, full)": decode,
        "transform (resize, crop, micro-conditions, tensor)": transform,
        "tokenize": lambda: [work.tokenize(x, sample_np_rng(SEED, 0, i)) for x, i in zip(transformed, kept)],
        "collate (per sample)": lambda: [work.collate(tokenized[k:k + BATCH]) for k in range(0, len(tokenized), BATCH)],
        "of which: resize alone (PIL bilinear, whole image)": lambda: [
            im.resize(crop_resize_size(*im.size, GEN_SIZE), Image.Resampling.BILINEAR) for im in imgs],
    }
    seconds = {name: float("inf") for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            seconds[name] = min(seconds[name], timeit(fn, 1))
    ms = {k: 1000 * v / len(rows) for k, v in seconds.items()}
    work_ms = sum(v for k, v in ms.items() if not k.startswith("of which"))
    bound_ms = ms["decode (PIL, full)"] + ms["of which: resize alone (PIL bilinear, whole image)"]
    return {"step_ms": ms, "work_ms_per_sample": work_ms, "work_bound_per_s": 1000 / work_ms,
            "decode_resize_bound_per_s": 1000 / bound_ms}


#: (name, mixture, per-device batch, generation size, generation tokens): the demo as `scripts/dev.sh demo`
#: streams it; stage s3's mixture (upstream's s3_interleaved groups, weights and batch factors) at its 1024 px
#: and 1024 tokens, with upstream's per-device batch (2) and a larger one
PADDING_MIXTURES = (
    ("demo", ROOT / "examples" / "mixtures" / "demo.yaml", 8, 256, 256),
    ("s3-unified (upstream-style)", ROOT / "examples" / "stages" / "mixtures" / "s3-unified.yaml", 2, 1024, 1024),
    ("s3-unified (upstream-style)", ROOT / "examples" / "stages" / "mixtures" / "s3-unified.yaml", 8, 1024, 1024),
)


def padded_share(batches: list[list[int]], extras: list[int] | None = None) -> float:
    """Padded tokens over all tokens of the batches (each padded to its longest, plus its extra)."""
    pad = total = 0
    for k, lengths in enumerate(batches):
        width = max(lengths) + (max(extras[k], 0) if extras else 0)
        pad += width * len(lengths) - sum(lengths)
        total += width * len(lengths)
    return pad / total if total else 0.0


def mixed_shares(lengths: list[list[int]], extras: list[int], shuffles: int = 5) -> tuple[float, float]:
    """The same samples shuffled into batches of the same sizes, groups ignored: the mean padded
    share over ``shuffles`` seeded shuffles, without and with the batches' extra padding."""
    rng = np.random.default_rng(0)
    every = [x for b in lengths for x in b]
    plain, extra = [], []
    for _ in range(shuffles):
        perm = [int(x) for x in rng.permutation(every)]
        cut, k = [], 0
        for b in lengths:
            cut.append(perm[k:k + len(b)])
            k += len(b)
        plain.append(padded_share(cut))
        extra.append(padded_share(cut, extras))
    return float(np.mean(plain)), float(np.mean(extra))


def loader_lengths(s: Setup, mixture: Path, batch: int, gen: int, tokens: int,
                   min_samples: int) -> tuple[list[list[int]], list[str], list[int]]:
    """Per batch of the real loader (2 workers, as many epochs as it takes): the samples' token
    lengths, the length group, the extra padding columns."""
    from lavida_data import build_dataloader, build_dataset

    prepared = Path(s.work) / "padding" / mixture.stem
    rc, text = lavida_cli(["prepare", str(mixture), "--out", str(prepared), "--json"])
    if rc:
        raise RuntimeError(f"lavida-data prepare {mixture} failed: {text[-800:]}")
    ds = build_dataset(str(mixture), str(prepared), batch_size=batch, loader={"max_bad_fraction": 1.0},
                       process={"image": {"gen_size": gen},
                                "tokenize": {"tokenizer": s.tokenizer, "gen_tokens": tokens, "max_length": 16384}})
    loader = build_dataloader(ds, num_workers=2)
    lengths: list[list[int]] = []
    groups: list[str] = []
    extras: list[int] = []
    while sum(map(len, lengths)) < min_samples:
        for b in loader:
            if b["ids"]:
                lengths.append([int(x) for x in b["lengths"]])
                groups.append(str(b["group"]))
                extras.append(int(b["input_ids"].shape[1]) - max(lengths[-1]))
    return lengths, groups, extras


def section_padding(s: Setup, min_samples: int, small: bool = False) -> dict:
    """The loader's batches (one length group each) against the same samples in mixed batches of
    the same sizes, on the tokenized sequences (an understanding image counts as its one
    placeholder here; the model widens it later)."""
    out = {}
    for name, mixture, batch, gen, tokens in PADDING_MIXTURES[:2] if small else PADDING_MIXTURES:
        log(f"== padding {name}, batch {batch}")
        lengths, groups, extras = loader_lengths(s, mixture, batch, gen, tokens, min_samples)
        mixed, mixed_extra = mixed_shares(lengths, extras)
        per_group = {}
        for g in sorted(set(groups)):
            ls = [x for b, gg in zip(lengths, groups) if gg == g for x in b]
            per_group[g] = {"batches": groups.count(g), "mean_tokens": float(np.mean(ls)), "min": min(ls),
                            "max": max(ls)}
        out[f"{name}, batch {batch}"] = {
            "mixture": os.path.relpath(mixture, ROOT), "batch": batch, "gen_tokens": tokens,
            "batches": len(lengths), "samples": sum(map(len, lengths)), "groups": len(per_group),
            "grouped_padding": padded_share(lengths), "mixed_padding": mixed,
            "grouped_padding_with_extra": padded_share(lengths, extras), "mixed_padding_with_extra": mixed_extra,
            "per_group": per_group,
        }
    return out


# ============================================================================================
# the run


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("lavida-data", "litdata", "megatron-energon", "webdataset", "datasets", "pandas", "torch", "pillow",
                 "simplejpeg", "PyTurboJPEG", "mosaicml-streaming", "pyarrow", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def setup(work: Path, rows: int) -> Setup:
    """The table, the mixture, lavida-data's preparation (the tiny tokenizer needs one) and the
    tokenizer; written to ``work/setup.json`` for the child processes."""
    work.mkdir(parents=True, exist_ok=True)
    log(f"== data: {rows} rows in {work}")
    table = laion_table(work, rows)
    mixture = mixture_file(work, table)
    rc, text = lavida_cli(["validate", str(mixture), "--json"])  # also loads the command's modules
    if rc:
        raise RuntimeError(f"the benchmark's mixture is invalid: {text}")
    s = Setup(work=str(work), table=str(table), mixture=str(mixture), rows=rows)
    t = pq.read_table(table, columns=COLUMNS).to_pydict()
    s.kept = sum(keep_mask(t["fltLaionAesthScore"], t["intHeight"], t["intWidth"]))
    if not (s.prepared("lavida-data") / DATASET / "manifest.json").exists():
        s.prepared("lavida-data").parent.mkdir(parents=True, exist_ok=True)
        ALL["lavida-data"].prepare(s, s.prepared("lavida-data"))
    s.tokenizer = tiny_tokenizer(work, mixture, s.prepared("lavida-data"))
    (work / "setup.json").write_text(json.dumps(asdict(s)))
    return s


def ratios(results: dict) -> dict:
    """Each measure over the best peer's value: 1.0 is the best; a rate below 1 is slower, a
    time, a size or a memory above 1 is larger."""
    out: dict[str, dict[str, float]] = {}

    def put(measure: str, values: dict[str, float], higher_better: bool) -> None:
        values = {k: v for k, v in values.items() if v and np.isfinite(v)}
        if not values:
            return
        best = max(values.values()) if higher_better else min(values.values())
        out[measure] = {k: v / best for k, v in values.items()}

    prep = results.get("prepare", {})
    put("prepare rows/s", {k: v["rows_per_s"] for k, v in prep.items() if "rows_per_s" in v}, True)
    put("bytes written", {k: v["bytes_written"] for k, v in prep.items() if "bytes_written" in v}, False)
    for w in WORKERS:
        put(f"samples/s, {w} workers", {k: v[str(w)]["samples_per_s"] for k, v in results.get("loaders", {}).items()
                                        if str(w) in v}, True)
    st = results.get("startup", {})
    put("first batch (fresh process)", {k: v["first_batch_s"] for k, v in st.items()}, False)
    put("peak memory", {k: v["peak_pss_tree_mb"] for k, v in st.items()}, False)
    return out


def run_sections(results: dict, work: Path, rows: int, rounds: int, names: list[str], sections: list[str],
                 small: bool) -> None:
    import torch

    torch.set_num_threads(1)  # per core, as loader workers run (the DataLoader sets 1 thread in each)
    s = setup(work, rows)
    results["kept_rows"] = s.kept
    status = {name: ALL[name].missing() for name in names}
    results["peers"] = {name: status[name] or "measured" for name in status}
    results["notes"] = {name: list(ALL[name].notes) for name in status}
    results["abilities"] = {name: dict(zip(ABILITIES, ALL[name].abilities)) for name in status}
    peers = [name for name in status if status[name] is None]
    for name, why in status.items():
        if why:
            log(f"== {name}: {why}")
    work_ = Work(s.mixture, s.tokenizer)
    timings = results.setdefault("section_seconds", {})

    def run(section: str, fn: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        results[section] = fn()
        timings[section] = time.perf_counter() - t0

    if "prepare" in sections or any(not s.prepared(n).exists() for n in peers if n != "upstream-style"):
        run("prepare", lambda: section_prepare(s, peers, rounds))
    refs: dict[str, list[list[str]]] = {}
    if "loaders" in sections:
        run("loaders", lambda: section_loaders(s, work_, peers, rounds, WORKERS))
        for name, by_workers in results["loaders"].items():  # the batches' ids stay out of the JSON
            refs[name] = by_workers[str(CHILD_WORKERS)]["ids"]
            for v in by_workers.values():
                del v["ids"]
    if "startup" in sections:  # --small: the two loaders always here (a fresh process costs seconds of imports)
        run("startup", lambda: section_startup(s, [p for p in peers if not small or p in ALWAYS],
                                               parallel=2 if small else 1))
    if "resume" in sections:
        run("resume", lambda: section_resume(s, work_, peers, refs))
    if "decode" in sections:
        log("== decode")
        run("decode", lambda: section_decode(s, work_, 32 if small else 200, rounds))
    if "padding" in sections:
        run("padding", lambda: section_padding(s, 24 if small else 800, small))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="tiny sizes, one round: check that everything works")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--work", help="folder for the generated data (kept between runs)")
    p.add_argument("--rows", type=int, help="table rows (default 1000; --small 32)")
    p.add_argument("--rounds", type=int, help="interleaved rounds, best counts (default 3; --small 1)")
    p.add_argument("--only", default="prepare,loaders,startup,resume,decode,padding")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--peer", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    work = Path(args.work or os.path.join(tempfile.gettempdir(), "lavida-peers" + ("-small" if args.small else "")))
    if args.child:
        s = Setup(**json.loads((work / "setup.json").read_text()))
        with contextlib.redirect_stdout(sys.stderr):  # peers print to stdout; the result goes last, alone
            result = child_startup(s, args.peer)
        print(json.dumps(result))
        return 0
    rows = args.rows or (32 if args.small else 1000)
    rounds = args.rounds or (1 if args.small else 3)
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "cpu": _cpu_name()},
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/peers.py"] + (argv if argv is not None else sys.argv[1:])),
        "small": args.small, "rows": rows, "rounds": rounds, "batch": BATCH, "gen_size": GEN_SIZE,
        "load_average": {"start": list(os.getloadavg())}, "versions": versions(),
    }
    t_start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # peers print to stdout (and their forked workers too)
        run_sections(results, work, rows, rounds, args.peers.split(","), args.only.split(","), args.small)
    results["ratios"] = ratios(results)
    results["load_average"]["end"] = list(os.getloadavg())
    results["seconds"] = time.perf_counter() - t_start
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return 0


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def resume_text(v: dict) -> str:
    """yes / no, and what happened at each resume point."""
    parts = []
    for stop, pt in v["points"].items():
        what = "exact" if pt["exact"] else "restarted the epoch" if pt["batches_after_restore"] > pt["expected_after"] \
            else "differs"
        parts.append(f"after batch {stop}: {what}")
    return ("yes" if v["exact"] else "no") + f" ({'; '.join(parts)})"


def print_table(r: dict) -> None:
    for line in table_lines(r):
        print(line)


def table_lines(r: dict) -> list[str]:
    """Markdown tables: one per measure, peers side by side (BENCHMARKS.md takes them as they are)."""
    peers = list(r["peers"])
    load = r["load_average"]
    lines = [f"rows {r['rows']} ({r['kept_rows']} kept), batch {r['batch']}, {r['gen_size']} px, best of "
             f"{r['rounds']}; load average {load['start'][0]:.2f} -> {load['end'][0]:.2f}", ""]
    rat = r.get("ratios", {})

    def cell(measure: str, peer: str, text: str) -> str:
        x = rat.get(measure, {}).get(peer)
        return f"{text} ({x:.2f})" if x is not None else text

    header = "| measure | " + " | ".join(peers) + " |"
    lines += [header, "|---|" + "---|" * len(peers)]

    def row(label: str, values: dict[str, str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values.get(p, r["peers"][p] if r["peers"][p] != "measured" else
                                                             "not run") for p in peers) + " |")

    prep = r.get("prepare", {})
    if prep:
        row("prepare, rows/s", {p: cell("prepare rows/s", p, f"{v['rows_per_s']:,.0f}") if "rows_per_s" in v
                                else v.get("status", "-") for p, v in prep.items()})
        row("bytes written", {p: cell("bytes written", p, f"{v['bytes_written'] / 1e6:,.1f} MB") if "bytes_written" in v
                              else "-" for p, v in prep.items()})
    for w in WORKERS:
        ld = r.get("loaders", {})
        if ld:
            row(f"samples/s, {w} workers", {p: cell(f"samples/s, {w} workers", p, f"{v[str(w)]['samples_per_s']:,.1f}")
                                            for p, v in ld.items()})
    st = r.get("startup", {})
    if st:
        row("first batch, fresh process (2 workers)",
            {p: cell("first batch (fresh process)", p, f"{v['first_batch_s']:.2f} s") for p, v in st.items()})
        row("peak memory: PSS of main + workers", {p: cell("peak memory", p, f"{v['peak_pss_tree_mb']:,.0f} MB")
                                                   for p, v in st.items()})
        row("peak RSS: main / largest worker", {p: f"{v['peak_rss_mb']:,.0f} / {v['peak_rss_worker_mb']:,.0f} MB"
                                                for p, v in st.items()})
    rs = r.get("resume", {})
    if rs:
        row("exact resume mid-epoch (2 workers)", {p: resume_text(v) for p, v in rs.items()})
    for k in ABILITIES:
        row(k, {p: v[k] for p, v in r.get("abilities", {}).items()})
    lines.append("")
    dec = r.get("decode")
    if dec:
        lines += ["| JPEG decoder | images/s (to a PIL image) | decode alone (array) | identical to PIL "
                  "| other kinds |", "|---|---|---|---|---|"]
        for k, v in dec["decoders"].items():
            kinds = ", ".join(f"{a}: {b}" for a, b in v["variants"].items()) if k != "pil" else "-"
            lines.append(f"| {k} {dec['decoder_versions'].get(k, '')} | {v['images_per_s']:,.0f} | "
                         f"{v.get('array_only_per_s', float('nan')):,.0f} | {v['identical']}/{dec['images']} "
                         f"(max difference {v['max_level_diff']}) | {kinds} |")
        lines += ["", "| step of the common work | ms per sample |", "|---|---|"]
        for k, v in dec["step_ms"].items():
            lines.append(f"| {k} | {v:.2f} |")
        lines.append(f"| work bound (sum, one core) | {dec['work_ms_per_sample']:.2f} ms = "
                     f"{dec['work_bound_per_s']:,.0f} samples/s |")
        lines.append("")
    pad = r.get("padding")
    if pad:
        lines += ["| mixture | batches | groups | padded share, one group per batch | mixed batches | "
                  "with upstream's extra padding: grouped / mixed |", "|---|---|---|---|---|---|"]
        for k, v in pad.items():
            lines.append(f"| {k} ({v['gen_tokens']} generation tokens) | {v['batches']} | {v['groups']} | "
                         f"{v['grouped_padding']:.1%} | {v['mixed_padding']:.1%} | "
                         f"{v['grouped_padding_with_extra']:.1%} / {v['mixed_padding_with_extra']:.1%} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
