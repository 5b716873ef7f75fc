"""The comparison table: one row per (dataset, method), the headline metrics as mean ± sd over seeds, a paired
bootstrap CI against the baseline over test cases, and the cost.

:data:`METRICS` is the table's metric registry: key -> where the value is in a job's ``results.json``
(the dataset-level number, and the per-case value of the bootstrap where one exists), label, orientation and
group. The uncertainty metrics read each method's own headline map
(:func:`trustseg.reports.measure_choice.primary_measure`). OOD AUROC has one key per configured distortion
(``ood_auroc_<distortion>``: the best score's mean AUROC over severities).

Outputs (atomic): ``OUT/table.json`` (schema in ``docs/compare.md``), ``table.csv`` (one line per row, columns
``<key>``, ``<key>_sd``, ``<key>_diff``, ``<key>_low``, ``<key>_high``, ``<key>_p_better``) and ``table.md`` (a table
per dataset: metrics down, methods across).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustseg.compare.config import CompareConfig
from trustseg.compare.jobs import Job, plan_jobs, read_job
from trustseg.compare.stats import mean_sd, paired_bootstrap, seed_average
from trustseg.core.atomic import atomic_write_csv, atomic_write_json, atomic_write_text
from trustseg.evaluation.evaluate import verify_results
from trustseg.evaluation.results import get
from trustseg.reports.measure_choice import primary_measure

#: ``(results, measure) -> value`` and ``(per-case row, measure) -> value``.
Getter = Callable[[dict[str, Any], str | None], Any]


@dataclass(frozen=True)
class Metric:
    """One column of the table.

    Attributes:
        key: Stable snake_case name.
        label: What it is, for people.
        higher_is_better: Orientation.
        group: ``segmentation``, ``calibration``, ``multi-rater``, ``uncertainty``, ``interpretability``, ``qc``,
            ``ood``, ``noise``, ``quality-prediction`` or ``cost``.
        value: The dataset-level value from the results.
        per_case: The per-case value from a results row (``None``: no bootstrap CI).
    """

    key: str
    label: str
    higher_is_better: bool
    group: str
    value: Getter
    per_case: Getter | None = None

    def meta(self) -> dict[str, Any]:
        """The entry of ``table.json``'s ``metrics``."""
        return {"key": self.key, "label": self.label, "higher_is_better": self.higher_is_better, "group": self.group}


def _at(*path: str) -> Getter:
    return lambda tree, _m: get(tree, path, None)


def _map(section: str, *rest: str) -> Getter:
    """A value under ``section/<measure>/rest`` (the method's headline map)."""
    return lambda tree, m: None if m is None else get(tree, (section, m, *rest), None)


def _noise_mean(field: str) -> Getter:
    def value(res: dict[str, Any], _m: str | None) -> Any:
        levels = res.get("noise_robustness") or []
        vals = [lv.get(field) for lv in levels if isinstance(lv.get(field), (int, float))]
        return sum(vals) / len(vals) if vals else None

    return value


def _ood(dist: str | None) -> Getter:
    def value(res: dict[str, Any], _m: str | None) -> Any:
        best = get(res, ("ood", "best"), None) or {}
        vals = [b["mean_auroc"] for d, b in best.items() if dist in (None, d)]
        return sum(vals) / len(vals) if vals else None

    return value


