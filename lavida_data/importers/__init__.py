"""``lavida-data import``: the seed's public datasets, from their native layouts to the tables
the converters read. One module per family of layouts; each registers its KINDs on import."""

from __future__ import annotations

from lavida_data.importers.base import IMPORTERS, ImportContext, Importer, Part, Row, importer
from lavida_data.importers.catalog import load_all
from lavida_data.importers.errors import ImportError_
from lavida_data.importers.run import ImportResult, read_import_meta, run_import

__all__ = ["IMPORTERS", "ImportError_", "ImportContext", "ImportResult", "Importer", "Part", "Row", "importer", "load_all",
           "read_import_meta", "run_import"]
