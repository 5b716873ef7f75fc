"""The seed papers' claims, checked on finished ``trustseg compare`` runs: one verdict per claim, with the number.

Reads each comparison folder (``compare.yaml``, ``table.json``, every job's ``eval/results.json`` and, for
AULA, the layer-ensemble heads saved in ``pred/``), and writes ``seed_claims.md`` / ``seed_claims.json`` with,
per dataset:

* every claim of the three seeds (EDUE, layer ensembles, SURE) and of the quality study, the number measured,
  the published anchor, and a verdict: ``reproduced`` (the claimed direction, with the paired bootstrap CI over
  test cases on the claimed side of 0 where the metric has per-case values; image-level correlations: the
  bootstrap CI over test images of the r difference averaged over seeds and folds,
  ``paired_bootstrap_correlation``; other dataset-level metrics: in every seed),
  ``not reproduced`` (the other direction, or a CI on the wrong side), ``inconclusive`` (the claimed direction,
  but the CI includes 0 or the seeds disagree), ``not testable here`` (the metric is missing in these runs);
* the relative gain ``(method − ensemble) / |ensemble|`` of the pixel- and image-level correlations with rater
  disagreement (EDUE claims +23 % pixel, +55 % image), for each uncertainty map a method writes;
* Spearman(AULA, Dice) of the layer-ensemble heads (LE paper: 0.785), from the saved heads and per-case Dice;
* the validation learning curve (Dice by epoch) of the softmax baseline's run, to show whether training flattened;
  ``--curve RUN`` adds a run made only for that curve (softmax with a longer budget: every epoch, and the epoch
  after which no epoch improves val Dice by more than 0.01);
* ``--keep DATASET`` keeps a dataset's section (and its learning-curve section) of the files already in ``--out``
  when its run folder is gone (marked as kept, with the date of the run that wrote it); a section whose heading
  says ``(written by hand, ...)`` is carried over verbatim by every rewrite;
* with ``--figures``, the PNG figures of each comparison's ``trustseg report`` page (the page itself, which embeds
  the case gallery, is ~12 MB and is not kept).

The comparisons themselves are run with the recipes (``recipes/*.yaml``, ``trustseg compare``); this script only
reads them. Usage::

    PYTHONPATH=src python benchmarks/seed_claims.py runs/compare-synth2d runs/compare-lidc-cpu ... --figures \\
        --out benchmarks/results/seed_claims
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from trustseg.compare.config import CompareConfig, load_compare_config
from trustseg.compare.jobs import Job, plan_jobs
from trustseg.compare.report import build_compare_report
from trustseg.compare.stats import paired_bootstrap, paired_bootstrap_correlation
from trustseg.data.predictions import read_index
from trustseg.evaluation.components.analyses import DISAGREEMENT
from trustseg.measures.image import layer_agreement
from trustseg.reports.measure_choice import primary_measure

HERE = Path(__file__).resolve().parent
PerCase = Callable[[dict[str, Any], str | None], float | None]  # (per-case row, the method's headline map)
Dataset = Callable[[dict[str, Any]], float | None]

ENSEMBLE = "ensemble"
HEADS_METHODS = ("layer-ensemble", "edue-heads")  # methods whose samples are decoder heads (AULA applies)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _get(tree: Any, path: Sequence[str]) -> Any:
    for p in path:
        if not isinstance(tree, dict) or p not in tree:
            return None
        tree = tree[p]
    return tree


@dataclass
class Run:
    """One comparison folder: its config, jobs and loaded results."""

    folder: Path
    cfg: CompareConfig
    jobs: list[Job]
    results: dict[str, dict[str, Any]]  # job name -> results.json

    @classmethod
    def load(cls, folder: Path) -> Run:
        cfg = load_compare_config(folder / "compare.yaml")
        jobs = [j for j in plan_jobs(cfg, folder) if j.results.is_file()]
        return cls(folder, cfg, jobs, {j.name: json.loads(j.results.read_text()) for j in jobs})

    def methods(self) -> list[str]:
        return [m.key for m in self.cfg.methods if any(j.method == m.key for j in self.jobs)]

    def mine(self, method: str) -> list[Job]:
        return [j for j in self.jobs if j.method == method]

    def per_seed(self, method: str, value: Dataset) -> list[float]:
        """The dataset-level value of each seed (mean over folds), seeds without it left out."""
        out = []
        for seed in sorted({j.seed for j in self.mine(method)}):
            vals = [_num(value(self.results[j.name])) for j in self.mine(method) if j.seed == seed]
            vals = [v for v in vals if v is not None]
            if vals:
                out.append(sum(vals) / len(vals))
        return out

    def per_case(self, method: str, value: PerCase) -> dict[str, float]:
        """Per test case: the value averaged over seeds and folds (NaN-free)."""
        name = next(m.name for m in self.cfg.methods if m.key == method)
        acc: dict[str, list[float]] = {}
        for j in self.mine(method):
            headline = primary_measure(name, self.results[j.name])
            for row in self.results[j.name].get("per_case", []):
                v = _num(value(row, headline))
                if v is not None:
                    acc.setdefault(row["case"], []).append(v)
        return {c: sum(v) / len(v) for c, v in acc.items()}


def maps_of(run: Run, method: str) -> list[str]:
    """The uncertainty maps a method's results score (``uncertainty/<map>``)."""
    names: list[str] = []
    for j in run.mine(method):
        for name in run.results[j.name].get("uncertainty") or {}:
            if name not in names:
                names.append(name)
    return names


