"""Reading a ``trustseg compare`` output folder for the report (layout in ``docs/report.md``).

The report reads only ``table.json``, ``compare.yaml``, ``run_card.json`` and the job folders
(``jobs/<dataset>/<method>/seed<k>[/fold<f>]/`` with ``job.json``, ``eval/results.json`` and ``pred/``), and from
them derives, per dataset and method, the numbers each figure draws.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trustseg.core.errors import ConfigError, DataError
from trustseg.evaluation.evaluate import verify_results
from trustseg.evaluation.results import get
from trustseg.reports.measure_choice import primary_measure

#: What a compare output folder must hold for the report.
REQUIRED = ("compare.yaml", "run_card.json", "table.json", "jobs")


@dataclass
class Job:
    """One finished (dataset, method, seed, fold) job: its folder, ``job.json`` and evaluation results."""

    folder: Path
    meta: dict[str, Any]
    results: dict[str, Any]

    @property
    def pred_dir(self) -> Path:
        return self.folder / "pred"


@dataclass
class CompareRun:
    """A compare output folder as read by :func:`read_compare`."""

    root: Path
    table: dict[str, Any]
    config: dict[str, Any]
    card: dict[str, Any]
    jobs: list[Job] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        """Datasets in the table's row order."""
        return list(dict.fromkeys(r["dataset"] for r in self.table.get("rows", [])))

    def methods(self, dataset: str) -> list[str]:
        """Methods of ``dataset`` in the table's row order."""
        return [r["method"] for r in self.table.get("rows", []) if r["dataset"] == dataset]

    def runs(self, dataset: str) -> dict[str, list[Job]]:
        """method -> its jobs on ``dataset`` (seed, fold ascending), in the table's method order."""
        out: dict[str, list[Job]] = {m: [] for m in self.methods(dataset)}
        for job in self.jobs:
            if job.meta.get("dataset") == dataset and job.meta.get("method") in out:
                out[job.meta["method"]].append(job)
        for jobs in out.values():
            jobs.sort(key=lambda j: (int(j.meta.get("seed", 0)), int(j.meta.get("fold") or 0)))
        return {m: j for m, j in out.items() if j}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot be read as JSON ({e}); rerun `trustseg compare` into this folder", path) from None


def read_compare(root: str | Path) -> CompareRun:
    """Read and check a compare output folder.

    Raises:
        ConfigError: ``root`` is not a compare output folder (naming every missing file).
        DataError: a job folder without a finished ``job.json``, or an unreadable/unverifiable results file.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder: give the --out folder of `trustseg compare`")
    missing = [name for name in REQUIRED if not (root / name).exists()]
    if missing:
        raise ConfigError(
            f"{root} is not a trustseg compare output: missing {', '.join(missing)} (`trustseg compare CONFIG "
            f"--out {root}` writes them; table.json appears once every job is done)"
        )
    table = _read_json(root / "table.json")
    for key in ("metrics", "rows"):
        if not isinstance(table.get(key), list):
            raise DataError(f"has no {key!r} list (not a compare table)", root / "table.json")
    try:
        config = yaml.safe_load((root / "compare.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"cannot be read as YAML ({e})", root / "compare.yaml") from None
    run = CompareRun(root, table, config, _read_json(root / "run_card.json"))
    for path in sorted((root / "jobs").rglob("job.json")):
        meta = _read_json(path)
        if meta.get("status") != "done":
            raise DataError(f"job status is {meta.get('status')!r}, not 'done': finish the compare run", path)
        res = path.parent / "eval" / "results.json"
        if not res.is_file():
            raise DataError("the job is marked done but has no eval/results.json", path.parent)
        run.jobs.append(Job(path.parent, meta, verify_results(res)))
    if not run.jobs:
        raise DataError("holds no finished job (no jobs/**/job.json)", root / "jobs")
    return run


def per_case(results: dict[str, Any], path: Sequence[str]) -> dict[str, float]:
    """case id -> the per-case value at ``path`` (NaN where absent)."""
    out = {}
    for row in results.get("per_case", []):
        v = get(row, path, None)
        out[row["case"]] = float("nan") if v is None else float(v)
    return out


def pooled_reliability(jobs: Sequence[Job]) -> dict[str, list[float]] | None:
    """The majority-vote reliability bins pooled over jobs (seeds/folds): counts summed, per-bin confidence and
    accuracy weighted by count."""
    bins = [get(j.results, ("calibration", "majority", "reliability"), None) for j in jobs]
    bins = [b for b in bins if b]
    if not bins:
        return None
    counts = np.array([b["count"] for b in bins], float)
    total = counts.sum(0)
    w = np.where(total > 0, total, 1.0)
    out = {"count": total.tolist()}
    for key in ("confidence", "accuracy"):
        vals = np.nan_to_num(np.array([b[key] for b in bins], dtype=float))
        out[key] = ((vals * counts).sum(0) / w).tolist()
    return out


def mean_noise_levels(jobs: Sequence[Job]) -> list[dict[str, float]] | None:
    """SURE's noise levels averaged over jobs, with ``<key>_sd`` across jobs (0 with one job)."""
    runs: list[list[dict[str, Any]]] = [r for j in jobs if (r := j.results.get("noise_robustness"))]
    if not runs:
        return None
    rows = []
    for i, first in enumerate(runs[0]):
        row = {"mu": first["mu"]}
        for key in ("dice", "hd95", "ece", "ueo"):
            v = np.array([np.nan if r[i].get(key) is None else r[i][key] for r in runs if i < len(r)], np.float64)
            row[key] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            row[f"{key}_sd"] = float(np.nanstd(v)) if np.isfinite(v).sum() > 1 else 0.0
        rows.append(row)
    return rows


def ood_entries(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """distortion -> ``{"score", "values", "auroc"}`` of the best score (per-case values as written by
    :func:`trustseg.evaluation.robustness.ood_detection`); distortions without per-case values are left out."""
    ood = results.get("ood") or {}
    out = {}
    for d, best in (ood.get("best") or {}).items():
        if not best.get("values"):
            continue
        auroc = {
            str(r["severity"]): r["scores"].get(best["score"], {}).get("auroc")
            for r in ood.get("results", [])
            if r["distortion"] == d
        }
        out[d] = {"score": best["score"], "values": best["values"], "auroc": auroc}
    return out


def measure_of(method: str, results: dict[str, Any]) -> str | None:
    """The map summarising a method's uncertainty (its declared primary measure, else entropy)."""
    return primary_measure(method, results)
