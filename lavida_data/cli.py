"""The ``lavida-data`` command: validate, converters, preview. Every command takes ``--json``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Sequence

from rich.console import Console

from . import __version__

err = Console(stderr=True, highlight=False)


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=not enabled, transient=True,
    )


@contextlib.contextmanager
def _nothing():
    yield


def _print_issues(report) -> None:
    for i in report.errors:
        err.print(str(i), style="red", markup=False, soft_wrap=True)
    for w in report.warnings:
        err.print(str(w), style="yellow", markup=False, soft_wrap=True)


def cmd_validate(args: argparse.Namespace) -> int:
    from .validate import validate_file

    with err.status(f"validating {args.config}", spinner="dots") if sys.stderr.isatty() else _nothing():
        report = validate_file(args.config, offline=args.offline, strict=args.strict)
    if args.json:
        _print_json(report.to_json())
    else:
        _print_issues(report)
        if report.valid:
            n = len(report.mixture.datasets) if report.mixture else 0
            w = len(report.warnings)
            notes = f"{n} datasets" + (f", {w} warning{'s' if w != 1 else ''}" if w else "")
            err.print(f"{args.config}: valid ({notes}{', offline' if args.offline else ''})", style="green",
                      markup=False)
        else:
            err.print(f"{args.config}: {len(report.errors)} error(s)", style="red", markup=False)
    return 0 if report.valid else 1


def cmd_converters(args: argparse.Namespace) -> int:
    from .registry import registry

    items = [c.describe() for c in registry]
    if args.json:
        _print_json([{k: d[k] for k in ("name", "aliases", "source", "options", "columns")} for d in items])
    else:
        out = Console(highlight=False, soft_wrap=True)
        for d in items:
            out.print(f"[bold]{d['name']}[/bold]  ({d['source']})")
            if d["aliases"]:
                out.print(f"  aliases:  {', '.join(d['aliases'])}", markup=False)
            cols = ", ".join(d["columns"]["required"]) or "-"
            if d["columns"]["optional"]:
                cols += f"  (optional: {', '.join(d['columns']['optional'])})"
            out.print(f"  columns:  {cols}", markup=False)
            opts = [f"{k}={v.get('default', 'required')!r}" for k, v in d["options"].items()]
            out.print(f"  options:  {', '.join(opts) or '-'}", markup=False)
    for e in registry.plugin_errors:
        err.print(str(e), style="red", markup=False, soft_wrap=True)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .preview import preview, render_html
    from .validate import validate_file

    report = validate_file(args.config, offline=False, strict=args.strict)
    if not report.valid:
        _print_issues(report)
        return 1
    mixture = report.mixture
    plans = list(report.plans.values())
    if args.dataset:
        if args.dataset not in report.plans:
            mixture.dataset(args.dataset)  # raises with a suggestion
        plans = [report.plans[args.dataset]]
    seed = mixture.seed if args.seed is None else args.seed
    with _progress(not args.json and sys.stderr.isatty()) as bar:
        task = bar.add_task("converting", total=len(plans))
        items, stats = preview(plans, n=args.n, seed=seed, on_dataset=lambda _: bar.advance(task))
    if args.html:
        os.makedirs(os.path.dirname(os.path.abspath(args.html)), exist_ok=True)
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(items, stats, f"lavida-data preview: {os.path.basename(args.config)}"))
        err.print(f"wrote {args.html} ({len(items)} samples)", markup=False)
    if args.json:
        _print_json([i.to_json() for i in items])
    elif not args.html:
        for i in items:
            Console(highlight=False).print_json(json.dumps(i.to_json(), default=str))
    for name, st in stats.items():
        lost = sum(st.dropped.values()) + sum(st.skipped.values())
        if lost:
            err.print(f"{name}: {st.to_json()}", style="yellow", markup=False, soft_wrap=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lavida-data", description=__doc__)
    p.add_argument("--version", action="version", version=f"lavida-data {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a mixture file; exit 1 with every error")
    v.add_argument("config")
    v.add_argument("--offline", action="store_true", help="do not read the tables' schemas")
    v.add_argument("--strict", action="store_true",
                   help="every warning (what upstream accepts silently) is an error")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_validate)

    c = sub.add_parser("converters", help="list the registered converters")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_converters)

    pv = sub.add_parser("preview", help="convert the first rows of each dataset, straight from the tables")
    pv.add_argument("config")
    pv.add_argument("--dataset", help="only this dataset")
    pv.add_argument("-n", type=int, default=3, help="samples per dataset (default 3)")
    pv.add_argument("--seed", type=int, help="override the mixture's seed")
    pv.add_argument("--json", action="store_true")
    pv.add_argument("--html", metavar="OUT.html", help="write a page showing each sample's images and text")
    pv.add_argument("--strict", action="store_true", help="refuse a mixture with warnings, as `validate --strict`")
    pv.set_defaults(fn=cmd_preview)

    from .cli_stream import add_commands

    add_commands(sub)
    from .cli_import import add_commands as add_import

    add_import(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except Exception as e:  # a clean one-line error for the user; tracebacks with LAVIDA_DEBUG=1
        if os.environ.get("LAVIDA_DEBUG"):
            raise
        err.print(f"error: {type(e).__name__}: {e}", style="red", markup=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