def compare_cases(run: Run, a: str, b: str, value: PerCase, higher: bool, cfg: CompareConfig) -> dict[str, Any]:
    """Mean of ``a`` and ``b`` over their common test cases and the paired bootstrap CI of ``a − b``."""
    va, vb = run.per_case(a, value), run.per_case(b, value)
    common = [c for c in va if c in vb]
    if not common:
        return {"a": None, "b": None, "n": 0, "ci": None}
    ci = paired_bootstrap([va[c] for c in common], [vb[c] for c in common], cfg.bootstrap.resamples,
                          cfg.bootstrap.confidence, cfg.bootstrap.seed, higher)  # fmt: skip
    return {"a": float(np.mean([va[c] for c in common])), "b": float(np.mean([vb[c] for c in common])),
            "n": len(common), "ci": ci}  # fmt: skip


def verdict_cases(cmp: dict[str, Any], higher: bool) -> str:
    ci = cmp.get("ci")
    if cmp.get("a") is None or ci is None:
        return "not testable here"
    if ci["diff"] == ci["low"] == ci["high"] == 0:
        return "not testable here (identical on every case)"
    better = ci["diff"] > 0 if higher else ci["diff"] < 0
    lo, hi = (ci["low"], ci["high"]) if higher else (-ci["high"], -ci["low"])
    if better and lo > 0:
        return "reproduced"
    if not better and hi < 0:
        return "not reproduced"
    return "inconclusive" if better else "not reproduced"


def verdict_seeds(a: list[float], b: list[float], higher: bool) -> str:
    if not a or not b:
        return "not testable here"
    wins = [(x > y) if higher else (x < y) for x, y in zip(a, b, strict=False)]
    if all(wins):
        return "reproduced" + (" (1 seed)" if len(wins) == 1 else "")
    if not any(wins):
        return "not reproduced" + (" (1 seed)" if len(wins) == 1 else "")
    return "inconclusive"


def gain(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else (a - b) / abs(b)


def _fmt(v: Any, d: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{d}f}"
    return str(v)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.0f} %"


def _ci(ci: dict[str, Any] | None) -> str:
    return "–" if not ci else f"{ci['diff']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"


def mean(vals: list[float]) -> float | None:
    return float(np.mean(vals)) if vals else None


# ---------------------------------------------------------------------------------------------- the measurements


def correlation_gains(run: Run) -> list[dict[str, Any]]:
    """Pixel r (per case) and image r (dataset) of every map of every method, and the gain over the ensemble's
    best map of the same kind."""
    rows = []
    if ENSEMBLE not in run.methods():
        return rows
    ens_maps = maps_of(run, ENSEMBLE)

    def pix(m: str) -> PerCase:
        return lambda row, _h: _get(row, ("pixel_pearson", m, "disagreement"))

    def img(m: str) -> Dataset:
        return lambda res: _get(res, ("uncertainty", m, "image_pearson"))

    def best_ensemble(kind: str) -> tuple[str, float | None]:
        vals = {m: (mean(list(run.per_case(ENSEMBLE, pix(m)).values())) if kind == "pixel"
                    else mean(run.per_seed(ENSEMBLE, img(m)))) for m in ens_maps}  # fmt: skip
        vals = {m: v for m, v in vals.items() if v is not None}
        if not vals:
            return "–", None
        m = max(vals, key=lambda k: vals[k])
        return m, vals[m]

    best_pix, best_img = best_ensemble("pixel"), best_ensemble("image")
    for method in run.methods():
        for m in maps_of(run, method):
            p = compare_cases(run, method, ENSEMBLE, pix(m), True, run.cfg) if method != ENSEMBLE else None
            pv = mean(list(run.per_case(method, pix(m)).values()))
            iv = run.per_seed(method, img(m))
            rows.append({"method": method, "map": m, "pixel_r": pv, "image_r": mean(iv), "image_r_per_seed": iv,
                         "pixel_gain_vs_best_ensemble": gain(pv, best_pix[1]),
                         "image_gain_vs_best_ensemble": gain(mean(iv), best_img[1]),
                         "best_ensemble_pixel": best_pix, "best_ensemble_image": best_img,
                         "pixel_ci_vs_ensemble_same_cases": None if p is None else p["ci"]})  # fmt: skip
    return rows


