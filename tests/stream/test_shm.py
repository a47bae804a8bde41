"""streaming's leftovers: lock files of prefixes no job uses are removed, those in use are kept."""

from __future__ import annotations

from multiprocessing import shared_memory

from lavida_data.stream.shm import clean_stale_filelocks


def test_lock_files_of_unused_prefixes_go_and_those_in_use_stay(tmp_path):
    # three prefixes far above any a real run takes here
    stale, live, held = "987601", "987602", "987603"
    for prefix in (stale, live, held):
        for kind in ("cache", "barrier"):
            (tmp_path / f"{prefix}_{kind}_filelock").write_bytes(b"")
    (tmp_path / "987604_notes.txt").write_text("not streaming's")
    block = shared_memory.SharedMemory(name=f"{live}_locals", create=True, size=64)  # a live job's block
    try:
        with open(tmp_path / f"{held}_cache_filelock", "rb"):  # a lock some process holds open
            removed = clean_stale_filelocks(str(tmp_path))
    finally:
        block.close()
        block.unlink()
    assert sorted(removed) == [f"{stale}_barrier_filelock", f"{stale}_cache_filelock", f"{held}_barrier_filelock"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "987602_barrier_filelock", "987602_cache_filelock", "987603_cache_filelock", "987604_notes.txt"]
