"""The benchmark command works (its small mode); the figures themselves live in BENCHMARKS.md."""

import json
import subprocess
import sys

from tests.support import ROOT


def test_benchmarks_small_mode_runs_and_reports_every_section(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--small", "--json", str(out),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["small"] is True and {"prepare", "loader", "startup", "resume"} <= set(r)
    assert r["prepare"]["rows_kept"] > 0 and r["prepare"]["prepare_rows_per_s"] > 0
    assert r["loader"]["loader_samples_per_s"] > 0 and r["loader"]["upstream_style_per_s"] > 0
    assert r["resume"]["resume_at"] > 0 and r["startup"]["rss_growth"] > 0
    assert "target 10x" in proc.stdout and "target 90%" in proc.stdout
