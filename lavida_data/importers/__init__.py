"""``lavida-data import``: the seed's public datasets, from their native layouts to the tables
the converters read. One module per family of layouts; each registers its KINDs on import."""

from __future__ import annotations

import importlib

from .base import IMPORTERS, ImportContext, Importer, Part, Row, importer
from .run import ImportResult, read_import_meta, run_import

_MODULES = ("laion", "t2i", "edit", "understanding", "grounding", "refer")


def load_all() -> dict[str, Importer]:
    """Import every importer module (each registers its KINDs) and return the registry."""
    for m in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{m}":
                raise
    return IMPORTERS


__all__ = ["IMPORTERS", "ImportContext", "ImportResult", "Importer", "Part", "Row", "importer", "load_all",
           "read_import_meta", "run_import"]
