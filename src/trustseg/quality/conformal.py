"""Split-conformal calibration of predicted quality: an interval, a review rule and an OOD p-value.

All three are calibrated on held-out cases (not used to fit the quality predictor) and their guarantees hold
for a new case *exchangeable* with the calibration cases (same distribution, no shift), marginally, in
expectation over calibration sets:

* :class:`ConformalInterval`: ``P(true ∈ [lo, hi]) ≥ confidence``. Residuals ``r_i = true_i − pred_i`` of the n
  calibration cases; ``[lo, hi] = [pred − q, pred + q]`` clipped to the target's range, ``q`` the
  ``⌈(n + 1)·confidence⌉``-th smallest ``|r_i|`` (crepes ``ConformalRegressor``).
* :class:`ReviewRule`: ``P(flagged | true quality fails) ≥ catch``. Class-conditional (Mondrian) conformal
  classification with the labels "fails"/"passes" (crepes ``ConformalClassifier`` with the label as bin). The
  nonconformity of a case for "fails" is its predicted quality ``s`` oriented so that higher is better (Dice;
  −HD95); the p-value of "fails" is ``p = (1 + #{failing calibration cases with s_i ≥ s}) / (n_f + 1)`` and a
  case is flagged when ``p > 1 − catch``, i.e. when ``s ≤ s_(k)``, the ``k = ⌈(n_f + 1)·catch⌉``-th smallest
  ``s`` among the ``n_f`` failing calibration cases (every case when ``k > n_f``).
* :class:`ConformalOOD`: ``P(p ≤ δ) ≤ δ`` for an in-distribution case. Mahalanobis distance to reference rows
  (standardised, Ledoit-Wolf shrunk covariance), ``p = (1 + #{calibration distances ≥ d}) / (n_cal + 1)``.

Example:
    >>> rng = np.random.default_rng(0)
    >>> true = rng.beta(6, 2, 200)
    >>> pred = np.clip(true + rng.normal(0, 0.05, 200), 0, 1)
    >>> ci = ConformalInterval().fit(pred[:100], true[:100])
    >>> lo, hi = ci.interval([0.8, 0.99], confidence=0.9)
    >>> print(lo.round(3), hi.round(3))
    [0.74 0.93] [0.86 1.  ]
    >>> rule = ReviewRule().fit(pred[:100], true[:100], review_below=0.7, catch=0.9)
    >>> rule.n_failures, round(rule.threshold, 3), rule.flag([0.6, 0.9]).tolist()
    (37, 0.737, [True, False])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from crepes import ConformalClassifier, ConformalRegressor
from sklearn.covariance import LedoitWolf

from trustseg.core.errors import ConfigError, DataError

FORMAT_VERSION = 1
_TOL = 1e-9  # ⌈(n + 1)·level⌉ computed robustly against the binary representation of level (0.9 * 10 = 9.000…02)


def _bad(source: Any, what: str, problem: str) -> ConfigError:
    return ConfigError(f"{source if source is not None else what}: {problem}")


def _vector(x: Any, what: str, n: int | None = None) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{what}: expected a flat array of finite numbers, got {type(x).__name__}") from None
    if a.ndim != 1 or not np.isfinite(a).all():
        raise DataError(f"{what}: expected a flat array of finite numbers, got shape {a.shape} (NaN/inf or nested)")
    if n is not None and len(a) != n:
        raise DataError(f"{what}: {len(a)} values, expected {n}")
    return a


def _level(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < 1:
        raise ConfigError(f"{what} must be a number in (0, 1), got {x!r}")
    return float(x)


def _order_index(n: int, level: float) -> int:
    """``k = ⌈(n + 1)·level⌉`` (1-based), the order statistic a split-conformal bound at ``level`` uses."""
    return math.ceil((n + 1) * level - _TOL)


def _header(d: Any, fmt: str, keys: tuple[str, ...], source: Any) -> None:
    if not isinstance(d, Mapping) or d.get("format") != fmt:
        raise _bad(source, fmt, f"not a {fmt} description (format {fmt!r} expected)")
    if d.get("format_version") != FORMAT_VERSION:
        raise _bad(source, fmt, f"format_version {d.get('format_version')!r} (this trustseg reads {FORMAT_VERSION})")
    missing = [k for k in keys if k not in d]
    if missing:
        raise _bad(source, fmt, f"missing keys {missing}")


def _stored(x: Any, what: str, fmt: str, source: Any, n: int | None = None) -> np.ndarray:
    try:
        return _vector(x, what, n)
    except (DataError, TypeError, ValueError) as e:
        raise _bad(source, fmt, str(e)) from None


class ConformalInterval:
    """Split-conformal interval of the true quality around a predicted one (crepes ``ConformalRegressor``).

    Guarantee: ``P(lo ≤ true ≤ hi) ≥ confidence`` for a new case exchangeable with the calibration cases,
    marginally and in expectation over calibration sets (and ``≤ confidence + 1/(n + 1)`` without ties).
    crepes picks the order statistic in floating point (``int((1 − confidence)(n + 1))``); where
    ``(1 − confidence)(n + 1)`` is an integer that can round one statistic higher: wider, still valid.

    Args:
        y_range: ``(low, high)`` the intervals are clipped to (``high`` None or inf: unbounded), e.g. ``(0, 1)``
            for Dice, ``(0, None)`` for HD95.

    Attributes:
        residuals: ``(n,)`` calibration residuals ``true − pred``.
        warning: Set by :meth:`interval` when the calibration set is too small for the confidence (the interval is
            then the whole ``y_range``), else None.
    """

    FORMAT = "trustseg.quality.conformal_interval"

    def __init__(self, y_range: tuple[float, float | None] = (0.0, 1.0)):
        lo, hi = float(y_range[0]), math.inf if y_range[1] is None else float(y_range[1])
        if math.isnan(lo) or math.isnan(hi) or not lo < hi:
            raise ConfigError(f"conformal interval: y_range must be (low, high) with low < high, got {y_range!r}")
        self.y_range = (lo, hi)
        self.residuals = np.zeros(0)
        self.warning: str | None = None
        self._cr: ConformalRegressor | None = None

    def fit(self, pred_cal: Any, true_cal: Any) -> ConformalInterval:
        """Calibrate on held-out cases: predicted and true quality, ``(n,)`` each."""
        pred = _vector(pred_cal, "conformal interval: predicted calibration quality")
        true = _vector(true_cal, "conformal interval: true calibration quality", len(pred))
        if len(pred) == 0:
            raise DataError("conformal interval: no calibration cases")
        self.residuals = true - pred
        self._cr = ConformalRegressor().fit(self.residuals)
        return self

    @property
    def n_cal(self) -> int:
        """Number of calibration cases."""
        return len(self.residuals)

    def interval(self, pred: Any, confidence: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)``, each ``(N,)``: the conformal interval of the true quality of each predicted case."""
        if self._cr is None:
            raise ConfigError("conformal interval: not calibrated (call fit or from_dict first)")
        confidence = _level(confidence, "conformal interval: confidence")
        pred = _vector(pred, "conformal interval: predicted quality")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lo, hi = self.y_range
            out = self._cr.predict_int(pred, confidence=confidence, y_min=lo, y_max=hi)
        self.warning = None
        if caught:
            need = math.ceil(confidence / (1 - confidence) - _TOL)
            self.warning = (
                f"{self.n_cal} calibration cases are too few for confidence {confidence:g} (about {need} needed): "
                f"the intervals are the whole range {self.y_range}"
            )
        return out[:, 0].copy(), out[:, 1].copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``format``, ``format_version``, ``y_range`` (an infinite bound as None), ``residuals``."""
        return {
            "format": self.FORMAT,
            "format_version": FORMAT_VERSION,
            "y_range": [None if math.isinf(v) else v for v in self.y_range],
            "residuals": self.residuals.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Any, source: Any = None) -> ConformalInterval:
        """Rebuild from :meth:`to_dict` output (the crepes object is refitted on the stored residuals).

        Raises:
            ConfigError: Foreign format, other version, missing keys, non-finite or empty residuals, bad range.
        """
        _header(d, cls.FORMAT, ("y_range", "residuals"), source)
        res = _stored(d["residuals"], "'residuals'", cls.FORMAT, source)
        if len(res) == 0:
            raise _bad(source, cls.FORMAT, "'residuals' is empty")
        yr = d["y_range"]
        if not isinstance(yr, list) or len(yr) != 2 or yr[0] is None:
            raise _bad(source, cls.FORMAT, f"'y_range' must be [low, high or null], got {yr!r}")
        try:
            ci = cls((yr[0], yr[1]))
        except (ConfigError, TypeError, ValueError) as e:
            raise _bad(source, cls.FORMAT, str(e)) from None
        ci.residuals = res
        ci._cr = ConformalRegressor().fit(res)
        return ci


class ReviewRule:
    """Flag cases for review so that at least ``catch`` of the failing cases are flagged (Mondrian conformal).

    A case *fails* when its true quality is worse than ``review_below``: Dice below it (``higher_is_better``), or
    HD95 above it (``higher_is_better=False``). Guarantee: ``P(flagged | fails) ≥ catch`` for a new case
    exchangeable with the calibration cases, in expectation over calibration sets (class-conditional split
    conformal over the ``n_f`` failing calibration cases, see the module docstring); the review rate is not
    controlled: the better the predictor, the fewer passing cases are flagged.

    crepes ``ConformalClassifier`` (bins = the true label) gives the p-values (:meth:`p_value`); the flag compares
    with the order statistic :attr:`threshold` instead of ``p > 1 − catch`` in floating point, which agree except
    where ``(1 − catch)(n_f + 1)`` is an integer and rounding decides.

    Attributes:
        threshold: Flag when predicted quality ≤ it (``higher_is_better``) or ≥ it (otherwise); ±inf when
            there are too few failing calibration cases (every case is flagged).
        n_failures: ``n_f``, failing calibration cases. n_cal: calibration cases.
        warning: Why every case is flagged (too few failures), else None.
    """

    FORMAT = "trustseg.quality.review_rule"

    def __init__(self) -> None:
        self.review_below = 0.7
        self.catch = 0.9
        self.higher_is_better = True
        self.target = "Dice"
        self.pred_cal = np.zeros(0)
        self.true_cal = np.zeros(0)
        self.threshold = math.inf
        self.warning: str | None = None
        self._cc: ConformalClassifier | None = None

    def fit(
        self,
        pred_cal: Any,
        true_cal: Any,
        review_below: float = 0.7,
        catch: float = 0.9,
        higher_is_better: bool = True,
        target: str = "Dice",
    ) -> ReviewRule:
        """Calibrate on held-out cases (``(n,)`` predicted and true quality); ``target`` names it in messages."""
        pred = _vector(pred_cal, "review rule: predicted calibration quality")
        true = _vector(true_cal, "review rule: true calibration quality", len(pred))
        if isinstance(review_below, bool) or not isinstance(review_below, (int, float)) or math.isnan(review_below):
            raise ConfigError(f"review rule: review_below must be a number, got {review_below!r}")
        self.catch = _level(catch, "review rule: catch")
        self.review_below, self.higher_is_better, self.target = float(review_below), bool(higher_is_better), target
        self.pred_cal, self.true_cal = pred, true
        sign = 1.0 if self.higher_is_better else -1.0
        score = sign * pred  # oriented predicted quality: higher = less like a failure
        fails = sign * true < sign * self.review_below
        # Mondrian: each calibration case's nonconformity for its own label ("fails": s, "passes": -s)
        self._cc = ConformalClassifier().fit(np.where(fails, score, -score), bins=fails.astype(np.int64))
        n_f = int(fails.sum())
        k = _order_index(n_f, self.catch)
        if k <= n_f:
            self.threshold, self.warning = sign * float(np.sort(score[fails])[k - 1]), None
        else:
            self.threshold = sign * math.inf
            need = math.ceil(self.catch / (1 - self.catch) - _TOL)
            self.warning = (
                f"only {n_f} of {len(pred)} calibration cases fail ({target} {'<' if sign > 0 else '>'} "
                f"{self.review_below:g}); at least {need} are needed for catch {self.catch:g}: every case is flagged"
            )
        return self

    @property
    def n_failures(self) -> int:
        """Number of failing calibration cases ``n_f``."""
        sign = 1.0 if self.higher_is_better else -1.0
        return int((sign * self.true_cal < sign * self.review_below).sum())

    @property
    def n_cal(self) -> int:
        """Number of calibration cases."""
        return len(self.true_cal)

    def _check(self, pred: Any) -> np.ndarray:
        if self._cc is None:
            raise ConfigError("review rule: not calibrated (call fit or from_dict first)")
        return _vector(pred, "review rule: predicted quality")

    def flag(self, pred: Any) -> np.ndarray:
        """``(N,)`` bool: review this case (predicted quality at or beyond :attr:`threshold`)."""
        pred = self._check(pred)
        return pred <= self.threshold if self.higher_is_better else pred >= self.threshold

    def p_value(self, pred: Any) -> np.ndarray:
        """``(N,)`` conformal p-value of the label "fails" (large: the case looks like the failing ones)."""
        pred = self._check(pred)
        score = pred if self.higher_is_better else -pred
        assert self._cc is not None
        return self._cc.predict_p(score, bins=np.ones(len(pred), dtype=np.int64), smoothing=False)

    @property
    def assumption(self) -> str:
        """The guarantee and its assumption, in one sentence for outputs."""
        worse = "below" if self.higher_is_better else "above"
        return (
            f"At least {self.catch:.0%} of the cases whose true {self.target} is {worse} {self.review_below:g} are "
            f"flagged, on average over calibration sets, if new cases are exchangeable with the {self.n_cal} "
            f"calibration cases ({self.n_failures} failing): same population, scanner and model, no shift."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``format``, ``format_version``, the settings and the calibration pairs."""
        return {
            "format": self.FORMAT,
            "format_version": FORMAT_VERSION,
            "review_below": self.review_below,
            "catch": self.catch,
            "higher_is_better": self.higher_is_better,
            "target": self.target,
            "pred_cal": self.pred_cal.tolist(),
            "true_cal": self.true_cal.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Any, source: Any = None) -> ReviewRule:
        """Rebuild from :meth:`to_dict` output by refitting on the stored calibration pairs.

        Raises:
            ConfigError: Foreign format, other version, missing keys, bad settings, mismatched or non-finite pairs.
        """
        keys = ("review_below", "catch", "higher_is_better", "target", "pred_cal", "true_cal")
        _header(d, cls.FORMAT, keys, source)
        pred = _stored(d["pred_cal"], "'pred_cal'", cls.FORMAT, source)
        true = _stored(d["true_cal"], "'true_cal'", cls.FORMAT, source, len(pred))
        if not isinstance(d["higher_is_better"], bool) or not isinstance(d["target"], str):
            raise _bad(source, cls.FORMAT, "'higher_is_better' must be true/false and 'target' a string")
        try:
            return cls().fit(pred, true, d["review_below"], d["catch"], d["higher_is_better"], d["target"])
        except (ConfigError, DataError) as e:
            raise _bad(source, cls.FORMAT, str(e)) from None


