"""``lavida-data validate MIXTURE``: every error and warning of a mixture file, with its line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lavida_data.cli.output import err, nothing, print_issues, print_json


def cmd_validate(args: argparse.Namespace) -> int:
    from lavida_data.spec.validate import validate_file

    with err.status(f"validating {args.config}", spinner="dots") if sys.stderr.isatty() else nothing():
        report = validate_file(args.config, offline=args.offline, strict=args.strict)
    if args.json:
        print_json(report.to_json())
    else:
        print_issues(report)
        if report.valid:
            n = len(report.mixture.datasets) if report.mixture else 0
            w = len(report.warnings)
            notes = f"{n} datasets" + (f", {w} warning{'s' if w != 1 else ''}" if w else "")
            err.print(f"{args.config}: valid ({notes}{', offline' if args.offline else ''})", style="green",
                      markup=False)
        else:
            err.print(f"{args.config}: {len(report.errors)} error(s)", style="red", markup=False)
    return 0 if report.valid else 1


def add_command(sub: Any) -> None:
    v = sub.add_parser("validate", help="check a mixture file; exit 1 with every error")
    v.add_argument("config")
    v.add_argument("--offline", action="store_true", help="do not read the tables' schemas")
    v.add_argument("--strict", action="store_true",
                   help="every warning (what upstream accepts silently) is an error")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_validate)

