"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.quality.planted import make_planted

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TRUSTSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
LIDC_ROOT = SHARED_DATA / "lidc-idri-slices" / "LIDC-IDRI-slices"
QUBIQ_ROOT = SHARED_DATA / "qubiq2020-brain-growth" / "brain-growth"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


def need(path: Path, what: str):
    """Skip (with the reason) when a folder of ../shared/data is absent."""
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (../shared/data is not beside this checkout)")
    return path


@pytest.fixture
def lidc_root() -> Path:
    return need(LIDC_ROOT, "LIDC-IDRI slices")


@pytest.fixture
def qubiq_root() -> Path:
    return need(QUBIQ_ROOT, "QUBIQ 2020 brain-growth")


@pytest.fixture(scope="session")
def planted(tmp_path_factory) -> dict:
    """Prediction folders with a planted quality signal (:mod:`tests.quality.planted`)."""
    return make_planted(tmp_path_factory.mktemp("planted"))
