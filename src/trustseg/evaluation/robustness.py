"""OOD detection and noise robustness: predict again on distorted copies of the evaluated cases.

Both protocols take any :class:`~trustseg.inference.predictor.Predictor` (anything with ``info`` and
``predict(image, spacing)``), so they predict exactly as ``trustseg predict`` does: same preprocessing, padding
and device. Their clean-image numbers are therefore those of ``trustseg evaluate`` on the same cases.

* :func:`ood_detection`: for each distortion and severity, predict the distorted copies of the cases and report,
  for every image-level score (:func:`trustseg.measures.image.image_scores`, higher = more suspicious), the AUROC
  and the FPR at 95% TPR of separating distorted (positive) from clean (negative), and the Dice of each set.
* :func:`noise_protocol`: SURE's protocol, x + N(μ, 0.3²) for μ ∈ {0.1, 0.3, 0.5, 0.7, 0.9}: per level the mean
  Dice, HD95, top-label ECE and UEO (``levels``), and SURE's noise interpretability metrics between the lowest and
  the highest level (``interpretability``): UCC_d and UR_d (boundary distance vs uncertainty increase), UR_μ and
  UCC_μ (the fraction of near-boundary pixels whose uncertainty rises with the noise, and the official code's
  2-point rank correlation of the same).

Distortion severities and noise levels are in normalised intensity units: the distortions get the predictor's
``info.intensity_scale`` (raw units per normalised unit, per channel: the training std for z-score) as their
``scale`` (:func:`trustseg.data.distortions.distort`, :func:`~trustseg.data.distortions.add_gaussian_noise`), so
x + N(μ, 0.3²) means the same thing for a CT in Hounsfield units and a PNG in 0..255.

Conventions: Dice is the mean over foreground classes of the Dice against the majority vote, a class empty in
both maps left out (the headline ``dice_majority`` of the evaluation); HD95 in the surface convention with the
case spacing, skipped when either mask is empty; ECE top-label, 15 bins, against the majority vote; UEO of the
``measure`` map (predictive entropy by default, vacuity where the prediction has a Dirichlet) against the error
mask (prediction ≠ majority vote).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from trustseg.core.errors import ConfigError
from trustseg.core.predictive import Predictive
from trustseg.data.distortions import DISTORTIONS, add_gaussian_noise, distort
from trustseg.data.targets import majority_vote
from trustseg.measures.image import image_scores
from trustseg.measures.pixel import available_measures, uncertainty_map
from trustseg.metrics.calibration import ece_toplabel
from trustseg.metrics.ood_detection import fpr_at_95_tpr, ood_auroc
from trustseg.metrics.overlap import dice
from trustseg.metrics.reduction import nanmean
from trustseg.metrics.surface import hd95
from trustseg.metrics.uncertainty_quality import ucc_distance, ucc_mu, ueo, ur_distance, ur_mu

NOISE_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)


class _Case(Protocol):
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...]


class _Cases(Protocol):
    """Any sized iterable of cases (a list, a lazy :class:`~trustseg.data.dataset.Dataset` view)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[_Case]: ...


@dataclass(frozen=True)
class OODConfig:
    """The OOD protocol's settings.

    Attributes:
        distortions: Names in :data:`trustseg.data.distortions.DISTORTIONS`.
        severities: Levels 1..5.
        seed: Seed of the distortions' randomness (case ``i`` uses ``seed + i``).
    """

    distortions: tuple[str, ...] = ("noise", "blur", "contrast", "bias", "ghosting")
    severities: tuple[int, ...] = (1, 3, 5)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in self.distortions:
            DISTORTIONS.get(name)  # "did you mean" before any work
        for s in self.severities:
            if not 1 <= int(s) <= 5:
                raise ConfigError(f"severity {s} is outside 1..5")


@dataclass(frozen=True)
class NoiseConfig:
    """SURE's noise protocol settings.

    Attributes:
        levels: Noise means μ (normalised units), lowest and highest used for the interpretability metrics.
        sigma: Noise std (normalised units).
        seed: Seed of the noise (case ``i`` uses ``seed + i``).
        measure: The uncertainty map scored (vacuity replaces it where the prediction has a Dirichlet).
        max_distance: Near-boundary band of the interpretability metrics (pixels of ``d``).
    """

    levels: tuple[float, ...] = NOISE_LEVELS
    sigma: float = 0.3
    seed: int = 0
    measure: str = "entropy"
    max_distance: float = 4.0

    def __post_init__(self) -> None:
        if len(self.levels) < 1 or not all(np.isfinite(self.levels)):
            raise ConfigError(f"noise levels must be finite numbers, got {self.levels}")
        if not (np.isfinite(self.sigma) and self.sigma >= 0):
            raise ConfigError(f"noise sigma must be finite and >= 0, got {self.sigma}")


