"""``lavida-data prepare MIXTURE --out DIR``: each dataset's filtered table -> MDS shards."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lavida_data.cli.output import err, load_report, print_json, progress


def size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def cmd_prepare(args: argparse.Namespace) -> int:
    from lavida_data.prepare.local import prepare

    if args.engine == "ray":
        import importlib

        from lavida_data.prepare.ray import RAY_MISSING, prepare_ray

        try:  # before validating: say it at once
            importlib.import_module("ray")
        except ImportError:
            err.print(f"error: {RAY_MISSING}", style="red", markup=False)
            return 2
    elif args.address or args.block_rows:
        err.print("error: --address and --block-rows need --engine ray", style="red", markup=False)
        return 2
    report = load_report(args.config)
    if not report.valid:
        return 1
    plans = list(report.plans.values())
    with progress(not args.json and sys.stderr.isatty()) as bar:
        tasks = {p.name: bar.add_task(p.name, total=None) for p in plans}
        common = dict(embed=args.embed_images, shard_size=size(args.shard_size),
                      on_rows=lambda name, n: bar.advance(tasks[name], n),
                      on_done=lambda r: bar.update(tasks[r.name], total=r.rows_read, completed=r.rows_read))
        if args.engine == "ray":
            results = prepare_ray(plans, args.out, address=args.address, block_rows=args.block_rows, **common)
        else:
            results = prepare(plans, args.out, workers=args.workers, **common)
    if args.json:
        print_json({"datasets": {n: r.to_json() for n, r in results.items()}})
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


def add_command(sub: Any) -> None:
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

