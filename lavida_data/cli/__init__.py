"""The ``lavida-data`` command: one module per sub-command, each with ``add_command``; every
command takes ``--json``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from lavida_data.cli import converters, imports, order, prepare, preview, stream, validate
from lavida_data.cli.output import err
from lavida_data.version import __version__

COMMANDS = (validate, converters, preview, prepare, order, stream, imports)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lavida-data", description=__doc__)
    p.add_argument("--version", action="version", version=f"lavida-data {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_command(sub)
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