def _scale(predictor) -> np.ndarray | None:
    s = getattr(predictor.info, "intensity_scale", None)
    return None if s is None else np.asarray(s, dtype=np.float64)


def _majority(case: _Case, num_classes: int) -> Tensor:
    return torch.as_tensor(majority_vote(torch.as_tensor(case.labels), num_classes)).long()


def foreground_dice(pred: Predictive, maj: Tensor, num_classes: int) -> float:
    """Mean over foreground classes of the Dice of ``pred``'s hard mask vs ``maj`` (classes empty in both skipped)."""
    d = dice(pred.hard()[0], maj, num_classes, empty="nan", include_background=False)
    return float(nanmean(d.double()))


def _score_set(predictor, cases: _Cases, k: int, heads: bool, distortion=None) -> tuple[dict, float]:
    """Predict every case (distorted by ``distortion(i, image)`` if given) one at a time, keeping only its
    image-level scores and its Dice: ``({score: (N,)}, mean Dice)``. Memory holds one prediction at a time."""
    per: list[dict[str, Tensor]] = []
    dices: list[float] = []
    for i, case in enumerate(cases):
        image = case.image if distortion is None else distortion(i, case.image)
        pred = predictor.predict(image, case.spacing)
        per.append({name: v.reshape(-1) for name, v in image_scores(pred, layer_heads=heads).items()})
        dices.append(foreground_dice(pred, _majority(case, k), k))
    keys = set.intersection(*(set(s) for s in per))
    scores = {name: torch.cat([s[name] for s in per]) for name in sorted(keys)}
    return scores, _mean(dices)


def ood_detection(predictor, cases: _Cases, cfg: OODConfig | None = None, progress: bool = False):
    """AUROC / FPR@95 of every image-level score, per distortion and severity.

    Args:
        predictor: Any :class:`~trustseg.inference.predictor.Predictor`.
        cases: The evaluated cases (``image``, ``labels`` ``(R, *spatial)``, ``spacing``); any sequence, e.g. a lazy
            :class:`~trustseg.data.dataset.Dataset` view: each case is read and predicted one at a time, once per
            distortion and severity, and only its scores are kept.
        cfg: Distortions, severities and seed.
        progress: Show a progress bar.

    Returns:
        ``{"clean_dice": float, "results": [{"distortion", "severity", "dice", "scores": {name: {"auroc",
        "fpr95"}}}, ...], "best": {distortion: {"score", "mean_auroc", "values"}}}``, where ``values`` holds the
        best score's per-case values, ``{"clean": [N], "<severity>": [N], ...}`` (the report's distributions).
    """
    cfg = cfg or OODConfig()
    if not cases:
        raise ConfigError("the OOD protocol needs at least one case")
    k = predictor.info.num_classes
    heads = bool(predictor.info.samples_are_heads)
    scale = _scale(predictor)
    clean_scores, clean_dice = _score_set(predictor, cases, k, heads)
    out: dict[str, Any] = {"clean_dice": clean_dice, "results": []}
    jobs = [(d, int(s)) for d in cfg.distortions for s in cfg.severities]
    kept: dict[tuple[str, int], tuple[dict[str, Tensor], float]] = {}
    for d, s in _progress(jobs, progress, "OOD protocol"):
        scores, dice = kept[d, s] = _score_set(
            predictor, cases, k, heads, lambda i, image, d=d, s=s: distort(image, d, s, seed=cfg.seed + i, scale=scale)
        )
        res = {
            name: {
                "auroc": float(ood_auroc(clean_scores[name], scores[name])),
                "fpr95": float(fpr_at_95_tpr(clean_scores[name], scores[name])),
            }
            for name in sorted(set(scores) & set(clean_scores))
        }
        out["results"].append({"distortion": d, "severity": s, "dice": dice, "scores": res})
    out["best"] = _best(out["results"], cfg.distortions)
    for d, b in out["best"].items():  # the per-case values of the best score only (N floats per severity)
        b["values"] = {"clean": clean_scores[b["score"]].tolist()}
        b["values"].update({str(s): kept[d, s][0][b["score"]].tolist() for s in map(int, cfg.severities)})
    return out


