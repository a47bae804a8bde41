"""``lavida-data prepare``, ``order`` and ``stream``: from tables to shards to batches."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from rich.console import Console

err = Console(stderr=True, highlight=False)


def _report(args: argparse.Namespace):
    from .cli import _print_issues
    from .validate import validate_file

    report = validate_file(args.config)
    if not report.valid:
        _print_issues(report)
    return report


def _fraction(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        f = -1.0
    if not 0 <= f <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1")
    return f


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def cmd_prepare(args: argparse.Namespace) -> int:
    from .cli import _print_json, _progress
    from .prepare import prepare

    if args.engine == "ray":
        import importlib

        from .prepare_ray import RAY_MISSING, prepare_ray

        try:  # before validating: say it at once
            importlib.import_module("ray")
        except ImportError:
            err.print(f"error: {RAY_MISSING}", style="red", markup=False)
            return 2
    elif args.address or args.block_rows:
        err.print("error: --address and --block-rows need --engine ray", style="red", markup=False)
        return 2
    report = _report(args)
    if not report.valid:
        return 1
    plans = list(report.plans.values())
    with _progress(not args.json and sys.stderr.isatty()) as bar:
        tasks = {p.name: bar.add_task(p.name, total=None) for p in plans}
        common = dict(embed=args.embed_images, shard_size=_size(args.shard_size),
                      on_rows=lambda name, n: bar.advance(tasks[name], n),
                      on_done=lambda r: bar.update(tasks[r.name], total=r.rows_read, completed=r.rows_read))
        if args.engine == "ray":
            results = prepare_ray(plans, args.out, address=args.address, block_rows=args.block_rows, **common)
        else:
            results = prepare(plans, args.out, workers=args.workers, **common)
    if args.json:
        _print_json({"datasets": {n: r.to_json() for n, r in results.items()}})
    else:
        for n, r in results.items():
            state = "up to date" if r.up_to_date else f"{r.shards} shard(s)"
            dropped = f", dropped {r.dropped}" if r.dropped else ""
            engine = getattr(r, "engine", None)
            reused = (f"; reused {engine['blocks']['reused']}/{engine['blocks']['total']} block(s), "
                      f"{engine['shards']['reused']}/{engine['shards']['total']} shard(s)") if engine else ""
            err.print(f"{n}: {r.rows_kept}/{r.rows_read} rows kept{dropped}; {state}{reused} -> {r.path}",
                      markup=False)
    return 0


def cmd_order(args: argparse.Namespace) -> int:
    from .cli import _print_json
    from .stream.order import global_batches

    report = _report(args)
    if not report.valid:
        return 1
    common = dict(batch_size=args.batch_size, world_size=args.world_size, seed=args.seed, epoch=args.epoch)
    if args.by_batch:
        steps = global_batches(report.mixture, report.plans, args.prepared, start=args.start, steps=args.n, **common)
        if args.json:
            _print_json(steps)
        else:
            for b in steps:
                print(f"{b['step']}\t{b['group']}\t{len(b['ids'])}\t{' '.join(b['ids'])}")
        return 0
    flat = [(b["step"], i) for b in global_batches(report.mixture, report.plans, args.prepared, **common)
            for i in b["ids"]]
    part = flat[args.start: None if args.n is None else args.start + args.n]
    if args.json:
        _print_json([i for _, i in part])
    else:
        for k, (step, i) in enumerate(part, args.start):
            print(f"{k}\t{step}\t{i}")
    return 0


def tiny_tokenizer_dir() -> str:
    """The small test tokenizer, built once into the cache folder."""
    import tempfile

    from .tokenizer import build_tiny_tokenizer

    path = os.path.join(os.environ.get("LAVIDA_CACHE") or os.path.join(tempfile.gettempdir(), "lavida-cache"),
                        "tiny-tokenizer")
    if not os.path.exists(os.path.join(path, "tokenizer.json")):
        build_tiny_tokenizer(path)
    return path


def cmd_stream(args: argparse.Namespace) -> int:
    from .cli import _print_json
    from .stream.loader import build_dataloader, build_dataset

    report = _report(args)
    if not report.valid:
        return 1
    tokenizer = args.tokenizer or (tiny_tokenizer_dir() if args.tiny_tokenizer else None)
    process: dict[str, Any] = {"image": {"gen_size": args.gen_size}}
    if tokenizer:
        process["tokenize"] = {"tokenizer": tokenizer, "gen_tokens": (args.gen_size // 16) ** 2,
                               "max_length": args.max_length, "truncate": "right"}
    loader_cfg = {} if args.max_bad_fraction is None else {"max_bad_fraction": args.max_bad_fraction}
    dataset = build_dataset(report, args.prepared, batch_size=args.batch_size, process=process, loader=loader_cfg)
    loader = build_dataloader(dataset, num_workers=args.workers)
    seen = _Seen()
    stopped = None
    try:
        seen.pull(loader, args.n)
    except Exception as e:  # the bad-sample limit, a store that stays unreachable: report what was seen
        if os.environ.get("LAVIDA_DEBUG"):
            raise
        stopped = worker_error(e)
    out = seen.report(loader.bad_counts(), bool(tokenizer), stopped)
    if args.json:
        _print_json(out)
    else:
        err.print(f"{out['samples']} samples ({out['kept']} kept) in {out['steps']} steps, {out['seconds']:.2f}s: "
                  f"{out['samples_per_s']} samples/s, first batch after {out['first_batch_s']}s; "
                  f"bad: {out['bad'] or 'none'}", markup=False, soft_wrap=True)
        for name, reasons in out["bad_examples"].items():
            for reason, examples in reasons.items():
                for ex in examples:
                    err.print(f"  {name} {reason}: {ex['id']} {ex['path']}: {ex['error']}", markup=False,
                              soft_wrap=True)
        if stopped:
            err.print(f"stopped: {stopped}", style="red", markup=False, soft_wrap=True)
    return 1 if stopped else 0


class _Seen:
    """What ``stream`` saw: samples, steps, per-group sizes, a few examples of each bad reason."""

    EXAMPLES = 3

    def __init__(self):
        self.start = time.perf_counter()
        self.first: float | None = None
        self.samples = self.kept = self.steps = 0
        self.groups: dict[str, dict[str, int]] = {}  # per length group: steps and per-device samples
        self.examples: dict[str, dict[str, list[dict]]] = {}

    def pull(self, loader, n: int) -> None:
        while self.samples < n:  # as many epochs as it takes
            for batch in loader:
                self.add(batch)
                if self.samples >= n:
                    break

    def add(self, batch: dict) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.start
        size = len(batch["ids"]) + len(batch["skipped"])
        self.samples += size
        self.kept += len(batch["ids"])
        self.steps += 1
        g = self.groups.setdefault(batch["group"], {"steps": 0, "samples": 0})
        g["steps"] += 1
        g["samples"] += size
        for s in batch["skipped"]:
            kept = self.examples.setdefault(s["dataset"], {}).setdefault(s["reason"], [])
            if len(kept) < self.EXAMPLES:
                kept.append({"id": s["id"], "path": s.get("path"), "error": s.get("error")})

    def report(self, bad: dict, tokenized: bool, stopped: str | None) -> dict:
        seconds = time.perf_counter() - self.start
        return {"samples": self.samples, "kept": self.kept, "steps": self.steps, "seconds": round(seconds, 4),
                "samples_per_s": round(self.samples / seconds, 2) if seconds else None,
                "first_batch_s": round(self.first, 4) if self.first is not None else None, "bad": bad,
                "bad_examples": {d: dict(sorted(r.items())) for d, r in sorted(self.examples.items())},
                "groups": dict(sorted(self.groups.items())), "tokenized": tokenized, "stopped": stopped}


def worker_error(e: BaseException) -> str:
    """An error's message; for one re-raised from a DataLoader worker, the original message
    without the worker's traceback."""
    text = str(e)
    if "Original Traceback" not in text:
        return f"{type(e).__name__}: {text}"
    name = type(e).__name__
    for marker in (f"{type(e).__module__}.{name}: ", f"{name}: "):
        if marker in text:
            return f"{name}: {text.rsplit(marker, 1)[1].strip()}"
    return f"{name}: {text.strip().splitlines()[-1]}"