#: The headline metrics (the OOD ones are added per distortion by :func:`metrics_for`).
METRICS: tuple[Metric, ...] = (
    Metric("dice_majority", "Dice vs majority", True, "segmentation", _at("summary", "dice", "majority", "mean"),
           _at("dice", "majority", "mean")),
    Metric("dice_consensus", "Dice on consensus regions", True, "segmentation",
           _at("summary", "dice", "consensus", "mean"), _at("dice", "consensus", "mean")),
    Metric("hd95_majority", "HD95 vs majority", False, "segmentation", _at("summary", "hd95", "majority", "mean"),
           _at("hd95", "majority", "mean")),
    Metric("nsd_majority", "NSD vs majority", True, "segmentation", _at("summary", "nsd", "majority", "mean"),
           _at("nsd", "majority", "mean")),
    Metric("ece_toplabel_majority", "top-label ECE vs majority", False, "calibration",
           _at("summary", "ece_toplabel", "majority", "all"), _at("ece_toplabel", "majority", "all")),
    Metric("nll_soft", "NLL vs soft label", False, "calibration", _at("summary", "nll", "soft", "all")),
    Metric("brier_soft", "Brier vs soft label", False, "calibration", _at("summary", "brier", "soft", "all")),
    Metric("ged2_iou", "GED² (d = 1 − IoU), samples vs raters", False, "multi-rater",
           _at("mean", "ged2_iou", "raters", "all"), _at("ged2_iou", "raters", "all")),
    Metric("hungarian_iou", "Hungarian-matched IoU, samples vs raters", True, "multi-rater",
           _at("mean", "hungarian_iou", "raters", "all"), _at("hungarian_iou", "raters", "all")),
    Metric("qubiq_soft_dice", "QUBIQ soft Dice", True, "multi-rater", _at("summary", "qubiq_soft_dice", "soft", "mean"),
           _at("qubiq_soft_dice", "soft", "mean")),
    Metric("pixel_pearson", "pixel r (uncertainty vs disagreement)", True, "uncertainty",
           _map("uncertainty", "pixel_pearson_mean"), _map("pixel_pearson", "disagreement")),
    Metric("pixel_spearman", "pixel ρ (uncertainty vs disagreement)", True, "uncertainty",
           _map("uncertainty", "pixel_spearman_mean"), _map("pixel_spearman", "disagreement")),
    Metric("image_pearson", "image r (uncertainty vs disagreement)", True, "uncertainty",
           _map("uncertainty", "image_pearson")),
    Metric("image_spearman", "image ρ (uncertainty vs disagreement)", True, "uncertainty",
           _map("uncertainty", "image_spearman")),
    Metric("error_auroc", "error AUROC of the map", True, "uncertainty", _map("uncertainty", "error_auroc"),
           _map("error_auroc", "error")),
    Metric("ueo", "uncertainty-error overlap", True, "uncertainty", _map("uncertainty", "ueo"), _map("ueo", "error")),
    Metric("ucc_gradient", "UCC_g (SURE)", False, "interpretability", _map("uncertainty", "ucc_gradient"),
           _map("ucc_gradient", "majority")),
    Metric("ur_gradient", "UR_g (SURE)", True, "interpretability", _map("uncertainty", "ur_gradient"),
           _map("ur_gradient", "majority")),
    Metric("ucc_distance", "UCC_d (SURE, noise)", False, "interpretability",
           _at("noise_interpretability", "ucc_distance")),
    Metric("ur_distance", "UR_d (SURE, noise)", True, "interpretability", _at("noise_interpretability", "ur_distance")),
    Metric("qc_d_auc", "QC d-AUC", False, "qc", _map("quality_control", "mean", "d_auc")),
    Metric("qc_eaurc", "QC E-AURC", False, "qc", _map("quality_control", "mean", "eaurc")),
    Metric("ood_auroc_mean", "OOD AUROC (mean over distortions)", True, "ood", _ood(None)),
    Metric("noise_dice_mean", "Dice under noise (mean over μ)", True, "noise", _noise_mean("dice")),
    Metric("noise_ece_mean", "ECE under noise (mean over μ)", False, "noise", _noise_mean("ece")),
    Metric("qp_pearson", "predicted vs true Dice r", True, "quality-prediction",
           _at("quality_prediction", "dice", "pearson")),
    Metric("qp_mae", "predicted Dice MAE", False, "quality-prediction", _at("quality_prediction", "dice", "mae")),
    Metric("qp_failure_auroc", "failure AUROC of the predicted Dice", True, "quality-prediction",
           _at("quality_prediction", "dice", "failure_auroc")),
)  # fmt: skip

#: Cost columns (from ``job.json``'s ``cost``; means over the jobs of a row, no CI).
COST: tuple[tuple[str, str, bool], ...] = (
    ("params", "parameters", False),
    ("train_s", "training time (s)", False),
    ("inference_rel_forward", "inference time / one forward pass", False),
    ("peak_rss_mb", "peak memory (RSS, MB)", False),
)


def metrics_for(cfg: CompareConfig) -> list[Metric]:
    """The table's metrics: :data:`METRICS` plus ``ood_auroc_<distortion>`` for each configured distortion."""
    out = list(METRICS)
    if cfg.ood is not None:
        at = next(i for i, m in enumerate(out) if m.key == "ood_auroc_mean")
        for d in cfg.ood.distortions:
            at += 1
            out.insert(at, Metric(f"ood_auroc_{d}", f"OOD AUROC, {d}", True, "ood", _ood(d)))
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def build_table(cfg: CompareConfig, out: str | Path) -> dict[str, Any]:
    """Read every job of ``cfg`` in ``out`` and return the ``table.json`` content.

    Raises:
        DataError: a job that is not done, or whose results' per-case CSV does not match (``verify_results``).
    """
    out = Path(out)
    metrics = metrics_for(cfg)
    jobs = plan_jobs(cfg, out)
    rows = []
    for ds in cfg.datasets:
        per_method: dict[str, dict[str, Any]] = {}
        for spec in cfg.methods:
            mine = [j for j in jobs if j.dataset == ds.name and j.method == spec.key]
            per_method[spec.key] = _collect(mine, spec.name, metrics)
        base = per_method[cfg.baseline]
        for spec in cfg.methods:
            rows.append(_row(cfg, ds.name, spec.key, per_method[spec.key], base, metrics))
    return {
        "baseline": cfg.baseline,
        "metrics": [m.meta() for m in metrics]
        + [{"key": k, "label": lab, "higher_is_better": h, "group": "cost"} for k, lab, h in COST],
        "rows": rows,
    }


