"""Mixture files as strict pydantic models.

Every key of the upstream format is accepted with its upstream meaning (``json_path`` is
accepted as the older name of ``path``); any other key is an error. Use :func:`load_mixture`
(in :mod:`lavida_data.validate`) to read a file with positions in every error message.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, PrivateAttr, model_validator

from . import s3
from .strategy import SamplingStrategy


def resolve_path(file: str | None, path: str) -> str:
    """``path`` relative to the folder of ``file`` (a mixture file); ``s3://`` and absolute paths,
    and paths of a mixture given as text (``file`` None or ``<...>``), are kept as given."""
    if s3.is_s3(path) or os.path.isabs(path) or file is None or file.startswith("<"):
        return path
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(file)), path))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _strategy(v: Any) -> SamplingStrategy:
    if isinstance(v, SamplingStrategy):
        return v
    return SamplingStrategy.parse(v)


Strategy = Annotated[SamplingStrategy, PlainValidator(_strategy), PlainSerializer(str)]
Name = Annotated[str, Field(min_length=1, pattern=r"^[^\s:]+$")]


class MaxEncImages(Strict):
    """Keep rows whose list in ``column`` has at most ``value`` items."""

    column: str = Field(min_length=1)
    value: int = Field(ge=0)


class DatasetSpec(Strict):
    """One dataset entry of a mixture file."""

    name: Name
    path: str = Field(min_length=1, description="the table; `json_path` is the upstream name")
    sampling_strategy: Strategy = SamplingStrategy("all")
    preprocess_fn: str = Field(min_length=1)
    process_fn_kwargs: dict[str, Any] = Field(default_factory=dict)
    columns: list[Annotated[str, Field(min_length=1)]] | None = None
    aes_cutoff: float | None = None
    min_size: int | None = Field(default=None, ge=0)
    max_enc_images: MaxEncImages | None = None
    length_group: Annotated[str, Field(min_length=1)] = "default"
    image_root: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _json_path(cls, data: Any) -> Any:
        if isinstance(data, dict) and "json_path" in data:
            if "path" in data:
                raise ValueError("give either `path` or `json_path` (its upstream name), not both")
            data = dict(data)
            data["path"] = data.pop("json_path")
        return data


class Mixture(Strict):
    """A mixture file: datasets, length-group weights and batch factors, and the seed."""

    datasets: list[DatasetSpec] = Field(min_length=1)
    weights: dict[str, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)
    batch_sizes: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    seed: int = Field(default=0, ge=0, lt=2**63)

    _file: str | None = PrivateAttr(default=None)

    @property
    def file(self) -> str | None:
        """The file this mixture was read from, if any."""
        return self._file

    def resolve(self, path: str | None) -> str | None:
        """``path`` made absolute: relative paths are relative to the mixture file's folder."""
        return None if path is None else resolve_path(self._file, path)

    def dataset(self, name: str) -> DatasetSpec:
        for d in self.datasets:
            if d.name == name:
                return d
        from .errors import suggest

        raise KeyError(f"no dataset {name!r} in the mixture{suggest(name, [d.name for d in self.datasets])}")

    def group_weight(self, group: str) -> int:
        return self.weights.get(group, 100)

    def group_batch_factor(self, group: str) -> float:
        return self.batch_sizes.get(group, 1.0)
