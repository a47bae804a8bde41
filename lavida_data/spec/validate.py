"""Validation of mixture files: every mistake of a file, with file, line, column, dataset,
field and the nearest valid name, in one run.

Three passes: YAML (syntax, repeated keys), structure (the strict pydantic models), and meaning
(repeated names, converters and their options, columns against filters, converters and, unless
offline, each table's schema; weight groups that no dataset uses).

What upstream accepts and gives a meaning to is a warning, not an error, so that upstream's own
files validate: a repeated key (the last value counts), a repeated dataset name (the entry is
renamed ``<name>~2``, ...), weights or batch factors for groups no dataset uses, upstream's hidden
aesthetic filter, ``end:0``. With ``strict`` every warning is an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

import yaml
from pydantic import ValidationError

from lavida_data.convert.registry import Converter, Registry
from lavida_data.convert.registry import registry as default_registry
from lavida_data.errors import ConfigError, Issue, suggest
from lavida_data.io.tables import count_rows, read_schema, table_format
from lavida_data.spec.config import DatasetSpec, MaxEncImages, Mixture, resolve_path, unique_names
from lavida_data.spec.filters import SCORE, UPSTREAM_AES_CUTOFF
from lavida_data.spec.plan import DatasetPlan, make_plan, reads_score, with_upstream_aes
from lavida_data.spec.yamlpos import Located, load_yaml, syntax_issue

_TOP = ("datasets", "weights", "batch_sizes", "seed")
_DATASET_KEYS = tuple(DatasetSpec.model_fields) + ("json_path",)


@dataclass
class Report:
    """The outcome of validating one file."""

    file: str
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    mixture: Mixture | None = None
    plans: dict[str, DatasetPlan] = field(default_factory=dict)
    schemas: dict[str, list[str]] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {
            "valid": self.valid,
            "errors": [i.to_json() for i in self.errors],
            "warnings": [i.to_json() for i in self.warnings],
        }


class _Checker:
    def __init__(self, loc: Located, registry: Registry, offline: bool, strict: bool = False):
        self.loc = loc
        self.registry = registry
        self.offline = offline
        self.strict = strict
        self.report = Report(file=loc.file)
        self.names: list[str | None] = []  # each entry's unique name (None: no usable name)
        self.entry_schemas: dict[int, list[str]] = {}

    # -- reporting -------------------------------------------------------------------------
    def issue(self, message: str, path: tuple, *, dataset: str | None = None, fld: str | None = None,
              key: bool = False, warning: bool = False) -> None:
        line, col = self.loc.where(path, key=key)
        item = Issue(message, file=self.loc.file, line=line, column=col, dataset=dataset, field=fld,
                     severity="warning" if warning else "error")
        (self.report.warnings if warning else self.report.errors).append(item)

    def pydantic(self, err: ValidationError, base: tuple, *, dataset: str | None, rename: dict[str, str],
                 choices: Callable[[tuple], Iterable[str]], what: str, prefix: str = "") -> set[str]:
        """Report each pydantic error; returns the top-level fields that failed."""
        failed: set[str] = set()
        for e in err.errors():
            loc = tuple(rename.get(p, p) if isinstance(p, str) else p for p in e["loc"])
            if loc:
                failed.add(str(loc[0]))
            fld = prefix + ".".join(str(p) for p in loc) if loc else prefix.rstrip(".") or None
            typ = e["type"]
            if typ == "extra_forbidden":
                name = loc[-1]
                valid = sorted(choices(loc[:-1]))
                inside = f"`{prefix}{'.'.join(str(p) for p in loc[:-1])}`" if len(loc) > 1 else what  # nested
                msg = f"unknown key {name!r} in {inside}{suggest(str(name), valid)}; valid keys: {', '.join(valid)}"
                self.issue(msg, base + loc, dataset=dataset, fld=fld, key=True)
            elif typ == "missing":
                self.issue(f"missing required key {loc[-1]!r}", base + loc[:-1], dataset=dataset, fld=fld)
            else:
                msg = e["msg"].removeprefix("Value error, ")
                if typ not in ("value_error", "assertion_error") and "input" in e:
                    msg += f" (got {e['input']!r})"
                self.issue(msg, base + loc, dataset=dataset, fld=fld)
        return failed

    # -- passes ----------------------------------------------------------------------------
    def run(self) -> Report:
        data = self.loc.data
        self.names = _entry_names(data)
        for item in self.loc.issues:
            item = _in_dataset(item, data, self.names)
            (self.report.warnings if item.severity == "warning" else self.report.errors).append(item)
        if not isinstance(data, dict):
            self.issue("a mixture file must be a mapping with a `datasets` list", ())
            return self.report
        header = {k: v for k, v in data.items() if k != "datasets"}
        head_model = None
        try:
            head_model = Mixture.model_validate({**header, "datasets": [_PLACEHOLDER]})
        except ValidationError as e:
            self.pydantic(e, (), dataset=None, rename={}, choices=lambda loc: _TOP, what="the mixture")
        raw_sets = data.get("datasets")
        if "datasets" not in data:
            self.issue("missing required key 'datasets'", (), fld="datasets")
            raw_sets = []
        elif not isinstance(raw_sets, list) or not raw_sets:
            self.issue("`datasets` must be a non-empty list of dataset entries", ("datasets",), fld="datasets")
            raw_sets = []
        specs = [self.dataset(i, raw) for i, raw in enumerate(raw_sets)]
        self.groups(data, raw_sets)
        if self.strict:
            self.report.errors.extend(replace(w, severity="error") for w in self.report.warnings)
            self.report.warnings = []
        order = lambda i: (i.line or 0, i.column or 0)  # noqa: E731
        self.report.errors.sort(key=order)
        self.report.warnings.sort(key=order)
        if self.report.errors or head_model is None:
            return self.report
        resolved = [with_upstream_aes(s, self.entry_schemas.get(i)) for i, (s, _) in enumerate(specs)]
        mixture = Mixture.model_validate({**header, "datasets": resolved})
        mixture._file = self.loc.file
        self.report.mixture = mixture
        self.report.schemas = {mixture.datasets[i].name: sc for i, sc in self.entry_schemas.items()}
        self.report.plans = {
            s.name: make_plan(mixture, s, conv, self.entry_schemas.get(i))
            for i, (s, (_, conv)) in enumerate(zip(mixture.datasets, specs))
        }
        return self.report

    def dataset(self, i: int, raw: Any) -> tuple[DatasetSpec | None, Converter | None]:
        base = ("datasets", i)
        if not isinstance(raw, dict):
            self.issue("a dataset entry must be a mapping", base, dataset=f"datasets[{i}]")
            return None, None
        name = self.names[i] or f"datasets[{i}]"
        rename = {"path": "json_path"} if "json_path" in raw and "path" not in raw else {}
        spec, failed = None, set()
        if "json_path" in raw and "path" in raw:
            self.issue("give either `path` or `json_path` (its upstream name), not both",
                       base + ("json_path",), dataset=name, fld="json_path", key=True)
            failed.add("path")
            raw = {k: v for k, v in raw.items() if k != "json_path"}
        try:
            spec = DatasetSpec.model_validate(raw)
        except ValidationError as e:
            failed |= self.pydantic(
                e, base, dataset=name, rename=rename, what="a dataset entry",
                choices=lambda loc: MaxEncImages.model_fields if loc and loc[0] == "max_enc_images" else _DATASET_KEYS,
            )
        self.check_name(i, raw, name)
        conv, options = self.check_converter(base, raw, name)
        schema = self.table_schema(base, raw, name, failed)
        if schema is not None:
            self.entry_schemas[i] = schema
        if conv is not None and options is not None:
            self.check_columns(base, raw, name, conv, options, spec, failed, schema)
        if spec is not None:
            self.upstream_meanings(base, name, spec, schema)
        return spec, conv

    def table_schema(self, base: tuple, raw: dict, name: str, failed: set[str]) -> list[str] | None:
        path_key = "path" if "path" in raw else "json_path"
        if "path" in failed or not isinstance(raw.get(path_key), str):
            return None
        try:  # the suffix picks the reader: check it offline too
            table_format(raw[path_key])
        except ValueError as e:
            self.issue(str(e), base + (path_key,), dataset=name, fld=path_key)
            return None
        if self.offline:
            return None
        table = resolve_path(self.loc.file, raw[path_key])
        try:
            schema = read_schema(table)
        except FileNotFoundError:
            self.issue(f"table not found: {table}", base + (path_key,), dataset=name, fld=path_key)
            return None
        except Exception as e:  # unreadable table: report it, keep checking the rest
            self.issue(f"cannot read the table's schema: {type(e).__name__}: {e}", base + (path_key,),
                       dataset=name, fld=path_key)
            return None
        return schema

    def check_name(self, i: int, raw: dict, name: str) -> None:
        declared = raw.get("name")
        if not isinstance(declared, str) or name == declared:
            return
        sets = self.loc.data["datasets"]
        first = next(j for j, r in enumerate(sets) if isinstance(r, dict) and r.get("name") == declared)
        line = self.loc.where(("datasets", first, "name"))[0]
        self.issue(f"dataset name {declared!r} is already used by datasets[{first}] (line {line}): this "
                   f"entry is renamed {name!r}, its samples are '{name}:<row>' (names prefix sample ids)",
                   ("datasets", i, "name"), dataset=name, fld="name", warning=True)

    def upstream_meanings(self, base: tuple, name: str, spec: DatasetSpec, schema: list[str] | None) -> None:
        """Warnings for what upstream does without saying so."""
        if not spec.aes_declared and reads_score(spec, schema):
            self.issue(f"column {SCORE!r} is read but `aes_cutoff` is not set: upstream's filter applies, "
                       f"keeping rows with {SCORE} > {UPSTREAM_AES_CUTOFF:g} (`aes_cutoff: null` keeps every "
                       "row; a number sets the cutoff)", base, dataset=name, fld="aes_cutoff", warning=True)
        if spec.sampling_strategy.keeps_everything:
            self.issue(f"{spec.sampling_strategy} keeps every row, as upstream's rows[-0:] does; `all` says so",
                       base + ("sampling_strategy",), dataset=name, fld="sampling_strategy", warning=True)

    def check_converter(self, base: tuple, raw: dict, name: str) -> tuple[Converter | None, Any]:
        fn = raw.get("preprocess_fn")
        if not isinstance(fn, str) or not fn:
            return None, None
        try:
            conv = self.registry.get(fn)
        except KeyError:
            broken = "".join(f"; note: {e}" for e in self.registry.plugin_errors)
            self.issue(f"unknown preprocess_fn {fn!r}{suggest(fn, self.registry.names())}; "
                       f"`lavida-data converters` lists them{broken}", base + ("preprocess_fn",), dataset=name,
                       fld="preprocess_fn")
            return None, None
        kwargs = raw.get("process_fn_kwargs", {})
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            return conv, None  # the structural pass reports it
        try:
            return conv, conv.parse_options(kwargs)
        except ValidationError as e:
            self.pydantic(
                e, base + ("process_fn_kwargs",), dataset=name, rename={},
                what=f"the options of converter {conv.name!r}", choices=lambda loc: conv.options.model_fields,
                prefix="process_fn_kwargs.",
            )
            return conv, None

    def check_columns(self, base: tuple, raw: dict, name: str, conv: Converter, options: Any,
                      spec: DatasetSpec | None, failed: set[str], schema: list[str] | None) -> None:
        users: dict[str, list[str]] = {c: [f"converter {conv.name!r}"] for c in conv.required_columns(options)}
        if raw.get("aes_cutoff") is not None:
            users.setdefault(SCORE, []).append("filter aes_cutoff")
        if raw.get("min_size") is not None:
            users.setdefault("intHeight", []).append("filter min_size")
            users.setdefault("intWidth", []).append("filter min_size")
        mei = raw.get("max_enc_images")
        if isinstance(mei, dict) and isinstance(mei.get("column"), str):
            users.setdefault(mei["column"], []).append("filter max_enc_images")
        needed = {c: " and ".join(who) for c, who in users.items()}
        cols = raw.get("columns")
        listed = cols if isinstance(cols, list) and "columns" not in failed else None
        if listed is not None:
            for c, who in needed.items():
                if c not in listed:
                    self.issue(f"column {c!r} is needed by {who} but `columns` leaves it out",
                               base + ("columns",), dataset=name, fld="columns")
        if schema is None:
            return
        path_key = "path" if "path" in raw else "json_path"
        table = resolve_path(self.loc.file, raw[path_key])
        for c, who in needed.items():
            if c not in schema:
                self.issue(f"table {os.path.basename(table)} has no column {c!r} (needed by {who})"
                           f"{suggest(c, schema)}; it has: {', '.join(schema)}",
                           base + (path_key,), dataset=name, fld=path_key)
        for j, c in enumerate(listed or []):
            if isinstance(c, str) and c not in schema and c not in needed:
                self.issue(f"`columns` lists {c!r}, which table {os.path.basename(table)} lacks{suggest(c, schema)}",
                           base + ("columns", j), dataset=name, fld=f"columns.{j}")
        if spec is not None:
            strat = spec.sampling_strategy
            if strat.kind == "random" and strat.count is not None:
                rows = count_rows(table)
                if rows is not None and rows < strat.count:
                    self.issue(f"{strat} asks for {strat.count} rows but the table has {rows}",
                               base + ("sampling_strategy",), dataset=name, fld="sampling_strategy")

    def groups(self, data: dict, raw_sets: list) -> None:
        if not raw_sets:  # no usable `datasets`: already reported, every group would look unused
            return
        used = {(r.get("length_group") if isinstance(r, dict) and "length_group" in r else "default")
                for r in raw_sets}
        used = {g for g in used if isinstance(g, str)}
        for key in ("weights", "batch_sizes"):
            table = data.get(key)
            if not isinstance(table, dict):
                continue
            for group in table:
                if group not in used:
                    self.issue(f"{key} names length group {group!r}, which no dataset uses"
                               f"{suggest(str(group), used)}; groups in use: {', '.join(sorted(used))}",
                               (key, group), fld=f"{key}.{group}", key=True, warning=True)


def _entry_names(data: Any) -> list[str | None]:
    """The unique name of each dataset entry (as :class:`Mixture` makes them), None when unnamed."""
    sets = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(sets, list):
        return []
    return unique_names([r.get("name") if isinstance(r, dict) and isinstance(r.get("name"), str) else None
                         for r in sets])


def _in_dataset(item: Issue, data: Any, names: list[str | None]) -> Issue:
    """A YAML issue (repeated key) inside a dataset entry, named like the other dataset issues:
    the entry's unique name as ``dataset``, the field relative to the entry."""
    m = re.fullmatch(r"datasets\.(\d+)\.(.+)", item.field or "")
    if m is None or int(m.group(1)) >= len(names):
        return item
    i = int(m.group(1))
    return replace(item, dataset=names[i] or f"datasets[{i}]", field=m.group(2))