def aula_dice(run: Run) -> dict[str, Any]:
    """Spearman(AULA, Dice vs majority) over test cases, per heads method and job, from the saved heads."""
    out: dict[str, Any] = {}
    for method in (m for m in run.methods() if m in HEADS_METHODS):
        per_job = []
        for j in run.mine(method):
            pred = j.folder / "pred"
            index = read_index(pred)
            dice = {
                row["case"]: _num(_get(row, ("dice", "majority", "mean"))) for row in run.results[j.name]["per_case"]
            }
            aula, d = [], []
            for entry in index["cases"]:
                f = entry["files"].get("samples")
                if f is None or dice.get(entry["id"]) is None:
                    continue
                heads = torch.from_numpy(np.load(pred / f).astype(np.float32))  # (M, K, *sp)
                aula.append(float(layer_agreement(heads[:, None])[0]))
                d.append(dice[entry["id"]])
            if len(aula) >= 3 and np.std(aula) > 0 and np.std(d) > 0:
                rho, pval = stats.spearmanr(aula, d)
                per_job.append({"job": j.name, "rho": float(rho), "p": float(pval), "n": len(aula)})
            else:
                per_job.append({"job": j.name, "rho": None, "p": None, "n": len(aula)})
        rhos = [r["rho"] for r in per_job if r["rho"] is not None]
        out[method] = {"jobs": per_job, "rho_mean": mean(rhos)}
    return out


def epochs_run(run: Run) -> list[int]:
    """Epochs each member of each job trained (rows of its ``history.csv``): what a budget left of ``epochs``."""
    out = []
    for j in run.jobs:
        for hist in sorted((j.folder / "run").rglob("history.csv")):
            with hist.open() as f:
                out.append(sum(1 for _ in csv.DictReader(f)))
    return out


def learning_curve(run: Run, method: str = "softmax") -> list[dict[str, Any]]:
    """The validation history of the first job of ``method`` (epoch, train loss, val Dice when logged)."""
    for j in run.mine(method):
        hist = sorted((j.folder / "run").rglob("history.csv"))
        if hist:
            with hist[0].open() as f:
                return list(csv.DictReader(f))
    return []


# --------------------------------------------------------------------------------------------------- the claims


@dataclass(frozen=True)
class Claim:
    paper: str
    claim: str
    anchor: str
    measure: Callable[[Run], tuple[str, str]]  # -> (number, verdict)
    dataset: str | None = None  # only datasets whose name contains this (an anchor of one dataset)


def _case_claim(a: str, b: str, key: Sequence[str], higher: bool, margin: float = 0.0) -> Callable[[Run], tuple]:
    """``a`` better than ``b`` on a per-case value at ``key`` (``margin`` > 0: non-inferiority by that margin)."""

    def measure(run: Run) -> tuple[str, str]:
        if a not in run.methods() or b not in run.methods():
            return "–", "not testable here"
        value: PerCase = lambda row, h: _get(row, [h if k == "{map}" else k for k in key])  # noqa: E731
        cmp = compare_cases(run, a, b, value, higher, run.cfg)
        if margin:
            ci = cmp.get("ci")
            if ci is None:
                return "–", "not testable here"
            worst = ci["low"] if higher else -ci["high"]
            v = "reproduced" if worst > -margin else "not reproduced"
        else:
            v = verdict_cases(cmp, higher)
        return f"{_fmt(cmp['a'])} vs {_fmt(cmp['b'])} (n = {cmp['n']}; diff {_ci(cmp['ci'])})", v

    return measure


def _seed_claim(a: str, b: str, value: Dataset, higher: bool) -> Callable[[Run], tuple]:
    def measure(run: Run) -> tuple[str, str]:
        if a not in run.methods() or b not in run.methods():
            return "–", "not testable here"
        va, vb = run.per_seed(a, value), run.per_seed(b, value)
        return f"{_fmt(mean(va), 4)} vs {_fmt(mean(vb), 4)} (seeds {len(va)})", verdict_seeds(va, vb, higher)

    return measure


