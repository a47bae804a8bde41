"""Preparation engines: the rows a plan selects (``rows``) -> prepared datasets, on this machine
(``local``, with ``blocks`` for parallel reads and image embedding in ``images``) or on a Ray
cluster (``ray``)."""

from lavida_data.prepare.local import Prepared, prepare, prepare_dataset

__all__ = ["Prepared", "prepare", "prepare_dataset"]