_PLACEHOLDER = {"name": "x", "path": "x", "preprocess_fn": "x"}


def validate_text(text: str, file: str = "<string>", *, offline: bool = False,
                  registry: Registry | None = None, strict: bool = False) -> Report:
    """Validate a mixture given as YAML text; ``file`` names it in messages and anchors paths.
    With ``strict`` every warning is an error."""
    try:
        loc = load_yaml(text, file)
    except yaml.YAMLError as e:
        item = syntax_issue(e, file)
        ctx, mark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if ctx and mark is not None:  # where the unclosed or misindented construct began
            item = replace(item, message=f"{item.message} ({ctx} that starts on line {mark.line + 1}, "
                                         f"column {mark.column + 1})")
        return Report(file=file, errors=[item])
    return _Checker(loc, registry or default_registry, offline, strict).run()


def validate_file(path: str | os.PathLike, *, offline: bool = False, registry: Registry | None = None,
                  strict: bool = False) -> Report:
    """Validate a mixture file; without ``offline`` each table's schema is read too. With
    ``strict`` every warning (what upstream accepts silently) is an error."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        return Report(file=path, errors=[Issue(f"cannot read the mixture file: {e.strerror or e}", file=path)])
    return validate_text(text, path, offline=offline, registry=registry, strict=strict)


def load_mixture(path: str | os.PathLike, *, offline: bool = False, registry: Registry | None = None,
                 strict: bool = False) -> Report:
    """Validate a mixture file and return its report; raises :class:`ConfigError` with every
    error when it is not valid."""
    report = validate_file(path, offline=offline, registry=registry, strict=strict)
    if not report.valid:
        raise ConfigError(report.errors, report.warnings)
    return report
