"""``lavida-data stream MIXTURE --prepared DIR``: pull samples through the real loader, count
bad ones per dataset and reason, measure it."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from lavida_data.cli.output import err, load_report, print_json


def fraction(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        f = -1.0
    if not 0 <= f <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1")
    return f


def tiny_tokenizer_dir() -> str:
    """The small test tokenizer, built once into the cache folder."""
    import tempfile

    from lavida_data.transforms.tokenizer import build_tiny_tokenizer_once

    return build_tiny_tokenizer_once(os.path.join(
        os.environ.get("LAVIDA_CACHE") or os.path.join(tempfile.gettempdir(), "lavida-cache"), "tiny-tokenizer"))


def cmd_stream(args: argparse.Namespace) -> int:
    from lavida_data.stream.loader import build_dataloader, build_dataset

    report = load_report(args.config)
    if not report.valid:
        return 1
    tokenizer = args.tokenizer or (tiny_tokenizer_dir() if args.tiny_tokenizer else None)
    process: dict[str, Any] = {"image": {"gen_size": args.gen_size}}
    if tokenizer:
        from lavida_data.transforms.tokenize import gen_token_count

        slots = gen_token_count(args.gen_size)  # as the trainer: 1024 at 1024 px (2x2 merge)
        process["tokenize"] = {"tokenizer": tokenizer, "gen_tokens": slots, "gen_enc_tokens": slots,
                               "max_length": args.max_length, "truncate": "right"}
    loader_cfg = {} if args.max_bad_fraction is None else {"max_bad_fraction": args.max_bad_fraction}
    dataset = build_dataset(report, args.prepared, batch_size=args.batch_size, process=process, loader=loader_cfg)
    loader = build_dataloader(dataset, num_workers=args.workers)
    seen = Seen()
    stopped = None
    try:
        seen.pull(loader, args.n)
    except Exception as e:  # the bad-sample limit, a store that stays unreachable: report what was seen
        if os.environ.get("LAVIDA_DEBUG"):
            raise
        stopped = worker_error(e)
    out = seen.report(loader.bad_counts(), bool(tokenizer), stopped)
    if args.json:
        print_json(out)
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


class Seen:
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


def add_command(sub: Any) -> None:
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
    s.add_argument("--max-bad-fraction", type=fraction, metavar="F",
                   help="stop when a dataset's bad fraction passes F (0..1; default the loader's 0.05); "
                        "1 never stops")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_stream)
