"""House rule: dependencies point one way, lazy imports included (docs/architecture.md).

Every ``import`` of an ``edge_service`` module anywhere in a source file counts, at module
level or inside a function, so an import moved into a function to dodge a cycle still
fails here. Two checks:

- each package (or top-level module) imports only from lower layers, or from itself;
- no two modules import each other, directly or around a loop.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "edge_service"

# lowest first; a unit may import from units of a lower layer only (its own modules too)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("edge_service", "errors", "source_names"),
    ("fsutil", "device_names", "variants", "config"),
    ("device", "buildstate"),
    ("hostinfo",),
    ("data", "onnx_tools"),
    ("repository",),
    ("runtime", "monitor"),
    ("profile", "control"),
    ("evolve", "sim"),
    ("compile",),
    ("server",),
    ("cli",),
    ("__main__",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = ["edge_service", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The layer unit of a module: its package under edge_service, or the module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(module imported, line) for every edge_service import in ``path``, lazy ones too;
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("edge_service"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this package
                package = module_name(path if path.name == "__init__.py" else path.parent)
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if not base.startswith("edge_service"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def graph() -> dict[str, dict[str, int]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(files)
    return {
        mod: {target: line for target, line in imports(path, known) if target != mod}
        for mod, path in files.items()
    }


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(m) for m in graph()}
    assert units <= set(RANK), f"add these to LAYERS: {sorted(units - set(RANK))}"


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for mod, targets in graph().items():
        src = unit_of(mod)
        for target, line in targets.items():
            dst = unit_of(target)
            if dst != src and RANK.get(dst, -1) >= RANK[src]:
                wrong.append(f"{mod}:{line} imports {target} ({src} may not depend on {dst})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_imports_itself_around_a_loop() -> None:
    edges = {m: {t for t in ts if t in graph_modules()} for m, ts in graph().items()}
    cycles = find_cycles(edges)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def graph_modules() -> set[str]:
    return {module_name(p) for p in ROOT.rglob("*.py")}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One loop through each strongly connected group of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph has ~120 nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


@pytest.mark.parametrize(
    ("edges", "loops"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, 0),
        ({"a": {"b"}, "b": {"a"}}, 1),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, 1),
    ],
)
def test_the_loop_finder_finds_loops(edges: dict[str, set[str]], loops: int) -> None:
    assert len(find_cycles(edges)) == loops


def test_a_lazy_import_counts(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from edge_service.server import app\n")
    found = list(imports(source, {"edge_service.server.app"}))
    assert found == [("edge_service.server.app", 2)]
