"""A tiny ``trustseg compare`` output folder built by hand (the layout of ``docs/report.md``'s input).

:func:`build_compare_fixture` trains, predicts, fits a QC model and evaluates 2 methods x ``seeds`` seeds on a small
synthetic 2D dataset, lays the folders out as ``trustseg compare`` does, and writes a hand-written ``table.json``
whose numbers are known (the report tests check the best-marked cell against them). When ``trustseg compare``
exists, the integrator can replace this helper by a real (tiny) compare run.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from trustseg import __version__
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig
from trustseg.engine.predict import predict_folder
from trustseg.engine.run import train
from trustseg.evaluation import evaluate_predictions
from trustseg.evaluation.robustness import NoiseConfig, OODConfig
from trustseg.inference.predictor import load_predictor
from trustseg.models.config import NetConfig
from trustseg.quality.config import QCConfig
from trustseg.quality.run import fit_qc, qc_annotator

DATASET = "synthetic2d"
METHODS = (("softmax", {}), ("mc-dropout", {"samples": 4}))

#: The hand-written table (known answers): mc-dropout has the best Dice, softmax the best (lowest) ECE.
TABLE_VALUES = {
    "softmax": {"dice_majority": (0.70, 0.01), "ece_toplabel_majority": (0.050, 0.002), "ged2_iou": (0.30, None)},
    "mc-dropout": {"dice_majority": (0.75, 0.02), "ece_toplabel_majority": (0.080, 0.004), "ged2_iou": (0.25, None)},
}
METRICS = [
    {"key": "dice_majority", "label": "Dice vs majority", "higher_is_better": True, "group": "segmentation"},
    {"key": "ece_toplabel_majority", "label": "top-label ECE", "higher_is_better": False, "group": "calibration"},
    {"key": "ged2_iou", "label": "GED²", "higher_is_better": False, "group": "multi-rater"},
]


def _table(seeds: list[int]) -> dict[str, Any]:
    rows = []
    for method, _ in METHODS:
        values = {}
        for key, (mean, sd) in TABLE_VALUES[method].items():
            ci = None
            if method != "softmax" and sd is not None:
                base = TABLE_VALUES["softmax"][key][0]
                ci = {
                    "diff": mean - base,
                    "low": mean - base - 0.01,
                    "high": mean - base + 0.01,
                    "n_cases": 3,
                    "p_better": 0.9,
                }
            values[key] = {
                "mean": mean,
                "sd": sd if len(seeds) > 1 else None,
                "per_seed": [mean] * len(seeds),
                "ci_vs_baseline": ci,
            }
        rows.append(
            {
                "dataset": DATASET,
                "method": method,
                "seeds": seeds,
                "folds": [0],
                "values": values,
                "cost": {
                    "params": 1234,
                    "train_s": 1.0,
                    "inference_rel_forward": 1.0 if method == "softmax" else 4.0,
                    "peak_rss_mb": 500.0,
                },
            }
        )
    return {"baseline": "softmax", "metrics": METRICS, "rows": rows}


def build_compare_fixture(out: Path, seeds: tuple[int, ...] = (0,), cases: int = 24, size: int = 32) -> Path:
    """Write a compare output folder at ``out`` (data under ``out.parent / "data"``) and return ``out``."""
    out = Path(out)
    data = make_synthetic_dataset(
        out.parent / "data", SynthConfig(cases=cases, raters=3, dims=2, size=size, num_classes=2, seed=0)
    )
    jobs = []
    for method, params in METHODS:
        for seed in seeds:
            job = out / "jobs" / DATASET / method / f"seed{seed}"
            cfg = RunConfig(
                data=str(data),
                net=NetConfig(params={"channels": (4, 8), "dropout": 0.2 if method == "mc-dropout" else 0.0}),
                method=MethodConfig(method, params),
                train=TrainConfig(epochs=1, batch_size=4, seed=seed),
            )
            train(cfg, job / "run", progress=False)
            predictor = load_predictor(job / "run", "cpu")
            # the QC model is fitted on predictions of cases the network did not train on (val), plus train cases
            # here so that the tiny fixture has enough of them
            fitp = predict_folder(predictor, data, job / "qcfit_pred", split="train", progress=False)
            qc = fit_qc(fitp, data, job / "qc", QCConfig(predictors=("ridge",), calibration_fraction=0.4, seed=0))
            predict_folder(
                predictor,
                data,
                job / "pred",
                split="test",
                progress=False,
                save_samples=True,
                annotate=qc_annotator(qc, layer_heads=bool(predictor.info.samples_are_heads)),
                annotation=str(job / "qc"),
            )
            evaluate_predictions(
                job / "pred",
                data,
                job / "eval" / "results.json",
                split="test",
                predictor=predictor,
                ood=OODConfig(distortions=("noise", "blur"), severities=(1, 5)),
                noise=NoiseConfig(levels=(0.1, 0.5, 0.9)),
            )
            (job / "job.json").write_text(
                json.dumps(
                    {
                        "status": "done",
                        "dataset": DATASET,
                        "method": method,
                        "seed": seed,
                        "fold": 0,
                        "data": str(data),
                        "params": params,
                        "timings": {"train_s": 1.0, "predict_s": 0.5, "evaluate_s": 0.5},
                        "cost": {
                            "params": 1234,
                            "train_s": 1.0,
                            "inference_s_per_case": 0.01,
                            "forward_s_per_case": 0.005,
                            "inference_rel_forward": 2.0,
                            "peak_rss_mb": 500.0,
                        },
                    }
                )
            )
            jobs.append(job)
    (out / "compare.yaml").write_text(
        yaml.safe_dump(
            {
                "datasets": {DATASET: str(data)},
                "methods": [m for m, _ in METHODS],
                "seeds": list(seeds),
                "baseline": "softmax",
                "epochs": 1,
            }
        )
    )
    card = {
        "trustseg": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": {"cpu": platform.processor() or "cpu", "cores": 2, "ram": "4 GB"},
        "seeds": list(seeds),
        "started": "2025-01-01T00:00:00",
        "finished": "2025-01-01T00:05:00",
        "wall_s": 300.0,
        "command": ["trustseg", "compare", "cfg.yaml", "--out", str(out)],
    }
    (out / "run_card.json").write_text(json.dumps(card))
    (out / "table.json").write_text(json.dumps(_table(list(seeds))))
    return out