def _gain_claim(method: str, kind: str, claimed: float, against: str | None) -> Callable[[Run], tuple]:
    """EDUE's correlation gain over the ensemble: the method's headline map (``predicted_variance`` for both
    EDUE variants) against the ensemble's map ``against`` (``variance``: the paper's like-for-like variance
    heatmaps) or, with ``None``, the ensemble's headline map (entropy). No map is chosen on the test results."""

    def measure(run: Run) -> tuple[str, str]:
        if method not in run.methods() or ENSEMBLE not in run.methods():
            return "–", "not testable here"
        mine = _headline(run, method)
        theirs = against or _headline(run, ENSEMBLE)
        if mine is None or theirs is None:
            return "–", "not testable here"
        if kind == "pixel":
            a = run.per_case(method, lambda row, _h: _get(row, ("pixel_pearson", mine, "disagreement")))
            b = run.per_case(ENSEMBLE, lambda row, _h: _get(row, ("pixel_pearson", theirs, "disagreement")))
            common = [c for c in a if c in b]
            if not common:
                return "–", "not testable here"
            va, vb = float(np.mean([a[c] for c in common])), float(np.mean([b[c] for c in common]))
            ci = paired_bootstrap([a[c] for c in common], [b[c] for c in common], run.cfg.bootstrap.resamples,
                                  run.cfg.bootstrap.confidence, run.cfg.bootstrap.seed, True)  # fmt: skip
            text = (f"{mine} r {va:.3f} vs ensemble {theirs} r {vb:.3f}: gain {_pct(gain(va, vb))} "
                    f"(claimed {claimed:+.0%}); diff {_ci(ci)}")  # fmt: skip
            return text, verdict_cases({"a": va, "ci": ci}, True)
        sa = run.per_seed(method, lambda res: _get(res, ("uncertainty", mine, "image_pearson")))
        sb = run.per_seed(ENSEMBLE, lambda res: _get(res, ("uncertainty", theirs, "image_pearson")))
        ci = image_r_ci(run, method, mine, theirs)
        text = (f"{mine} r {_fmt(mean(sa))} vs ensemble {theirs} r {_fmt(mean(sb))}: gain "
                f"{_pct(gain(mean(sa), mean(sb)))} (claimed {claimed:+.0%}; {len(sa)} seed(s), "
                f"{ci['n_cases'] if ci else 0} test images over {ci['groups'] if ci else 0} seed/fold run(s)); "
                f"diff {_ci(ci)}")  # fmt: skip
        return text, verdict_cases({"a": mean(sa), "ci": ci}, True)

    return measure


def image_r_ci(run: Run, method: str, mine: str, theirs: str) -> dict[str, Any] | None:
    """Bootstrap CI of ``r(method's map mine) − r(ensemble's map theirs)`` with the images' summed rater
    disagreement: one group per (seed, fold) job pair, the test images resampled with replacement and shared
    between groups that scored the same images (``paired_bootstrap_correlation``)."""

    def rows(job: Job, name: str) -> dict[str, tuple[float | None, float | None]]:
        return {r["case"]: (_num(_get(r, ("image_score", name, "mean"))), _num(_get(r, DISAGREEMENT)))
                for r in run.results[job.name].get("per_case", [])}  # fmt: skip

    groups = []
    for ja in run.mine(method):
        jb = next((j for j in run.mine(ENSEMBLE) if (j.seed, j.fold) == (ja.seed, ja.fold)), None)
        if jb is None:
            continue
        ra, rb = rows(ja, mine), rows(jb, theirs)
        groups.append({c: (ra[c][0], rb[c][0], ra[c][1]) for c in ra if c in rb and None not in (*ra[c], rb[c][0])})
    b = run.cfg.bootstrap
    return paired_bootstrap_correlation(groups, b.resamples, b.confidence, b.seed) if groups else None


def _headline(run: Run, method: str) -> str | None:
    name = next(m.name for m in run.cfg.methods if m.key == method)
    jobs = run.mine(method)
    return primary_measure(name, run.results[jobs[0].name]) if jobs else None