class ConformalOOD:
    """Conformal out-of-distribution p-value of a case's feature vector.

    Fit: standardise with the reference rows' mean and standard deviation (1 for constant features), estimate a
    Ledoit-Wolf shrunk covariance ``Σ`` of the standardised reference rows, and store the Mahalanobis distances
    ``d = √((z − μ)ᵀ Σ⁻¹ (z − μ))`` of the held-out calibration rows. p-value of a new row (crepes
    ``ConformalClassifier``, unsmoothed): ``p = (1 + #{calibration d_i ≥ d}) / (n_cal + 1)``; for a row
    exchangeable with the calibration rows ``P(p ≤ δ) ≤ δ``, so ``p ≤ 0.05`` flags out-of-distribution at a 5 %
    false-alarm rate.

    Attributes:
        mean, scale: ``(F,)`` standardisation. location: ``(F,)``, precision: ``(F, F)`` of the shrunk
            covariance. shrinkage: Ledoit-Wolf's coefficient. cal_distances: ``(n_cal,)``.
    """

    FORMAT = "trustseg.quality.conformal_ood"

    def __init__(self) -> None:
        self.mean = self.scale = self.location = self.cal_distances = np.zeros(0)
        self.precision = np.zeros((0, 0))
        self.shrinkage = 0.0
        self._cc: ConformalClassifier | None = None

    @staticmethod
    def _rows(X: Any, what: str, n_features: int | None = None) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or not np.isfinite(X).all():
            raise DataError(f"conformal OOD: {what} must be a finite (N, F) matrix, got shape {X.shape}")
        if n_features is not None and X.shape[1] != n_features:
            raise DataError(f"conformal OOD: {what} has {X.shape[1]} features, the reference {n_features}")
        return X

    def fit(self, X_ref: Any, X_cal: Any) -> ConformalOOD:
        """Fit on reference rows ``(N_ref, F)`` and calibrate on held-out rows ``(n_cal, F)`` of the same features."""
        ref = self._rows(X_ref, "reference rows")
        cal = self._rows(X_cal, "calibration rows", ref.shape[1])
        if len(ref) < 2 or len(cal) < 1:
            raise DataError(
                f"conformal OOD: need ≥ 2 reference rows and ≥ 1 calibration row, got {len(ref)}, {len(cal)}"
            )
        self.mean = ref.mean(axis=0)
        sd = ref.std(axis=0)
        self.scale = np.where(sd > 0, sd, 1.0)
        lw = LedoitWolf().fit((ref - self.mean) / self.scale)
        self.location, self.precision, self.shrinkage = lw.location_, lw.precision_, float(lw.shrinkage_)
        self.cal_distances = self.distance(cal, _fitting=True)
        self._cc = ConformalClassifier().fit(self.cal_distances)
        return self

    def distance(self, X: Any, _fitting: bool = False) -> np.ndarray:
        """``(N,)`` Mahalanobis distance of each row to the reference rows (in standardised units)."""
        if self._cc is None and not _fitting:
            raise ConfigError("conformal OOD: not fitted (call fit or from_dict first)")
        z = (self._rows(X, "rows", len(self.mean)) - self.mean) / self.scale - self.location
        return np.sqrt(np.maximum(np.einsum("nf,fg,ng->n", z, self.precision, z), 0.0))

    def p_value(self, X: Any) -> np.ndarray:
        """``(N,)`` conformal p-value of each row ``(N, F)`` being in distribution (small: out of distribution)."""
        d = self.distance(X)
        assert self._cc is not None
        return self._cc.predict_p(d, smoothing=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``format``, ``format_version``, ``mean``, ``scale``, ``location``, ``precision`` (rows),
        ``shrinkage``, ``cal_distances``."""
        return {
            "format": self.FORMAT,
            "format_version": FORMAT_VERSION,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "location": self.location.tolist(),
            "precision": self.precision.tolist(),
            "shrinkage": self.shrinkage,
            "cal_distances": self.cal_distances.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Any, source: Any = None) -> ConformalOOD:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ConfigError: Foreign format, other version, missing keys, arrays of inconsistent shapes, non-finite
                values, a non-positive scale, negative or no calibration distances.
        """
        keys = ("mean", "scale", "location", "precision", "shrinkage", "cal_distances")
        _header(d, cls.FORMAT, keys, source)
        ood = cls()
        ood.mean = _stored(d["mean"], "'mean'", cls.FORMAT, source)
        F = len(ood.mean)
        ood.scale = _stored(d["scale"], "'scale'", cls.FORMAT, source, F)
        ood.location = _stored(d["location"], "'location'", cls.FORMAT, source, F)
        try:
            P = np.asarray(d["precision"], dtype=np.float64)
        except (TypeError, ValueError):
            raise _bad(source, cls.FORMAT, "'precision' is not a matrix of numbers") from None
        if P.shape != (F, F) or not np.isfinite(P).all():
            raise _bad(source, cls.FORMAT, f"'precision' must be a finite {F} x {F} matrix, got shape {P.shape}")
        ood.precision = P
        cal = _stored(d["cal_distances"], "'cal_distances'", cls.FORMAT, source)
        if F == 0 or len(cal) == 0 or (ood.scale <= 0).any() or (cal < 0).any():
            raise _bad(source, cls.FORMAT, "need ≥ 1 feature, scale > 0 and ≥ 1 non-negative calibration distance")
        sh = d["shrinkage"]
        if isinstance(sh, bool) or not isinstance(sh, (int, float)) or not 0 <= sh <= 1:
            raise _bad(source, cls.FORMAT, f"'shrinkage' must be a number in [0, 1], got {sh!r}")
        ood.shrinkage, ood.cal_distances = float(sh), cal
        ood._cc = ConformalClassifier().fit(cal)
        return ood
