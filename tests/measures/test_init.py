"""``trustseg.measures`` imports every module of the package explicitly (no auto-discovery)."""

from __future__ import annotations

import ast
from pathlib import Path

import trustseg.measures as package

INIT = Path(package.__file__)


def _explicitly_imported(init: Path, name: str) -> set[str]:
    mods = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module == name:
            mods |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(name + "."):
            mods.add(node.module[len(name) + 1 :].split(".")[0])
    return mods


def test_every_module_is_imported_explicitly_by_the_package():
    files = {p.stem for p in INIT.parent.glob("*.py") if not p.name.startswith("_")}
    assert files, "no modules found"
    missing = files - _explicitly_imported(INIT, "trustseg.measures")
    assert not missing, f"trustseg/measures/__init__.py does not import {sorted(missing)}"
    assert "import_submodules" not in INIT.read_text()
