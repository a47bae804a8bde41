"""Every ``lavida-data import`` KIND read from S3: its miniature native layout uploaded to a loopback
S3 server, imported from ``s3://`` into tables on S3 (images extracted to S3 where they live in
archives or are embedded), row for row what the same import of the local folder gives, then
validated and previewed through the matching converter, its images loaded."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq
import pytest
import yaml

from lavida_data.io.images import open_image
from lavida_data.importers import load_all
from lavida_data.importers.run import writes_folder
from lavida_data.convert.sample import IMAGE_ROLES, image_paths

from .helpers import image_bytes, import_json, lavida, read_table, upload
from .layouts import (
    RELAION_DOWNLOADS,
    _grandf_source,
    _lmms_file,
    _mammoth_source,
    _refer_source,
    _vw_source,
    blip3o_release,
    coyo_metadata,
    echo_release,
    gpt_edit_release,
    img2dataset_folder,
    reflect_dit_release,
    relaion_metadata,
    sharegpt_release,
)


def _coyo(root: Path) -> tuple[Path, str]:
    src = root / "coyo"
    (src / "data").mkdir(parents=True)
    pq.write_table(coyo_metadata([(1, "http://c/1.jpg", "a lighthouse at dusk", 1024, 768, 6.25),
                                  (2, "http://c/2.jpg", "never downloaded", 512, 512, 6.0)]),
                   src / "data" / "part-00000.snappy.parquet", compression="snappy")
    img2dataset_folder(src / "downloads", [
        {"key": "000000000", "url": "http://c/1.jpg", "caption": "a lighthouse at dusk", "status": "success",
         "width": 40, "height": 30, "image": (40, 30)}])
    return src, ""


def _relaion(root: Path) -> tuple[Path, str]:
    src = root / "relaion"
    (src / "metadata").mkdir(parents=True)
    pq.write_table(relaion_metadata("new"), src / "metadata" / "part-00000.snappy.parquet", row_group_size=2)
    img2dataset_folder(src / "images", RELAION_DOWNLOADS)
    return src, ""


def _blip3o(root: Path) -> tuple[Path, str]:
    blip3o_release(root / "BLIP3o-60k")
    return root / "BLIP3o-60k", ""


def _reflect(root: Path) -> tuple[Path, str]:
    reflect_dit_release(root / "Reflect-DiT")  # the generations in a tar
    return root / "Reflect-DiT", ""


def _echo(root: Path) -> tuple[Path, str]:
    echo_release(root / "Echo-4o-Image")
    return root / "Echo-4o-Image", ""


def _sharegpt(root: Path) -> tuple[Path, str]:
    sharegpt_release(root / "ShareGPT-4o-Image", "zip")  # zips: read from S3 by byte ranges
    return root / "ShareGPT-4o-Image", ""


def _gpt_edit(root: Path) -> tuple[Path, str]:
    gpt_edit_release(root / "GPT-Image-Edit-1.5M")
    return root / "GPT-Image-Edit-1.5M", ""


def _mammoth(root: Path) -> tuple[Path, str]:
    return _mammoth_source(root), ""


def _vw(root: Path) -> tuple[Path, str]:
    return _vw_source(root), ""


def _grandf(root: Path) -> tuple[Path, str]:
    return _grandf_source(root), ""  # with images/ beside the annotations: no image_root needed


def _refcoco(root: Path) -> tuple[Path, str]:
    ds = _refer_source(root)  # refer/data/refcoco, the images in refer/data/images/mscoco/images/train2014
    return ds.parent, ds.name


def _lmms(root: Path) -> tuple[Path, str]:
    car = image_bytes(200, 100)
    _lmms_file(root / "RefCOCO" / "data" / "val-00000-of-00001.parquet", [
        {"question_id": "q0", "image": {"bytes": car, "path": None}, "answer": ["the red car", "car on left"],
         "bbox": [20, 10, 100, 50], "file_name": "COCO_train2014_000000000009.jpg"},
        {"question_id": "q1", "image": {"bytes": image_bytes(50, 50, "PNG"), "path": None}, "answer": ["corner"],
         "bbox": [0, 0, 25, 25]},
        {"question_id": "bad", "image": {"bytes": b"not an image", "path": None}, "answer": ["x"],
         "bbox": [0, 0, 1, 1]}])
    return root / "RefCOCO", ""


# KIND -> (its miniature layout: (folder to upload, the source inside it), --images-to)
KINDS: dict[str, tuple[Callable[[Path], tuple[Path, str]], bool]] = {
    "coyo": (_coyo, False),
    "relaion": (_relaion, False),
    "blip3o": (_blip3o, True),
    "reflect-dit": (_reflect, True),
    "echo-4o": (_echo, True),
    "sharegpt-4o": (_sharegpt, True),
    "gpt-image-edit": (_gpt_edit, True),
    "mammoth-vl": (_mammoth, True),
    "visualwebinstruct": (_vw, True),
    "grandf": (_grandf, False),
    "refcoco": (_refcoco, False),
    "lmms-refcoco": (_lmms, True),
}


def test_every_kind_is_covered():
    assert sorted(KINDS) == sorted(load_all())


def _mapped(v: Any, subs: list[tuple[str, str]]) -> Any:
    """``v`` with every local location in its strings replaced by its S3 one."""
    if isinstance(v, str):
        for a, b in subs:
            v = v.replace(a, b)
        return v
    if isinstance(v, list):
        return [_mapped(x, subs) for x in v]
    if isinstance(v, dict):
        return {k: _mapped(x, subs) for k, x in v.items()}
    return v


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _keys(client, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"][len(prefix) + 1:] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + "/") for o in page.get("Contents", []))


def _validate_and_preview(tmp_path: Path, entries: list[dict]) -> dict[str, list[dict]]:
    """``lavida-data validate`` then ``preview --json`` of a mixture of ``entries``: the samples of
    each dataset; none skipped by the converters."""
    mix = tmp_path / "mixture.yaml"
    mix.write_text(yaml.safe_dump({"seed": 1, "datasets": entries}, sort_keys=False))
    rc, stdout, stderr = lavida("validate", mix, "--json")
    assert rc == 0 and json.loads(stdout) == {"valid": True, "errors": [], "warnings": []}, stdout + stderr
    rc, stdout, stderr = lavida("preview", mix, "--json", "-n", 50)
    assert rc == 0, stderr + stdout
    for line in stderr.splitlines():  # a dataset's counts, printed when it lost rows
        if not line.strip():
            continue
        name, _, counts = line.partition(": ")
        assert ast.literal_eval(counts)["skipped"] == {}, f"{name}: {counts}"
    out: dict[str, list[dict]] = {e["name"]: [] for e in entries}
    for item in json.loads(stdout):
        out[item["dataset"]].append(item["sample"])
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_import_from_s3_equals_local(tmp_path, s3_bucket, kind):
    client, bucket = s3_bucket
    build, with_images = KINDS[kind]
    folder, inner = build(tmp_path / "src")
    prefix = upload(client, bucket, folder, f"releases/{folder.name}")
    local_src, s3_src = (str(folder / inner), f"{prefix}/{inner}") if inner else (str(folder), prefix)
    name = kind if writes_folder(load_all()[kind]) else f"{kind}.parquet"
    local_out, s3_out = tmp_path / "tables" / name, f"s3://{bucket}/tables/{name}"
    local_imgs, s3_imgs = tmp_path / "images", f"s3://{bucket}/images"

    def opts(images) -> list:
        return ["--images-to", images] if with_images else []

    local = import_json(None, kind, local_src, local_out, *opts(local_imgs))
    remote = import_json(None, kind, s3_src, s3_out, *opts(s3_imgs))
    assert remote["rows"] > 0 and not remote["up_to_date"]
    # the same report and the same rows, each local location being its S3 one
    subs = [(str(local_out), s3_out), (str(local_imgs), s3_imgs), (str(folder), prefix)]
    for key in ("rows", "skipped", "images_written", "tables", "mixture_entries"):
        assert remote[key] == _mapped(local[key], subs), key
    for part, table in local["tables"].items():
        assert read_table(remote["tables"][part]["path"]) == _mapped(read_table(table["path"]), subs), part
    if with_images:  # the same images under the same keys
        assert _keys(client, bucket, "images") == _files(local_imgs) != []
    else:
        assert not local_imgs.exists()
    again = import_json(None, kind, s3_src, s3_out, *opts(s3_imgs))
    assert again["up_to_date"] and again["mixture_entries"] == remote["mixture_entries"]

    samples = _validate_and_preview(tmp_path, remote["mixture_entries"])
    for entry in remote["mixture_entries"]:
        assert samples[entry["name"]], entry["name"]
        for sample in samples[entry["name"]]:
            for role in IMAGE_ROLES:
                for path in image_paths(sample, role):
                    assert path.startswith(f"s3://{bucket}/"), path
                    open_image(path)  # it loads
