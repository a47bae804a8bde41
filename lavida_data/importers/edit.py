"""Editing KINDs: ``sharegpt-4o`` and ``gpt-image-edit``.

SOURCE is the release as published (or a copy of it), a local folder or an ``s3://`` prefix:

``sharegpt-4o`` -- ShareGPT-4o-Image: the JSON arrays (``text_to_image.json``,
``image_editing.json``; JSON lines accepted too) of records ``{input_prompt, output_image,
input_image?}`` whose paths are relative to the JSON file's folder, and the images: a tar
(plain, gzip or split ``.partNNN``), a zip, or the unpacked folders; how the images are packed
is unverified, so a record path matches an image whose path in the release (archive folder +
member, or archive folder + archive name + member) ends with it, or that it ends with (two path
components at least); with ``--images-to`` an image is written under ``sharegpt-4o/<the record's
path>``, whatever the packing. Records with ``input_image`` go to ``edit`` (``input_image`` (a list),
``output_image``, ``input_prompt`` for ``process_sharegpt_4o_edit``), the others to ``t2i``
(``s3_path``, ``caption``, ``intHeight``, ``intWidth`` from the image header).

``gpt-image-edit`` -- GPT-Image-Edit-1.5M: a folder holding ``gpt-edit/<source>.tar.gz.partNNN``
(any depth; plain or unsplit tars too) or their unpacked ``<source>/<task>/{input,output}/<id>.png``
folders, with the metadata ``metadata/<source>_<task>.json`` (JSON arrays of ``{id,
dataset_source, task, input: "input/<id>.png", output: "output/<id>.png", instruction, ...}``)
inside the archives or beside them (any ``.json``/``.jsonl`` under a folder named ``metadata``).
One table per source (the archive's name, e.g. ``hqedit``; for unpacked folders the folder
above ``<task>``): ``input_paths``, ``output_paths``, ``instruction`` for ``process_gpt_edit``.
Images are matched by source, task folder (the record's ``task``, or the metadata file name
after ``<source>_``), role and file name. Metadata may come after its images in an archive, so
every image of an archive whose metadata is not beside it is written as it streams past and
remembered (its path only) until its record arrives; images no record names are counted as
``image_without_record``. HQ-Edit's part is CC-BY-NC-4.0 (the rest CC-BY-4.0).

Archive images are written under ``--images-to`` as ``<kind>/<path in the release>``; without
``--images-to`` the import fails and says so. Plain image files are referenced in place.
"""

from __future__ import annotations

import io
import posixpath
import re
from typing import Iterator

import pyarrow as pa

from lavida_data.importers.base import ImportContext, Part, Row, importer
from lavida_data.importers.errors import ImportError_
from lavida_data.importers.jsonstream import read_records
from lavida_data.importers.layout import (
    Joiner,
    complete,
    is_image,
    match_images,
    need_images_to,
    scan,
    skip_n,
    string_list,
    suffixes,
    text_value,
)
from lavida_data.importers.sources import iter_members, location, norm, read_bytes
from lavida_data.importers.t2i import T2I, T2I_ENTRY, T2I_SCHEMA, joined_row

EDIT_ENTRY = {"length_group": "edit"}

# ------------------------------------------------------------------------------- ShareGPT-4o

SHAREGPT_EDIT_SCHEMA = pa.schema([("input_image", pa.list_(pa.string())), ("output_image", pa.string()),
                                  ("input_prompt", pa.string())])


def _record_keys(path: str) -> list[str]:
    """The keys a record's relative image path matches under: itself and its tails of two
    components or more (a bare file name only matches itself)."""
    tails = suffixes(norm(path))
    return [t for t in tails if "/" in t] or tails[:1]


def _ordered(cands: list[str]) -> list[str]:
    """Candidate keys, longest first."""
    return sorted(dict.fromkeys(c for c in cands if c), key=lambda c: -c.count("/"))


