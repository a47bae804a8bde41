"""Helpers of the text-to-image and editing importer tests: tiny native layouts (real images,
tars, split gzip parts, zips, img2dataset folders) and the CLI round trip (import -> mixture ->
validate -> preview)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Iterable

import pyarrow.parquet as pq
import yaml
from PIL import Image


def image_bytes(w: int, h: int, fmt: str = "JPEG", color=(30, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format=fmt)
    return buf.getvalue()


def png(w: int, h: int) -> bytes:
    return image_bytes(w, h, "PNG")


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def write_tar(path: Path, members: Iterable[tuple[str, bytes]], gz: bool = False) -> Path:
    """A tar (gzip when ``gz``) holding ``members`` in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def split(path: Path, parts: int) -> list[Path]:
    """Cut ``path`` into ``path.part000`` ... (the original removed), as the releases publish."""
    data = path.read_bytes()
    step = -(-len(data) // parts)
    out = []
    for i in range(parts):
        p = path.with_name(f"{path.name}.part{i:03d}")
        p.write_bytes(data[i * step:(i + 1) * step])
        out.append(p)
    path.unlink()
    return out


def write_zip(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members:
            z.writestr(name, data)
    return path


def rows(path) -> list[dict]:
    return pq.read_table(str(path)).to_pylist()


def columns(path) -> list[str]:
    return pq.read_schema(str(path)).names


def upload(client, bucket: str, folder: Path, prefix: str) -> str:
    """Every file under ``folder`` to ``s3://bucket/prefix/...``; the prefix URI."""
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(folder).as_posix()}")
    return f"s3://{bucket}/{prefix}"


def do_import(cli, kind: str, source, out, *args: str, rc: int = 0) -> dict | str:
    """``lavida-data import KIND SOURCE --out OUT ARGS --json``: the JSON report (or, for a
    failure, stderr)."""
    proc = cli("import", kind, str(source), "--out", str(out), *map(str, args), "--json", check_rc=rc)
    return json.loads(proc.stdout) if rc == 0 else proc.stderr


def round_trip(cli, tmp_path: Path, entries: list[dict], n: int = 20) -> dict[str, list[dict]]:
    """A mixture of the printed ``entries``; validated (no errors, no warnings), then previewed:
    dataset name -> its samples."""
    mix = tmp_path / "mixture.yaml"
    mix.write_text(yaml.safe_dump({"seed": 3, "datasets": entries}, sort_keys=False))
    report = json.loads(cli("validate", mix, "--json", check_rc=0).stdout)
    assert report == {"valid": True, "errors": [], "warnings": []}, report
    items = json.loads(cli("preview", mix, "-n", str(n), "--json", check_rc=0).stdout)
    out: dict[str, list[dict]] = {}
    for it in items:
        out.setdefault(it["dataset"], []).append(it["sample"])
    return out