def _collect(jobs: Sequence[Job], method_name: str, metrics: Sequence[Metric]) -> dict[str, Any]:
    """Per seed: each metric's value (mean over folds) and per-case values (mean over folds); the costs."""
    seeds = sorted({j.seed for j in jobs})
    folds = sorted({j.fold if j.fold is not None else 0 for j in jobs})
    values: dict[str, list[float | None]] = {m.key: [] for m in metrics}
    cases: dict[str, list[dict[str, float]]] = {m.key: [] for m in metrics if m.per_case is not None}
    costs: dict[str, list[float]] = {k: [] for k, _, _ in COST}
    for seed in seeds:
        results = []
        for job in (j for j in jobs if j.seed == seed):
            record = read_job(job)
            results.append(verify_results(job.results))
            for k, _, _ in COST:
                v = _number(record.get("cost", {}).get(k))
                if v is not None:
                    costs[k].append(v)
        for m in metrics:
            vals = [_number(m.value(r, primary_measure(method_name, r))) for r in results]
            finite = [v for v in vals if v is not None]
            values[m.key].append(sum(finite) / len(finite) if finite else None)
            if m.per_case is not None:
                per_fold = []
                for r in results:
                    meas = primary_measure(method_name, r)
                    per_fold.append({row["case"]: _number(m.per_case(row, meas)) for row in r["per_case"]})
                merged = seed_average([{c: (v if v is not None else math.nan) for c, v in p.items()} for p in per_fold])
                cases[m.key].append(merged)
    return {"seeds": seeds, "folds": folds, "values": values, "cases": cases, "costs": costs}


def _row(
    cfg: CompareConfig, dataset: str, method: str, mine: dict[str, Any], base: dict[str, Any], metrics: Sequence[Metric]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for m in metrics:
        per_seed = mine["values"][m.key]
        mean, sd = mean_sd([v for v in per_seed if v is not None])
        ci = None
        if method != cfg.baseline and m.per_case is not None:
            a, b = seed_average(mine["cases"][m.key]), seed_average(base["cases"][m.key])
            common = [c for c in b if c in a]
            ci = paired_bootstrap(
                [a[c] for c in common],
                [b[c] for c in common],
                cfg.bootstrap.resamples,
                cfg.bootstrap.confidence,
                cfg.bootstrap.seed,
                m.higher_is_better,
            )
        values[m.key] = {"mean": mean, "sd": sd, "per_seed": per_seed, "ci_vs_baseline": ci}
    cost = {k: (sum(v) / len(v) if v else None) for k, v in mine["costs"].items()}
    if cost["params"] is not None:
        cost["params"] = int(round(cost["params"]))
    return {
        "dataset": dataset,
        "method": method,
        "seeds": mine["seeds"],
        "folds": mine["folds"],
        "values": values,
        "cost": cost,
    }


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}g}" if abs(v) >= 1000 else f"{v:.{digits}f}"


def csv_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The flat lines of ``table.csv``."""
    lines = []
    for row in table["rows"]:
        line: dict[str, Any] = {"dataset": row["dataset"], "method": row["method"], "seeds": len(row["seeds"])}
        for key, v in row["values"].items():
            ci = v["ci_vs_baseline"] or {}
            line.update({key: v["mean"], f"{key}_sd": v["sd"]})
            line.update({f"{key}_{p}": ci.get(p) for p in ("diff", "low", "high", "p_better")})
        line.update(row["cost"])
        lines.append(line)
    return lines


def markdown(table: dict[str, Any]) -> str:
    """``table.md``: per dataset, metrics down and methods across (``mean ± sd`` and ``[low, high]`` vs the
    baseline)."""
    parts = [f"# Comparison (baseline: {table['baseline']})", ""]
    labels = {m["key"]: m for m in table["metrics"]}
    for dataset in dict.fromkeys(r["dataset"] for r in table["rows"]):
        rows = [r for r in table["rows"] if r["dataset"] == dataset]
        parts += [f"## {dataset}", "", "| metric | " + " | ".join(r["method"] for r in rows) + " |"]
        parts.append("|---" * (len(rows) + 1) + "|")
        for key, meta in labels.items():
            cells = []
            for r in rows:
                if meta["group"] == "cost":
                    cells.append(_fmt(r["cost"].get(key)))
                    continue
                v = r["values"][key]
                cell = _fmt(v["mean"]) + ("" if v["sd"] is None else f" ± {_fmt(v['sd'])}")
                ci = v["ci_vs_baseline"]
                if ci is not None:
                    cell += f" [{_fmt(ci['low'])}, {_fmt(ci['high'])}]"
                cells.append(cell)
            if any(c != "–" for c in cells):
                arrow = "↑" if meta["higher_is_better"] else "↓"
                parts.append(f"| {meta['label']} ({key}) {arrow} | " + " | ".join(cells) + " |")
        parts.append("")
    parts.append("mean ± sd over seeds; [low, high]: 95 % paired bootstrap CI over test cases of method − baseline.")
    return "\n".join(parts) + "\n"


def write_table(cfg: CompareConfig, out: str | Path) -> dict[str, Any]:
    """Build the table and write ``table.json``, ``table.csv`` and ``table.md`` into ``out`` (atomically)."""
    out = Path(out)
    table = build_table(cfg, out)
    atomic_write_csv(out / "table.csv", csv_rows(table))
    atomic_write_text(out / "table.md", markdown(table))
    atomic_write_json(out / "table.json", table)
    return table
