"""The layout holds: imports run one way (no cycles between modules, packages in layers), no
module imports another's underscored name, and ARCHITECTURE.md names exactly the packages there are.

Imports are read from the source (every ``import`` and ``from ... import``, inside functions too),
so a cycle hidden in a lazy import counts as well."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support import ROOT

#: lavida_data's packages in layers: a module may import its own package and lower layers only
LAYERS = {
    "errors": 0, "rng": 0, "version": 0,
    "io": 1, "transforms": 1,
    "convert": 2, "importers": 2,
    "spec": 3,
    "prepared": 4,
    "prepare": 5, "stream": 5,
    "cli": 6,
}


def modules(package: str) -> dict[str, Path]:
    out = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str | None]]:
    """(module imported, name imported from it or None) for every import of ``name``'s source."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module or ""
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full, None) if full in known else (base, a.name))
    return out


def graph(package: str) -> tuple[dict[str, set[str]], list[str]]:
    """Module -> modules of ``package`` (or lavida_data) it imports, and the underscored names
    imported from another module (dunders aside)."""
    mods = modules(package)
    known = set(mods) | set(modules("lavida_data"))
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for name, path in mods.items():
        for target, attr in imports(name, path, known):
            if target not in known:
                continue
            if target in mods and target != name:
                edges[name].add(target)
            if attr and attr.startswith("_") and not attr.startswith("__") and target != name:
                private.append(f"{name} imports {target}.{attr}")
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", ["lavida_data", "lavida_train"])
def test_no_import_cycles(package):
    edges, _ = graph(package)
    assert len(edges) > 10
    assert cycles(edges) == []


@pytest.mark.parametrize("package", ["lavida_data", "lavida_train"])
def test_no_underscored_name_is_imported_from_another_module(package):
    _, private = graph(package)
    assert private == []


def layer_of(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # lavida_data/__init__.py: the public API re-exports every layer
    return parts[1], LAYERS[parts[1]]


def test_packages_import_only_lower_layers():
    edges, _ = graph("lavida_data")
    assert {m.split(".")[1] for m in edges if "." in m} == set(LAYERS)
    wrong = []
    for src, targets in edges.items():
        own = layer_of(src)
        for dst in targets:
            other = layer_of(dst)
            if own is None or other is None:
                if own is not None:  # a module importing the package root would import every layer
                    wrong.append(f"{src} -> {dst}")
                continue
            if other[0] != own[0] and other[1] >= own[1]:
                wrong.append(f"{src} ({own[0]}, layer {own[1]}) -> {dst} ({other[0]}, layer {other[1]})")
    assert wrong == []


def test_the_checks_see_a_cycle_and_a_private_import(tmp_path):
    """The checks can fail: a cycle and an underscored import are found in a made-up graph."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    src = tmp_path / "m.py"
    src.write_text("from lavida_data.io.tables import _hidden\nfrom lavida_data.io import tables\n")
    got = imports("lavida_data.m", src, {"lavida_data.io.tables", "lavida_data.io"})
    assert got == [("lavida_data.io.tables", "_hidden"), ("lavida_data.io.tables", None)]


def test_architecture_md_names_every_package_and_only_those():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`lavida_data/(\w+)/`", text))
    folders = {p.name for p in (ROOT / "lavida_data").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert named == folders
    train = set(re.findall(r"`lavida_train/(\w+)(?:/|\.py)`", text))
    train_parts = {p.stem for p in (ROOT / "lavida_train").iterdir()
                   if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert train == train_parts
