"""Whether a prepared mixture is there and up to date: each dataset's manifest against its plan
(the fingerprint of the source, the columns read, the filters), with the tables' schemas the
validation report already read."""

from __future__ import annotations

from typing import Mapping

from lavida_data.errors import LavidaDataError
from lavida_data.io.tables import read_schema
from lavida_data.prepared.layout import fingerprint, join, read_index, read_manifest
from lavida_data.spec.config import Mixture
from lavida_data.spec.plan import DatasetPlan


def prepared_counts(mixture: Mixture, plans: Mapping[str, DatasetPlan], prepared: str,
                    schemas: Mapping[str, list[str]] | None = None) -> dict[str, int]:
    """Kept rows per dataset, from the manifests; refuses missing or out-of-date preparations."""
    return {name: int(m["rows_kept"]) for name, m in check_prepared(mixture, plans, prepared, schemas).items()}


def check_prepared(mixture: Mixture, plans: Mapping[str, DatasetPlan], prepared: str,
                   schemas: Mapping[str, list[str]] | None = None) -> dict[str, dict]:
    """Each dataset's manifest; refuses missing or out-of-date preparations. ``schemas`` (the
    validation report's, per dataset) saves reading each table's schema again."""
    out = {}
    for spec in mixture.datasets:
        folder = join(prepared, spec.name)
        manifest = read_manifest(folder)
        if manifest is None:
            raise LavidaDataError(f"dataset {spec.name!r} is not prepared in {prepared}: run `lavida-data prepare`")
        plan = plans[spec.name]
        schema = (schemas or {}).get(spec.name)
        if schema is None:
            schema = read_schema(plan.table)
        digest, _ = fingerprint(plan, schema, manifest["embed_images"], shard_size_limit(folder))
        if digest != manifest["fingerprint"]:
            raise LavidaDataError(
                f"dataset {spec.name!r} changed since it was prepared (source, columns or filters): "
                f"run `lavida-data prepare` again"
            )
        out[spec.name] = manifest
    return out


def shard_size_limit(folder: str) -> int:
    """The shard size limit a dataset was prepared with (from its MDS index)."""
    shards = (read_index(folder) or {"shards": []})["shards"]
    return int(shards[0]["size_limit"]) if shards else 64 << 20
