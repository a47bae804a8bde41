"""Grounding tables from GranD-f (dense captions with boxes), and what the grounding KINDs share
(``refer.py`` too): where a record's image is, and captions with grounded phrases.

Boxes go onto the 0..1024 grid in the import's frame (``--frame``; see :mod:`.boxes`).

Images. GranD-f and the refer toolkit ship annotations only; their images (SA-1B, COCO,
Flickr30k) are downloaded separately. When the annotations' folder holds an ``images/`` folder
(for ``refcoco`` also the refer toolkit's ``../images/mscoco/images/train2014``), ``s3_path`` is
the absolute path (or ``s3://`` URI) of the image there (checked: a missing image skips the
record as ``missing_image``); otherwise ``s3_path`` is the file name as the annotation gives it,
relative, and the mixture entry needs ``image_root`` set to the folder (or prefix) holding the
images.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import pyarrow as pa

from lavida_data.importers.base import ImportContext, Part, Row, importer
from lavida_data.importers.boxes import (
    Box,
    Malformed,
    grounded,
    masks_bbox,
    polygons_bbox,
    rle_bbox,
    rle_size,
    to_grid,
    union,
    xywh_to_xyxy,
)
from lavida_data.importers.errors import ImportError_
from lavida_data.importers.jsonstream import iter_json_top
from lavida_data.importers.sources import (
    KeyIndex,
    folder_of,
    image_size,
    index_prefix,
    is_dir,
    join,
    location,
    walk,
)
from lavida_data.io import is_s3

GRANDF_SCHEMA = pa.schema([("s3_path", pa.string()), ("loc_caption", pa.string())])


# ---------------------------------------------------------------------------------- helpers


class ImageFolder:
    """Where a record's image is: under ``root`` (absolute; checked to exist: a local file, or a
    key of the prefix's listing, read once), or the bare relative file name when there is no root
    (the mixture entry's ``image_root`` resolves it)."""

    def __init__(self, root: str | None):
        self.root = root
        self.local = root is not None and not is_s3(root)
        self._keys: KeyIndex | None = None  # the keys under an S3 root

    def _exists(self, path: str) -> bool:
        if self.local:
            return os.path.isfile(path)
        if self._keys is None:
            self._keys = index_prefix(self.root)
        return path[len(self.root.rstrip("/")) + 1:] in self._keys

    @staticmethod
    def find_root(folder: str, *extra: str) -> str | None:
        """The first of ``folder/images`` and ``extra`` that is a folder, or None."""
        for cand in (join(folder, "images"), *extra):
            if is_dir(cand):
                return location(cand)
        return None

    def path(self, name: Any) -> str:
        if not isinstance(name, str) or not name.strip():
            raise Malformed("missing_image_name", "the record names no image file")
        name = name.strip()
        if is_s3(name) or os.path.isabs(name) or self.root is None:
            return name
        if ".." in name.replace("\\", "/").split("/"):
            raise Malformed("bad_image_name", f"image name {name!r} leaves the image folder")
        path = join(self.root, name)
        if not self._exists(path):
            raise Malformed("missing_image", f"{path} does not exist")
        return path

    def size(self, path: str) -> tuple[int, int]:
        """(width, height) of an image file, read from its header."""
        if self.root is None and not (is_s3(path) or os.path.isabs(path)):
            raise Malformed("unknown_image_size", "the record gives no width/height and there is no images/ "
                                                  "folder to read the image from")
        size = image_size(path)
        if size is None:
            raise Malformed("bad_image", f"{path} is not a readable image")
        return size


def record_size(rec: dict) -> tuple[Any, Any] | None:
    """A record's ``width``/``height``; None when it gives neither."""
    w, h = rec.get("width"), rec.get("height")
    if w is None and h is None:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (w, h)):
        raise Malformed("bad_image_size", f"width/height {w!r}x{h!r} are not positive numbers")
    return w, h


def _spans(v: Any) -> list[tuple[int, int]]:
    """``[start, end]`` or a list of them."""
    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if isinstance(v, (list, tuple)) and len(v) == 2 and all(is_int(x) for x in v):
        return [(v[0], v[1])]
    if (isinstance(v, (list, tuple)) and v and all(isinstance(p, (list, tuple)) and len(p) == 2
                                                    and all(is_int(x) for x in p) for p in v)):
        return [(p[0], p[1]) for p in v]
    raise Malformed("bad_span", f"expected a character span [start, end], got {str(v)[:80]}")


