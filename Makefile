# trustseg: two commands do everything on a fresh machine.
#   make demo   -> venv + install + synthetic data + train + predict + evaluate + report
#   make test   -> venv + install + ruff (lint, format check) + mypy (src/trustseg) + the whole test suite and
#                  every docstring example (pytest --doctest-modules)
# TORCH_SPEC pins the CPU build that this project's machines carry on disk; override it to get yours,
# e.g. `make demo TORCH_SPEC=torch` (the package itself only asks for torch>=2.2).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= runs/demo
PY := $(VENV)/bin/python
STAMP := $(VENV)/.trustseg-installed

.PHONY: demo test lint typecheck format bench clean

$(STAMP): pyproject.toml setup.py src/trustseg/metrics/_calibration_kernel.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	bash .ci/install-nnunet $(PY)   # nnunetv2 for the nnunet: predictor's tests, with --no-deps (no CUDA torch)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/trustseg demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# static type check of src/trustseg; the settings ([tool.mypy]) are in pyproject.toml
typecheck: $(STAMP)
	$(VENV)/bin/mypy

# the tests, then the >>> examples in src/trustseg's docstrings (they carry their own seeds: tests/conftest.py's
# fixtures do not apply to them)
test: lint typecheck
	sh .ci/ensure-chromium
	$(PY) -m pytest -n 2 -q tests src/trustseg --doctest-modules

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
