"""Streaming's machine-level traps: shared memory of killed runs, two jobs on one machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time


from lavida_data.stream.shm import SHM_DIR, clean_stale_shared_memory


SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time
    from lavida_data import validate_file
    from lavida_data.stream.loader import build_dataloader, build_dataset
    report = validate_file(sys.argv[1])
    ds = build_dataset(report, sys.argv[2], batch_size=4, process={"decode_images": False})
    ids = []
    for batch in build_dataloader(ds, num_workers=1):
        ids += batch["ids"]
        if sys.argv[3] == "hold":
            print("ready", flush=True)
            time.sleep(60)
    print(json.dumps(ids), flush=True)
""")


def _blocks() -> set[str]:
    return {n for n in os.listdir(SHM_DIR) if n[:6].isdigit() and n[6:7] == "_"}


def run(demo, mode, **kw):  # noqa: F811
    report, prepared, _ = demo
    return subprocess.Popen([sys.executable, "-c", SCRIPT, report.file, prepared, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def kill_job(proc) -> None:
    """SIGKILL the whole job (its DataLoader workers too), as a scheduler does."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def test_killed_runs_leave_shared_memory_that_is_cleaned_but_live_jobs_keep_theirs(demo):  # noqa: F811
    clean_stale_shared_memory()
    before = _blocks()
    holder = run(demo, "hold")
    try:
        assert holder.stdout.readline().strip() == "ready"
        live = _blocks() - before
        assert live, "a running loader holds shared memory"
        dead = run(demo, "hold")
        assert dead.stdout.readline().strip() == "ready"
        kill_job(dead)
        assert dead.returncode == -signal.SIGKILL
        stale = _blocks() - before - live
        assert stale, "SIGKILL leaves the dead run's blocks behind"
        removed: set[str] = set()
        deadline = time.time() + 60  # the dead run's worker process notices and exits within seconds
        while not stale <= removed and time.time() < deadline:
            removed |= set(clean_stale_shared_memory())
            time.sleep(0.5)
        assert stale <= removed and not (live & removed)
        assert live <= _blocks()
    finally:
        kill_job(holder)
    clean_stale_shared_memory()


def test_workers_die_with_a_killed_main_process(demo):  # noqa: F811
    proc = run(demo, "hold")
    assert proc.stdout.readline().strip() == "ready"
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert children, "the loader runs a worker process"
    os.kill(proc.pid, signal.SIGKILL)  # the main process only
    proc.wait(timeout=60)
    deadline = time.time() + 30
    while any(os.path.exists(f"/proc/{c}") and "Z" not in open(f"/proc/{c}/stat").read().split()[2]
              for c in children) and time.time() < deadline:
        time.sleep(0.2)
    assert not [c for c in children if os.path.exists(f"/proc/{c}") and
                "Z" not in open(f"/proc/{c}/stat").read().split()[2]]


def test_two_jobs_on_one_machine_stream_the_same_order(demo):  # noqa: F811
    a, b = run(demo, "full"), run(demo, "full")
    out_a, err_a = a.communicate(timeout=180)
    out_b, err_b = b.communicate(timeout=180)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    ids_a, ids_b = json.loads(out_a.strip().splitlines()[-1]), json.loads(out_b.strip().splitlines()[-1])
    assert ids_a == ids_b and len(ids_a) > 40