def _best(results: list[dict[str, Any]], distortions: Sequence[str]) -> dict[str, Any]:
    best = {}
    for d in distortions:
        rows = [r for r in results if r["distortion"] == d]
        names = set.intersection(*(set(r["scores"]) for r in rows)) if rows else set()
        if names:
            mean_auc = {n: float(np.mean([r["scores"][n]["auroc"] for r in rows])) for n in names}
            top = max(sorted(mean_auc), key=mean_auc.__getitem__)
            best[d] = {"score": top, "mean_auroc": mean_auc[top]}
    return best


def _level_metrics(pred: Predictive, case: _Case, maj: Tensor, k: int, measure: str) -> tuple[dict, Tensor]:
    """Dice, HD95, ECE, UEO of one prediction, and its uncertainty map."""
    hard = pred.hard()[0]
    per_class = [
        float(hd95(hard == c, maj == c, spacing=case.spacing))
        for c in range(1, k)
        if bool((maj == c).any()) and bool((hard == c).any())
    ]
    name = "vacuity" if "vacuity" in available_measures(pred) else measure
    u = uncertainty_map(pred, name)[0].double()
    err = hard != maj
    row = {
        "dice": foreground_dice(pred, maj, k),
        "hd95": float(np.mean(per_class)) if per_class else float("nan"),
        "ece": float(ece_toplabel(pred.mean()[0], maj)),
        "ueo": float(ueo(u, err)[0]) if bool(err.any()) else float("nan"),
    }
    return row, u


def noise_protocol(predictor, cases: _Cases, cfg: NoiseConfig | None = None, progress: bool = False):
    """SURE's noise protocol: robustness per noise level and the noise interpretability metrics.

    Cases are the outer loop (one case's maps at every level are held at a time, so memory does not grow with the
    number of cases).

    Returns:
        ``{"levels": [{"mu", "dice", "hd95", "ece", "ueo"}, ...], "interpretability": {"mu_low", "mu_high",
        "ucc_distance", "ur_distance", "ur_mu", "ucc_mu", "measure"}}``, every value the mean over cases (NaN
        skipped).
    """
    cfg = cfg or NoiseConfig()
    if not cases:
        raise ConfigError("the noise protocol needs at least one case")
    k = predictor.info.num_classes
    scale = _scale(predictor)
    levels = [float(mu) for mu in cfg.levels]
    lo_i, hi_i = int(np.argmin(levels)), int(np.argmax(levels))
    per_level: list[list[dict]] = [[] for _ in levels]
    interp: dict[str, list[float]] = {"ucc_distance": [], "ur_distance": [], "ur_mu": [], "ucc_mu": []}
    for i, case in enumerate(_progress(list(cases), progress, "noise robustness")):
        maj = _majority(case, k)
        maps = []
        for j, mu in enumerate(levels):
            img = add_gaussian_noise(case.image, mu, sigma=cfg.sigma, seed=cfg.seed + i, scale=scale)
            row, u = _level_metrics(predictor.predict(img, case.spacing), case, maj, k, cfg.measure)
            per_level[j].append(row)
            maps.append(u)
        lo, hi = maps[lo_i], maps[hi_i]
        kw = {"spacing": case.spacing}
        interp["ucc_distance"].append(float(ucc_distance(lo, hi, maj, max_distance=cfg.max_distance, **kw)))
        interp["ur_distance"].append(float(ur_distance(lo, hi, maj, max_distance=cfg.max_distance, **kw)))
        interp["ur_mu"].append(float(ur_mu(lo, hi, maj, max_distance=cfg.max_distance, **kw)))
        interp["ucc_mu"].append(float(ucc_mu(lo, hi, maj, max_distance=cfg.max_distance, **kw)))
    rows = [
        {"mu": mu, **{key: _mean([r[key] for r in per_level[j]]) for key in ("dice", "hd95", "ece", "ueo")}}
        for j, mu in enumerate(levels)
    ]
    summary: dict[str, Any] = {"mu_low": levels[lo_i], "mu_high": levels[hi_i], "measure": cfg.measure}
    summary.update({key: _mean(v) for key, v in interp.items()})
    return {"levels": rows, "interpretability": summary}


def noise_robustness(predictor, cases: _Cases, cfg: NoiseConfig | None = None, progress: bool = False):
    """The per-level rows of :func:`noise_protocol` (``[{"mu", "dice", "hd95", "ece", "ueo"}, ...]``)."""
    return noise_protocol(predictor, cases, cfg, progress)["levels"]


def _mean(values: Sequence[float]) -> float:
    return float(nanmean(torch.tensor(values, dtype=torch.float64))) if values else float("nan")


def _progress(items, enabled: bool, label: str):
    if not enabled:
        yield from items
        return
    from rich.progress import track  # optional display dependency, imported only when shown

    yield from track(items, description=label)
