"""What tests in every folder share besides fixtures: the repository's folders and the one helper
that runs the ``lavida-data`` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


def run_cli(*args: object, cwd: str | os.PathLike | None = None, env: dict | None = None,
            check_rc: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed ``lavida-data`` command; with ``check_rc``, assert its exit status (the
    message shows what it printed)."""
    proc = subprocess.run([str(BIN / "lavida-data"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr + proc.stdout
    return proc