def loc_caption(caption: str, grounds: list[tuple[int, int, Box]], width: float, height: float, frame: str) -> str:
    """``caption`` with each grounded span rewritten ``<box_p> phrase </box_p><LOC_BEGIN>..<LOC_END>``;
    boxes of the same span are merged (their union). Spans index characters of ``caption``."""
    merged: dict[tuple[int, int], list[Box]] = {}
    for s, e, box in grounds:
        if not 0 <= s < e <= len(caption):
            raise Malformed("span_outside_caption", f"span [{s}, {e}] is outside the {len(caption)}-character caption")
        merged.setdefault((s, e), []).append(box)
    if not merged:
        raise Malformed("no_groundings", "the caption has no grounded phrase")
    out: list[str] = []
    cur = 0
    for s, e in sorted(merged):
        if s < cur:
            raise Malformed("overlapping_spans", f"span [{s}, {e}] overlaps the previous grounded phrase")
        phrase = caption[s:e]
        text = phrase.strip()
        if not text:
            raise Malformed("empty_phrase", f"span [{s}, {e}] holds no text")
        lead = len(phrase) - len(phrase.lstrip())
        grid = to_grid(union(merged[(s, e)]), width, height, frame)
        out.append(caption[cur:s + lead])
        out.append(grounded(text, grid))
        cur = s + lead + len(text)
    out.append(caption[cur:])
    return "".join(out).strip()


def _box_of(obj: dict, seg_key: str) -> Box:
    """A box from a segmentation (polygons or RLE), else from ``bbox`` (xywh)."""
    seg = obj.get(seg_key)
    if seg:
        if isinstance(seg, dict) or (isinstance(seg, list) and seg and isinstance(seg[0], dict)):
            return masks_bbox(seg)
        return polygons_bbox(seg)
    if obj.get("bbox") is not None:
        return xywh_to_xyxy(obj["bbox"])
    raise Malformed("missing_box", f"no {seg_key} and no bbox")


# ----------------------------------------------------------------------------------- GranD-f


def _grandf_gcg(rec: dict, images: ImageFolder, frame: str) -> dict:
    """GranDf_HA / OpenPsg: ``{file_name, caption, height, width, groundings: {phrase:
    {token_positives: [s, e], rle_masks: [RLE]}}}``; a phrase's box bounds the union of its masks."""
    caption = rec.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise Malformed("missing_caption", "no caption")
    groundings = rec.get("groundings")
    if not groundings:
        raise Malformed("no_groundings", "no groundings")
    if not isinstance(groundings, dict):
        raise Malformed("bad_groundings", "groundings must map each phrase to its span and masks")
    size = record_size(rec)
    grounds = []
    for phrase, g in groundings.items():
        if not isinstance(g, dict):
            raise Malformed("bad_groundings", f"grounding of {phrase!r} is not an object")
        spans = _spans(g.get("token_positives", g.get("tokens_positive")))
        masks = g.get("rle_masks")
        box = masks_bbox(masks)
        msize = rle_size(masks)
        if size is None:
            size = msize
        elif msize is not None and tuple(msize) != (size[0], size[1]):
            raise Malformed("mask_size_mismatch", f"mask of {phrase!r} is {msize[0]}x{msize[1]}, "
                                                  f"the image {size[0]}x{size[1]}")
        grounds += [(s, e, box) for s, e in spans]
    if size is None:
        raise Malformed("unknown_image_size", "no width/height")
    path = images.path(rec.get("file_name"))
    return {"s3_path": path, "loc_caption": loc_caption(caption, grounds, size[0], size[1], frame)}


