# SPDX-License-Identifier: BSD-2-Clause
"""The package's shape: wings with a docstring each, no import circles (counting every import,
lazy and type-only ones too), a short top level, and a repository that reads nothing beside it."""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Set

from conftest import REPO

PACKAGE = os.path.join(REPO, "vac")
# How a path to the folder beside the clone was spelt (built here, so this file has none).
_NAME = "sha" + "red"
BESIDE = (os.pardir + "/" + _NAME, f'"{_NAME}")', f"'{_NAME}')")
WINGS = ["vac.backends", "vac.backends.apptainer", "vac.backends.docker", "vac.backends.libvirt",
         "vac.config", "vac.cycle", "vac.host", "vac.machine", "vac.ops"]


def _modules() -> Dict[str, str]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                dotted = os.path.relpath(path[:-3], REPO).replace(os.sep, ".")
                found[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return found


def _imports(path: str, modules: Dict[str, str]) -> Set[str]:
    """The package modules a file imports anywhere in it (top level, functions, TYPE_CHECKING)."""
    deps = set()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                deps.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            deps.update(alias.name for alias in node.names)
    return {d for d in deps if d in modules}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
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
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_module_imports_in_a_circle():
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    # A package __init__ that imports nothing does not make its modules a circle.
    assert _cycles(graph) == []


def test_the_cycle_detector_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_top_level_holds_at_most_fifteen_modules():
    top = [n for n in os.listdir(PACKAGE) if n.endswith(".py")]
    assert len(top) <= 15, sorted(top)


def test_every_wing_says_what_it_is_for():
    modules = _modules()
    for wing in WINGS:
        with open(modules[wing], encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read()))
        assert doc and len(doc.splitlines()[0]) > 20, wing


def test_nothing_reads_beside_the_repository():
    """No test, benchmark or script names a path outside the clone (the project's shared
    folder beside it once was)."""
    offenders = []
    for top in ("tests", "bench", "scripts", "vac"):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                path = os.path.join(root, name)
                if "/tests/data/" in path or name.endswith((".pyc", ".sif")):
                    continue
                try:
                    with open(path, encoding="utf-8") as f:
                        text = f.read()
                except UnicodeDecodeError:
                    continue
                if any(needle in text for needle in BESIDE):
                    offenders.append(os.path.relpath(path, REPO))
    assert offenders == []
