"""``lavida-data order MIXTURE --prepared DIR``: the global sample ids in training order."""

from __future__ import annotations

import argparse
from typing import Any

from lavida_data.cli.output import load_report, print_json


def cmd_order(args: argparse.Namespace) -> int:
    from lavida_data.stream.order import global_batches

    report = load_report(args.config)
    if not report.valid:
        return 1
    common = dict(batch_size=args.batch_size, world_size=args.world_size, seed=args.seed, epoch=args.epoch)
    if args.by_batch:
        steps = global_batches(report.mixture, report.plans, args.prepared, start=args.start, steps=args.n, **common)
        if args.json:
            print_json(steps)
        else:
            for b in steps:
                print(f"{b['step']}\t{b['group']}\t{len(b['ids'])}\t{' '.join(b['ids'])}")
        return 0
    flat = [(b["step"], i) for b in global_batches(report.mixture, report.plans, args.prepared, **common)
            for i in b["ids"]]
    part = flat[args.start: None if args.n is None else args.start + args.n]
    if args.json:
        print_json([i for _, i in part])
    else:
        for k, (step, i) in enumerate(part, args.start):
            print(f"{k}\t{step}\t{i}")
    return 0


def add_command(sub: Any) -> None:
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

