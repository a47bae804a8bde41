"""The converter registry: ``@lavida_data.converter`` in code, entry points from other packages.

A converter turns one table row into a LLaVA-style sample. It declares the columns it reads
(so that a mixture is checked against a table's schema before any row is read) and a pydantic
options model (so that ``process_fn_kwargs`` is validated). Other distributions register
converters under the entry point group ``lavida_data.converters``::

    [project.entry-points."lavida_data.converters"]
    my_converter = "my_pkg.converters:my_converter"   # an object made by @lavida_data.converter

An entry point may also name a module; every converter its import registers is attributed to
the distribution. This distribution's own converters (``lavida_data.convert.builtin``) come the
same way, through its entry point ``builtin``. A plugin that fails to load is reported with its distribution's name and the
error; the other converters keep working.
"""

from __future__ import annotations

import importlib
import random
import threading
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

from pydantic import BaseModel, ConfigDict

from lavida_data.errors import LavidaDataError, suggest

ENTRY_POINT_GROUP = "lavida_data.converters"
#: this distribution: its built-in converters come through the same entry point group (pyproject.toml)
OWN_DISTRIBUTION = "lavida-data"
#: the built-ins' module, imported by name only when this distribution is not installed (a source tree)
BUILTIN_MODULE = "lavida_data.convert.builtin"


class NoOptions(BaseModel):
    """Options model of a converter that takes none."""

    model_config = ConfigDict(extra="forbid")


ColumnSpec = Union[Sequence[str], Callable[[Any], Sequence[str]]]


@dataclass
class ConvertContext:
    """What a converter knows besides the row: where the row sits, its options, its generator."""

    dataset: str
    row_index: int
    options: Any
    rng: random.Random
    image_root: str | None = None
    epoch: int = 0
    position: int = 0


@dataclass
class Converter:
    """A registered converter: ``fn(row, ctx) -> sample`` plus what it reads and accepts."""

    name: str
    fn: Callable[[Mapping[str, Any], ConvertContext], dict]
    options: type[BaseModel] = NoOptions
    columns: ColumnSpec = ()
    optional: ColumnSpec = ()
    aliases: tuple[str, ...] = ()
    source: str = "code"
    description: str = ""

    def __call__(self, row: Mapping[str, Any], ctx: ConvertContext) -> dict:
        return self.fn(row, ctx)

    def __reduce_ex__(self, protocol: Any) -> Any:
        """A converter of the global registry pickles by name (DataLoader workers started with
        ``spawn``, the default on macOS and Windows): the decorated function's module attribute
        is this Converter, so the function cannot be pickled by reference. Unpickling imports the
        function's module (which registers it) and looks the name up."""
        if registry._by_name.get(self.name) is self:
            return registered_converter, (self.name, getattr(self.fn, "__module__", None))
        return super().__reduce_ex__(protocol)

    def parse_options(self, kwargs: Mapping[str, Any] | None) -> BaseModel:
        """Validate ``process_fn_kwargs``; raises :class:`pydantic.ValidationError`."""
        return self.options.model_validate(dict(kwargs or {}))

    def required_columns(self, options: BaseModel | None = None) -> list[str]:
        return _columns(self.columns, options if options is not None else self._default())

    def optional_columns(self, options: BaseModel | None = None) -> list[str]:
        return _columns(self.optional, options if options is not None else self._default())

    def _default(self) -> BaseModel | None:
        try:
            return self.options()
        except Exception:  # options with required fields have no default instance
            return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "source": self.source,
            "options": self.options.model_json_schema().get("properties", {}),
            "columns": {
                "required": self.required_columns() if self._default() is not None else _static(self.columns),
                "optional": self.optional_columns() if self._default() is not None else _static(self.optional),
            },
            "description": self.description,
        }


def _columns(spec: ColumnSpec, options: BaseModel | None) -> list[str]:
    if callable(spec):
        return list(spec(options)) if options is not None else []
    return list(spec)


def _static(spec: ColumnSpec) -> list[str]:
    return [] if callable(spec) else list(spec)


@dataclass
class PluginError:
    distribution: str
    entry_point: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.entry_point!r} of distribution {self.distribution!r} failed to load: {self.error}"


