"""``trustseg demo``: the whole pipeline on built-in synthetic data, ending in a report.

Steps: generate a seeded synthetic multi-rater dataset (2D, 4 raters who disagree where boundaries are faint)
-> train several methods with the same small U-Net -> predict the held-out test split with uncertainty maps ->
evaluate everything against the raters -> write an HTML report comparing the methods. Each step's outputs are
kept, and a rerun resumes where it stopped (finished runs, predictions and evaluations are reused).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from trustseg.core.atomic import atomic_write_json
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig, load_saved_run_config
from trustseg.engine.predict import predict_folder
from trustseg.engine.run import train
from trustseg.evaluation import evaluate_predictions
from trustseg.models.config import NetConfig
from trustseg.reports.run_report import build_report

#: (method, params, epochs) trained by the demo; chosen to finish in a few minutes on 2 CPU cores.
DEMO_METHODS: tuple[tuple[str, dict, int], ...] = (
    ("softmax", {}, 30),
    ("mc-dropout", {"samples": 10}, 30),
    ("ensemble", {"members": 3}, 30),
    ("layer-ensemble", {}, 30),
    ("evidential", {}, 30),
    ("edue", {}, 30),
)


def _say(msg: str, progress: bool) -> None:
    if progress:
        Console().print(f"[bold cyan]demo[/] {msg}")


def run_demo(out: str | Path = "runs/demo", epochs: int | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Run the demo into ``out`` and return the path of the HTML report.

    Args:
        out: Output folder (data/, runs/, predictions/, evaluation/, report/).
        epochs: Override every method's epochs (e.g. 1 for a smoke test).
        seed: Seed of the data and of every training run.
        progress: Show progress bars and step messages.
    """
    t0 = time.perf_counter()
    out = Path(out)
    data = out / "data"
    if not (data / "dataset.json").exists():
        _say("1/4 generating synthetic multi-rater data", progress)
        make_synthetic_dataset(data, SynthConfig(cases=60, raters=4, dims=2, size=64, num_classes=3, seed=seed))
    timings = {}
    entries = []
    for name, params, default_epochs in DEMO_METHODS:
        run_dir, pred_dir = out / "runs" / name, out / "predictions" / name
        result_json = out / "evaluation" / name / "results.json"
        t = time.perf_counter()
        cfg = RunConfig(
            data=str(data),
            net=NetConfig(params={"channels": (16, 32, 64), "norm": "instance"}),
            method=MethodConfig(name=name, params=params),
            train=TrainConfig(epochs=epochs or default_epochs, batch_size=8, lr=3e-3, seed=seed),
        )
        _say(f"2/4 training [bold]{name}[/] ({cfg.train.epochs} epochs)", progress)
        same = (run_dir / "config.yaml").is_file() and load_saved_run_config(run_dir / "config.yaml") == cfg
        # a rerun continues; a changed config starts afresh (replacing the earlier run once the new one is done)
        train(cfg, run_dir, resume=same, overwrite=not same, progress=progress)
        _say(f"3/4 predicting the test split with [bold]{name}[/]", progress)
        predict_folder(run_dir, data, pred_dir, split="test", progress=progress, save_samples=True, overwrite=True)
        evaluate_predictions(pred_dir, data, result_json, split="test")
        timings[name] = round(time.perf_counter() - t, 1)
        entries.append((name, run_dir, pred_dir, result_json))
    _say("4/4 writing the report", progress)
    report = build_report(out / "report", entries, data, title="trustseg demo: synthetic multi-rater data")
    atomic_write_json(out / "timings.json", {"per_method_s": timings, "total_s": round(time.perf_counter() - t0, 1)})
    return report
