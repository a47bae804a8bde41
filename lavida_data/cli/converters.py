"""``lavida-data converters``: the registered converters, their columns and options."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from lavida_data.cli.output import err, print_json


def cmd_converters(args: argparse.Namespace) -> int:
    from lavida_data.convert.registry import registry

    items = [c.describe() for c in registry]
    if args.json:
        print_json([{k: d[k] for k in ("name", "aliases", "source", "options", "columns")} for d in items])
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


def add_command(sub: Any) -> None:
    c = sub.add_parser("converters", help="list the registered converters")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_converters)

