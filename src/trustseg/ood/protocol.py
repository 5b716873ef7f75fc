"""OOD detection and noise-robustness protocols over a trained run and a dataset split.

* :func:`ood_detection`: for each distortion and severity, predict on the clean and the distorted copies of
  the same test images and report, for every image-level score (:mod:`trustseg.ood.scores`), the AUROC and
  the FPR at 95% TPR of separating distorted (positive) from clean (negative). The Dice of each set is
  reported too, so one sees how much the distortion hurt.
* :func:`noise_robustness`: SURE's protocol: x + N(μ, 0.3²) for μ ∈ {0.1, 0.3, 0.5, 0.7, 0.9}; per level the
  mean Dice, HD95, top-label ECE and UEO.

Images are predicted in memory (nothing is written per case); results are plain dicts for the evaluation JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

NOISE_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _predict_cases(method, models, images: Sequence[np.ndarray], patch_size=None, multiple=1):
    from trustseg.engine.predict import predict_image

    return [predict_image(method, models, img, patch_size=patch_size, multiple=multiple) for img in images]


def _scores_of(preds, layer_heads: bool) -> dict[str, Tensor]:
    from trustseg.ood.scores import image_scores

    per = [image_scores(p, layer_heads=layer_heads) for p in preds]
    keys = set.intersection(*(set(s) for s in per))
    return {k: torch.cat([s[k].reshape(-1) for s in per]) for k in sorted(keys)}


def _mean_fg_dice(preds, cases, num_classes: int) -> float:
    from trustseg.metrics.overlap import dice

    vals = []
    for p, c in zip(preds, cases):
        maj = torch.from_numpy(c.majority_vote(num_classes))
        d = dice(p.hard()[0], maj, num_classes, empty="nan", include_background=False)
        vals.append(torch.nanmean(d.float()))
    return float(torch.stack(vals).nanmean()) if vals else float("nan")


def ood_detection(
    run_dir,
    cases: Sequence[Any],
    num_classes: int,
    distortions: Sequence[str] = ("noise", "blur", "contrast", "bias", "ghosting"),
    severities: Sequence[int] = (1, 3, 5),
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """AUROC / FPR@95 of every image-level score, per distortion and severity.

    Args:
        run_dir: A trained run folder.
        cases: Test cases (:class:`~trustseg.data.case.Case`).
        num_classes: K.
        distortions: Names in ``DISTORTIONS``.
        severities: Levels 1..5.
        seed: Seed of the distortions' randomness.

    Returns:
        ``{"clean_dice": float, "results": [{"distortion", "severity", "dice", "scores": {name: {"auroc",
        "fpr95"}}}, ...], "best": {distortion: (score name, mean AUROC over severities)}}``
    """
    from trustseg.data.distortions import DISTORTIONS, distort
    from trustseg.engine.predict import load_run
    from trustseg.metrics.ood_detection import fpr_at_95_tpr, ood_auroc

    for name in distortions:
        DISTORTIONS.get(name)  # did-you-mean before any work
    for s in severities:
        if not 1 <= int(s) <= 5:
            raise ValueError(f"severity {s} is outside 1..5")
    method, models, info = load_run(run_dir)
    layer_heads = info.get("method") == "layer-ensemble"
    patch, mult = info.get("patch_size"), int(info.get("pad_multiple", 1))  # networks do not pad: we do
    clean_preds = _predict_cases(method, models, [c.image for c in cases], patch, mult)
    clean_scores = _scores_of(clean_preds, layer_heads)
    out: dict[str, Any] = {"clean_dice": _mean_fg_dice(clean_preds, cases, num_classes), "results": []}
    jobs = [(d, s) for d in distortions for s in severities]
    for d, s in _progress(jobs, progress, "OOD protocol"):
        imgs = [distort(c.image, d, int(s), seed=seed + i) for i, c in enumerate(cases)]
        preds = _predict_cases(method, models, imgs, patch, mult)
        scores = _scores_of(preds, layer_heads)
        res = {}
        for k in sorted(set(scores) & set(clean_scores)):
            res[k] = {
                "auroc": float(ood_auroc(clean_scores[k], scores[k])),
                "fpr95": float(fpr_at_95_tpr(clean_scores[k], scores[k])),
            }
        out["results"].append(
            {"distortion": d, "severity": int(s), "dice": _mean_fg_dice(preds, cases, num_classes), "scores": res}
        )
    best = {}
    for d in distortions:
        rows = [r for r in out["results"] if r["distortion"] == d]
        names = set.intersection(*(set(r["scores"]) for r in rows)) if rows else set()
        if names:
            mean_auc = {n: float(np.mean([r["scores"][n]["auroc"] for r in rows])) for n in names}
            top = max(mean_auc, key=mean_auc.get)
            best[d] = {"score": top, "mean_auroc": mean_auc[top]}
    out["best"] = best
    return out


def noise_robustness(
    run_dir,
    cases: Sequence[Any],
    num_classes: int,
    levels: Sequence[float] = NOISE_LEVELS,
    sigma: float = 0.3,
    seed: int = 0,
    measure: str = "entropy",
    progress: bool = False,
) -> list[dict[str, float]]:
    """SURE's noise-robustness protocol: per noise mean μ, mean Dice, HD95, top-label ECE and UEO.

    Dice and HD95 are of the foreground classes against the majority vote (HD95 in the surface convention,
    with the case spacing); ECE is top-label with 15 bins against the majority vote; UEO uses the ``measure``
    map (default predictive entropy, or vacuity for evidential runs) against the error mask.
    """
    from trustseg.data.distortions import add_gaussian_noise
    from trustseg.engine.predict import load_run
    from trustseg.measures.pixel import available_measures, uncertainty_map
    from trustseg.metrics.calibration import ece_toplabel
    from trustseg.metrics.surface import hd95
    from trustseg.metrics.uncertainty_quality import ueo

    method, models, info = load_run(run_dir)
    patch, mult = info.get("patch_size"), int(info.get("pad_multiple", 1))  # networks do not pad: we do
    rows = []
    for mu in _progress(list(levels), progress, "noise robustness"):
        imgs = [add_gaussian_noise(c.image, mu, sigma=sigma, seed=seed + i) for i, c in enumerate(cases)]
        preds = _predict_cases(method, models, imgs, patch, mult)
        dices, hds, eces, ueos = [], [], [], []
        for p, c in zip(preds, cases):
            maj = torch.from_numpy(c.majority_vote(num_classes))
            hard = p.hard()[0]
            dices.append(_mean_fg_dice([p], [c], num_classes))
            per_class = [
                float(hd95(hard == k, maj == k, spacing=c.spacing))
                for k in range(1, num_classes)
                if bool((maj == k).any()) and bool((hard == k).any())
            ]
            hds.append(float(np.mean(per_class)) if per_class else float("nan"))
            eces.append(float(ece_toplabel(p.mean()[0], maj)))
            name = "vacuity" if "vacuity" in available_measures(p) else measure
            err = hard != maj
            u = uncertainty_map(p, name)[0]
            ueos.append(float(ueo(u, err)[0]) if bool(err.any()) else float("nan"))
        rows.append(
            {
                "mu": float(mu),
                "dice": float(np.nanmean(dices)),
                "hd95": float(np.nanmean(hds)) if np.isfinite(hds).any() else float("nan"),
                "ece": float(np.nanmean(eces)),
                "ueo": float(np.nanmean(ueos)) if np.isfinite(ueos).any() else float("nan"),
            }
        )
    return rows


def _progress(items, enabled: bool, label: str):
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=label)
