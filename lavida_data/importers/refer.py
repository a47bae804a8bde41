"""Referring-expression tables: the refer toolkit's RefCOCO / RefCOCO+ / RefCOCOg splits
(``refcoco``) and lmms-lab's RefCOCO parquet (``lmms-refcoco``).

Boxes go onto the 0..1024 grid in the import's frame (``--frame``; see :mod:`.boxes`). The
refer toolkit ships annotations only: its images are found as :mod:`.grounding` says.
lmms-lab's parquet embeds the images: they are written under ``--images-to``.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from lavida_data.importers import safe_pickle
from lavida_data.importers.base import ImportContext, Part, Row, importer
from lavida_data.importers.boxes import Malformed, loc_tokens, to_grid, xywh_to_xyxy
from lavida_data.importers.errors import ImportError_
from lavida_data.importers.grounding import ImageFolder, record_size
from lavida_data.importers.jsonstream import iter_json_top
from lavida_data.importers.sources import exists, folder_of, image_size, is_dir, join, open_binary, walk
from lavida_data.io import is_s3

REFER_SCHEMA = pa.schema([("s3_path", pa.string()), ("label", pa.string()), ("loc_string", pa.string())])



REFS_PREFERENCE = ("refs(unc).p", "refs(umd).p", "refs(google).p")


def _refs_file(source: str) -> str:
    if not is_dir(source):
        return source
    found = {os.path.basename(u): u for u in walk(source, r"^refs\(.+\)\.p$")}
    for name in REFS_PREFERENCE:
        if name in found:
            return found[name]
    if found:
        return found[sorted(found)[0]]
    raise ImportError_(f"refcoco: no refs pickle in {source}: expected the refer toolkit's dataset folder "
                       "(refcoco/ or refcoco+/ with refs(unc).p, refcocog/ with refs(umd).p) and its instances.json")


def _refer_images(folder: str) -> list[str]:
    """The refer toolkit's image folder for a dataset folder, ``<folder>/../images/mscoco/images/
    train2014`` (local, or on S3); none for the top of a bucket, which has no parent."""
    if not is_s3(folder):
        return [join(os.path.join(folder, ".."), "images", "mscoco", "images", "train2014")]
    bucket, _, key = folder[len("s3://"):].rstrip("/").partition("/")
    if not key:
        return []
    up = f"s3://{bucket}/{key.rsplit('/', 1)[0]}" if "/" in key else f"s3://{bucket}"
    return [join(up, "images", "mscoco", "images", "train2014")]


def _sentence(s: Any) -> str:
    if isinstance(s, dict):
        s = s.get("sent") or s.get("raw")
    return " ".join(s.split()) if isinstance(s, str) else ""


@importer("refcoco", parts={"main": Part(REFER_SCHEMA, "preproces_refcoco_rec", entry={"length_group": "grounding"})})
def import_refcoco(source: str, ctx: ImportContext) -> Iterator[Row]:
    """RefCOCO / RefCOCO+ / RefCOCOg training expressions from the refer toolkit. SOURCE: the
    dataset folder (``refs(unc).p`` or ``refs(umd).p`` and ``instances.json``), or the pickle
    itself. The pickle is read as plain data only; ``instances.json`` is streamed. One row per
    sentence of the train split: ``s3_path``, ``label`` (the sentence's ``sent``), ``loc_string``
    (the annotation's box). Images: ``images/`` beside the files or the refer toolkit's
    ``../images/mscoco/images/train2014``, else relative COCO file names (set ``image_root``)."""
    if ctx.images is not None:
        raise ImportError_("refcoco: the refer toolkit holds no images (they are COCO train2014 files): "
                           "--images-to is not used; put them in an images/ folder beside the refs pickle, "
                           "or set image_root in the mixture entry")
    refs_uri = _refs_file(source)
    folder = folder_of(refs_uri)
    inst_uri = join(folder, "instances.json")
    if not exists(inst_uri):
        raise ImportError_(f"refcoco: {inst_uri} is missing: the refer toolkit keeps the COCO annotations "
                           "of a dataset in instances.json beside its refs pickle")
    refs = safe_pickle.load(refs_uri)
    if not isinstance(refs, list):
        raise ImportError_(f"refcoco: {refs_uri} holds a {type(refs).__name__}, expected the refer toolkit's "
                           "list of refs")
    train: list[tuple[Any, Any, Any, list]] = []
    need_anns: set = set()
    need_imgs: set = set()
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            ctx.skip("bad_ref", f"{refs_uri}: ref {i} is not a dict")
            continue
        if ref.get("split") != "train":
            continue
        sentences = ref.get("sentences")
        if (not isinstance(ref.get("ann_id"), (int, str)) or not isinstance(ref.get("image_id"), (int, str))
                or not isinstance(sentences, list)):
            ctx.skip("bad_ref", f"{refs_uri}: ref {ref.get('ref_id', i)} lacks ann_id, image_id or sentences")
            continue
        train.append((ref.get("ref_id", i), ref["ann_id"], ref["image_id"], sentences))
        need_anns.add(ref["ann_id"])
        need_imgs.add(ref["image_id"])
    del refs
    anns: dict = {}
    imgs: dict = {}
    for key, item, in_array in iter_json_top(inst_uri):
        if not in_array or not isinstance(item, dict):
            continue
        if not isinstance(item.get("id"), (int, str)):
            continue
        if key == "annotations" and item["id"] in need_anns:
            anns[item["id"]] = (item.get("image_id"), item.get("bbox"))
        elif key == "images" and item["id"] in need_imgs:
            imgs[item["id"]] = (item.get("file_name"), item.get("width"), item.get("height"))
    images = ImageFolder(ImageFolder.find_root(folder, *_refer_images(folder)))
    for ref_id, ann_id, image_id, sentences in train:
        ctx.progress(1)
        where = f"{refs_uri}: ref {ref_id}"
        try:
            if ann_id not in anns:
                raise Malformed("missing_annotation", f"annotation {ann_id} is not in instances.json")
            ann_image, bbox = anns[ann_id]
            if ann_image != image_id:
                raise Malformed("annotation_image_mismatch", f"annotation {ann_id} is of image {ann_image}, "
                                                             f"the ref of image {image_id}")
            if image_id not in imgs:
                raise Malformed("missing_image_record", f"image {image_id} is not in instances.json")
            file_name, w, h = imgs[image_id]
            size = record_size({"width": w, "height": h})
            if size is None:
                raise Malformed("unknown_image_size", f"image {image_id} has no width/height")
            loc = loc_tokens(to_grid(xywh_to_xyxy(bbox), size[0], size[1], ctx.frame))
            path = images.path(file_name)
        except Malformed as e:
            ctx.skip(e.reason, f"{where}: {e}")
            continue
        for sent in sentences:
            label = _sentence(sent)
            if not label:
                ctx.skip("empty_sentence", f"{where}: a sentence without text")
                continue
            yield Row("main", {"s3_path": path, "label": label, "loc_string": loc})


# ------------------------------------------------------------------------------ lmms RefCOCO


LMMS_COLUMNS = ("question_id", "image", "answer", "bbox", "file_name")


def _lmms_name(rec: dict) -> str:
    fn = rec.get("file_name")
    if isinstance(fn, str):
        base = fn.replace("\\", "/").rsplit("/", 1)[-1].strip()
        if base and base not in (".", ".."):
            return base
    qid = rec.get("question_id")
    if qid is None or not str(qid).strip() or "/" in str(qid):
        raise Malformed("missing_file_name", "neither file_name nor question_id names the image")
    return f"{qid}.jpg"


@importer("lmms-refcoco", parts={"main": Part(REFER_SCHEMA, "preproces_refcoco_rec",
                                              entry={"length_group": "grounding"})})
def import_lmms_refcoco(source: str, ctx: ImportContext) -> Iterator[Row]:
    """lmms-lab RefCOCO / RefCOCO+ / RefCOCOg parquet (evaluation splits: do not train on what
    you evaluate on). SOURCE: a parquet file or a folder of them, read batch by batch. The
    embedded images are written under ``--images-to`` as ``lmms-refcoco/<file_name>`` (or
    ``<question_id>.jpg``); one row per expression of ``answer``: ``s3_path``, ``label``,
    ``loc_string`` (``bbox`` xywh in pixels of the embedded image)."""
    if ctx.images is None:
        raise ImportError_("lmms-refcoco: the images are embedded in the parquet: give --images-to "
                           "DIR_OR_S3_URI to write them out (the table then points at them)")
    files = sorted(walk(source, r"\.parquet$"))
    if not files:
        raise ImportError_(f"lmms-refcoco: no .parquet file in {source}: expected lmms-lab/RefCOCO* parquet "
                           "with columns question_id, image {bytes}, answer, bbox, file_name")
    done: dict[str, str] = {}
    for uri in files:
        with open_binary(uri, seekable=True) as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            missing = [c for c in ("image", "answer", "bbox") if c not in names]
            if missing:
                raise ImportError_(f"lmms-refcoco: {uri} lacks column(s) {', '.join(missing)}: expected "
                                   "question_id, image {bytes}, question, answer (a list), bbox (xywh pixels), "
                                   f"file_name; found {', '.join(names)}")
            cols = [c for c in LMMS_COLUMNS if c in names]
            n = 0
            for batch in pf.iter_batches(batch_size=64, columns=cols):
                for rec in batch.to_pylist():
                    n += 1
                    ctx.progress(1)
                    where = f"{uri}: row {n - 1} (question_id {rec.get('question_id')})"
                    try:
                        rows = _lmms_rows(rec, ctx, done)
                    except Malformed as e:
                        ctx.skip(e.reason, f"{where}: {e}")
                        continue
                    yield from rows


def _lmms_rows(rec: dict, ctx: ImportContext, done: dict[str, str]) -> list[Row]:
    img = rec.get("image")
    data = img.get("bytes") if isinstance(img, dict) else img
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise Malformed("missing_image", "no image bytes")
    size = image_size(bytes(data))
    if size is None:
        raise Malformed("bad_image", "the image bytes are not a readable image")
    loc = loc_tokens(to_grid(xywh_to_xyxy(rec.get("bbox")), size[0], size[1], ctx.frame))
    answers = rec.get("answer")
    answers = [answers] if isinstance(answers, str) else answers
    labels = [" ".join(a.split()) for a in (answers or []) if isinstance(a, str) and a.strip()]
    if not labels:
        raise Malformed("no_answer", "no referring expression in answer")
    key = f"lmms-refcoco/{_lmms_name(rec)}"
    path = done.get(key)
    if path is None:
        path = done[key] = ctx.image(key, bytes(data))
    return [Row("main", {"s3_path": path, "label": label, "loc_string": loc}) for label in labels]
