"""lavida-data: training data for LaViDa-O-style unified multimodal models.

Public API::

    from lavida_data import converter, load_mixture, validate_file, registry
    from lavida_data.prepare import prepare          # plans -> prepared datasets
    from lavida_data import build_dataset, build_dataloader
"""

from __future__ import annotations

from lavida_data.convert.registry import ConvertContext, Converter, NoOptions, Registry, converter, registry
from lavida_data.convert.sample import convert_row, sample_id
from lavida_data.errors import ConfigError, Issue, LavidaDataError, SampleError, TooManyBadSamples
from lavida_data.io import StorageUnavailable
from lavida_data.io.tables import iter_batches, read_schema
from lavida_data.prepare.rows import Stats, iter_rows, iter_samples, selected_rows
from lavida_data.rng import sample_np_rng, sample_rng
from lavida_data.spec.config import DatasetSpec, MaxEncImages, Mixture
from lavida_data.spec.plan import DatasetPlan
from lavida_data.spec.strategy import SamplingStrategy
from lavida_data.spec.validate import Report, load_mixture, validate_file, validate_text
from lavida_data.version import __version__


def __getattr__(name: str):
    """Streaming parts import torch and mosaicml-streaming: load them on first use."""
    lazy = {
        "build_dataset": "lavida_data.stream.loader", "build_dataloader": "lavida_data.stream.loader",
        "LoaderConfig": "lavida_data.stream.dataset", "MixtureDataset": "lavida_data.stream.dataset",
        "ProcessConfig": "lavida_data.stream.process", "global_order": "lavida_data.stream.order",
        "run_import": "lavida_data.importers",
        "build_tiny_tokenizer": "lavida_data.transforms.tokenizer",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'lavida_data' has no attribute {name!r}")

__all__ = [
    "ConfigError", "ConvertContext", "Converter", "DatasetPlan", "DatasetSpec", "Issue", "LavidaDataError",
    "MaxEncImages", "Mixture", "NoOptions", "Registry", "Report", "SampleError", "SamplingStrategy", "Stats",
    "__version__", "build_dataloader", "build_tiny_tokenizer", "build_dataset", "global_order", "LoaderConfig", "MixtureDataset",
    "ProcessConfig", "convert_row", "converter", "iter_batches", "iter_rows", "iter_samples", "load_mixture",
    "read_schema", "run_import", "registry", "sample_id", "sample_np_rng", "sample_rng", "selected_rows", "validate_file",
    "validate_text", "StorageUnavailable", "TooManyBadSamples",
]