@importer("sharegpt-4o", parts={
    "t2i": Part(T2I_SCHEMA, T2I, entry=T2I_ENTRY),
    "edit": Part(SHAREGPT_EDIT_SCHEMA, "process_sharegpt_4o_edit", entry=EDIT_ENTRY),
})
def sharegpt_4o(source: str, ctx: ImportContext) -> Iterator[Row]:
    """ShareGPT-4o-Image: a folder with the JSON arrays (input_prompt, output_image,
    input_image?) and the images (tar, split tar, zip or unpacked folders)."""
    rel_ = scan(source)
    jsons = [u for u in rel_.files if u.lower().endswith((".json", ".jsonl"))]
    if not jsons:
        raise ImportError_(f"{source}: expected ShareGPT-4o-Image's JSON arrays of {{input_prompt, output_image, "
                           "input_image}} records (text_to_image.json, image_editing.json); found no .json file")
    joiner = Joiner()
    for uri in jsons:
        for i, rec in enumerate(read_records(uri, ctx.skip, fields=("output_image", "input_prompt"))):
            where = f"{uri}: record {i}"
            prompt = text_value(rec.get("input_prompt"))
            out = rec.get("output_image")
            inputs = string_list(rec.get("input_image"))
            if prompt is None:
                ctx.skip("missing_input_prompt", where)
                continue
            if not isinstance(out, str) or not norm(out):
                ctx.skip("missing_output_image", where)
                continue
            if inputs is None:
                ctx.skip("bad_input_image", f"{where}: input_image must be a path or a list of paths")
                continue
            joiner.add((where, prompt), [_record_keys(p) for p in [out, *inputs]])

    def keys(paths: list[str]) -> list[str]:
        return _ordered([s for p in paths for s in suffixes(p)])

    # an image is stored where the records say it is, whatever the packing
    for (where, prompt), values in match_images(rel_, ctx, joiner, keys, store_by_key=True):
        if complete(ctx, where, values):
            yield joined_row(values, prompt, "edit", ("input_image", "output_image", "input_prompt"))


# ---------------------------------------------------------------------------- GPT-Image-Edit

GPT_EDIT_SCHEMA = pa.schema([("input_paths", pa.string()), ("output_paths", pa.string()),
                             ("instruction", pa.string())])


def _part(name: str) -> str:
    p = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")
    return p if p and p != "main" else "default"


def _in_metadata(path: str) -> bool:
    return path.lower().endswith((".json", ".jsonl")) and "metadata" in path.split("/")[:-1]


def _meta_source(path: str, known: set[str], fallback: str) -> str:
    """The source a loose metadata file belongs to: the folder above ``metadata/``, else the
    known source its name starts with, else ``fallback``."""
    comps = path.split("/")
    i = comps.index("metadata") if "metadata" in comps[:-1] else -1
    if i >= 1 and comps[i - 1] in known:
        return comps[i - 1]
    stem = posixpath.basename(path).rsplit(".", 1)[0]
    for s in sorted(known, key=len, reverse=True):
        if stem.startswith(s + "_"):
            return s
    return comps[i - 1] if i >= 1 and comps[i - 1].lower() != "gpt-edit" else fallback


def _tasks(rec: dict, meta_name: str, src: str) -> list[str]:
    """Task folder candidates of a record: its ``task``, the metadata name after ``<source>_``,
    the metadata name after its first ``_``."""
    stem = posixpath.basename(meta_name).rsplit(".", 1)[0]
    out = [text_value(rec.get("task")) or ""]
    if stem.startswith(src + "_"):
        out.append(stem[len(src) + 1:])
    if "_" in stem:
        out.append(stem.split("_", 1)[1])
    return [t for t in dict.fromkeys(out) if t]


def _edit_slots(rec: dict, src: str, meta_name: str, where: str, ctx: ImportContext) -> list[list[str]] | None:
    tasks = _tasks(rec, meta_name, src)
    slots = []
    for field, role in (("input", "input"), ("output", "output")):
        v = rec.get(field)
        if isinstance(v, list) and len(v) == 1:
            v = v[0]
        if not isinstance(v, str) or not norm(v):
            ctx.skip(f"missing_{field}", f"{where}: expected '{field}': '{role}/<id>.png' (relative to the "
                     "task folder)")
            return None
        comps = norm(v).split("/")
        if len(comps) >= 3:  # the path names its task folder itself
            keys = [f"{src}|{'/'.join(comps[-3:])}"]
        else:
            tail = "/".join(comps) if len(comps) == 2 else f"{role}/{comps[0]}"
            keys = [f"{src}|{t}/{tail}" for t in tasks]
        if not keys:
            ctx.skip("unknown_task", f"{where}: no 'task' and no <source>_<task> metadata file name")
            return None
        slots.append(keys)
    return slots


