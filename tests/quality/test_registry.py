"""Contract tests over the quality-predictor registry: every entry declares its input and file, fits on its
input kind, predicts in range, and saves and loads to the same predictions without pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trustseg.core.errors import ConfigError
from trustseg.quality import QC_PREDICTORS
from trustseg.quality.inputs import CaseInput
from trustseg.quality.registry import INPUTS, register_qc_predictor


def _inputs(n: int = 12) -> tuple[list[CaseInput], np.ndarray]:
    g = torch.Generator().manual_seed(0)
    out, y = [], []
    for i in range(n):
        p = torch.rand(16, 16, generator=g) * (i / n)
        probs = torch.stack([1 - p, p])
        out.append(CaseInput(f"c{i}", probs, probs.argmax(0), maps={"entropy": p}, image=torch.rand(1, 16, 16)))
        y.append(1 - i / n)
    return out, np.asarray(y)


@pytest.mark.parametrize("name", QC_PREDICTORS.names())
def test_every_predictor_fits_predicts_saves_and_loads(name, tmp_path):
    meta, cls = QC_PREDICTORS.meta(name), QC_PREDICTORS.get(name)
    assert meta["input"] in INPUTS and meta["file"]
    if meta["input"] == "features":
        x = np.random.default_rng(0).random((30, 3))
        y = 1 - x[:, 0] * 0.5
        model = cls(seed=0).fit(x, y, ["a", "b", "c"], y_range=(0.0, 1.0))
        pred = model.predict(x)
        path = tmp_path / meta["file"]
        path.write_text(json.dumps(model.to_dict()))
        again = cls.from_dict(json.loads(path.read_text()), source=path)
        np.testing.assert_array_equal(again.predict(x), pred)
    else:
        inputs, y = _inputs()
        model = cls(map_names=["entropy"], epochs=1, size=(16, 16), seed=0).fit(inputs, y)
        pred = model.predict(inputs)
        model.save(tmp_path)
        assert (tmp_path / meta["file"]).is_file()
        np.testing.assert_allclose(cls.load(tmp_path).predict(inputs), pred, rtol=1e-6)
    assert np.all((pred >= 0) & (pred <= 1))


def test_registering_needs_a_known_input():
    with pytest.raises(ConfigError, match="input"):
        register_qc_predictor("x", input="pixels", file="x.json")
