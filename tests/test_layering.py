"""Layers point down and nothing imports in a circle (docs/ARCHITECTURE.md, "Layers").

Read from the source with `ast`, so an import inside a function (a lazy import) counts as
much as one at the top of a module: it runs sooner or later, and a circle through it is
still a circle. The label registry's discovery (`importlib` over `tokenmill/labelers/`) is
by name at run time and is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tokenmill"

# lowest first; a module belongs to the layer of its longest listed prefix and may import
# from its own layer and the ones below
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("errors", "ids", "charclass", "capabilities", "schema", "common_config", "prefect_ui", "progress")),
    ("storage", ("storage", "datasets", "pairs")),
    ("sources, models, engines", ("code", "sources", "models", "engines")),
    ("stages", ("tasks",)),
    ("labelers", ("labelers",)),
    ("curation", ("curation",)),
    ("pipeline config", ("config",)),
    ("report", ("report",)),
    ("flows", ("flows",)),
    ("entry points", ("cli", "serve", "studies", "testing")),
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module → the tokenmill modules it imports (a name from a package: the package)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = edges.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "tokenmill")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                if base.split(".")[0] != "tokenmill":
                    continue
                for a in node.names:
                    found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        found.discard(name)
    return edges


def layer_of(module: str) -> int:
    if module == "tokenmill":  # the package itself: a version string
        return 0
    inner = module.removeprefix("tokenmill.")
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if inner == p or inner.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (rank, len(p))
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and to ARCHITECTURE.md's Layers)"
    return best[0]


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


MODULES = _modules()
EDGES = _imports(MODULES)


def _package(module: str) -> str:
    """The package a module is part of; a module directly under tokenmill/ is its own."""
    if MODULES[module].name == "__init__.py" or module.count(".") == 1:
        return module
    return module.rpartition(".")[0]


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m, targets in sorted(EDGES.items()) for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle_between_modules():
    cycle = _cycle(EDGES)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_no_import_cycle_between_packages():
    """Between packages, a subpackage's use of its parent's shared modules (a world using
    `sources/base.py`, a label family using `labelers/base.py`) is not an edge: the parent's
    dispatch to its subpackages is the direction that counts, and modules stay acyclic."""
    packages: dict[str, set[str]] = {}
    for m, targets in EDGES.items():
        src = _package(m)
        packages.setdefault(src, set()).update(
            _package(t) for t in targets if _package(t) != src and not src.startswith(_package(t) + "."))
    cycle = _cycle(packages)
    assert cycle is None, "package import cycle: " + " → ".join(cycle)


@pytest.mark.parametrize("source, expected", [
    ("from tokenmill.report import progress\n", {"tokenmill.report.progress"}),
    ("def f():\n    from ..engines import hf\n", {"tokenmill.engines.hf"}),
    ("import tokenmill.storage.lake as L\n", {"tokenmill.storage.lake"}),
])
def test_the_reader_sees_lazy_relative_and_aliased_imports(tmp_path, monkeypatch, source, expected):
    (tmp_path / "tokenmill" / "tasks").mkdir(parents=True)
    mod = tmp_path / "tokenmill" / "tasks" / "probe_mod.py"
    mod.write_text(source)
    names = ("tokenmill.tasks.probe_mod", "tokenmill.report.progress", "tokenmill.engines.hf", "tokenmill.storage.lake")
    assert _imports(dict.fromkeys(names, mod))["tokenmill.tasks.probe_mod"] == expected


def test_a_cycle_is_found_and_named():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_a_module_takes_the_layer_of_its_longest_prefix():
    assert layer_of("tokenmill.tasks.train.weighted") == layer_of("tokenmill.tasks.score")
    assert layer_of("tokenmill.progress") == 0
    assert layer_of("tokenmill.report.plots") < layer_of("tokenmill.flows.pipeline") < layer_of("tokenmill.cli")