def _image_key(src: str, path: str) -> str | None:
    comps = path.split("/")
    return f"{src}|{'/'.join(comps[-3:])}" if len(comps) >= 3 else None


@importer("gpt-image-edit", parts={"*": Part(GPT_EDIT_SCHEMA, "process_gpt_edit", entry=EDIT_ENTRY)},
          dynamic_parts=True)
def gpt_image_edit(source: str, ctx: ImportContext) -> Iterator[Row]:
    """GPT-Image-Edit-1.5M: a folder with gpt-edit/<source>.tar.gz.partNNN (or the unpacked
    <source>/<task>/{input,output}/ folders) and metadata/<source>_<task>.json; one table per source."""
    rel_ = scan(source)
    root_name = posixpath.basename(source.rstrip("/")) or "gpt-edit"
    loose_images = [u for u in rel_.files if is_image(u)]

    def loose_source(relpath: str) -> str:
        comps = relpath.split("/")
        return comps[-4] if len(comps) >= 4 else root_name

    known = {loose_source(rel_.rel(u)) for u in loose_images} | {arc.stem for arc in rel_.archives}
    joiner = Joiner()
    outside: set[str] = set()  # sources whose metadata lies outside the archives
    records = 0

    def rows(payload: tuple, values: list) -> Iterator[Row]:
        src, where, instruction = payload
        if complete(ctx, where, values):
            yield Row(_part(src), {"input_paths": values[0], "output_paths": values[1], "instruction": instruction})

    def add_records(recs: Iterator[dict], src: str, name: str) -> Iterator[Row]:
        nonlocal records
        for i, rec in enumerate(recs):
            records += 1
            where = f"{name}: record {i}"
            instruction = text_value(rec.get("instruction"))
            if instruction is None:
                ctx.skip("missing_instruction", where)
                continue
            slots = _edit_slots(rec, src, name, where, ctx)
            if slots is None:
                continue
            done = joiner.add((src, where, instruction), slots)
            if done is not None:
                yield from rows(*done)

    for uri in rel_.files:
        relpath = rel_.rel(uri)
        if _in_metadata(relpath):
            src = _meta_source(relpath, known, root_name)
            outside.add(src)
            yield from add_records(read_records(uri, ctx.skip, fields=("instruction", "input")), src, uri)
    for uri in loose_images:
        relpath = rel_.rel(uri)
        key = _image_key(loose_source(relpath), relpath)
        if key and joiner.wanted([key]):
            path = ctx.image(f"gpt-image-edit/{relpath}", lambda u=uri: read_bytes(u), fallback=location(uri))
            for payload, values in joiner.fill(key, path):
                yield from rows(payload, values)
    todo = [a for a in rel_.archives if a.stem not in outside or joiner.pending]
    if todo and ctx.images is None:
        raise need_images_to("gpt-image-edit", todo)
    for arc in todo:
        remember = arc.stem not in outside  # its metadata may come after its images
        for member, read in iter_members(arc.parts, ctx.skip):
            if not remember and not joiner.pending:
                break
            relpath = arc.member_path(member)
            if _in_metadata(relpath):
                if arc.stem in outside:  # already read from beside the archive
                    continue
                name = f"{arc.name}:{member}"
                yield from add_records(read_records(io.BytesIO(read()), ctx.skip, ("instruction", "input"), name),
                                       arc.stem, name)
                continue
            if not is_image(member):
                continue
            key = _image_key(arc.stem, relpath)
            if key and joiner.wanted([key], remember=remember):
                path = ctx.image(f"gpt-image-edit/{relpath}", read())
                for payload, values in joiner.fill(key, path, remember=remember):
                    yield from rows(payload, values)
    for payload, values in joiner.leftovers():
        yield from rows(payload, values)
    unclaimed = len(joiner.seen) - len(joiner.used)
    if unclaimed:
        skip_n(ctx, "image_without_record", unclaimed, "an image no metadata record names (written all the same)")
    if not records:
        raise ImportError_(f"{source}: expected GPT-Image-Edit metadata (metadata/<source>_<task>.json, inside the "
                           "archives or beside them) with {id, input, output, instruction, ...} records; found none")
