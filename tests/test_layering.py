"""The package's import graph (CONTRIBUTING.md): layers, no cycles, no function-level imports of trustseg.

* a lower layer never imports a higher one;
* no import cycle, inside a layer or across layers (strongly connected components of the module graph);
* no import of a trustseg module inside a function or class body (lazy imports are for optional third-party
  packages only), so the graph a reader or a tool sees is the real one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "trustseg"
ORDER = [
    "core",
    "data",
    "measures",
    "metrics",
    "evaluation",
    "models",
    "methods",
    "inference",
    "engine",
    "quality",
    "ood",
    "reports",
    "compare",
    "cli",
]
RANK = {name: i for i, name in enumerate(ORDER)}
RANK["ood"] = RANK["quality"]  # quality and ood are siblings


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports_of(path: Path) -> list[tuple[ast.AST, str, bool]]:
    """(node, imported trustseg module or package, at module level) for every import statement of ``path``."""
    tree = ast.parse(path.read_text())
    top_level = set()
    for node in tree.body:  # module level, including inside top-level if/try blocks
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            top_level.add(n)
            stack.extend(ast.iter_child_nodes(n))
    me = module_name(path)
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "trustseg" and name in MODULES:
                out.append((node, name, node in top_level))
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


@pytest.mark.parametrize("layer", [d.name for d in sorted(SRC.iterdir()) if d.is_dir() and d.name in RANK])
def test_no_upward_imports(layer):
    bad = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for _, name, _ in imports_of(path):
            other = layer_of(name)
            if other is not None and RANK[other] > RANK[layer]:
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_every_package_folder_is_a_known_layer():
    folders = {d.name for d in SRC.iterdir() if d.is_dir() and (d / "__init__.py").is_file()}
    assert folders <= set(RANK), f"unknown layers {sorted(folders - set(RANK))}: add them to ORDER"


def test_no_function_level_imports_of_trustseg():
    late = [
        f"{path.relative_to(SRC)}:{node.lineno} imports {name}"
        for path in MODULES.values()
        for node, name, top in imports_of(path)
        if not top
    ]
    assert not late, "function-level imports of trustseg modules:\n" + "\n".join(late)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for _, name, _ in imports_of(path):
            if name != m and not m.startswith(name + "."):  # a module importing its own package is not a cycle
                graph[m].add(name)
    return graph


def test_strongly_connected_finds_a_planted_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = strongly_connected(module_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
