"""The package imports every one of its modules explicitly (so a new model cannot be forgotten) and exports
what it imports."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import trustseg.models

PKG = Path(trustseg.models.__file__).parent


def _imported() -> tuple[set[str], set[str]]:
    """(submodules imported by ``__init__``, names it imports)."""
    modules, names = set(), set()
    for node in ast.walk(ast.parse((PKG / "__init__.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trustseg.models"):
            parts = node.module.split(".")
            if len(parts) > 2:
                modules.add(parts[2])
                names |= {a.asname or a.name for a in node.names}
            else:
                modules |= {a.name for a in node.names}
    return modules, names


def test_every_module_is_imported_by_the_package():
    modules = {m.name for m in pkgutil.iter_modules([str(PKG)]) if not m.name.startswith("_")}
    imported, _ = _imported()
    assert modules - imported == set(), "add these modules to trustseg/models/__init__.py"


def test_exports():
    _, names = _imported()
    assert set(trustseg.models.__all__) == names
    assert all(hasattr(trustseg.models, n) for n in trustseg.models.__all__)
    assert {"MODELS", "NetConfig", "build_network", "UNet"} <= names
    for entry in trustseg.models.MODELS:  # every registered model comes from a module the package imports
        assert entry.obj.__module__.split(".")[2] in _imported()[0]
