"""Fuzzing every reader with hypothesis: truncated, bit-flipped and type-confused inputs end in trustseg's own
error (or a valid result), never another exception, and within a time bound per example.

Readers: images and labels (NIfTI, PNG, TIFF, JPEG, NPY), ``dataset.json`` (opening the dataset and reading
every case), ``predictions.json`` (the index and every case's files), ``run.json`` (loading the run) and YAML /
TOML run configs.

Budget: the ``ci`` profile (default) runs a few dozen examples per reader; ``HYPOTHESIS_PROFILE=long`` runs
thousands (``HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/data/test_fuzz_readers.py``).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustseg.core.config import load_config
from trustseg.core.errors import TrustsegError
from trustseg.data.dataset import load_dataset
from trustseg.data.io import read_image, read_label, write_image, write_label
from trustseg.data.predictions import load_prediction, read_index
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig
from trustseg.engine.run import train
from trustseg.inference.run_predictor import load_run
from trustseg.models.config import NetConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns on corrupt EXIF before it fails

COMMON = {"suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow], "derandomize": True}
settings.register_profile("ci", max_examples=25, deadline=timedelta(seconds=5), **COMMON)
settings.register_profile("long", max_examples=2000, deadline=timedelta(seconds=5), **COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Any JSON value (the type confusions).
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def mutate_bytes(raw: bytes, data) -> bytes:
    """Truncate ``raw`` or flip some of its bytes, as hypothesis chooses."""
    if data.draw(st.booleans(), label="truncate"):
        return raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)), label="length")]
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        i = data.draw(st.integers(0, len(out) - 1), label="at")
        out[i] ^= data.draw(st.integers(1, 255), label="xor")
    return bytes(out)


def replace_subtree(doc, data):
    """``doc`` with one subtree (chosen by walking down at random) replaced by an arbitrary JSON value."""
    doc = copy.deepcopy(doc)
    node, key = None, None
    cur = doc
    while isinstance(cur, (dict, list)) and cur and data.draw(st.booleans(), label="descend"):
        keys = list(cur) if isinstance(cur, dict) else list(range(len(cur)))
        node, key = cur, keys[data.draw(st.integers(0, len(keys) - 1), label="child")]
        cur = cur[key]
    value = data.draw(JSON, label="value")
    if node is None:
        return value
    if data.draw(st.booleans(), label="delete") and isinstance(node, dict):
        del node[key]
    else:
        node[key] = value
    return doc


def _only_ours(fn) -> None:
    try:
        fn()
    except TrustsegError:
        pass


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    """A valid small image or label in every format, as bytes."""
    root = tmp_path_factory.mktemp("fuzz_files")
    rng = np.random.default_rng(0)
    out = {}
    img = rng.random((1, 12, 10)).astype(np.float32)
    lab = (rng.random((12, 10)) > 0.5).astype(np.uint8)
    for ext in (".nii.gz", ".npy", ".tif"):
        out[f"image{ext}"] = write_image(root / f"i{ext}", img, spatial_dims=2).read_bytes()
    for ext in (".png", ".jpg"):
        out[f"image{ext}"] = write_image(root / f"i{ext}", (img * 255).astype(np.uint8), spatial_dims=2).read_bytes()
    for ext in (".png", ".nii.gz", ".npy"):
        out[f"label{ext}"] = write_label(root / f"l{ext}", lab).read_bytes()
    return out


@pytest.mark.parametrize(
    "name",
    ["image.nii.gz", "image.npy", "image.tif", "image.png", "image.jpg", "label.png", "label.nii.gz", "label.npy"],
)
@given(data=st.data())
def test_image_and_label_readers(files, tmp_path, name, data):
    path = tmp_path / f"x{name[name.index('.') :]}"
    path.write_bytes(mutate_bytes(files[name], data))
    _only_ours(lambda: (read_label if name.startswith("label") else read_image)(path))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_ds") / "d"
    make_synthetic_dataset(root, SynthConfig(cases=4, raters=2, size=16, num_classes=2), ext=".npy")
    return root, json.loads((root / "dataset.json").read_text())


@given(data=st.data())
def test_dataset_json(dataset, data):
    root, meta = dataset
    (root / "dataset.json").write_text(json.dumps(replace_subtree(meta, data)))

    def read():
        ds = load_dataset(root)
        for cid in ds.ids:
            ds[cid]
        ds.split("train"), ds.groups, ds.file_ext, ds.classes

    _only_ours(read)


@given(data=st.data())
def test_dataset_json_bytes(dataset, data):
    root, meta = dataset
    (root / "dataset.json").write_bytes(mutate_bytes(json.dumps(meta).encode(), data))
    _only_ours(lambda: [load_dataset(root)[i] for i in load_dataset(root).ids])


@pytest.fixture(scope="module")
def predictions(planted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_pred") / "p"
    shutil.copytree(planted["new"], folder)
    return folder, json.loads((folder / "predictions.json").read_text())


@given(data=st.data())
def test_predictions_json(predictions, data):
    folder, index = predictions
    (folder / "predictions.json").write_text(json.dumps(replace_subtree(index, data)))

    def read():
        idx = read_index(folder)
        for entry in idx["cases"][:3]:
            load_prediction(folder, entry["id"], entry=entry)

    _only_ours(read)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_run")
    data = root / "d"
    make_synthetic_dataset(data, SynthConfig(cases=6, raters=2, size=16, num_classes=2), ext=".npy")
    cfg = RunConfig(
        data=str(data),
        net=NetConfig(params={"channels": (4, 8)}),
        method=MethodConfig("softmax"),
        train=TrainConfig(epochs=1, batch_size=4),
    )
    train(cfg, root / "run", progress=False)
    return root / "run", json.loads((root / "run" / "run.json").read_text())


@given(data=st.data())
def test_run_json(run, data):
    folder, info = run
    (folder / "run.json").write_text(json.dumps(replace_subtree(info, data)))
    try:
        _only_ours(lambda: load_run(folder))
    finally:
        (folder / "run.json").write_text(json.dumps(info))


@given(data=st.data())
def test_run_configs(run, tmp_path, data):
    folder, _ = run
    text = (folder / "config.yaml").read_text()
    for ext in (".yaml", ".toml"):
        path = tmp_path / f"c{ext}"
        path.write_bytes(mutate_bytes(text.encode() if ext == ".yaml" else b"[train]\nepochs = 3\nlr = 0.001\n", data))
        _only_ours(lambda p=path: load_config(RunConfig, p))


def test_the_budget_profile_is_in_effect():
    assert settings().max_examples == {"ci": 25, "long": 2000}[os.environ.get("HYPOTHESIS_PROFILE", "ci")]
