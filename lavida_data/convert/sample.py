"""The convert stage: one table row -> one LLaVA-style sample, with its id and resolved images.

Converters return samples with image paths as the table gives them; this stage sets the id
(``<dataset>:<row index>``), joins relative image paths onto the dataset's ``image_root`` and
checks the sample's shape, so no converter has to.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from lavida_data.convert.registry import ConvertContext, Converter
from lavida_data.errors import SampleError
from lavida_data.io import is_s3
from lavida_data.rng import sample_rng

IMAGE_ROLES = ("image", "image_gen", "image_gen_enc")


def sample_id(dataset: str, row_index: int) -> str:
    return f"{dataset}:{row_index}"


def join_root(root: str | None, path: str) -> str:
    """``path`` under ``root`` unless it is already absolute (``s3://``, ``/``, or a URL)."""
    if not root or is_s3(path) or os.path.isabs(path) or "://" in path:
        return path
    if is_s3(root) or "://" in root:
        return root.rstrip("/") + "/" + path.lstrip("/")
    return os.path.join(root, path)


def image_paths(sample: Mapping[str, Any], role: str) -> list[str]:
    v = sample.get(role)
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def convert_row(
    conv: Converter,
    options: Any,
    row: Mapping[str, Any],
    *,
    dataset: str,
    row_index: int,
    seed: int,
    epoch: int = 0,
    position: int = 0,
    image_root: str | None = None,
) -> dict:
    """Run ``conv`` on ``row`` with a generator seeded by (seed, epoch, position).

    Raises :class:`SampleError` with a reason when the row cannot become a valid sample.
    """
    ctx = ConvertContext(
        dataset=dataset,
        row_index=row_index,
        options=options,
        rng=sample_rng(seed, epoch, position),
        image_root=image_root,
        epoch=epoch,
        position=position,
    )
    try:
        sample = conv(row, ctx)
    except SampleError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise SampleError(f"converter_error:{type(e).__name__}", f"{conv.name}: {e}") from e
    if not isinstance(sample, dict):
        raise SampleError("bad_sample", f"{conv.name} returned {type(sample).__name__}, not a dict")
    sample = dict(sample)
    if "id" in sample and sample["id"] is not None and "source_id" not in sample:
        sample["source_id"] = sample["id"]
    sample["id"] = sample_id(dataset, row_index)
    for role in IMAGE_ROLES:
        if role in sample and sample[role] is not None:
            paths = image_paths(sample, role)
            if not all(isinstance(p, str) and p for p in paths):
                raise SampleError(f"bad_image_path:{role}", f"{role} must hold non-empty path strings")
            joined = [join_root(image_root, p) for p in paths]
            sample[role] = joined if isinstance(sample[role], (list, tuple)) else joined[0]
    check_sample(sample)
    return sample


def check_sample(sample: Mapping[str, Any]) -> None:
    """The invariants every sample holds; raises :class:`SampleError` naming the broken one.

    Only types are checked here. Upstream accepts samples whose markers do not match their
    images (an ``image`` key holding ``None``, a plan with ``<image_gen_fake>`` and no target,
    a judgement whose image is null), so the marker counts are checked after tokenization,
    against the images the sample really has.
    """
    conv = sample.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise SampleError("bad_conversations", "conversations must be a non-empty list")
    for turn in conv:
        if not (isinstance(turn, dict) and isinstance(turn.get("from"), str) and isinstance(turn.get("value"), str)):
            raise SampleError("bad_conversations", "each turn must be {'from': str, 'value': str}")
