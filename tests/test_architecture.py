"""The shape of the package, as README's "Layout of the code" states it: imports point down the layers, no module
imports another's private names, and no group of modules imports itself in a loop.

Imports inside functions count as much as those at the top: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lower layers first; a module may import its own layer and those before it, never a later one.
LAYERS: list[tuple[str, ...]] = [
    ("qpsam._version", "qpsam.types", "qpsam.errors", "qpsam.colors", "qpsam.fileio", "qpsam.filelock"),
    ("qpsam.objects", "qpsam.sam"),
    ("qpsam.geometry", "qpsam.geojson", "qpsam.prompts", "qpsam.history"),
    ("qpsam.project", "qpsam.engines", "qpsam.groovy"),
    ("qpsam.jobs",),
    ("qpsam.server", "qpsam.live"),
    ("qpsam.commands", "qpsam.cli"),
    ("qpsam",),  # the package face offers names from every layer, lazily
]
# Siblings in one layer that must not know each other.
APART = [("qpsam.project", "qpsam.engines"), ("qpsam.project", "qpsam.groovy"), ("qpsam.engines", "qpsam.groovy")]


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module
    name: str | None  # the imported name, for ``from X import name``
    line: int


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "qpsam").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> list[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "qpsam" or target.startswith("qpsam."):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in MODULES:  # ``from pkg import module``
                        found.append(Import(module, sub, None, node.lineno))
                    else:
                        found.append(Import(module, target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [Import(module, a.name, None, node.lineno) for a in node.names if a.name.startswith("qpsam")]
    return found


IMPORTS = [i for m, p in MODULES.items() for i in _imports(m, p)]


def _layer(module: str) -> int:
    best, depth = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = index, name.count(".")
    return best


def _group(module: str) -> str:
    for names in LAYERS:
        for name in names:
            if name != "qpsam" and (module == name or module.startswith(name + ".")):
                return name
    return module


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if _layer(m) < 0] == []


def test_imports_point_down_the_layers() -> None:
    upward = [f"{i.module}:{i.line} imports {i.target} (layer {_layer(i.target)} > {_layer(i.module)})"
              for i in IMPORTS if i.module != "qpsam" and _layer(i.target) > _layer(i.module)]
    assert upward == []


@pytest.mark.parametrize("a, b", APART)
def test_siblings_stay_apart(a: str, b: str) -> None:
    crossing = [f"{i.module}:{i.line} imports {i.target}" for i in IMPORTS
                if {_group(i.module), _group(i.target)} == {a, b}]
    assert crossing == []


def test_no_private_names_across_modules() -> None:
    private = [f"{i.module}:{i.line} imports {i.target}.{i.name}" for i in IMPORTS
               if i.name and i.name.startswith("_") and not i.name.startswith("__") and i.target != i.module]
    assert private == []


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        # A package's face importing its own submodules is how a package is built, not a loop.
        if i.target in MODULES and i.target != i.module and not i.target.startswith(i.module + "."):
            graph[i.module].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checks_see_real_imports() -> None:
    # Guards the checks above against passing on an empty or misparsed import list.
    assert len(MODULES) > 50
    assert any(i.module.startswith("qpsam.jobs.") and i.target.startswith("qpsam.project") for i in IMPORTS)
    assert _layer("qpsam.jobs.run") > _layer("qpsam.project.native") > _layer("qpsam.objects")


def test_benchmarks_import_names_that_exist() -> None:
    # The benchmarks run rarely and import lazily, inside functions: a module move would otherwise break them
    # unnoticed until an idle run, as it once did.
    import importlib

    missing = []
    for path in sorted((SRC.parent / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "qpsam"):
                continue
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                missing.append(f"{path.name}:{node.lineno} {node.module}")
                continue
            missing += [f"{path.name}:{node.lineno} {node.module}.{a.name}" for a in node.names
                        if not hasattr(module, a.name) and f"{node.module}.{a.name}" not in MODULES]
    assert missing == []