def _find(caption: str, phrase: str, taken: list[tuple[int, int]]) -> tuple[int, int]:
    """The first occurrence of ``phrase`` in ``caption`` not overlapping ``taken``: without its
    trailing punctuation (a sentence's full stop is not part of the phrase), then as it is; with
    its case, then ignoring case."""
    def free(s: int, e: int) -> bool:
        return all(e <= a or s >= b for a, b in taken)

    candidates = [phrase.rstrip(".,;:!? "), phrase]
    for hay, needles in ((caption, candidates), (caption.lower(), [c.lower() for c in candidates])):
        if len(hay) != len(caption):
            continue
        for needle in needles:
            if not needle:
                continue
            i = hay.find(needle)
            while i >= 0:
                if free(i, i + len(needle)):
                    return i, i + len(needle)
                i = hay.find(needle, i + 1)
    raise Malformed("phrase_not_in_caption", f"phrase {phrase[:60]!r} is not in the caption")


def _grandf_refcocog(rec: dict, images: ImageFolder, frame: str) -> dict:
    """RefCOCOg_GCG: ``{img_file_name, caption, refs: [{sentence, segmentation (polygons)}]}``;
    each sentence is found in the caption; its box bounds its polygons."""
    caption = rec.get("caption")
    if not isinstance(caption, str) or not caption.strip().strip('"').strip():
        raise Malformed("missing_caption", "no caption")
    refs = rec.get("refs")
    if not refs:
        raise Malformed("no_groundings", "no refs")
    if not isinstance(refs, list):
        raise Malformed("bad_groundings", "refs must be a list")
    if not any(isinstance(r, dict) and r.get("tokens_positive") is not None for r in refs):
        caption = caption.strip().strip('"').strip()  # phrases are searched: the caption can be tidied
    path = images.path(rec.get("img_file_name", rec.get("file_name")))
    taken: list[tuple[int, int]] = []
    grounds = []
    for ref in refs:
        if not isinstance(ref, dict):
            raise Malformed("bad_groundings", "a ref is not an object")
        sentence = ref.get("sentence")
        if not isinstance(sentence, str) or not sentence.strip().strip('"').strip():
            raise Malformed("missing_phrase", "a ref has no sentence")
        if ref.get("tokens_positive") is not None:
            spans = _spans(ref["tokens_positive"])
        else:
            spans = [_find(caption, sentence.strip().strip('"').strip(), taken)]
        taken += spans
        box = _box_of(ref, "segmentation")
        grounds += [(s, e, box) for s, e in spans]
    size = record_size(rec) or images.size(path)
    return {"s3_path": path, "loc_caption": loc_caption(caption, grounds, size[0], size[1], frame)}


class _Coco:
    """flickr_mergedGT_GCG: COCO ``images[]`` (file_name, height, width, caption) and
    ``annotations[]`` (image_id, bbox xywh, tokens_positive, sam_mask), gathered compactly
    (boxes and spans only) and joined when the file has been read."""

    def __init__(self):
        self.images: dict[Any, tuple] = {}
        self.anns: dict[Any, list[tuple[list[tuple[int, int]], Box]]] = {}
        self.bad: dict[Any, tuple[str, str]] = {}

    def add_image(self, item: Any) -> tuple[str, str] | None:
        if not isinstance(item, dict) or "id" not in item:
            return ("bad_image_record", "an images[] item without id")
        self.images[_hashable(item["id"])] = (item.get("file_name"), item.get("width"), item.get("height"),
                                              item.get("caption"))
        return None

    def add_annotation(self, item: Any) -> tuple[str, str] | None:
        if not isinstance(item, dict) or "image_id" not in item:
            return ("bad_annotation", "an annotations[] item without image_id")
        iid = _hashable(item["image_id"])
        if iid in self.bad:
            return None
        try:
            spans = _spans(item.get("tokens_positive", item.get("token_positives")))
            box = xywh_to_xyxy(item["bbox"]) if item.get("bbox") is not None else None
            if box is None:
                b = rle_bbox(item.get("sam_mask")) if item.get("sam_mask") is not None else None
                if b is None:
                    raise Malformed("missing_box", "annotation without bbox or non-empty sam_mask")
                box = b
        except Malformed as e:
            self.bad[iid] = (e.reason, f"annotation {item.get('id')} of image {iid}: {e}")
            self.anns.pop(iid, None)
            return None
        self.anns.setdefault(iid, []).append((spans, box))
        return None

    def rows(self, images: ImageFolder, frame: str, ctx: ImportContext, where: str) -> Iterator[Row]:
        for iid, (file_name, w, h, caption) in self.images.items():
            ctx.progress(1)
            try:
                if iid in self.bad:
                    reason, detail = self.bad.pop(iid)
                    raise Malformed(reason, detail)
                anns = self.anns.pop(iid, None)
                if not anns:
                    raise Malformed("no_groundings", f"image {iid} has no annotation")
                if not isinstance(caption, str) or not caption.strip():
                    raise Malformed("missing_caption", f"image {iid} has no caption")
                size = record_size({"width": w, "height": h})
                if size is None:
                    raise Malformed("unknown_image_size", f"image {iid} has no width/height")
                path = images.path(file_name)
                grounds = [(s, e, box) for spans, box in anns for s, e in spans]
                values = {"s3_path": path, "loc_caption": loc_caption(caption, grounds, size[0], size[1], frame)}
            except Malformed as e:
                ctx.skip(e.reason, f"{where}: image {iid}: {e}")
                continue
            yield Row("main", values)
        for iid in list(self.anns) + [i for i in self.bad if i not in self.images]:
            ctx.skip("unknown_image", f"{where}: annotations of image {iid}, which images[] does not list")


