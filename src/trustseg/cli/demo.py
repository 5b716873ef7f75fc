"""``trustseg demo``: the whole pipeline on built-in synthetic data, ending in a report.

The demo is one preset of ``trustseg compare`` (:data:`trustseg.compare.presets.PRESETS` ``demo``): generate a
seeded synthetic multi-rater dataset (2D, 4 raters who disagree where boundaries are faint) -> train several
methods with the same small U-Net -> predict the held-out test split with uncertainty maps (and QC) -> evaluate
everything against the raters (OOD and noise protocols included) -> the comparison table -> an HTML report. The
outputs are the comparison layout (``docs/compare.md``) plus ``report/``; a rerun resumes where it stopped
(finished jobs are reused).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console

from trustseg.compare.config import CompareConfig, with_overrides
from trustseg.compare.presets import preset
from trustseg.compare.report import build_compare_report
from trustseg.compare.run import run_compare
from trustseg.core.atomic import atomic_write_json

#: Jobs the demo runs at once (one torch thread each): on 2 cores, 2 small jobs side by side take 2m14s where
#: one at a time with 2 threads takes about 5 minutes (measured 2026-12-02).
DEMO_WORKERS = 2


def _say(msg: str, progress: bool) -> None:
    if progress:
        Console().print(f"[bold cyan]demo[/] {msg}")


def demo_config(epochs: int | None = None, seed: int = 0) -> CompareConfig:
    """The demo's comparison config (``epochs`` overrides every method's epochs, e.g. 1 for a smoke test)."""
    return with_overrides(preset("demo", seed=seed), sets={"train.epochs": epochs} if epochs else None)


def run_demo(out: str | Path = "runs/demo", epochs: int | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Run the demo comparison into ``out`` and return the path of the HTML report.

    Args:
        out: Output folder (the ``trustseg compare`` layout: compare.yaml, data/, jobs/, table.*; and report/).
        epochs: Override every method's epochs (e.g. 1 for a smoke test).
        seed: Seed of the data and of every training run.
        progress: Show step messages.
    """
    t0 = time.perf_counter()
    out = Path(out)
    cfg = demo_config(epochs, seed)
    _say(f"comparing {len(cfg.methods)} methods on synthetic data ({cfg.train.epochs} epochs each)", progress)
    workers = DEMO_WORKERS if (os.cpu_count() or 1) >= DEMO_WORKERS else 1
    command = ["trustseg", "demo", "--out", str(out)]
    run_compare(cfg, out, workers=workers, overwrite=True, progress=progress, command=command)
    _say("writing the report", progress)
    report = build_compare_report(out, out / "report" / "index.html")
    atomic_write_json(out / "timings.json", {"total_s": round(time.perf_counter() - t0, 1)})
    return report
