"""OOD detection and noise robustness of a trained run (the Python API of earlier versions).

The protocols themselves are :mod:`trustseg.evaluation.robustness` and take any predictor; these wrappers load
a run folder as a :class:`~trustseg.inference.run_predictor.RunPredictor` (the same predictor ``trustseg predict``
uses, on the same device) and run them. ``trustseg evaluate --run RUN --distort ... --noise-robustness`` goes
through :func:`trustseg.evaluation.evaluate.evaluate_predictions`, which calls the same protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trustseg.evaluation.robustness import NOISE_LEVELS, NoiseConfig, OODConfig, noise_protocol
from trustseg.evaluation.robustness import ood_detection as _ood_detection
from trustseg.inference.predictor import Predictor, load_predictor

__all__ = ["NOISE_LEVELS", "noise_robustness", "ood_detection"]


def _predictor(model: str | Path | Predictor, device: str) -> Predictor:
    return load_predictor(model, device) if isinstance(model, (str, Path)) else model


def ood_detection(
    model: str | Path | Predictor,
    cases: Sequence[Any],
    num_classes: int | None = None,
    distortions: Sequence[str] = ("noise", "blur", "contrast", "bias", "ghosting"),
    severities: Sequence[int] = (1, 3, 5),
    seed: int = 0,
    progress: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """AUROC / FPR@95 of every image-level score, per distortion and severity (see
    :func:`trustseg.evaluation.robustness.ood_detection`).

    Args:
        model: A predictor, or a run folder / ``SCHEME:LOCATION`` spec.
        cases: Test cases (:class:`~trustseg.data.case.Case`).
        num_classes: Unused (the predictor knows its classes); kept for earlier callers.
        distortions: Names in ``DISTORTIONS``.
        severities: Levels 1..5.
        seed: Seed of the distortions' randomness.
        progress: Show a progress bar.
        device: Device when ``model`` is a spec.
    """
    cfg = OODConfig(tuple(distortions), tuple(int(s) for s in severities), seed)
    return _ood_detection(_predictor(model, device), cases, cfg, progress)


def noise_robustness(
    model: str | Path | Predictor,
    cases: Sequence[Any],
    num_classes: int | None = None,
    levels: Sequence[float] = NOISE_LEVELS,
    sigma: float = 0.3,
    seed: int = 0,
    measure: str = "entropy",
    progress: bool = False,
    device: str = "auto",
) -> list[dict[str, float]]:
    """SURE's noise-robustness protocol: per noise mean μ, mean Dice, HD95, top-label ECE and UEO (see
    :func:`trustseg.evaluation.robustness.noise_protocol`)."""
    cfg = NoiseConfig(tuple(float(mu) for mu in levels), sigma, seed, measure)
    return noise_protocol(_predictor(model, device), cases, cfg, progress)["levels"]