def _hashable(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, dict)) else v


_COCO_META = {"info", "licenses", "categories", "type"}


@importer("grandf", parts={"main": Part(GRANDF_SCHEMA, "preproces_grandf", entry={"length_group": "grounding"})})
def import_grandf(source: str, ctx: ImportContext) -> Iterator[Row]:
    """GranD-f grounded captions. SOURCE: one annotation JSON, or a folder whose top-level
    ``*.json`` files are all read (GranDf_HA_GCG / OpenPsgGCG lists with RLE masks,
    RefCOCOg_GCG keyed records with polygons, flickr_mergedGT_GCG COCO files: detected per
    record). Images: ``images/`` beside the annotations when present, else relative file names
    (set ``image_root``). Writes ``s3_path``, ``loc_caption``."""
    if ctx.images is not None:
        raise ImportError_("grandf: GranD-f holds no images (they are SA-1B, COCO and Flickr30k files): "
                           "--images-to is not used; put the images in an images/ folder beside the "
                           "annotations, or set image_root in the mixture entry")
    files = sorted(walk(source, r"^[^/]+\.json$")) if is_dir(source) else [source]
    if not files:
        raise ImportError_(f"grandf: no annotation file in {source}: expected GranD-f JSON files "
                           "(GranDf_HA_GCG_train.json, OpenPsgGCG_train.json, RefCOCOg_GCG_train.json, "
                           "flickr_mergedGT_GCG_train.json)")
    images = ImageFolder(ImageFolder.find_root(folder_of(source)))
    for uri in files:
        coco = _Coco()
        n = 0
        for key, item, in_array in iter_json_top(uri):
            n += 1
            where = f"{uri}: {key + ' ' if key else ''}record {n}"
            if key in ("images", "annotations") and in_array:
                bad = coco.add_image(item) if key == "images" else coco.add_annotation(item)
                if bad:
                    ctx.skip(bad[0], f"{where}: {bad[1]}")
                continue
            if key in _COCO_META:
                continue
            ctx.progress(1)
            rec, fmt = _grandf_format(key, item, in_array)
            if fmt is None:
                ctx.skip("unknown_record", f"{where}: expected a GranD-f record ({{file_name, caption, groundings}}, "
                                           "{img_file_name, caption, refs} or COCO images/annotations)")
                continue
            try:
                values = (_grandf_gcg if fmt == "gcg" else _grandf_refcocog)(rec, images, ctx.frame)
            except Malformed as e:
                ctx.skip(e.reason, f"{where}: {e}")
                continue
            yield Row("main", values)
        yield from coco.rows(images, ctx.frame, ctx, uri)


def _grandf_format(key: str | None, item: Any, in_array: bool) -> tuple[dict, str | None]:
    if not isinstance(item, dict):
        return {}, None
    if "groundings" in item:
        return item, "gcg"
    if "refs" in item or "img_file_name" in item:
        return item, "refcocog"
    if key is None and len(item) == 1:  # a list of {key: record}
        inner = next(iter(item.values()))
        if isinstance(inner, dict) and ("refs" in inner or "img_file_name" in inner):
            return inner, "refcocog"
        if isinstance(inner, dict) and "groundings" in inner:
            return inner, "gcg"
    return item, None
