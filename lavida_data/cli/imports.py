"""``lavida-data import KIND SOURCE --out TABLE``: a public dataset's native layout to a table."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from lavida_data.cli.output import err, print_json


def cmd_import(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from lavida_data.importers import run_import  # it loads the importer modules

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} records"),
                  TimeElapsedColumn(), console=err, disable=args.json or not sys.stderr.isatty(),
                  transient=True) as bar:
        task = bar.add_task(f"importing {args.kind}", total=None)
        result = run_import(args.kind, args.source, args.out, images_to=args.images_to, frame=args.frame,
                            workers=args.workers, on_progress=lambda n: bar.advance(task, n))
    for warning in result.warnings:
        err.print(f"warning: {warning}", style="yellow", markup=False, soft_wrap=True)
    if args.json:
        print_json(result.to_json())
        return 0
    state = "up to date" if result.up_to_date else "written"
    for part, t in result.tables.items():
        err.print(f"{t['path']}: {t['rows']} rows ({state})", markup=False)
    if result.skipped:
        err.print(f"skipped: {result.skipped}", style="yellow", markup=False)
        for reason, where in result.examples.items():
            err.print(f"  {reason}: first at {where}", style="yellow", markup=False, soft_wrap=True)
    if args.images_to:
        err.print(f"images: {result.images_written} written, {result.images_reused} already there", markup=False)
    err.print("mixture entries (paste under `datasets:`):", markup=False)
    sys.stdout.write(yaml.safe_dump(result.entries, sort_keys=False, allow_unicode=True))
    return 0


def _help_with_kinds(parser: argparse.ArgumentParser) -> None:
    """The KINDs go into ``import --help`` only when it is shown: other commands do not load the
    importer modules at start."""
    plain = parser.format_help

    def format_help() -> str:
        from lavida_data.importers import load_all

        kinds = ", ".join(sorted(load_all()))
        parser.description = "KIND is one of: " + kinds
        parser._get_positional_actions()[0].help = "the layout: " + kinds
        return plain()

    parser.format_help = format_help  # type: ignore[method-assign]


def add_command(sub: Any) -> None:
    p = sub.add_parser("import", help="turn a public dataset's native layout into a converter-ready table")
    p.add_argument("kind", metavar="KIND", help="the layout")
    _help_with_kinds(p)
    p.add_argument("source", metavar="SOURCE", help="the downloaded release (file or folder, local or s3://)")
    p.add_argument("--out", required=True, metavar="TABLE_URI",
                   help="the parquet table (a folder or prefix for kinds that write several tables)")
    p.add_argument("--images-to", metavar="DIR_OR_S3_URI",
                   help="write the images found in the source here, under stable keys")
    p.add_argument("--frame", choices=["padded-square", "per-axis"], default="padded-square",
                   help="how boxes map onto the 0..1024 grid (default padded-square)")
    p.add_argument("--workers", type=int, default=16, help="concurrent image writes (default 16)")
    p.add_argument("--json", action="store_true", help="counts and the mixture entries as JSON")
    p.set_defaults(fn=cmd_import)
