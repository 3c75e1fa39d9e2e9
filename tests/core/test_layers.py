"""The library's layers, read from its source: where Ray may be imported, no import cycles, no upward imports."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "platform"
RAY_PACKAGES = {"ingest", "reader", "embed", "train", "serve", "app", "cluster"}  # cluster: the shared Ray runtime
# Bottom to top: a module may import its own layer and the layers below it, never one above.
LAYERS = [
    {"config", "modality", "errors", "atomic", "lease", "lazy", "pretrained", "presets"},
    {"geo", "geodata"},
    {"preprocess"},
    {"sources", "samples"},
    {"models", "losses", "vectors", "obs", "cluster"},
    {"ingest", "reader"},
    {"train", "embed", "eval"},
    {"serve"},
    {"app"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((ROOT / "unigeoclip").rglob("*.py"))}


def absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def imports(module: str, *, top_level_only: bool) -> frozenset[str]:
    """Every module ``module`` imports (``from pkg import mod`` counts ``pkg.mod``), lazily or at the top."""
    tree = ast.parse(MODULES[module].read_text())
    nodes: list[ast.AST] = []
    if top_level_only:  # what runs at import time: the module's own statements, TYPE_CHECKING blocks left out
        for stmt in tree.body:
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                continue
            nodes.extend(ast.walk(stmt) if not isinstance(stmt, ast.FunctionDef | ast.ClassDef) else [stmt])
    else:
        nodes = list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = absolute(module, node)
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES)
    return frozenset(out)


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int:
    name = package(module)
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise AssertionError(f"{module}: package {name!r} has no layer in LAYERS")


def test_the_walk_sees_the_library() -> None:
    assert "unigeoclip.cluster.runtime" in MODULES and "unigeoclip.app.cli" in MODULES
    assert "ray" in imports("unigeoclip.cluster.runtime", top_level_only=True)
    assert "unigeoclip.errors" in imports("unigeoclip.cluster.runtime", top_level_only=True)  # relative, resolved


def ray_imports(module: str) -> list[str]:
    return sorted(m for m in imports(module, top_level_only=False) if m == "ray" or m.startswith("ray."))


def test_ray_only_at_the_edges() -> None:
    users = {m for m in MODULES if ray_imports(m)}
    assert {"unigeoclip.ingest.pipeline", "unigeoclip.reader.pipeline", "unigeoclip.cluster.runtime"} <= users
    wrong = {m: ray_imports(m) for m in sorted(users) if package(m) not in RAY_PACKAGES}
    assert not wrong, f"Ray imported outside {sorted(RAY_PACKAGES)}: {wrong}"


def upward(module: str) -> list[str]:
    own = layer(module) if module != "unigeoclip" else len(LAYERS)  # the package root re-exports the core
    found = imports(module, top_level_only=False)
    return sorted(m for m in found if m in MODULES and package(m) and layer(m) > own)


def test_no_upward_imports() -> None:
    assert upward("unigeoclip.app.cli") == []
    assert layer("unigeoclip.geo.bbox") < layer("unigeoclip.samples.store") < layer("unigeoclip.app.cli")
    wrong = {f"{m} ({package(m)})": up for m in sorted(MODULES) if (up := upward(m))}
    assert not wrong, f"imports from a layer above (LAYERS lists them bottom to top): {wrong}"


def test_no_import_cycle() -> None:
    graph = {m: {i for i in imports(m, top_level_only=True) if i in MODULES and i != m} for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(n) :], n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
