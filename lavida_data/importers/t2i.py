"""Text-to-image KINDs from generated sets: ``blip3o``, ``reflect-dit``, ``echo-4o``; and the
text-to-image table the other KINDs share (``laion.py``, ``edit.py``).

SOURCE is always the release as published (or a copy of it), local or ``s3://``: a folder, or a
single file where the layout has only one. What each KIND expects there:

``blip3o`` -- one set of BLIP3o (a Pretrain set or BLIP3o-60k): a folder of WebDataset tars (any
depth, e.g. 60k's ``dalle3/``, ``geneval_train/``; plain, gzip or split ``.partNNN``), each
sample ``<key>.jpg`` + ``<key>.txt`` (caption); or the same pairs extracted as files. Sizes
come from the image headers. No score is invented (upstream computed its own).

``reflect-dit`` -- a folder with the CSV (``prompt, positive_filename, negative_filename,
negative_reason``, the last three ``XXX``-joined), the generations (a tar, or the folder it
unpacks to) and, optionally, the judge set in LLaVA format (``.json`` array or ``.jsonl`` of
``{image, conversations}``). Images are matched by file name. Three tables: ``t2i`` (every
positive, captioned by its prompt), ``correction`` (positives with their negatives and reasons,
``;``-joined, for ``preproces_text_to_image_generation_s3_loc`` with ``no_plan`` and
``add_feedback``; a ``;`` inside a reason becomes ``,`` and is counted as
``reason_semicolon_replaced``; ``grounding_text``, which that converter reads even with
``no_plan``, is null: the release has no layout) and ``judge``
(``image, prompts, results`` for ``preprocess_reflection_und``: the prompt is taken from the
human turn ``... based on the following prompt: {prompt} Focus on ...``, the result is the
answer; several judged pairs in one record become JSON lists).

``echo-4o`` -- the release root (or one subset folder): ``<Subset>/<name>.jsonl`` and
``<Subset>/images/*.tar.gz`` (or the extracted images). Images are matched to records by
subset and file name. Records without input images go to ``t2i``; records with them
(``input_images``/``input_image``/``reference_images``: the multi-reference subset, whose layout
is unverified) go to ``multiref``, an edit-style table for ``process_gpt_edit``.

Images are found and stored as :mod:`.layout` says; records whose image never appears are
counted as ``image_missing``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import posixpath
import re
import sys
from typing import Any, Iterator

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
    sample_key,
    scan,
    skip_n,
    string_list,
    text_value,
)
from lavida_data.importers.sources import image_size, iter_members, location, norm, open_binary, read_bytes

T2I = "preproces_text_to_image_generation_s3"
T2I_SCHEMA = pa.schema([("s3_path", pa.string()), ("caption", pa.string()),
                        ("intHeight", pa.int64()), ("intWidth", pa.int64())])
#: ``grounding_text`` is always null: Reflect-DiT has no layout, and the entry's ``no_plan`` answers
#: with the image alone; upstream's converter reads the column whatever its options.
CORRECTION_SCHEMA = pa.schema([("s3_path", pa.string()), ("caption", pa.string()), ("grounding_text", pa.string()),
                               ("negatives", pa.string()), ("negative_reasons", pa.string())])
JUDGE_SCHEMA = pa.schema([("image", pa.string()), ("prompts", pa.string()), ("results", pa.string())])
MULTIREF_SCHEMA = pa.schema([("input_paths", pa.list_(pa.string())), ("output_paths", pa.string()),
                             ("instruction", pa.string())])
T2I_ENTRY = {"length_group": "t2i"}


def t2i_row(path: str, caption: str, size: tuple[int, int] | None, part: str = "main") -> Row:
    w, h = size if size else (None, None)
    return Row(part, {"s3_path": path, "caption": caption, "intHeight": h, "intWidth": w})


def joined_row(values: list, text: str, edit_part: str, columns: tuple[str, str, str]) -> Row:
    """The row of a record joined to its images (``values``: ``(path, size)`` each, the output
    image first): with input images, a row of ``edit_part`` (``columns``: the input paths, the
    output path, the text); else a text-to-image row of ``t2i``."""
    (output, size), inputs = values[0], [v[0] for v in values[1:]]
    if inputs:
        return Row(edit_part, dict(zip(columns, (inputs, output, text))))
    return t2i_row(output, text, size, "t2i")


# ------------------------------------------------------------------------------------- BLIP3o


@importer("blip3o", parts={"main": Part(T2I_SCHEMA, T2I, entry=T2I_ENTRY)})
def blip3o(source: str, ctx: ImportContext) -> Iterator[Row]:
    """BLIP3o (Pretrain-Long/Short-Caption, Pretrain-JourneyDB, BLIP3o-60k): a folder of
    WebDataset tars (<key>.jpg + <key>.txt), or of the extracted pairs."""
    rel_ = scan(source)
    loose = [u for u in rel_.files if is_image(u) or u.endswith(".txt")]
    if not rel_.archives and not any(is_image(u) for u in loose):
        raise ImportError_(f"{source}: expected BLIP3o WebDataset shards (*.tar with <key>.jpg + <key>.txt) "
                           "or extracted <key>.jpg + <key>.txt files; found neither")
    if rel_.archives and ctx.images is None:
        raise need_images_to("blip3o", rel_.archives)

    def sample(where: str, image: tuple[str, bytes | str] | None, caption: bytes | None) -> Iterator[Row]:
        """A sample's row: ``image`` is (its path in the release, its bytes or its file's URI)."""
        ctx.progress()
        if image is None:
            ctx.skip("image_missing", f"{where}: a caption without its <key>.jpg")
            return
        if caption is None:
            ctx.skip("missing_caption", f"{where}: an image without its <key>.txt")
            return
        try:
            text = caption.decode("utf-8").strip()
        except UnicodeDecodeError:
            ctx.skip("bad_caption", f"{where}: the caption is not UTF-8")
            return
        if not text:
            ctx.skip("missing_caption", f"{where}: empty caption")
            return
        relpath, data = image
        size = image_size(data)
        if size is None:
            ctx.skip("bad_image", f"{where}: not a readable image")
            return
        if isinstance(data, bytes):  # an archive member
            path = ctx.image(f"blip3o/{relpath}", data)
        else:
            path = ctx.image(f"blip3o/{relpath}", lambda u=data: read_bytes(u), fallback=location(data))
        yield t2i_row(path, text, size)

    for key, group in itertools.groupby(loose, key=lambda u: sample_key(rel_.rel(u))):
        group = list(group)
        img = next((u for u in group if is_image(u)), None)
        txt = next((u for u in group if u.endswith(".txt")), None)
        yield from sample("/".join(key), (rel_.rel(img), img) if img else None, read_bytes(txt) if txt else None)
    for arc in rel_.archives:
        for key, members in itertools.groupby(iter_members(arc.parts, ctx.skip), key=lambda m: sample_key(m[0])):
            image: tuple[str, bytes] | None = None
            caption: bytes | None = None
            for member, read in members:
                if is_image(member) and image is None:
                    image = (arc.member_path(member), read())
                elif member.endswith(".txt"):
                    caption = read()
            if image or caption is not None:
                yield from sample(f"{arc.name}:{'/'.join(key)}", image, caption)


# ----------------------------------------------------------------------------------- Reflect-DiT

_CSV_COLUMNS = {
    "prompt": ("prompt", "prompts", "caption"),
    "positive": ("positive_filename", "positive_filenames", "positive"),
    "negative": ("negative_filename", "negative_filenames", "negative"),
    "reason": ("negative_reason", "negative_reasons", "reason"),
}
_SEP = "XXX"
_JUDGE_PROMPT = re.compile(r"prompt\s*:\s*(?P<p>.+?)\s*(?:Focus on[^\n]*)?\s*$", re.S | re.I)


def _csv_columns(fieldnames: list[str] | None, uri: str) -> dict[str, str | None]:
    names = {n.strip().lower(): n for n in fieldnames or []}
    cols = {k: next((names[a] for a in alts if a in names), None) for k, alts in _CSV_COLUMNS.items()}
    if cols["prompt"] is None or cols["positive"] is None or (cols["negative"] is None) != (cols["reason"] is None):
        raise ImportError_(f"{uri}: expected the Reflect-DiT CSV columns prompt, positive_filename, "
                           f"negative_filename, negative_reason (XXX-joined); it has: {', '.join(fieldnames or [])}")
    return cols


def _split(v: Any) -> list[str]:
    return [s.strip() for s in str(v or "").split(_SEP)]


def _judge_pairs(rec: dict) -> list[tuple[str, str]] | None:
    turns = rec.get("conversations")
    if not isinstance(turns, list):
        return None
    pairs = []
    for a, b in zip(turns, turns[1:]):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            continue
        if a.get("from") in ("human", "user") and b.get("from") in ("gpt", "assistant"):
            m = _JUDGE_PROMPT.search(str(a.get("value", "")).replace("<image>", ""))
            result = text_value(b.get("value"))
            if m and result:
                pairs.append((m.group("p").strip(), result))
    return pairs


@importer("reflect-dit", parts={
    "t2i": Part(T2I_SCHEMA, T2I, entry=T2I_ENTRY),
    "correction": Part(CORRECTION_SCHEMA, "preproces_text_to_image_generation_s3_loc",
                       options={"no_plan": True, "add_feedback": True}, entry={"length_group": "plan"}),
    "judge": Part(JUDGE_SCHEMA, "preprocess_reflection_und", entry={"length_group": "und"}),
})
def reflect_dit(source: str, ctx: ImportContext) -> Iterator[Row]:
    """Reflect-DiT: a folder with the CSV (prompt, positive_filename, negative_filename,
    negative_reason; XXX-joined), the generations (a tar or its folder) and the LLaVA judge set."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rel_ = scan(source)
    csvs = [u for u in rel_.files if u.lower().endswith(".csv")]
    if not csvs:
        raise ImportError_(f"{source}: expected the Reflect-DiT CSV (prompt, positive_filename, "
                           "negative_filename, negative_reason) in this folder; found no .csv file")
    joiner = Joiner()

    for uri in csvs:
        with open_binary(uri) as raw:
            reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline="", errors="replace"))
            cols = _csv_columns(reader.fieldnames, uri)
            for n, r in enumerate(reader, 2):
                where = f"{uri}:{n}"
                prompt = text_value(r.get(cols["prompt"]))
                positives = [p for p in _split(r.get(cols["positive"])) if p]
                if prompt is None:
                    ctx.skip("missing_prompt", where)
                    continue
                if not positives:
                    ctx.skip("missing_positive", where)
                    continue
                negatives = [p for p in _split(r.get(cols["negative"])) if p] if cols["negative"] else []
                reasons = _split(r.get(cols["reason"])) if negatives else []
                if negatives and len(reasons) != len(negatives):
                    ctx.skip("negative_reason_mismatch",
                             f"{where}: {len(negatives)} negatives but {len(reasons)} reasons")
                    negatives, reasons = [], []  # the positives are still text-to-image rows
                slots = [[posixpath.basename(norm(p))] for p in positives + negatives]
                joiner.add(("csv", where, prompt, len(positives), reasons), slots)
    for uri in rel_.files:
        if not uri.lower().endswith((".json", ".jsonl")):
            continue
        for i, rec in enumerate(read_records(uri, ctx.skip, fields=("conversations", "image"))):
            where = f"{uri}: record {i}"
            image = rec.get("image")
            if isinstance(image, list) and len(image) == 1:
                image = image[0]
            if not isinstance(image, str) or not image.strip():
                ctx.skip("judge_missing_image", where)
                continue
            pairs = _judge_pairs(rec)
            if pairs is None:
                ctx.skip("judge_missing_conversations", where)
                continue
            if not pairs:
                ctx.skip("unexpected_judge_prompt", f"{where}: expected a human turn '<image>\\nPlease evaluate this "
                         "generated image based on the following prompt: {prompt} Focus on ...' and an answer")
                continue
            joiner.add(("judge", where, pairs), [[posixpath.basename(norm(image))]])

    def rows(payload: tuple, values: list) -> Iterator[Row]:
        ctx.progress()
        if payload[0] == "judge":
            _, where, pairs = payload
            if values[0] is None:
                ctx.skip("image_missing", f"{where}: its image is in no archive or folder of the release")
                return
            prompts = [p for p, _ in pairs]
            results = [r for _, r in pairs]
            yield Row("judge", {"image": values[0][0],
                                "prompts": prompts[0] if len(pairs) == 1 else json.dumps(prompts, ensure_ascii=False),
                                "results": results[0] if len(pairs) == 1 else json.dumps(results, ensure_ascii=False)})
            return
        _, where, prompt, npos, reasons = payload
        pos, neg = values[:npos], values[npos:]
        if any(v is None for v in pos):
            skip_n(ctx, "image_missing", sum(v is None for v in pos), f"{where}: a positive image is missing")
        pairs = []
        for v, reason in zip(neg, reasons):
            if v is None:
                ctx.skip("negative_image_missing", f"{where}: a negative image is missing (pair dropped)")
                continue
            if ";" in reason:
                ctx.skip("reason_semicolon_replaced", f"{where}: {reason[:80]!r}")
                reason = re.sub(r"\s*;\s*", ", ", reason).strip(", ")
            if not reason:
                ctx.skip("empty_negative_reason", f"{where}: a negative without a reason (pair dropped)")
                continue
            if ";" in v[0]:
                ctx.skip("semicolon_in_path", f"{where}: {v[0]} (pair dropped)")
                continue
            pairs.append((v[0], reason))
        for v in pos:
            if v is None:
                continue
            yield t2i_row(v[0], prompt, v[1], "t2i")
            if pairs:
                yield Row("correction", {"s3_path": v[0], "caption": prompt, "grounding_text": None,
                                         "negatives": ";".join(p for p, _ in pairs),
                                         "negative_reasons": ";".join(r for _, r in pairs)})

    for payload, values in match_images(rel_, ctx, joiner, lambda paths: [posixpath.basename(paths[0])],
                                        "generations"):
        yield from rows(payload, values)


