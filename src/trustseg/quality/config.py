"""The settings of a quality-control model (``trustseg qc fit``), a frozen dataclass written into the model
folder (``config.yaml``) and read back with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trustseg.core.errors import ConfigError
from trustseg.quality.registry import QC_PREDICTORS
from trustseg.quality.targets import QC_TARGETS

#: ``--predictor`` shorthands of the CLI -> registered predictor names.
PREDICTOR_SETS = {"tabular": ("gbr",), "cnn": ("cnn",), "both": ("gbr", "cnn")}
#: Where the cases with known quality come from (recorded in the model's manifest).
SOURCES = ("validation", "cross-validated")


@dataclass(frozen=True)
class QCConfig:
    """How a QC model is fitted.

    Attributes:
        predictors: Registered quality predictors (:data:`~trustseg.quality.registry.QC_PREDICTORS`); with
            several, the predicted quality is their mean.
        target: A registered target (:data:`~trustseg.quality.targets.QC_TARGETS`): ``dice`` or ``hd95``.
        calibration_fraction: Share of the cases (whole groups, e.g. patients) held out from fitting the
            predictors to calibrate the conformal interval, the review rule and the OOD score (split conformal:
            the guarantees need calibration cases the predictors never saw).
        review_threshold: The quality below (Dice) or above (HD95) which a case counts as failed; ``None``: the
            target's default (Dice 0.7, HD95 10 spacing units).
        catch: The share of failed cases the review flag must catch (in expectation, exchangeable cases).
        confidence: Coverage of the conformal interval of the predicted quality.
        ood_alpha: A case whose conformal OOD p-value (feature space) is below this is flagged out of
            distribution.
        source: ``validation`` (predictions of cases the segmentation model did not train on) or
            ``cross-validated`` (out-of-fold predictions over its training split).
        seed: Seed of the calibration split and of every predictor.
        cnn: Keyword arguments of the ``cnn`` predictor (epochs, size, width, ...).
        tabular: Keyword arguments of the tabular predictors.
    """

    predictors: tuple[str, ...] = ("gbr",)
    target: str = "dice"
    calibration_fraction: float = 0.3
    review_threshold: float | None = None
    catch: float = 0.9
    confidence: float = 0.9
    ood_alpha: float = 0.01
    source: str = "validation"
    seed: int = 0
    cnn: dict[str, Any] = field(default_factory=dict)
    tabular: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.predictors:
            raise ConfigError("a QC model needs at least one predictor")
        for name in self.predictors:
            QC_PREDICTORS.entry(name)  # unknown -> did-you-mean
        if len(set(self.predictors)) != len(self.predictors):
            raise ConfigError(f"predictors {list(self.predictors)} repeat a name")
        QC_TARGETS.entry(self.target)
        if not 0.05 <= self.calibration_fraction <= 0.8:
            raise ConfigError(f"calibration_fraction must be in [0.05, 0.8], got {self.calibration_fraction}")
        for name in ("catch", "confidence"):
            v = getattr(self, name)
            if not 0.5 <= v < 1:
                raise ConfigError(f"{name} must be in [0.5, 1), got {v}")
        if not 0 <= self.ood_alpha < 0.5:
            raise ConfigError(f"ood_alpha must be in [0, 0.5), got {self.ood_alpha}")
        if self.source not in SOURCES:
            raise ConfigError(f"source must be one of {SOURCES}, got {self.source!r}")

    @property
    def threshold(self) -> float:
        """The review threshold in effect."""
        if self.review_threshold is not None:
            return float(self.review_threshold)
        return float(QC_TARGETS.meta(self.target)["threshold"])

    @property
    def higher_is_better(self) -> bool:
        """Whether higher target values are better (Dice) or worse (HD95)."""
        return bool(QC_TARGETS.meta(self.target)["higher_is_better"])


def predictor_names(spec: str) -> tuple[str, ...]:
    """The predictors of a CLI ``--predictor`` value: ``tabular``, ``cnn``, ``both`` or comma-separated names."""
    if spec in PREDICTOR_SETS:
        return PREDICTOR_SETS[spec]
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    for n in names:
        QC_PREDICTORS.entry(n)
    return names
