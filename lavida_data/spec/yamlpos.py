"""YAML with positions: ``yaml.safe_load`` semantics, plus where every key and value came from.

A repeated key keeps its last value, as ``safe_load`` does (and in the first one's place), and is
reported as a warning naming both lines; positions are those of the last value. Positions are
keyed by the path of the value, e.g. ``("datasets", 3, "aes_cutoff")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from lavida_data.errors import Issue

Path = tuple[Any, ...]


@dataclass
class Located:
    """A parsed YAML document with the position of every value and mapping key."""

    data: Any
    file: str
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)  # path -> (line, col)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)  # path -> key's (line, col)
    issues: list[Issue] = field(default_factory=list)

    def where(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """Position of ``path`` (its key when ``key``), or of its nearest ancestor."""
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            if path in self.keys:
                return self.keys[path]
            path = path[:-1]
        return self.values.get((), (1, 1))


_PLAIN = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.constructor = yaml.SafeLoader("")  # only its scalar constructors are used
        self.out = Located(data=None, file=file)

    @staticmethod
    def _pos(node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.out.values[path] = self._pos(node)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN:
            return self.constructor.construct_object(node, deep=True)  # !!set, !!omap, or refused
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)  # merge keys (<<) as safe_load does
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build_scalar_key(key_node, path)
                child = path + (key,)
                if key in result:
                    self.repeated(key, key_node, child)
                self.out.keys[child] = self._pos(key_node)
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)

    def repeated(self, key: Any, node: yaml.Node, child: Path) -> None:
        """A warning for a key given again; the positions of the earlier value are forgotten."""
        first = self.out.keys.get(child, (None, None))[0]
        line, col = self._pos(node)
        self.out.issues.append(
            Issue(
                f"duplicate key {key!r} (first given on line {first}, again on line {line}): "
                "the last value counts, as in YAML",
                file=self.file, line=line, column=col, field=".".join(str(p) for p in child),
                severity="warning",
            )
        )
        n = len(child)
        for table in (self.out.values, self.out.keys):
            for p in [p for p in table if p[:n] == child]:
                del table[p]

    def build_scalar_key(self, node: yaml.Node, path: Path) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            line, col = self._pos(node)
            self.out.issues.append(
                Issue("mapping keys must be plain scalars", file=self.file, line=line, column=col)
            )
            return repr(node.value)
        return self.constructor.construct_object(node, deep=True)


def load_yaml(text: str, file: str = "<string>") -> Located:
    """Parse one YAML document with safe-load semantics, recording positions and duplicate keys.

    Raises :class:`yaml.YAMLError` for syntax errors; callers turn those into issues.
    """
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    b = _Builder(file)
    if node is None:
        b.out.data = None
        return b.out
    b.out.data = b.build(node, ())
    return b.out


def syntax_issue(err: yaml.YAMLError, file: str) -> Issue:
    mark = getattr(err, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    col = mark.column + 1 if mark is not None else None
    problem = getattr(err, "problem", None) or str(err)
    return Issue(f"YAML syntax error: {problem}", file=file, line=line, column=col)
