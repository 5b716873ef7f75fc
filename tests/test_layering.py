"""Lower layers never import higher ones (CONTRIBUTING.md): checked on every import statement in src/."""

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
    "engine",
    "quality",
    "ood",
    "reports",
    "cli",
]
RANK = {name: i for i, name in enumerate(ORDER)}
RANK["ood"] = RANK["quality"]  # quality and ood are siblings


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "trustseg" and len(parts) > 1 and parts[1] in RANK:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", [d.name for d in sorted(SRC.iterdir()) if d.is_dir() and d.name in RANK])
def test_no_upward_imports(layer):
    bad = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for other in imported_layers(path):
            if RANK[other] > RANK[layer]:
                bad.append(f"{path.relative_to(SRC)} imports trustseg.{other}")
    assert not bad, "upward imports:\n" + "\n".join(bad)
