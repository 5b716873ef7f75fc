"""Packages that fill a registry import each of their modules explicitly in ``__init__.py``.

Without auto-discovery, a module that is not imported there would never register what it defines: this test
names any module a package forgets (the registry contract tests then cover it).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

#: package -> its registry (``module:NAME``)
REGISTRY_PACKAGES = {
    "trustseg.methods": "trustseg.methods.base:METHODS",
    "trustseg.measures": "trustseg.measures.registry:MEASURES",
    "trustseg.metrics": "trustseg.metrics.registry:METRICS",
    "trustseg.models": "trustseg.models.registry:MODELS",
    "trustseg.data.importers": "trustseg.data.importers.registry:IMPORTERS",
    "trustseg.evaluation.components": "trustseg.evaluation.component:SUITE",
    "trustseg.inference": "trustseg.inference.predictor:PREDICTORS",
    "trustseg.quality": "trustseg.quality.registry:QC_PREDICTORS",
}


@pytest.mark.parametrize("package", sorted(REGISTRY_PACKAGES))
def test_every_module_is_imported_when_the_package_is(package):
    """In a fresh interpreter, importing the package loads every module in it."""
    pkg = importlib.import_module(package)
    modules = [f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    code = f"import sys, {package}; print('\\n'.join(m for m in {modules!r} if m not in sys.modules))"
    missing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not missing, f"{package}/__init__.py does not import: {missing}"


@pytest.mark.parametrize("package", sorted(REGISTRY_PACKAGES))
def test_exports_exist_and_every_entry_comes_from_an_imported_module(package):
    pkg = importlib.import_module(package)
    assert all(hasattr(pkg, name) for name in getattr(pkg, "__all__", ())), f"{package}.__all__ names a missing object"
    module, _, name = REGISTRY_PACKAGES[package].partition(":")
    registry = getattr(importlib.import_module(module), name)
    assert len(registry) > 0, f"{module}.{name} is empty after importing {package}"


def test_no_package_discovers_its_modules_at_run_time():
    for package in REGISTRY_PACKAGES:
        init = str(importlib.import_module(package).__file__)
        tree = ast.parse(Path(init).read_text())
        calls = [
            n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "import_module"
        ]
        assert not calls, f"{init} imports modules dynamically"
