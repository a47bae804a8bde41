"""benchmarks/peers.py --small: lavida-data beside the other loaders on the same rows and work.

Peers that are not installed are reported as such; lavida-data and the upstream-style loader
(pandas and torch, always here) are checked in full. The figures live in BENCHMARKS.md.
"""

import json
import subprocess
import sys

from tests.support import ROOT

ALWAYS = ("lavida-data", "upstream-style")


def test_peers_small_run_measures_every_loader_on_the_same_rows(tmp_path):
    out = tmp_path / "peers.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--small", "--json", str(out),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["small"] is True and 0 < r["kept_rows"] < r["rows"]  # the filters dropped some rows, not all
    measured = [p for p, status in r["peers"].items() if status == "measured"]
    assert set(ALWAYS) <= set(measured)
    assert all(status == "measured" or status.startswith("not installed") for status in r["peers"].values())

    # preparation: every peer kept the same rows (the same filters), and wrote the images
    prep = r["prepare"]
    assert prep["upstream-style"] == {"status": "no preparation step"}
    for p in measured:
        if p != "upstream-style":
            assert prep[p]["rows_per_s"] > 0 and prep[p]["bytes_written"] > 0
            assert prep[p].get("rows_kept", r["kept_rows"]) == r["kept_rows"], p

    # loaders: one epoch at 0, 1 and 2 workers; lavida-data's epoch is whole batches of the kept rows
    for p in measured:
        for w in ("0", "1", "2"):
            assert r["loaders"][p][w]["samples_per_s"] > 0 and r["loaders"][p][w]["first_batch_s"] > 0, (p, w)
    assert r["loaders"]["lavida-data"]["0"]["samples"] == r["kept_rows"] // r["batch"] * r["batch"]
    assert r["loaders"]["upstream-style"]["2"]["samples"] == r["kept_rows"]

    # a fresh process per loader (--small: the two always installed): first batch and memory
    for p in ALWAYS:
        st = r["startup"][p]
        assert st["first_batch_s"] > 0 and st["peak_pss_tree_mb"] > 100 and st["peak_rss_worker_mb"] > 0, p

    # resumption measured, not assumed: lavida-data resumes exactly; the upstream-style loader
    # starts its epoch again (its batches repeat)
    assert r["resume"]["lavida-data"]["exact"] is True
    up = r["resume"]["upstream-style"]
    assert up["exact"] is False and up["order_reproducible"] is True and up["no_loss_no_repeat"] is False

    # decoders against PIL on the same JPEGs; the work split into steps
    dec = r["decode"]
    assert dec["decoders"]["pil"]["identical"] == dec["images"] and dec["work_bound_per_s"] > 0
    assert dec["step_ms"]["decode (PIL, full)"] > 0

    # padding: one length group per batch pads less than mixed batches of the same samples
    for name, v in r["padding"].items():
        assert v["samples"] > 0 and v["grouped_padding"] < v["mixed_padding"], name

    # the tables, with ratios to the best peer
    assert "| samples/s, 2 workers |" in proc.stdout and "| exact resume mid-epoch (2 workers) |" in proc.stdout
    assert set(r["ratios"]["samples/s, 0 workers"]) == set(measured)