def _cost_claim(method: str) -> Callable[[Run], tuple]:
    def measure(run: Run) -> tuple[str, str]:
        def cost(m: str) -> float | None:
            vals = [json.loads((j.folder / "job.json").read_text())["cost"].get("inference_rel_forward")
                    for j in run.mine(m)]  # fmt: skip
            vals = [v for v in vals if isinstance(v, (int, float))]
            return mean(vals)

        a, b = cost(method), cost(ENSEMBLE)
        if a is None or b is None:
            return "–", "not testable here"
        return (
            f"inference {a:.2f}x one forward pass vs ensemble {b:.2f}x",
            "reproduced" if a < b / 2 else "not reproduced",
        )

    return measure


def _aula_claim(run: Run) -> tuple[str, str]:
    res = aula_dice(run).get("layer-ensemble")
    if not res or res["rho_mean"] is None:
        return "–", "not testable here"
    jobs = [r for r in res["jobs"] if r["rho"] is not None]
    text = f"ρ {res['rho_mean']:.3f} (" + ", ".join(f"{r['rho']:.2f}, p {r['p']:.2g}, n {r['n']}" for r in jobs) + ")"
    if all(r["rho"] > 0 and r["p"] < 0.05 for r in jobs):
        return text, "reproduced (positive, significant; magnitude vs 0.785 beside it)"
    if all(r["rho"] <= 0 for r in jobs):
        return text, "not reproduced"
    return text, "inconclusive"


def _ged_claim(run: Run) -> tuple[str, str]:
    rows = []
    for method in run.methods():
        g = run.per_seed(method, lambda res: _get(res, ("mean", "ged2_iou", "raters", "all")))
        h = run.per_seed(method, lambda res: _get(res, ("mean", "hungarian_iou", "raters", "all")))
        if g:
            rows.append((method, mean(g), mean(h)))
    if not rows:
        return "–", "not testable here"
    best = min(rows, key=lambda r: r[1])
    text = "; ".join(f"{m} GED² {g:.3f}, HM-IoU {_fmt(h)}" for m, g, h in rows)
    verdict = "within the published range" if best[1] <= 0.288 else "worse than the published range"
    return text, f"{verdict} (best: {best[0]} {best[1]:.3f})"


def _qp_claim(run: Run) -> tuple[str, str]:
    rows = []
    for method in run.methods():
        r = run.per_seed(method, lambda res: _get(res, ("quality_prediction", "dice", "pearson")))
        mae = run.per_seed(method, lambda res: _get(res, ("quality_prediction", "dice", "mae")))
        if r or mae:
            rows.append((method, mean(r), mean(mae)))
    if not rows:
        return "–", "not testable here"
    text = "; ".join(f"{m} r {_fmt(r, 2)}, MAE {_fmt(e)}" for m, r, e in rows)
    with_r = [x for x in rows if x[1] is not None]
    if not with_r:
        return text + " (r undefined: constant predicted or true Dice)", "not testable here"
    best = max(with_r, key=lambda x: x[1])
    return text, ("reproduced" if best[1] >= 0.65 else "not reproduced") + f" (best r {best[1]:.2f}: {best[0]})"


def _softmax_baseline(run: Run) -> tuple[str, str]:
    v = run.per_case("softmax", lambda row, _h: _get(row, ("pixel_pearson", "entropy", "disagreement")))
    if not v:
        return "–", "not testable here"
    m = float(np.mean(list(v.values())))
    return f"softmax entropy pixel r {m:.3f}", "reproduced" if m >= 0.4 else "not reproduced"


