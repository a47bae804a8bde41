"""Mixture files as strict pydantic models.

Every key of the upstream format is accepted with its upstream meaning (``json_path`` is
accepted as the older name of ``path``); any other key is an error. Use :func:`load_mixture`
(in :mod:`lavida_data.spec.validate`) to read a file with positions in every error message.

Dataset names need not be unique (upstream's files repeat some): a :class:`Mixture` renames the
second and later entries of a name ``<name>~2``, ``<name>~3``, ... so that ``name`` is unique
everywhere downstream (sample ids, plans, prepared folders, counts); ``declared_name`` keeps the
name the file gave.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Annotated, Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, PrivateAttr, model_validator

from lavida_data.io import is_s3
from lavida_data.spec.strategy import SamplingStrategy


def resolve_path(file: str | None, path: str) -> str:
    """``path`` relative to the folder of ``file`` (a mixture file); ``s3://`` and absolute paths,
    and paths of a mixture given as text (``file`` None or ``<...>``), are kept as given."""
    if is_s3(path) or os.path.isabs(path) or file is None or file.startswith("<"):
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

    _declared_name: str | None = PrivateAttr(default=None)

    @property
    def declared_name(self) -> str:
        """The name the mixture file gave (``name`` is made unique by the :class:`Mixture`)."""
        return self._declared_name or self.name

    @property
    def aes_declared(self) -> bool:
        """Whether the entry sets ``aes_cutoff`` (a number, or null to filter nothing); when it
        does not, upstream's hidden filter (score > 5 when the score column is read) applies."""
        return "aes_cutoff" in self.model_fields_set

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

    @model_validator(mode="after")
    def _unique_names(self) -> "Mixture":
        names = unique_names([d.name for d in self.datasets])
        if names != [d.name for d in self.datasets]:
            renamed = []
            for d, name in zip(self.datasets, names):
                if name != d.name:
                    declared = d.declared_name
                    d = d.model_copy(update={"name": name})
                    d._declared_name = declared
                renamed.append(d)
            object.__setattr__(self, "datasets", renamed)  # frozen: set once, while validating
        return self

    @property
    def file(self) -> str | None:
        """The file this mixture was read from, if any."""
        return self._file

    def resolve(self, path: str | None) -> str | None:
        """``path`` made absolute: relative paths are relative to the mixture file's folder."""
        return None if path is None else resolve_path(self._file, path)

    def dataset(self, name: str) -> DatasetSpec:
        """The entry named ``name`` (its unique name, e.g. ``grand-f~2``)."""
        for d in self.datasets:
            if d.name == name:
                return d
        from lavida_data.errors import suggest

        raise KeyError(f"no dataset {name!r} in the mixture{suggest(name, [d.name for d in self.datasets])}")

    def group_weight(self, group: str) -> int:
        return self.weights.get(group, 100)

    def group_batch_factor(self, group: str) -> float:
        return self.batch_sizes.get(group, 1.0)


def unique_names(names: Sequence[str | None]) -> list[str | None]:
    """``names`` with the second and later uses of a name renamed ``<name>~2``, ``<name>~3``, ...
    (skipping any name the list already holds); ``None`` entries are kept."""
    taken = {n for n in names if n is not None}
    seen: Counter = Counter()
    out: list[str | None] = []
    for n in names:
        if n is None:
            out.append(None)
            continue
        seen[n] += 1
        if seen[n] == 1:
            out.append(n)
            continue
        k = seen[n]
        while f"{n}~{k}" in taken:
            k += 1
        taken.add(f"{n}~{k}")
        out.append(f"{n}~{k}")
    return out
