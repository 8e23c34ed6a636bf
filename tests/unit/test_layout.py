# SPDX-License-Identifier: BSD-2-Clause
"""The package's shape: wings with a docstring each, no import circles between modules nor
between wings (counting every import, inside functions and type-only ones too), a short top
level, and a repository that reads nothing beside it."""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Set

from testbed import REPO

PACKAGE = os.path.join(REPO, "vac")
# How a path to the folder beside the clone was spelt (built here, so this file has none).
_NAME = "sha" + "red"
BESIDE = (os.pardir + "/" + _NAME, f'"{_NAME}")', f"'{_NAME}')")
# The wings every vac tree has; every package is a wing (_packages finds them all, a new one
# too), so none can be left out of the checks below.
WINGS = ["vac.accounting", "vac.backends", "vac.backends.apptainer", "vac.backends.docker",
         "vac.backends.libvirt", "vac.config", "vac.cycle", "vac.host", "vac.machine", "vac.ops",
         "vac.service", "vac.space", "vac.web"]


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


def _wing(module: str, wings: List[str]) -> str:
    """The innermost wing a module belongs to; a module of the top level is a wing of its own
    (vac.fsutil below every wing, vac.daemon above them)."""
    inside = [w for w in wings if module == w or module.startswith(w + ".")]
    return max(inside, key=len) if inside else module


def _wing_graph(modules: Dict[str, str], wings: List[str]) -> Dict[str, Set[str]]:
    """Wing -> the wings its modules import, anywhere in them."""
    graph: Dict[str, Set[str]] = {}
    for module, path in modules.items():
        mine = _wing(module, wings)
        graph.setdefault(mine, set()).update(
            _wing(d, wings) for d in _imports(path, modules))
        graph[mine].discard(mine)
    return graph


def _packages() -> List[str]:
    """Every package of vac below the top (a folder with an __init__.py)."""
    return sorted(m for m, p in _modules().items()
                  if p.endswith("__init__.py") and m != "vac")


def test_no_wing_imports_in_a_circle():
    """Arrows only go down between wings: no wing reaches back to one that imports it, even
    through imports inside functions (cycle -> accounting -> space -> cycle once did)."""
    modules = _modules()
    graph = _wing_graph(modules, _packages())
    assert _cycles(graph) == []


def test_the_wing_graph_counts_imports_inside_functions(tmp_path):
    """A lazy import in a function makes an arrow between wings as a top-level one does."""
    low = tmp_path / "low.py"
    low.write_text("def f():\n    from vac.high import thing\n")
    high = tmp_path / "high.py"
    high.write_text("from vac.low import other\n")
    modules = {"vac.low": str(low), "vac.high": str(high), "vac.high.thing": str(high),
               "vac.low.other": str(low)}
    graph = _wing_graph(modules, ["vac.high", "vac.low"])
    assert _cycles(graph) == [["vac.high", "vac.low"]]


def test_every_wing_is_found():
    assert set(WINGS) <= set(_packages())


def test_the_cycle_detector_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_top_level_holds_at_most_fifteen_modules():
    top = [n for n in os.listdir(PACKAGE) if n.endswith(".py")]
    assert len(top) <= 15, sorted(top)


def test_every_wing_says_what_it_is_for():
    modules = _modules()
    for wing in _packages():
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


def test_no_module_is_over_500_lines():
    """The house rule: a module longer than 500 lines holds more than one job."""
    long = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    lines = sum(1 for _ in f)
                if lines > 500:
                    long[os.path.relpath(path, REPO)] = lines
    assert long == {}


BACKEND_LIBRARIES = ("docker", "libvirt", "podman", "spython")


def _library_imports(path: str) -> Set[str]:
    """The backend libraries a file imports anywhere in it (top level or inside functions)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n.split(".")[0] for n in names} & set(BACKEND_LIBRARIES)


def test_no_backend_library_is_imported_outside_the_backends():
    """Only the backend wings know which library talks to their engine: a module elsewhere
    (vac doctor, vacd) asks a backend through the registry and the contract instead."""
    inside = os.path.join(PACKAGE, "backends") + os.sep
    found = {os.path.relpath(p, REPO): sorted(_library_imports(p))
             for p in _modules().values() if not p.startswith(inside)}
    assert {path: libs for path, libs in found.items() if libs} == {}


def test_the_library_check_sees_imports_inside_functions(tmp_path):
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    import docker.errors\n    from libvirt import open\n")
    assert _library_imports(str(lazy)) == {"docker", "libvirt"}


def test_no_two_test_modules_share_a_name():
    """pytest imports test modules by their file name: two with one name, in different
    directories, stop a whole-suite run at collection."""
    seen: Dict[str, List[str]] = {}
    for top, _dirs, files in os.walk(os.path.join(REPO, "tests")):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                seen.setdefault(name, []).append(os.path.relpath(os.path.join(top, name), REPO))
    assert {n: p for n, p in seen.items() if len(p) > 1} == {}


def test_no_test_module_imports_another():
    """Shared fixtures live in a directory's conftest.py and helpers in modules named for
    their job: a test module importing another runs that module's fixtures and state twice."""
    found = []
    for top, _dirs, files in os.walk(os.path.join(REPO, "tests")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(top, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                found += [f"{os.path.relpath(path, REPO)}: {n}" for n in names
                          if n.split(".")[-1].startswith("test_")]
    assert found == []
