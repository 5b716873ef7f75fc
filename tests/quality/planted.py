"""Prediction folders with a planted quality signal, for the QC model and CLI tests.

Each case's prediction is its majority label shifted by ``round(4 q)`` pixels and blurred by ``0.5 + 2 q``, with
four samples jittered by up to ``3 q`` pixels, for a seeded per-case knob ``q`` in [0, 1]: the higher ``q``, the
lower the Dice and the higher every uncertainty measure — a relation any quality predictor must find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from trustseg.core.predictive import Predictive
from trustseg.data.dataset import load_dataset
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
from trustseg.engine.prediction_folder import FolderWriter, InputItem


def planted_prediction(label: np.ndarray, q: float, rng: np.random.Generator, samples: int = 4) -> Predictive:
    """A (M, 1, 2, H, W) prediction of the binary ``label`` degraded by ``q`` (module docstring)."""
    shift = int(round(4 * q))
    probs = []
    for _ in range(samples):
        jitter = rng.integers(-int(np.ceil(3 * q)), int(np.ceil(3 * q)) + 1, size=2) if q > 0 else np.zeros(2, int)
        moved = np.roll(label.astype(np.float64), (shift + int(jitter[0]), int(jitter[1])), axis=(0, 1))
        fg = np.clip(ndimage.gaussian_filter(moved, 0.5 + 2 * q), 1e-4, 1 - 1e-4)
        probs.append(np.stack([1 - fg, fg]))
    return Predictive(probs=torch.tensor(np.stack(probs)[:, None], dtype=torch.float32))


def write_planted_folder(data: Path, out: Path, ids: list[str], seed: int, samples: bool = False) -> dict[str, float]:
    """Write a prediction folder for ``ids`` of the dataset ``data``; returns each case's knob ``q``."""
    ds = load_dataset(data)
    rng = np.random.default_rng(seed)
    writer = FolderWriter(out, {"method": "mc-dropout", "classes": ds.classes, "run_dir": None}, None, samples)
    writer.begin(ids)
    knobs = {}
    for cid in ids:
        case = ds[cid]
        q = float(rng.uniform())
        knobs[cid] = q
        label = case.majority_vote(ds.num_classes)
        item = InputItem(cid, case.meta["image"], case.image, case.spacing, case.origin, None, ds.file_ext)
        writer.write(item, planted_prediction(label, q, rng))
    writer.finish()
    return knobs


def make_planted(root: Path) -> dict:
    """A 2-class synthetic dataset of 70 cases (32x32, 3 raters) and two planted prediction folders: ``fit``
    (the first 50 cases) and ``new`` (the last 20)."""
    data = root / "data"
    make_synthetic_dataset(data, SynthConfig(cases=70, raters=3, size=32, num_classes=2, seed=3), ext=".npy")
    ids = load_dataset(data).ids
    fit_knobs = write_planted_folder(data, root / "pred_fit", ids[:50], seed=1)
    new_knobs = write_planted_folder(data, root / "pred_new", ids[50:], seed=2)
    return {"data": data, "fit": root / "pred_fit", "new": root / "pred_new", "knobs": {**fit_knobs, **new_knobs}}