DICE = ("dice", "majority", "mean")
CLAIMS: tuple[Claim, ...] = (
    Claim("EDUE", "EDUE's predicted variance correlates better with rater disagreement than a deep ensemble's "
          "variance, pixel level", "+23 %", _gain_claim("edue", "pixel", 0.23, "variance")),
    Claim("EDUE", "… than the deep ensemble's entropy (its best-known map), pixel level", "+23 %",
          _gain_claim("edue", "pixel", 0.23, None)),
    Claim("EDUE", "the heads-variance variant (edue-heads) vs the ensemble's variance, pixel level", "+23 %",
          _gain_claim("edue-heads", "pixel", 0.23, "variance")),
    Claim("EDUE", "EDUE's predicted variance vs a deep ensemble's variance, image level", "+55 %",
          _gain_claim("edue", "image", 0.55, "variance")),
    Claim("EDUE", "… vs the deep ensemble's entropy, image level", "+55 %", _gain_claim("edue", "image", 0.55, None)),
    Claim("EDUE", "edue-heads vs the ensemble's variance, image level", "+55 %",
          _gain_claim("edue-heads", "image", 0.55, "variance")),
    Claim("EDUE", "one forward pass (cheaper than the ensemble at inference)", "1 pass", _cost_claim("edue")),
    Claim("EDUE", "segmentation as good as the ensemble's (Dice vs majority, non-inferiority margin 0.02)", "–",
          _case_claim("edue", ENSEMBLE, DICE, True, margin=0.02)),
    Claim("EDUE", "OOD detection at least as good as the ensemble's (mean AUROC over distortions)", "–",
          _seed_claim("edue", ENSEMBLE, lambda res: _mean_ood(res), True)),
    Claim("Layer ensembles", "better NLL than a deep ensemble (NLL vs soft label)", "0.306 vs 0.615 (BCDR)",
          _seed_claim("layer-ensemble", ENSEMBLE, lambda res: _get(res, ("summary", "nll", "soft", "all")), False)),
    Claim("Layer ensembles", "Dice as good as a deep ensemble's (non-inferiority margin 0.02)", "–",
          _case_claim("layer-ensemble", ENSEMBLE, DICE, True, margin=0.02)),
    Claim("Layer ensembles", "AULA correlates with Dice (Spearman over test images)", "0.785", _aula_claim),
    Claim("Layer ensembles", "one pass (cheaper than the ensemble at inference)", "1 pass",
          _cost_claim("layer-ensemble")),
    Claim("SURE", "lower UCC_g (uncertainty follows the image gradient; headline maps) than plain evidential", "–",
          _case_claim("sure", "evidential", ("ucc_gradient", "{map}", "majority"), False)),
    Claim("SURE", "higher UR_g than plain evidential", "–",
          _case_claim("sure", "evidential", ("ur_gradient", "{map}", "majority"), True)),
    Claim("SURE", "lower UCC_d under noise than plain evidential", "–",
          _seed_claim("sure", "evidential", lambda res: _get(res, ("noise_interpretability", "ucc_distance")), False)),
    Claim("SURE", "higher UR_d under noise than plain evidential", "–",
          _seed_claim("sure", "evidential", lambda res: _get(res, ("noise_interpretability", "ur_distance")), True)),
    Claim("SURE", "Dice under noise at least plain evidential's (mean over μ)", "–",
          _seed_claim("sure", "evidential", lambda res: _noise(res, "dice"), True)),
    Claim("Quality study", "Dice predicted without ground truth (QC model, test split): Pearson r",
          "r 0.966 / 0.65, MAE 0.061",
          _qp_claim),
    Claim("Quality study", "deep ensemble's uncertainty ranks images for review better than softmax's (QC d-AUC)", "–",
          _seed_claim(ENSEMBLE, "softmax", lambda res: _qc(res), False)),
    Claim("methods.md", "a softmax U-Net's entropy already reaches ≈ 0.5 pixel r with rater disagreement", "≈ 0.5",
          _softmax_baseline),
    Claim("LIDC anchors", "GED² (1 − IoU) and Hungarian IoU at 16 samples", "GED² 0.213–0.288, HM-IoU 0.622",
          _ged_claim, dataset="lidc"),
)  # fmt: skip


def _mean_ood(res: dict[str, Any]) -> float | None:
    best = _get(res, ("ood", "best")) or {}
    vals = [b["mean_auroc"] for b in best.values() if isinstance(b.get("mean_auroc"), (int, float))]
    return sum(vals) / len(vals) if vals else None


def _noise(res: dict[str, Any], field: str) -> float | None:
    vals = [lv.get(field) for lv in res.get("noise_robustness") or [] if isinstance(lv.get(field), (int, float))]
    return sum(vals) / len(vals) if vals else None


def _qc(res: dict[str, Any]) -> float | None:
    qc = res.get("quality_control") or {}
    vals = [_get(qc, (m, "mean", "d_auc")) for m in qc]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return min(vals) if vals else None


# ---------------------------------------------------------------------------------------------------- the output


