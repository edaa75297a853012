"""The import layers nairbus keeps, read from the code's own ``import`` statements (AST, nothing is imported).

From the bottom up: ``schemas`` (the wire; no torch, no MQTT) < ``models`` (torch; no MQTT, no agents) <
``agents.runtime`` (the bus, agent bases, pacing, settings: no method, no source, no home automation) <
``agents.sources`` and ``agents.home`` (side by side: neither imports the other) < the methods ``agents.nair`` and
``agents.vp`` (side by side) < ``agents.methods`` (the registry of methods) < ``agents.tools`` < ``agents.cli``
(``agents/__init__.py`` itself holds only the package's docstring). A module may import its own layer and the layers
below it, never one above or beside it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("agents", "models", "schemas", "broker")
"""The repository folders installed as ``nairbus.<folder>``."""

RANKS: dict[str, int] = {
    "schemas": 0,
    "broker": 0,
    "models": 1,
    "agents.runtime": 2,
    "agents.sources": 3,
    "agents.home": 3,
    "agents.nair": 4,
    "agents.vp": 4,
    "agents.methods": 5,
    "agents.tools": 6,
    "agents.cli": 7,
    "agents": 8,
}
"""Each layer's height; a layer imports only from layers strictly lower, or from itself."""

FORBIDDEN_THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "schemas": ("torch", "paho"),
    "models": ("paho",),
}
"""Libraries a layer must not import: the wire knows no torch, the models no MQTT."""


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement: the importing module, the imported module, and where."""

    module: str
    target: str
    line: int


def module_name(path: Path, root: Path) -> str:
    """``agents/runtime/mqtt.py`` -> ``agents.runtime.mqtt`` (the ``nairbus.`` prefix dropped)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer a module belongs to (the longest layer name it starts with)."""
    best = None
    for layer in RANKS:
        if (module == layer or module.startswith(layer + ".")) and (best is None or len(layer) > len(best)):
            best = layer
    return best


def imports(root: Path) -> Iterator[Import]:
    """Every import in the packages under ``root``, function-level ones included, as ``nairbus``-less names."""
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            is_package = path.name == "__init__.py"
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                for target in _targets(node, module, is_package):
                    yield Import(module, target, getattr(node, "lineno", 0))


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The modules one import node names (``from a import b`` names ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [_strip(alias.name) for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        name = ".".join([*base, *([node.module] if node.module else [])])
    else:
        name = _strip(node.module or "")
    return [name, *(f"{name}.{alias.name}" for alias in node.names)]


def _strip(name: str) -> str:
    return name.removeprefix("nairbus.")


def violations(root: Path) -> list[str]:
    """Every import that goes up or sideways between layers, or reaches a library its layer must not use: one line
    per import statement and layer it reaches."""
    found: dict[tuple[str, int, str], str] = {}
    for imp in imports(root):
        here = layer_of(imp.module)
        there = layer_of(imp.target) if imp.target.split(".")[0] in PACKAGES else None
        if here is not None and there is not None and here != there and RANKS[there] >= RANKS[here]:
            found.setdefault((imp.module, imp.line, there),
                             f"{imp.module}:{imp.line} imports {imp.target} ({here} may not import {there})")
        for banned in FORBIDDEN_THIRD_PARTY.get(here or "", ()):
            if imp.target == banned or imp.target.startswith(banned + "."):
                found.setdefault((imp.module, imp.line, banned),
                                 f"{imp.module}:{imp.line} imports {imp.target} ({here} may not use {banned})")
    return sorted(found.values())


def cycles(root: Path) -> list[list[str]]:
    """Import cycles between modules (strongly connected groups of more than one module)."""
    known = {module_name(p, root) for package in PACKAGES for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in known}
    for imp in imports(root):
        if imp.target in known and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    return [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                out.append(group)
    return out
