"""Regressors of a per-case quality target (Dice in [0, 1], HD95 ≥ 0) from a table of per-case features.

:class:`TabularRegressor` fits with scikit-learn and predicts with numpy arrays only, so that a QC model folder
holds JSON (:meth:`TabularRegressor.to_dict`), never a pickle, and a loaded model predicts exactly what the fitted
one did:

* ``gbr``: :class:`sklearn.ensemble.GradientBoostingRegressor` (squared error). Prediction
  ``ŷ = c₀ + η · Σ_t f_t(x)``: ``c₀`` the initial constant (mean target), ``η`` the learning rate, ``f_t`` the
  value of the leaf of tree ``t`` that ``x`` falls into (``x[feature] ≤ threshold`` goes left). scikit-learn
  compares in float32 (``X`` is cast to float32 before the trees see it); the numpy traversal does the same, so
  the two agree to rounding (≤ 1e-12). On a table too small for the leaf size (fewer than ``2 · min_samples_leaf``
  rows in a subsample) the leaf size is lowered to the largest that still allows a split.
* ``ridge``: standardise each feature (``z = (x − mean) / scale``, scale 1 for constant features) and fit
  ``ŷ = β₀ + zᵀβ`` minimising ``‖y − β₀ − Zβ‖² + α‖β‖²``; ``α`` is chosen by :class:`sklearn.linear_model.RidgeCV`
  (efficient leave-one-out) from ``alphas`` (default ``10^-3 .. 10^3``, 13 values) unless a fixed ``alpha`` is given.

Every prediction is clipped to the target's range ``y_range`` (``(0, 1)`` for Dice, ``(0, inf)`` for HD95).

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2))
    >>> y = np.clip(0.8 - 0.1 * X[:, 0], 0.0, 1.0)
    >>> reg = TabularRegressor("ridge").fit(X, y, ["a", "b"])
    >>> again = TabularRegressor.from_dict(reg.to_dict())
    >>> bool(np.array_equal(again.predict(X), reg.predict(X)))
    True
    >>> max(reg.feature_importance(), key=reg.feature_importance().get)
    'a'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.preprocessing import StandardScaler

from trustseg.core.errors import ConfigError, DataError
from trustseg.quality.registry import register_qc_predictor

#: ``format`` and ``format_version`` written by :meth:`TabularRegressor.to_dict`.
FORMAT = "trustseg.quality.tabular"
FORMAT_VERSION = 1
KINDS = ("gbr", "ridge")
#: Defaults of the ``gbr`` kind, meant for 50..5000 cases: small learning rate with many shallow trees,
#: row subsampling and leaves of at least 5 cases against overfitting small tables.
GBR_DEFAULTS: dict[str, Any] = {
    "n_estimators": 300,
    "max_depth": 3,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "min_samples_leaf": 5,
}
#: The ``alpha`` grid RidgeCV chooses from (``ridge`` kind without a fixed ``alpha``).
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))
#: GradientBoostingRegressor parameters the numpy predictor cannot reproduce or that ``seed`` sets.
_GBR_FORBIDDEN = ("init", "random_state", "loss", "warm_start", "verbose")


def _bad(source: Any, problem: str) -> ConfigError:
    return ConfigError(f"{source if source is not None else 'tabular quality model'}: {problem}")


def _check_range(y_range: Sequence[float | None]) -> tuple[float, float]:
    """``(low, high)`` floats from a range whose infinite bounds may be None (as JSON stores them)."""
    try:
        lo_in, hi_in = y_range
        lo = -math.inf if lo_in is None else float(lo_in)
        hi = math.inf if hi_in is None else float(hi_in)
    except (TypeError, ValueError):
        raise ConfigError(f"y_range must be (low, high), got {y_range!r}") from None
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ConfigError(f"y_range must be (low, high) with low < high, got {y_range!r}")
    return lo, hi


def _matrix(X: Any, n_features: int | None, what: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"{what}: the feature matrix must be (N, F), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(f"{what}: the feature matrix has {X.shape[1]} columns, the model was fitted on {n_features}")
    if not np.isfinite(X).all():
        rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise DataError(f"{what}: the feature matrix has NaN or infinite values (rows {rows[:5].tolist()})")
    return X


class _Trees:
    """Boosted regression trees as padded arrays ``(T, nodes)``, predicted by a vectorised traversal."""

    def __init__(self, init: float, learning_rate: float, trees: list[dict[str, np.ndarray]]):
        self.init, self.learning_rate, self.trees = init, learning_rate, trees
        size = max(len(t["value"]) for t in trees)
        shape = (len(trees), size)
        self.left = np.full(shape, -1, dtype=np.int64)
        self.right = np.full(shape, -1, dtype=np.int64)
        self.feature = np.zeros(shape, dtype=np.int64)
        self.threshold = np.zeros(shape, dtype=np.float64)
        self.value = np.zeros(shape, dtype=np.float64)
        for i, t in enumerate(trees):
            n = len(t["value"])
            self.left[i, :n], self.right[i, :n] = t["children_left"], t["children_right"]
            self.feature[i, :n] = np.where(t["children_left"] < 0, 0, t["feature"])
            self.threshold[i, :n], self.value[i, :n] = t["threshold"], t["value"]

    def predict(self, X: np.ndarray) -> np.ndarray:
        Xc = X.astype(np.float32).astype(np.float64)  # scikit-learn's trees compare float32 features
        rows = np.arange(len(X))[None, :]
        tree = np.arange(len(self.trees))[:, None]
        node = np.zeros((len(self.trees), len(X)), dtype=np.int64)
        for _ in range(self.left.shape[1]):  # children have larger indices than parents: ≤ nodes steps
            left = self.left[tree, node]
            inner = left >= 0
            if not inner.any():
                break
            go_left = Xc[rows, self.feature[tree, node]] <= self.threshold[tree, node]
            node = np.where(inner, np.where(go_left, left, self.right[tree, node]), node)
        leaf = self.value[tree, node]
        out = np.full(len(X), self.init, dtype=np.float64)
        for t in range(len(self.trees)):  # scikit-learn's order of summation
            out += self.learning_rate * leaf[t]
        return out


class _Linear:
    """Standardised linear model ``β₀ + ((x − mean) / scale)ᵀ β``."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float, alpha: float):
        self.mean, self.scale, self.coef, self.intercept, self.alpha = mean, scale, coef, intercept, alpha

    def predict(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef + self.intercept


class TabularRegressor:
    """Regressor of a per-case quality target from a feature table (see the module docstring).

    Args:
        kind: ``"gbr"`` (gradient boosted trees) or ``"ridge"`` (standardised ridge regression).
        seed: ``random_state`` of the boosted trees (row subsampling); ridge is deterministic.
        **params: For ``gbr``, GradientBoostingRegressor parameters overriding :data:`GBR_DEFAULTS` (not ``init``,
            ``loss``, ``random_state``); for ``ridge``, ``alpha`` (a fixed penalty > 0) or ``alphas`` (the grid
            RidgeCV chooses from, default :data:`RIDGE_ALPHAS`).

    Attributes:
        names: The feature names, in column order (after :meth:`fit`).
        y_range: ``(low, high)`` the predictions are clipped to.
        estimator: The fitted scikit-learn estimator (None after :meth:`from_dict`).
    """

    def __init__(self, kind: str = "gbr", seed: int = 0, **params: Any):
        if kind not in KINDS:
            raise ConfigError(f"tabular quality regressor: kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.seed = kind, int(seed)
        self.params = self._check_params(kind, params)
        self.names: list[str] = []
        self.y_range: tuple[float, float] = (0.0, 1.0)
        self.estimator: Any = None
        self._model: _Trees | _Linear | None = None
        self._importance: dict[str, float] = {}

    @staticmethod
    def _check_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "gbr":
            known = set(GradientBoostingRegressor().get_params()) - set(_GBR_FORBIDDEN)
            unknown = sorted(set(params) - known)
            if unknown:
                raise ConfigError(
                    f"gbr quality regressor: unknown or fixed parameters {unknown}; known: {sorted(known)}"
                )
            return {**GBR_DEFAULTS, **params}
        unknown = sorted(set(params) - {"alpha", "alphas"})
        if unknown or len(params) > 1:
            raise ConfigError(
                f"ridge quality regressor: parameters are 'alpha' or 'alphas' (one), got {sorted(params)}"
            )
        try:
            if "alpha" in params:
                alpha = float(params["alpha"])
                if not alpha > 0 or math.isinf(alpha):
                    raise ValueError
                return {"alpha": alpha}
            alphas = [float(a) for a in params.get("alphas", RIDGE_ALPHAS)]
            if not alphas or not all(0 < a < math.inf for a in alphas):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"ridge quality regressor: alpha(s) must be finite numbers > 0, got {params}") from None
        return {"alphas": alphas}

    def fit(
        self, X: Any, y: Any, names: Sequence[str], y_range: Sequence[float | None] = (0.0, 1.0)
    ) -> TabularRegressor:
        """Fit on ``X (N, F)`` float64 features with column ``names`` and ``y (N,)`` targets inside ``y_range``.

        Raises:
            DataError: Non-finite features or targets, mismatched shapes, targets outside ``y_range``.
            ConfigError: Bad ``y_range`` or duplicate names.
        """
        names = [str(n) for n in names]
        if len(set(names)) != len(names):
            raise ConfigError(f"tabular quality regressor: duplicate feature names in {names}")
        X = _matrix(X, len(names), "quality regressor fit")
        y = np.asarray(y, dtype=np.float64)
        lo, hi = _check_range(y_range)
        if y.shape != (len(X),):
            raise DataError(f"quality regressor fit: {len(X)} feature rows but targets of shape {y.shape}")
        if len(X) < 2 or not np.isfinite(y).all():
            raise DataError(f"quality regressor fit: need ≥ 2 cases with finite targets, got {len(X)} rows")
        if y.min() < lo or y.max() > hi:
            raise DataError(f"quality regressor fit: targets in [{y.min():g}, {y.max():g}] outside y_range {y_range}")
        self.names, self.y_range = names, (lo, hi)
        if self.kind == "gbr":
            params = _small_table_params(self.params, len(X))
            gbr = GradientBoostingRegressor(random_state=self.seed, **params).fit(X, y)
            trees = [
                {
                    "children_left": est.tree_.children_left.astype(np.int64),
                    "children_right": est.tree_.children_right.astype(np.int64),
                    "feature": est.tree_.feature.astype(np.int64),
                    "threshold": est.tree_.threshold.astype(np.float64),
                    "value": est.tree_.value[:, 0, 0].astype(np.float64),
                }
                for est in gbr.estimators_[:, 0]
            ]
            self._model = _Trees(float(gbr.init_.constant_.ravel()[0]), float(gbr.learning_rate), trees)
            imp = gbr.feature_importances_
            self.estimator = gbr
        else:
            scaler = StandardScaler().fit(X)
            Z = scaler.transform(X)
            if "alpha" in self.params:
                ridge: Any = Ridge(alpha=self.params["alpha"]).fit(Z, y)
                alpha = self.params["alpha"]
            else:
                ridge = RidgeCV(alphas=self.params["alphas"]).fit(Z, y)
                alpha = float(ridge.alpha_)
            self._model = _Linear(
                scaler.mean_, scaler.scale_, ridge.coef_.astype(np.float64), float(ridge.intercept_), alpha
            )
            imp = np.abs(ridge.coef_)
            self.estimator = (scaler, ridge)
        self._importance = {n: float(v) for n, v in zip(names, imp)}
        return self

    def _fitted(self) -> _Trees | _Linear:
        if self._model is None:
            raise ConfigError(f"{self.kind} quality regressor: not fitted (call fit or from_dict first)")
        return self._model

    def predict(self, X: Any) -> np.ndarray:
        """Predicted target ``(N,)`` of ``X (N, F)`` (columns in :attr:`names` order), clipped to ``y_range``.

        Raises:
            DataError: Wrong number of columns, NaN or infinite features.
        """
        model = self._fitted()
        X = _matrix(X, len(self.names), f"{self.kind} quality regressor predict")
        return np.clip(model.predict(X), *self.y_range)

    def feature_importance(self) -> dict[str, float]:
        """Feature name -> importance: impurity importance (sums to 1) for ``gbr``, ``|β_j|`` (coefficient on the
        standardised feature, in target units per standard deviation) for ``ridge``."""
        self._fitted()
        return dict(self._importance)

    @property
    def alpha(self) -> float | None:
        """The ridge penalty used (chosen by RidgeCV or fixed); None for ``gbr``."""
        model = self._fitted()
        return model.alpha if isinstance(model, _Linear) else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description from which :meth:`from_dict` rebuilds the same predictions (no pickle).

        Keys: ``format``, ``format_version``, ``kind``, ``seed``, ``params``, ``names``, ``y_range`` (an infinite
        bound as None), ``importance``; ``gbr``: ``init``, ``learning_rate``, ``trees`` (per tree
        ``children_left``, ``children_right``, ``feature``, ``threshold``, ``value``: one entry per node, -1
        children at leaves); ``ridge``: ``mean``, ``scale``, ``coef``, ``intercept``, ``alpha``.
        """
        model = self._fitted()
        d: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "seed": self.seed,
            "params": dict(self.params),
            "names": list(self.names),
            "y_range": [None if math.isinf(v) else v for v in self.y_range],
            "importance": dict(self._importance),
        }
        if isinstance(model, _Trees):
            d["init"], d["learning_rate"] = model.init, model.learning_rate
            d["trees"] = [{k: v.tolist() for k, v in t.items()} for t in model.trees]
        else:
            d.update(mean=model.mean.tolist(), scale=model.scale.tolist(), coef=model.coef.tolist())
            d.update(intercept=model.intercept, alpha=model.alpha)
        return d

    @classmethod
    def from_dict(cls, d: Any, source: Any = None) -> TabularRegressor:
        """Rebuild a regressor from :meth:`to_dict` output; ``source`` (e.g. the JSON file) names it in errors.

        Raises:
            ConfigError: Not a trustseg tabular model, another format version, missing keys, or inconsistent
                arrays (lengths, child or feature indices out of range, non-finite numbers).
        """
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise _bad(source, f"not a trustseg tabular quality model (format {FORMAT!r} expected)")
        if d.get("format_version") != FORMAT_VERSION:
            raise _bad(source, f"format_version {d.get('format_version')!r} (this trustseg reads {FORMAT_VERSION})")
        kind = d.get("kind")
        if kind not in KINDS:
            raise _bad(source, f"kind must be one of {KINDS}, got {kind!r}")
        fixed = getattr(cls, "KIND", None)
        if fixed is not None and fixed != kind:
            raise _bad(source, f"a {kind!r} model cannot be loaded as {fixed!r}")
        need = ["seed", "params", "names", "y_range", "importance"]
        need += ["init", "learning_rate", "trees"] if kind == "gbr" else ["mean", "scale", "coef", "intercept", "alpha"]
        missing = [k for k in need if k not in d]
        if missing:
            raise _bad(source, f"missing keys {missing}")
        names = d["names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise _bad(source, "'names' must be a list of distinct strings")
        try:
            reg = _KIND_CLASS[kind](seed=d["seed"], **d["params"])
            reg.y_range = _check_range(d["y_range"])
        except (ConfigError, TypeError, ValueError) as e:
            raise _bad(source, f"bad parameters: {e}") from None
        reg.names = list(names)
        F = len(names)
        imp = d["importance"]
        if not isinstance(imp, Mapping) or set(imp) != set(names):
            raise _bad(source, "'importance' must map every feature name to a number")
        reg._importance = {n: float(imp[n]) for n in names}
        if kind == "gbr":
            reg._model = _load_trees(d, F, source)
        else:
            reg._model = _load_linear(d, F, source)
        return reg


def _small_table_params(params: Mapping[str, Any], n: int) -> dict[str, Any]:
    """``params`` with an integer ``min_samples_leaf`` lowered to ``max(1, n_bag // 2)`` when it forbids every split.

    A tree's split needs ``min_samples_leaf`` rows on each side, counted among the ``n_bag`` rows of its
    subsample (scikit-learn's ``max(1, int(subsample · n))``; rows left out get weight 0 and do not count). With
    the defaults (leaf 5, subsample 0.8) fewer than 13 cases made every tree a single leaf, and the model
    predicted the mean Dice for every case without saying so.
    """
    leaf, sub = params.get("min_samples_leaf", 1), float(params.get("subsample", 1.0))
    n_bag = max(1, int(sub * n)) if sub < 1.0 else n
    if isinstance(leaf, bool) or not isinstance(leaf, int) or 2 * leaf <= n_bag:
        return dict(params)
    return {**params, "min_samples_leaf": max(1, n_bag // 2)}


def _array(x: Any, dtype: type, what: str, source: Any) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise _bad(source, f"{what} is not a list of numbers") from None
    if a.ndim != 1 or not np.isfinite(a).all():
        raise _bad(source, f"{what} must be a flat list of finite numbers (NaN or nested values found)")
    if dtype is np.int64:
        if not np.array_equal(a, np.round(a)):
            raise _bad(source, f"{what} must hold integers")
        return a.astype(np.int64)
    return a


def _number(x: Any, what: str, source: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise _bad(source, f"{what} must be a finite number, got {x!r}")
    return float(x)


def _load_trees(d: Mapping[str, Any], F: int, source: Any) -> _Trees:
    init = _number(d["init"], "'init'", source)
    lr = _number(d["learning_rate"], "'learning_rate'", source)
    if not isinstance(d["trees"], list) or not d["trees"]:
        raise _bad(source, "'trees' must be a non-empty list")
    keys = ("children_left", "children_right", "feature", "threshold", "value")
    trees = []
    for i, t in enumerate(d["trees"]):
        where = f"tree {i}"
        if not isinstance(t, Mapping) or any(k not in t for k in keys):
            raise _bad(source, f"{where} must have the keys {list(keys)}")
        a = {k: _array(t[k], np.int64 if k in keys[:3] else np.float64, f"{where} {k!r}", source) for k in keys}
        n = len(a["value"])
        if n == 0 or any(len(v) != n for v in a.values()):
            raise _bad(source, f"{where}: arrays of different lengths {[len(v) for v in a.values()]}")
        left, right, idx = a["children_left"], a["children_right"], np.arange(n)
        leaf = left < 0
        if not np.array_equal(leaf, right < 0) or (left[leaf] != -1).any() or (right[leaf] != -1).any():
            raise _bad(source, f"{where}: a node must have two children or none (-1)")
        if (left[~leaf] >= n).any() or (right[~leaf] >= n).any():
            raise _bad(source, f"{where}: child index out of range (nodes 0..{n - 1})")
        if (left[~leaf] <= idx[~leaf]).any() or (right[~leaf] <= idx[~leaf]).any():
            raise _bad(source, f"{where}: a child index must be larger than its parent's")
        if ((a["feature"][~leaf] < 0) | (a["feature"][~leaf] >= F)).any():
            raise _bad(source, f"{where}: feature index out of range (the model has {F} features)")
        trees.append(a)
    return _Trees(init, lr, trees)


def _load_linear(d: Mapping[str, Any], F: int, source: Any) -> _Linear:
    mean, scale, coef = (_array(d[k], np.float64, repr(k), source) for k in ("mean", "scale", "coef"))
    if not len(mean) == len(scale) == len(coef) == F:
        raise _bad(source, f"'mean', 'scale', 'coef' must each have {F} entries (one per feature)")
    if (scale <= 0).any():
        raise _bad(source, "'scale' must be > 0")
    return _Linear(
        mean, scale, coef, _number(d["intercept"], "'intercept'", source), _number(d["alpha"], "'alpha'", source)
    )


@register_qc_predictor("gbr", input="features", file="tabular.json")
class GBRQualityRegressor(TabularRegressor):
    """Gradient boosted trees on the per-case features (``TabularRegressor("gbr")``)."""

    KIND = "gbr"

    def __init__(self, seed: int = 0, **params: Any):
        super().__init__(self.KIND, seed, **params)


@register_qc_predictor("ridge", input="features", file="tabular.json")
class RidgeQualityRegressor(TabularRegressor):
    """Standardised ridge regression on the per-case features (``TabularRegressor("ridge")``)."""

    KIND = "ridge"

    def __init__(self, seed: int = 0, **params: Any):
        super().__init__(self.KIND, seed, **params)


_KIND_CLASS: dict[str, type[TabularRegressor]] = {"gbr": GBRQualityRegressor, "ridge": RidgeQualityRegressor}