def report(run: Run) -> tuple[dict[str, Any], list[str]]:
    name = run.cfg.datasets[0].name
    seeds = sorted({j.seed for j in run.jobs})
    folds = sorted({j.fold for j in run.jobs if j.fold is not None})
    epochs = epochs_run(run)
    lines = [f"## {name}", "",
             f"`{run.folder}`: methods {', '.join(run.methods())}; seeds {seeds}"
             + (f"; folds {folds}" if folds else "") + f"; {len(run.jobs)} jobs; baseline of the CIs: the ensemble; "
             + f"epochs trained per member {min(epochs)}–{max(epochs)} (of {run.cfg.train.epochs}"
             + (f", capped at {run.cfg.budget_minutes:g} min" if run.cfg.budget_minutes else "") + ")."
             if epochs else "",
             "", "| paper | claim | anchor | measured here | verdict |", "|---|---|---|---|---|"]  # fmt: skip
    claims = []
    for c in CLAIMS:
        if c.dataset is not None and c.dataset not in name:
            continue
        try:
            number, verdict = c.measure(run)
        except (KeyError, ValueError, TypeError) as e:  # a run without the data a claim needs
            number, verdict = f"error: {e}", "not testable here"
        claims.append({"paper": c.paper, "claim": c.claim, "anchor": c.anchor, "measured": number, "verdict": verdict})
        lines.append(f"| {c.paper} | {c.claim} | {c.anchor} | {number} | **{verdict}** |")
    gains = correlation_gains(run)
    if gains:
        lines += ["", "Correlation with rater disagreement, every map (gain vs the ensemble's best map of that level):",
                  "", "| method | map | pixel r | gain | image r | gain |", "|---|---|---|---|---|---|"]  # fmt: skip
        for g in gains:
            lines.append(f"| {g['method']} | {g['map']} | {_fmt(g['pixel_r'])} "
                         f"| {_pct(g['pixel_gain_vs_best_ensemble'])} | {_fmt(g['image_r'])} "
                         f"| {_pct(g['image_gain_vs_best_ensemble'])} |")  # fmt: skip
    curve = learning_curve(run)
    if curve:
        keys = [k for k in curve[0] if k in ("epoch", "loss", "val_dice")]
        step = max(1, len(curve) // 8)
        curve = [r for i, r in enumerate(curve) if i % step == 0 or i == len(curve) - 1]
        if keys:
            shown = [k for k in keys if k != "epoch"]
            points = [f"{r.get('epoch')}: " + "/".join(_fmt(_num(float(r[k])) if r[k] else None) for k in shown)
                      for r in curve]  # fmt: skip
            lines += ["", "Learning curve of the softmax baseline (first job), epoch: " + "/".join(shown) + " — "
                      + ", ".join(points)]  # fmt: skip
    data = {"dataset": name, "folder": str(run.folder), "seeds": seeds, "folds": folds, "epochs_run": epochs,
            "claims": claims,
            "correlations": gains, "aula_dice": aula_dice(run), "learning_curve": curve}  # fmt: skip
    return data, lines


def curve_report(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """Every epoch of the first softmax job of a comparison run only for its learning curve (e.g. LIDC with more
    epochs than the full comparison's budget allows), and where validation Dice stops rising: the first epoch
    whose val Dice is within ``0.01`` of the best of all later epochs (``plateau_epoch``: no later epoch improves
    on it by more than 0.01; a curve cut short by the budget may still rise after it)."""
    run = Run.load(folder)
    name = run.cfg.datasets[0].name
    rows = learning_curve(run)
    dice = [_num(float(r["val_dice"])) if r.get("val_dice") else None for r in rows]
    plateau = None
    for i, d in enumerate(dice):
        later = [x for x in dice[i:] if x is not None]
        if d is not None and later and max(later) - d <= 0.01:
            plateau = int(rows[i]["epoch"])
            break
    secs = [_num(float(r["seconds"])) if r.get("seconds") else None for r in rows]
    net = run.cfg.net
    lines = [f"## {name}: learning curve", "",
             f"`{run.folder}`: softmax, seed {run.jobs[0].seed if run.jobs else '–'}, net {net.name} {net.params}, "
             f"{len(rows)} epochs of {run.cfg.train.epochs} (budget "
             f"{run.cfg.budget_minutes if run.cfg.budget_minutes else '–'} min); no later epoch improves val Dice by "
             f"more than 0.01 after epoch **{plateau if plateau is not None else '–'}** (of the epochs run).", "",
             "| epoch | train loss | val Dice | minutes (cumulative) |", "|---|---|---|---|"]  # fmt: skip
    total = 0.0
    for r, d, t in zip(rows, dice, secs, strict=True):
        total += t or 0.0
        lines.append(f"| {r['epoch']} | {_fmt(_num(float(r['loss'])) if r.get('loss') else None)} | {_fmt(d)} "
                     f"| {total / 60:.1f} |")  # fmt: skip
    data = {"dataset": name, "kind": "learning_curve", "folder": str(run.folder), "curve": rows,
            "plateau_epoch": plateau}  # fmt: skip
    return data, lines


def kept_sections(out: Path, names: Sequence[str], text: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The sections of datasets ``names`` from the ``seed_claims.md`` already in ``out`` (its lines ``text``, empty
    when there is none) and its ``.json`` (their run folders are gone, so they cannot be recomputed), marked as
    kept."""
    if not names:
        return [], []
    md, js = out / "seed_claims.md", out / "seed_claims.json"
    if not text or not js.is_file():
        raise SystemExit(f"--keep needs {md} and {js} from an earlier run")
    stamp = next((ln for ln in text if ln.startswith("Machine:")), "")
    entries = json.loads(js.read_text())
    data, lines = [], []
    for name in names:
        entry = next((d for d in entries if d.get("dataset") == name and "kind" not in d), None)
        if entry is None or _section(text, f"## {name}") is None:
            raise SystemExit(f"--keep {name}: no such section in {md}")
        curve = next((d for d in entries if d.get("dataset") == name and d.get("kind") == "learning_curve"), None)
        for item, heading in ((curve, f"## {name}: learning curve"), (entry, f"## {name}")):
            body = _section(text, heading)
            if item is None or body is None:
                continue
            origin = item.get("kept_from", stamp)  # kept twice: the run that computed it
            body = [ln for ln in body if not ln.startswith("*Kept from an earlier run")]
            data.append({**item, "kept_from": origin})
            lines += [heading, "", f"*Kept from an earlier run of this script ({origin.rstrip('.')}): its "
                      "folder is not on this machine, so this section was not recomputed, and its verdicts follow "
                      "the rules of that version.*", *body]  # fmt: skip
    return data, lines


def _section(text: Sequence[str], heading: str) -> list[str] | None:
    """The lines after ``heading`` up to the next ``## `` heading, or ``None`` without that heading."""
    start = next((i for i, ln in enumerate(text) if ln == heading), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(text)) if text[i].startswith("## ")), len(text))
    return list(text[start + 1 : end])


def hand_written(text: Sequence[str]) -> list[str]:
    """The sections of an earlier ``seed_claims.md`` (its lines ``text``) whose heading says ``(written by
    hand...)``: the script does not write them, so every rewrite carries them over verbatim, at the end."""
    lines: list[str] = []
    for ln in text:
        if ln.startswith("## ") and "(written by hand" in ln:
            lines += [ln, *(_section(text, ln) or [])]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path, help="trustseg compare output folders")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "seed_claims")
    ap.add_argument("--figures", action="store_true", help="also build each comparison's HTML report (trustseg "
                    "report) in a temporary folder and keep its PNG figures in OUT/<dataset>/figures/")  # fmt: skip
    ap.add_argument("--keep", action="append", default=[], metavar="DATASET", help="keep this dataset's section "
                    "of the seed_claims.md/.json already in OUT (its run folder is gone); repeatable")  # fmt: skip
    ap.add_argument("--curve", action="append", default=[], type=Path, metavar="RUN", help="a comparison run for "
                    "its softmax learning curve only (every epoch, where val Dice flattens); repeatable")  # fmt: skip
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from machine import markdown

    args.out.mkdir(parents=True, exist_ok=True)
    earlier = args.out / "seed_claims.md"
    text = earlier.read_text().splitlines() if earlier.is_file() else []
    kept, kept_lines = kept_sections(args.out, args.keep, text)
    by_hand = hand_written(text)
    doc = ["# The seeds' claims on trustseg's comparisons (benchmarks/seed_claims.py)", "", markdown(), ""]
    out = []
    for folder in args.runs:
        run = Run.load(folder)
        data, lines = report(run)
        out.append(data)
        doc += lines + [""]
        keep = args.out / data["dataset"]
        keep.mkdir(exist_ok=True)
        for f in ("compare.yaml", "run_card.json", "table.json", "table.csv", "table.md"):
            if (folder / f).is_file():
                shutil.copy2(folder / f, keep / f)
        if args.figures:  # the page itself embeds the case gallery (~12 MB): only its figures are kept
            with tempfile.TemporaryDirectory() as tmp:
                build_compare_report(folder, Path(tmp) / "report.html")
                (keep / "figures").mkdir(exist_ok=True)
                for png in sorted((Path(tmp) / "report_figures").glob("*.png")):
                    shutil.copy2(png, keep / "figures" / png.name)
    for folder in args.curve:
        data, lines = curve_report(folder)
        out.append(data)
        doc += lines + [""]
    out += kept
    doc += kept_lines + [""] if kept_lines else []
    doc += by_hand
    (args.out / "seed_claims.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    (args.out / "seed_claims.md").write_text("\n".join(doc) + "\n")
    print(f"wrote {args.out / 'seed_claims.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
