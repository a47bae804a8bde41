"""Images at preparation: the paths a row's sample refers to, and their bytes (embedded in the
shards with ``--embed-images``)."""

from __future__ import annotations

from lavida_data.convert.sample import IMAGE_ROLES, convert_row, image_paths
from lavida_data.errors import SampleError
from lavida_data.io.images import read_image_bytes
from lavida_data.spec.plan import DatasetPlan


def fetch_image(path: str) -> bytes:
    """An image's bytes; transient faults are retried by the storage layer, and one that lasts
    (:class:`~lavida_data.io.StorageUnavailable`) stops the preparation: it is never counted."""
    return read_image_bytes(path)


#: what an image fetch may fail with and still be counted as missing (permanent faults)
MISSING_IMAGE_ERRORS = (OSError, ValueError)


def images_of(plan: DatasetPlan, rec: dict, row_index: int, position: int) -> list[str]:
    """The image paths of the sample this row converts to (none when it does not convert)."""
    try:
        sample = convert_row(plan.converter, plan.options, rec, dataset=plan.name, row_index=row_index, seed=0,
                             position=position, image_root=plan.image_root)
    except SampleError:
        return []  # the loader skips and counts it
    return [p for role in IMAGE_ROLES for p in image_paths(sample, role)]
