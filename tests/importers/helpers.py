"""Helpers of the importer tests: tiny native files (real images, tars, split gzip parts, zips,
COCO RLE masks, Python-2 style pickles), what an import wrote, and the CLI round trip (import ->
mixture -> validate -> preview). The miniature releases themselves are in ``layouts.py``."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow.parquet as pq
import yaml
from PIL import Image

# ---------------------------------------------------------------------------------- files


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


def save_image(path: Path, w: int, h: int) -> Path:
    """A ``w`` x ``h`` image at ``path`` (PNG or JPEG, as its suffix says)."""
    return write(path, image_bytes(w, h, "PNG" if path.suffix == ".png" else "JPEG"))


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


def upload(client, bucket: str, folder: Path, prefix: str) -> str:
    """Every file under ``folder`` to ``s3://bucket/prefix/...``; the prefix URI."""
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(folder).as_posix()}")
    return f"s3://{bucket}/{prefix}"


# --------------------------------------------------------------------------------------- RLE


def rle_list(mask: np.ndarray) -> dict:
    """COCO RLE with uncompressed counts: runs over the column-major pixels, 0s first."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).T.ravel()
    counts: list[int] = []
    cur, run = False, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = bool(v), 1
    counts.append(run)
    return {"size": [h, w], "counts": counts}


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string (``rleToString``), written independently of the library."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_compressed(mask: np.ndarray) -> dict:
    r = rle_list(mask)
    return {"size": r["size"], "counts": rle_string(r["counts"])}


def rect_mask(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """A mask whose pixels fill columns x1..x2-1 and rows y1..y2-1 (its box is x1, y1, x2, y2)."""
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


# ---------------------------------------------------------------------------- Python 2 pickles


class Unicode(str):
    """A value a Python 2 pickle holds as ``unicode`` (BINUNICODE) rather than ``str``."""


def py2_pickle(obj: Any) -> bytes:
    """``obj`` as Python 2's cPickle writes it at protocol 2: ``str`` as SHORT_BINSTRING /
    BINSTRING (bytes, here UTF-8), :class:`Unicode` as BINUNICODE, containers memoised (BINPUT)."""
    out = bytearray(b"\x80\x02")
    memo = [0]

    def put() -> None:
        out.extend(b"q" + bytes([memo[0] % 256]))
        memo[0] += 1

    def w(o: Any) -> None:
        if o is None:
            out.extend(b"N")
        elif o is True:
            out.extend(b"\x88")
        elif o is False:
            out.extend(b"\x89")
        elif isinstance(o, int):
            if 0 <= o < 256:
                out.extend(b"K" + bytes([o]))
            elif -(2 ** 31) <= o < 2 ** 31:
                out.extend(b"J" + struct.pack("<i", o))
            else:
                raw = o.to_bytes((o.bit_length() + 8) // 8, "little", signed=True)
                out.extend(b"\x8a" + bytes([len(raw)]) + raw)
        elif isinstance(o, float):
            out.extend(b"G" + struct.pack(">d", o))
        elif isinstance(o, Unicode):
            raw = str(o).encode("utf-8")
            out.extend(b"X" + struct.pack("<I", len(raw)) + raw)
            put()
        elif isinstance(o, (str, bytes)):
            raw = o.encode("utf-8") if isinstance(o, str) else o
            out.extend((b"U" + bytes([len(raw)])) if len(raw) < 256 else (b"T" + struct.pack("<i", len(raw))))
            out.extend(raw)
            put()
        elif isinstance(o, dict):
            out.extend(b"}")
            put()
            if o:
                out.extend(b"(")
                for k, v in o.items():
                    w(k)
                    w(v)
                out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"]")
            put()
            if o:
                out.extend(b"(")
                for v in o:
                    w(v)
                out.extend(b"e")
        elif isinstance(o, tuple):
            out.extend(b"(")
            for v in o:
                w(v)
            out.extend(b"t")
            put()
        else:
            raise TypeError(type(o))

    w(obj)
    out.extend(b".")
    return bytes(out)


# ------------------------------------------------------------------------------ imports


def lavida(*args: Any) -> tuple[int, str, str]:
    """``lavida-data ARGS`` in this process (the CLI's own ``main``): (exit code, stdout, stderr)."""
    from lavida_data.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def import_json(cli, kind: str, source, out, *args: Any) -> dict:
    """``lavida-data import KIND SOURCE --out OUT --json ARGS``, which must succeed: its report;
    through the installed command when ``cli`` (the fixture) is given, else in this process."""
    argv = ["import", kind, source, "--out", out, "--json", *args]
    if cli is not None:
        proc = cli(*argv)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        rc, stdout, stderr = lavida(*argv)
    assert rc == 0, stderr + stdout
    return json.loads(stdout)


def read_table(uri) -> list[dict]:
    """The rows of a table (local or ``s3://``)."""
    from lavida_data import io as storage

    with storage.open_read(str(uri), seekable=True) as f:
        return pq.read_table(f).to_pylist()


def columns(path) -> list[str]:
    return pq.read_schema(str(path)).names


def table_meta(uri) -> dict:
    from lavida_data.importers import read_import_meta

    meta = read_import_meta(str(uri))
    assert meta is not None
    return meta


def human(caption: str) -> str:
    """The human turn the text-to-image converters make of ``caption``."""
    from lavida_data.convert.builtin.common import T2I_HUMAN

    return T2I_HUMAN.format(caption=caption)


def round_trip(tmp_path: Path, entries: list[dict], n: int = 20, **entry_keys) -> dict[str, list[dict]]:
    """A mixture of the printed ``entries`` (plus ``entry_keys`` on each), checked by ``lavida-data
    validate`` (no errors, no warnings), then previewed: dataset name -> its samples."""
    mix = tmp_path / "mixture.yaml"
    mix.write_text(yaml.safe_dump({"seed": 1, "datasets": [{**e, **entry_keys} for e in entries]}, sort_keys=False))
    rc, stdout, stderr = lavida("validate", mix, "--json")
    assert rc == 0 and json.loads(stdout) == {"valid": True, "errors": [], "warnings": []}, stdout + stderr
    rc, stdout, stderr = lavida("preview", mix, "--json", "-n", n)
    assert rc == 0, stderr + stdout
    out: dict[str, list[dict]] = {}
    for item in json.loads(stdout):
        out.setdefault(item["dataset"], []).append(item["sample"])
    return out