# ------------------------------------------------------------------------------------- Echo-4o

_INPUT_KEYS = ("input_images", "input_image", "reference_images", "ref_images", "input_paths")


def _subset_of(path: str, subsets: list[str]) -> str:
    """The longest subset folder (one holding a record file) that ``path`` lies in."""
    for s in subsets:  # longest first
        if not s or path == s or path.startswith(s + "/"):
            return s
    return ""


@importer("echo-4o", parts={
    "t2i": Part(T2I_SCHEMA, T2I, entry=T2I_ENTRY),
    "multiref": Part(MULTIREF_SCHEMA, "process_gpt_edit", entry={"length_group": "edit"}),
})
def echo_4o(source: str, ctx: ImportContext) -> Iterator[Row]:
    """Echo-4o-Image: the release root (or one subset): <Subset>/<name>.jsonl records and
    <Subset>/images/*.tar.gz (or extracted images), matched by subset and file name."""
    rel_ = scan(source)
    metas = [u for u in rel_.files if u.lower().endswith((".jsonl", ".json"))]
    if not metas:
        raise ImportError_(f"{source}: expected Echo-4o-Image's <Subset>/<name>.jsonl record files "
                           "(task_type, instruction, output_image) and <Subset>/images/*.tar.gz; found no .jsonl")
    subsets = sorted({posixpath.dirname(rel_.rel(u)) for u in metas}, key=len, reverse=True)
    joiner = Joiner()
    for uri in metas:
        subset = _subset_of(rel_.rel(uri), subsets)
        for i, rec in enumerate(read_records(uri, ctx.skip, fields=("output_image", "instruction"))):
            where = f"{uri}: record {i}"
            instruction = text_value(rec.get("instruction", rec.get("prompt")))
            out = rec.get("output_image")
            inputs = string_list(next((rec[k] for k in _INPUT_KEYS if k in rec), None))
            if instruction is None:
                ctx.skip("missing_instruction", where)
                continue
            if not isinstance(out, str) or not out.strip():
                ctx.skip("missing_output_image", where)
                continue
            if inputs is None:
                ctx.skip("bad_input_images", f"{where}: input images must be a path or a list of paths")
                continue
            slots = [[posixpath.join(subset, posixpath.basename(norm(p)))] for p in [out, *inputs]]
            joiner.add((where, instruction), slots)

    def key_of(paths: list[str]) -> list[str]:
        return [posixpath.join(_subset_of(paths[0], subsets), posixpath.basename(paths[0]))]

    for (where, instruction), values in match_images(rel_, ctx, joiner, key_of):
        if complete(ctx, where, values):
            yield joined_row(values, instruction, "multiref", ("input_paths", "output_paths", "instruction"))
