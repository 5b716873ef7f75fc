"""Loading a run for inference: run.json values and checkpoint weights are checked before anything is predicted."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from tests.engine.test_train import make_data, tiny_cfg
from trustseg.cli.main import main
from trustseg.core.errors import DataError
from trustseg.engine.checkpoint import load_checkpoint, save_checkpoint
from trustseg.engine.train import train
from trustseg.inference.run_predictor import RunPredictor, load_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A softmax run trained 1 epoch on tiny 2D data, and the data root."""
    tmp = tmp_path_factory.mktemp("runpred")
    root = make_data(tmp)
    train(tiny_cfg(root, epochs=1), tmp / "run", progress=False)
    return tmp / "run", root


@pytest.fixture
def run_copy(trained, tmp_path):
    run, _ = trained
    return shutil.copytree(run, tmp_path / "run")


def edit_run_json(run, **changes):
    path = run / "run.json"
    info = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            info.pop(k)
        else:
            info[k] = v
    path.write_text(json.dumps(info))


def test_checkpoint_with_nan_weights_is_refused_at_load(run_copy, capsys):
    best = run_copy / "member_0" / "best.pt"
    state = load_checkpoint(best)
    name = sorted(k for k, t in state["model"].items() if t.is_floating_point())[1]
    state["model"][name] = state["model"][name].clone().fill_(math.nan)
    save_checkpoint(state, best)
    with pytest.raises(DataError, match=f"best.pt: checkpoint weights are not finite .*'{name}'") as e:
        load_run(run_copy)
    assert e.value.path == best
    # the CLI (a run whose training diverged): exit 2, one line, nothing predicted
    out = run_copy.parent / "pred"
    rc = main(["predict", "--run", str(run_copy), "--input", str(run_copy), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not finite" in err and len(err.splitlines()) == 1 and not out.exists()


def test_inf_weights_are_refused_too(run_copy):
    best = run_copy / "member_0" / "best.pt"
    state = load_checkpoint(best)
    name = next(k for k, t in state["model"].items() if t.is_floating_point())
    state["model"][name].view(-1)[0] = math.inf
    save_checkpoint(state, best)
    with pytest.raises(DataError, match="1 NaN/Inf values"):
        RunPredictor(run_copy, device="cpu")


@pytest.mark.parametrize("temperature", [0, -1.0, "abc", math.inf, True])
def test_temperature_must_be_a_finite_positive_number(run_copy, temperature):
    edit_run_json(run_copy, temperature=temperature)
    with pytest.raises(DataError, match="run.json: temperature must be a finite number > 0"):
        load_run(run_copy)


def test_positive_temperature_is_applied(run_copy):
    edit_run_json(run_copy, temperature=2.5)
    method, _, _ = load_run(run_copy)
    assert method.temperature == 2.5


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("members", None, "lacks the key"),
        ("num_classes", None, "lacks the key"),
        ("method", None, "lacks the key"),
        ("members", 0, "members must be an integer"),
        ("members", "1", "members must be an integer"),
        ("spatial_dims", 4, "spatial_dims must be an integer in \\[2, 3\\]"),
        ("in_channels", 1.5, "in_channels must be an integer"),
        ("num_classes", 5, "classes must be a list of num_classes = 5 names"),
    ],
)
def test_missing_or_bad_keys_name_run_json_and_the_key(run_copy, key, value, problem):
    edit_run_json(run_copy, **{key: value})
    with pytest.raises(DataError, match=problem) as e:
        load_run(run_copy)
    assert e.value.path == run_copy / "run.json" and key in str(e.value)


def test_weights_of_a_good_run_load(trained):
    run, _ = trained
    _, models, _ = load_run(run)
    assert all(torch.isfinite(p).all() for p in models[0].parameters())