def add_commands(sub: Any) -> None:
    p = sub.add_parser("prepare", help="turn each dataset's filtered table into MDS shards")
    p.add_argument("config")
    p.add_argument("--out", required=True, help="folder or s3://bucket/prefix")
    p.add_argument("--workers", type=int, default=1, help="datasets prepared at once (processes; local engine)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): this machine; ray: a Ray cluster with Ray Data (lavida-data[ray])")
    p.add_argument("--address", help="the Ray cluster (ray://head:10001, auto, ...; default: RAY_ADDRESS or a "
                                     "new local Ray)")
    p.add_argument("--block-rows", type=int, help="ray engine: table rows per task (default 65536; 4096 with "
                                                  "--embed-images)")
    p.add_argument("--embed-images", action="store_true", help="store the referenced images in the shards")
    p.add_argument("--shard-size", default="64MB", help="shard size limit (default 64MB)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_prepare)

    o = sub.add_parser("order", help="the global sample ids in training order, without decoding")
    o.add_argument("config")
    o.add_argument("--prepared", required=True)
    o.add_argument("--seed", type=int, help="override the mixture's seed")
    o.add_argument("--batch-size", type=int, default=1,
                   help="per-device batch size B (a step of length group g: max(int(B x factor_g), 1) per device)")
    o.add_argument("--world-size", type=int, default=1)
    o.add_argument("--epoch", type=int, default=0)
    o.add_argument("--by-batch", action="store_true",
                   help="one entry per step: its length group and the ids of its global batch")
    o.add_argument("--start", type=int, default=0, help="first sample to list (with --by-batch: first step)")
    o.add_argument("-n", type=int, help="how many samples (with --by-batch: steps); default: to the end of the epoch")
    o.add_argument("--json", action="store_true")
    o.set_defaults(fn=cmd_order)

    s = sub.add_parser("stream", help="pull samples through the real loader and measure it")
    s.add_argument("config")
    s.add_argument("--prepared", required=True)
    s.add_argument("-n", type=int, default=256, help="samples to pull (default 256)")
    s.add_argument("--batch-size", type=int, default=8, help="per-device batch size")
    s.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    s.add_argument("--tokenizer", help="a Hugging Face tokenizer folder (LLaDA's)")
    s.add_argument("--tiny-tokenizer", action="store_true", help="use the small built-in test tokenizer")
    s.add_argument("--gen-size", type=int, choices=(256, 512, 1024), default=256)
    s.add_argument("--max-length", type=int, default=4096)
    s.add_argument("--max-bad-fraction", type=_fraction, metavar="F",
                   help="stop when a dataset's bad fraction passes F (0..1; default the loader's 0.05); "
                        "1 never stops")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_stream)
