"""Every importer module, loaded on demand: each registers its KINDs in ``IMPORTERS`` on import."""

from __future__ import annotations

import importlib

from lavida_data.importers.base import IMPORTERS, Importer

PACKAGE = "lavida_data.importers"
MODULES = ("laion", "t2i", "edit", "understanding", "grounding", "refer")


def load_all() -> dict[str, Importer]:
    """Import every importer module (each registers its KINDs) and return the registry."""
    for m in MODULES:
        try:
            importlib.import_module(f"{PACKAGE}.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"{PACKAGE}.{m}":
                raise
    return IMPORTERS
