"""Command-line overrides of a stage file: ``a.b=value``.

* The key is a dotted path of the stage file's keys (``train.trainable.projector``,
  ``data.loader.shuffle``, ``max_duration``); each part is a plain name.
* The value is parsed as YAML (``yaml.safe_load``): ``6ba`` stays a string, ``3`` is an int,
  ``true`` a bool, ``null`` (or nothing after ``=``) is None, ``[1, 2]`` a list and
  ``{fsdp: {...}}`` a mapping, which replaces the whole section.
* An override sets a key the schema has; it never creates one the schema lacks: an unknown key
  is an error with the nearest valid name. Sections the file leaves out are created.
* Overrides apply in order, after the file is read and before validation; a later one wins.

Every problem is an :class:`lavida_data.errors.Issue` whose ``file`` names the override
(``<override 'a.b=value'>``) and whose ``field`` is its dotted key.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Union

import yaml
from pydantic import BaseModel

from lavida_data.errors import ConfigError, Issue, suggest

_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


@dataclass(frozen=True)
class Override:
    """One parsed ``a.b=value``: the key path, the YAML-parsed value and the original text."""

    path: tuple[str, ...]
    value: Any
    text: str

    @property
    def label(self) -> str:
        """How issues name this override in place of a file."""
        return label(self.text)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def label(text: str) -> str:
    """``<override 'a.b=value'>``: the pseudo file name of an override's issues."""
    return f"<override {text!r}>"


def parse_override(text: str) -> Override:
    """Parse ``a.b=value``; raises :class:`ConfigError` when it is malformed."""
    where = label(text)
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError([Issue("an override is `key.path=value`, and this one has no '='", file=where)])
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError([Issue("an override needs a key before '=' (`key.path=value`)", file=where)])
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError([Issue(f"key {key!r} has an empty part (`a..b`, a leading or a trailing '.')",
                                 file=where, field=key)])
    bad = [p for p in parts if not _PART.fullmatch(p)]
    if bad:
        raise ConfigError([Issue(f"key part {bad[0]!r} is not a plain name (letters, digits, '_', '-')",
                                 file=where, field=key)])
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([Issue(f"the value {raw!r} is not valid YAML: {problem}", file=where, field=key)]) from e
    return Override(tuple(parts), value, text)


def parse_overrides(texts: Iterable[str]) -> tuple[list[Override], list[Issue]]:
    """Parse each override; the malformed ones become issues (all reported, none raised)."""
    out, issues = [], []
    for text in texts:
        try:
            out.append(parse_override(text))
        except ConfigError as e:
            issues.extend(e.issues)
    return out, issues


# -- the schema's key tree ---------------------------------------------------------------------


def _unwrap(annotation: Any) -> list[Any]:
    """The members of an annotation: ``Annotated`` stripped, unions split."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for a in typing.get_args(annotation) for m in _unwrap(a)]
    return [annotation]


_ANY = object()  # "any key, anything below"


def children(annotation: Any) -> tuple[dict[str, Any] | None, Any]:
    """``(named, wildcard)``: the keys a schema node has (with their annotations) and the
    annotation of any other key (None when other keys are not allowed). ``(None, None)`` is a
    leaf (a number, a string, a list...), which has no keys."""
    named: dict[str, Any] | None = None
    wildcard: Any = None
    for member in _unwrap(annotation):
        if member is Any or member is _ANY:
            return named or {}, _ANY
        origin = typing.get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            named = {**(named or {}), **{k: f.annotation for k, f in member.model_fields.items()}}
        elif member is dict or origin is dict:
            args = typing.get_args(member)
            key_t, value_t = args if len(args) == 2 else (Any, _ANY)
            if typing.get_origin(key_t) is Literal:
                named = {**(named or {}), **{str(k): value_t for k in typing.get_args(key_t)}}
            else:
                named = named or {}
                wildcard = value_t
    return named, wildcard


def check_path(schema: type[BaseModel], ov: Override) -> Issue | None:
    """An issue when ``ov.path`` names no key of ``schema``, else None."""
    node: Any = schema
    for i, key in enumerate(ov.path):
        named, wildcard = children(node)
        where = ".".join(ov.path[:i]) or "the stage file"
        inside = f"`{where}`" if i else where
        if named is None and wildcard is None:
            return Issue(f"`{where}` is a single value, not a section: it has no key {key!r}",
                         file=ov.label, field=ov.dotted)
        if key in named:
            node = named[key]
        elif wildcard is not None:
            node = wildcard
        else:
            valid = sorted(named)
            return Issue(f"unknown key {key!r} in {inside}{suggest(key, valid)}; valid keys: {', '.join(valid)}",
                         file=ov.label, field=ov.dotted)
    return None


def apply_overrides(data: dict, overrides: Iterable[Override], schema: type[BaseModel]) -> list[Issue]:
    """Set each override's value in ``data`` (in place) after checking its key against
    ``schema``; returns the issues (unknown keys, a section that the file gives as a value)."""
    issues = []
    for ov in overrides:
        problem = check_path(schema, ov)
        if problem is not None:
            issues.append(problem)
            continue
        cursor = data
        for i, key in enumerate(ov.path[:-1]):
            nxt = cursor.get(key)
            if nxt is None:
                nxt = cursor[key] = {}
            elif not isinstance(nxt, dict):
                where = ".".join(ov.path[: i + 1])
                issues.append(Issue(f"cannot set {ov.dotted!r}: `{where}` is not a section in the stage file "
                                    f"(it is {nxt!r})", file=ov.label, field=ov.dotted))
                break
            cursor = nxt
        else:
            cursor[ov.path[-1]] = ov.value
    return issues