@dataclass
class Registry:
    """Converters by name and alias. Built-ins and plugins are loaded on first use."""

    _by_name: dict[str, Converter] = field(default_factory=dict)
    _alias: dict[str, str] = field(default_factory=dict)
    plugin_errors: list[PluginError] = field(default_factory=list)
    _loaded: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def register(self, conv: Converter) -> Converter:
        with self._lock:
            for key in (conv.name, *conv.aliases):
                owner = self._alias.get(key)
                if owner is not None and owner != conv.name:
                    raise LavidaDataError(
                        f"converter name {key!r} of {conv.source} is already taken by "
                        f"{owner!r} ({self._by_name[owner].source})"
                    )
            old = self._by_name.get(conv.name)
            if old is not None and old is not conv:
                raise LavidaDataError(
                    f"converter {conv.name!r} ({conv.source}) is already registered by {old.source}"
                )
            self._by_name[conv.name] = conv
            for key in (conv.name, *conv.aliases):
                self._alias[key] = conv.name
        return conv

    def ensure_loaded(self) -> None:
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            if not self._load_entry_points():  # run from a source tree that is not installed
                importlib.import_module(BUILTIN_MODULE)

    def _load_entry_points(self) -> bool:
        """Every converter of the entry point group, built-ins included; whether this
        distribution's own entry point was among them."""
        own = False
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"
            version = getattr(getattr(ep, "dist", None), "version", None)
            source = f"{dist} {version}" if version else dist
            if dist.replace("_", "-").lower() == OWN_DISTRIBUTION:
                own = True
                source = "builtin"
            before = set(self._by_name)
            try:
                obj = ep.load()
                if isinstance(obj, Converter):
                    obj.source = source
                    self.register(obj)
                elif isinstance(obj, ModuleType):
                    added = set(self._by_name) - before
                    if not added:
                        raise LavidaDataError(f"module {obj.__name__} registered no converter")
                    for name in added:
                        self._by_name[name].source = source
                else:
                    raise LavidaDataError(
                        f"{ep.value} is a {type(obj).__name__}, not a converter made with "
                        "@lavida_data.converter or a module that defines some"
                    )
            except Exception as e:  # a broken plugin must not break the others
                for name in set(self._by_name) - before:  # undo a half-registered module
                    conv = self._by_name.pop(name)
                    for key in (conv.name, *conv.aliases):
                        self._alias.pop(key, None)
                self.plugin_errors.append(PluginError(dist, ep.name, f"{type(e).__name__}: {e}"))
        return own

    def get(self, name: str) -> Converter:
        self.ensure_loaded()
        key = self._alias.get(name)
        if key is None:
            raise KeyError(f"unknown converter {name!r}{suggest(name, self._alias)}")
        return self._by_name[key]

    def __contains__(self, name: object) -> bool:
        self.ensure_loaded()
        return name in self._alias

    def __iter__(self) -> Iterator[Converter]:
        self.ensure_loaded()
        return iter(sorted(self._by_name.values(), key=lambda c: c.name))

    def names(self) -> list[str]:
        """Every name and alias."""
        self.ensure_loaded()
        return sorted(self._alias)


registry = Registry()


def registered_converter(name: str, module: str | None = None) -> Converter:
    """The global registry's converter ``name``, after importing ``module`` (where it is defined)."""
    if module and module != "__main__":
        importlib.import_module(module)
    return registry.get(name)


def converter(
    name: str,
    *,
    options: type[BaseModel] = NoOptions,
    columns: ColumnSpec = (),
    optional: ColumnSpec = (),
    aliases: Sequence[str] = (),
    registry: Registry | None = None,
) -> Callable[[Callable[[Mapping[str, Any], ConvertContext], dict]], Converter]:
    """Register ``fn(row, ctx) -> sample`` as converter ``name``.

    ``columns`` and ``optional`` are column names, or functions of the validated options that
    return them (for converters whose columns depend on options, such as ``caption_key``).
    """
    target = registry if registry is not None else globals()["registry"]

    def wrap(fn: Callable[[Mapping[str, Any], ConvertContext], dict]) -> Converter:
        module = getattr(fn, "__module__", "") or ""
        source = "builtin" if module.startswith("lavida_data.") else f"code ({module})"
        conv = Converter(
            name=name,
            fn=fn,
            options=options,
            columns=columns,
            optional=optional,
            aliases=tuple(aliases),
            source=source,
            description=(fn.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
        )
        return target.register(conv)

    return wrap
