"""What every command shares: the error console, ``--json`` output, progress bars, the
mixture report with its issues printed."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Iterator

from rich.console import Console
from rich.progress import Progress

err = Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    """``--json`` output: one indented JSON document on stdout."""
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def progress(enabled: bool) -> Progress:
    """A progress bar on stderr (off with ``--json`` or when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=not enabled, transient=True,
    )


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield


def print_issues(report) -> None:
    """A report's errors (red) and warnings (yellow), one per line with file, line and field."""
    for i in report.errors:
        err.print(str(i), style="red", markup=False, soft_wrap=True)
    for w in report.warnings:
        err.print(str(w), style="yellow", markup=False, soft_wrap=True)


def load_report(config: str):
    """The mixture's validation report; its issues printed when it is not valid."""
    from lavida_data.spec.validate import validate_file

    report = validate_file(config)
    if not report.valid:
        print_issues(report)
    return report
