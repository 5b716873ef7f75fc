"""A quality-control model: predictors of a case's quality (Dice or HD95) from its prediction, a conformal
interval, a conformal review rule and an out-of-distribution score, saved as one folder without pickle.

Fitting (:meth:`QCModel.fit`) on cases whose true quality is known:

1. every case's features (:func:`~trustseg.quality.features.case_features`);
2. a seeded split of the cases, whole groups (patients) at a time, into a *fit* part and a *calibration* part
   (``QCConfig.calibration_fraction``);
3. each predictor (:data:`~trustseg.quality.registry.QC_PREDICTORS`) fitted on the fit part; with several, the
   predicted quality is their mean;
4. on the calibration part, which no predictor saw: the split-conformal interval
   (:class:`~trustseg.quality.conformal.ConformalInterval`), the review rule
   (:class:`~trustseg.quality.conformal.ReviewRule`: flag so that at least ``catch`` of the failed cases are
   flagged) and the OOD p-value of the features (:class:`~trustseg.quality.conformal.ConformalOOD`, reference =
   the fit part); the held-out scores of the predictor (R², r, ρ, MAE, failure AUROC) go into the manifest.

The predictors are not refitted on all cases afterwards: the guarantees hold for the predictors as calibrated.

The folder (:meth:`QCModel.save`)::

    qc_model.json           manifest: format, trustseg version, config, feature names, target, cases used
                            (fit / calibration ids, source), calibration pairs, held-out scores
    config.yaml             the QCConfig
    predictors/<name>/      each predictor's own files (JSON, or a weights-only checkpoint + JSON)
    aggregate.json          the aggregate uncertainty score (:class:`~trustseg.quality.features.AggregateScore`)
    conformal.json          the interval, review rule and OOD state
    features.npy            the (N, F) features of the fit and calibration cases (embedding plots), float64

Nothing in it is unpickled: JSON is parsed, ``.npy`` read with ``allow_pickle=False`` and checkpoints with
``weights_only=True``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trustseg import __version__
from trustseg.core.atomic import atomic_write_json, make_dirs
from trustseg.core.config import from_dict, save_config, to_dict
from trustseg.core.errors import ConfigError, DataError
from trustseg.metrics.quality_control import quality_prediction_report
from trustseg.quality.cases import QCCase, truths
from trustseg.quality.config import QCConfig
from trustseg.quality.conformal import ConformalInterval, ConformalOOD, ReviewRule
from trustseg.quality.features import AggregateScore, FeatureConfig, case_features, feature_table
from trustseg.quality.inputs import CaseInput
from trustseg.quality.registry import QC_PREDICTORS
from trustseg.quality.targets import QC_TARGETS

FORMAT = "trustseg-qc-model"
FORMAT_VERSION = 1
MANIFEST = "qc_model.json"
CONFIG = "config.yaml"
FEATURES = "features.npy"


def calibration_split(cases: Sequence[QCCase], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the fit and calibration cases: whole groups (a case without a group is its own), shuffled with
    ``seed``, added to the calibration part until it holds at least ``fraction`` of the cases.

    Raises:
        DataError: fewer than 10 cases or only one group (nothing to hold out).
    """
    keys = [c.group if c.group is not None else f"case:{c.inp.case_id}" for c in cases]
    groups = sorted(set(keys))
    if len(cases) < 10 or len(groups) < 2:
        raise DataError(
            f"a QC model needs at least 10 cases in 2 groups to fit and calibrate, got {len(cases)} in {len(groups)}"
        )
    order = np.random.default_rng(seed).permutation(len(groups))
    cal_groups: set[str] = set()
    want = fraction * len(cases)
    count = {g: keys.count(g) for g in groups}
    for i in order:
        if sum(count[g] for g in cal_groups) >= want or len(cal_groups) == len(groups) - 1:
            break
        cal_groups.add(groups[i])
    cal = [i for i, k in enumerate(keys) if k in cal_groups]
    fit = [i for i, k in enumerate(keys) if k not in cal_groups]
    return fit, cal


class QCModel:
    """A fitted quality-control model (build with :meth:`fit` or :meth:`load`)."""

    def __init__(self, config: QCConfig, feature_config: FeatureConfig | None = None):
        self.config = config
        self.feature_config = feature_config or FeatureConfig()
        self.feature_names: list[str] = []
        self.predictors: dict[str, Any] = {}
        self.aggregate = AggregateScore()
        self.interval = ConformalInterval()
        self.ood = ConformalOOD()
        self.calibration: dict[str, list[float]] = {"predicted": [], "true": []}
        self.manifest: dict[str, Any] = {}
        self.features: np.ndarray | None = None

    # -- fitting ------------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        cases: Sequence[QCCase],
        config: QCConfig,
        provenance: dict[str, Any] | None = None,
        feature_config: FeatureConfig | None = None,
        progress: bool = False,
    ) -> QCModel:
        """Fit on cases with known quality (see the module docstring for the procedure).

        Args:
            cases: The cases, each with ``truth`` (and ``inp.image`` when a CNN predictor uses images).
            config: The settings.
            provenance: What the manifest records about where the cases come from (prediction folder, dataset,
                run, method).
            feature_config: The features (default :class:`FeatureConfig`).
            progress: Show the CNN's training progress.

        Raises:
            DataError: too few cases, cases without truth, or features that are not finite.
        """
        model = cls(config, feature_config)
        y = truths(cases)
        rows = [case_features(c.inp, model.feature_config) for c in cases]
        model.feature_names, x = feature_table(rows)
        fit_i, cal_i = calibration_split(cases, config.calibration_fraction, config.seed)
        y_range = tuple(QC_TARGETS.meta(config.target)["y_range"])
        for name in config.predictors:
            fit_cases = [cases[i] for i in fit_i]
            model.predictors[name] = model._fit_predictor(name, fit_cases, x[fit_i], y[fit_i], y_range, progress)
        model.aggregate.fit([rows[i] for i in fit_i])
        pred_cal = model._predict_matrix(x[cal_i], [cases[i].inp for i in cal_i])
        model.calibration = {"predicted": pred_cal.tolist(), "true": y[cal_i].tolist()}
        model.interval = ConformalInterval(y_range=y_range).fit(pred_cal, y[cal_i])
        model.ood.fit(x[fit_i], x[cal_i])
        model.features = x
        rule = model.review_rule()
        model.manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "trustseg_version": __version__,
            "target": config.target,
            "higher_is_better": config.higher_is_better,
            "predictors": {n: QC_PREDICTORS.meta(n)["input"] for n in config.predictors},
            "feature_names": model.feature_names,
            "training": {
                **(provenance or {}),
                "source": config.source,
                "fit_cases": [cases[i].inp.case_id for i in fit_i],
                "calibration_cases": [cases[i].inp.case_id for i in cal_i],
                "truth": y.tolist(),
            },
            "calibration": model.calibration,
            "review": {"threshold": config.threshold, "catch": config.catch, "conformal_threshold": rule.threshold},
            "held_out": held_out_scores(pred_cal, y[cal_i], config),
        }
        return model

    def _fit_predictor(
        self, name: str, cases: Sequence[QCCase], x: np.ndarray, y: np.ndarray, y_range, progress: bool
    ) -> Any:
        cls, meta, cfg = QC_PREDICTORS.get(name), QC_PREDICTORS.meta(name), self.config
        if meta["input"] == "features":
            return cls(seed=cfg.seed, **cfg.tabular).fit(x, y, self.feature_names, y_range=y_range)
        maps = sorted({m for c in cases for m in c.inp.maps})
        net = cls(map_names=maps, seed=cfg.seed, target=cfg.target, **cfg.cnn)
        return net.fit([c.inp for c in cases], y, progress=progress)

    # -- predicting ---------------------------------------------------------------------------------------------
    def _predict_matrix(self, x: np.ndarray, inputs: Sequence[CaseInput]) -> np.ndarray:
        """The predicted quality ``(N,)``: the mean over the predictors."""
        preds = [self._predict_one(name, x, inputs) for name in self.config.predictors]
        return np.mean(np.stack(preds), 0)

    def _predict_one(self, name: str, x: np.ndarray, inputs: Sequence[CaseInput]) -> np.ndarray:
        p = self.predictors[name]
        if QC_PREDICTORS.meta(name)["input"] == "features":
            return np.asarray(p.predict(x), dtype=np.float64)
        return np.asarray(p.predict(list(inputs)), dtype=np.float64)

    def feature_rows(self, inputs: Sequence[CaseInput]) -> tuple[list[dict[str, float]], np.ndarray]:
        """The cases' feature rows and their ``(N, F)`` matrix in the model's column order."""
        rows = [case_features(inp, self.feature_config) for inp in inputs]
        return rows, feature_table(rows, self.feature_names)[1]

    def review_rule(self, threshold: float | None = None, catch: float | None = None) -> ReviewRule:
        """The conformal review rule from the stored calibration pairs, at the model's or other settings."""
        cfg = self.config
        return ReviewRule().fit(
            np.asarray(self.calibration["predicted"]),
            np.asarray(self.calibration["true"]),
            review_below=cfg.threshold if threshold is None else threshold,
            catch=cfg.catch if catch is None else catch,
            higher_is_better=cfg.higher_is_better,
            target=cfg.target,
        )

    def predict(
        self,
        inputs: Sequence[CaseInput],
        threshold: float | None = None,
        catch: float | None = None,
        confidence: float | None = None,
        features: tuple[list[dict[str, float]], np.ndarray] | None = None,
    ) -> list[dict[str, Any]]:
        """One row per case: ``case``, ``target``, ``predicted_<target>``, ``<target>_low``/``_high``, the
        aggregate ``uncertainty_score``, ``ood_p``, ``review`` and ``reason`` (and ``predicted_<target>_<name>``
        per predictor when there are several).

        Args:
            inputs: The cases (with images when a CNN predictor uses them).
            threshold, catch, confidence: Override the model's review threshold, catch rate and interval
                coverage (the rule is recalibrated from the stored calibration pairs).
            features: The cases' :meth:`feature_rows`, when the caller has them already.
        """
        if not inputs:
            return []
        rows, x = self.feature_rows(inputs) if features is None else features
        cfg = self.config
        per = {n: self._predict_one(n, x, inputs) for n in cfg.predictors}
        pred = np.mean(np.stack(list(per.values())), 0)
        conf = cfg.confidence if confidence is None else confidence
        lo, hi = self.interval.interval(pred, confidence=conf)
        rule = self.review_rule(threshold, catch)
        flags = rule.flag(pred)
        ood_p = self.ood.p_value(x)
        agg = self.aggregate.score(rows)
        if len(per) == 1:
            per = {}
        t, thr = cfg.target, cfg.threshold if threshold is None else threshold
        out = []
        for i, inp in enumerate(inputs):
            reasons = []
            if flags[i] and rule.warning:  # too few failed calibration cases: the rule flags every case
                reasons.append(rule.warning)
            elif flags[i]:
                side = "≤" if cfg.higher_is_better else "≥"
                what = "below" if cfg.higher_is_better else "above"
                reasons.append(
                    f"predicted {t} {pred[i]:.3f} {side} {rule.threshold:.3f}, the conformal threshold that catches "
                    f"{cfg.catch if catch is None else catch:.0%} of cases with {t} {what} {thr:g}"
                )
            if ood_p[i] < cfg.ood_alpha:
                reasons.append(f"out of distribution (feature p-value {ood_p[i]:.3g} < {cfg.ood_alpha:g})")
            row: dict[str, Any] = {
                "case": inp.case_id,
                "target": t,
                f"predicted_{t}": float(pred[i]),
                f"{t}_low": float(lo[i]),
                f"{t}_high": float(hi[i]),
                "uncertainty_score": float(agg[i]),
                "ood_p": float(ood_p[i]),
                "review": bool(reasons),
                "reason": "; ".join(reasons),
            }
            row.update({f"predicted_{t}_{n}": float(v[i]) for n, v in per.items()})
            out.append(row)
        return out

    def statement(self, threshold: float | None = None, catch: float | None = None) -> dict[str, Any]:
        """The settings and the stated guarantee of :meth:`predict`'s output (written beside ``qc.csv``)."""
        cfg, rule = self.config, self.review_rule(threshold, catch)
        return {
            "target": cfg.target,
            "higher_is_better": cfg.higher_is_better,
            "review_threshold": cfg.threshold if threshold is None else threshold,
            "catch": float(cfg.catch if catch is None else catch),
            "conformal_threshold": rule.threshold,
            "calibration_failures": rule.n_failures,
            "confidence": cfg.confidence,
            "ood_alpha": cfg.ood_alpha,
            "assumption": rule.assumption,
            "warning": rule.warning,
        }

    # -- saving -------------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the model folder (layout in the module docstring) into ``folder`` (which the caller made)."""
        folder = Path(folder)
        for name, p in self.predictors.items():
            sub = folder / "predictors" / name
            make_dirs(sub)
            if QC_PREDICTORS.meta(name)["input"] == "features":
                atomic_write_json(sub / QC_PREDICTORS.meta(name)["file"], p.to_dict())
            else:
                p.save(sub)
        atomic_write_json(folder / "aggregate.json", self.aggregate.to_dict())
        atomic_write_json(folder / "conformal.json", {"interval": self.interval.to_dict(), "ood": self.ood.to_dict()})
        if self.features is not None:
            np.save(folder / FEATURES, self.features, allow_pickle=False)
        save_config(self.config, folder / CONFIG)
        manifest = {**self.manifest, "config": to_dict(self.config), "features_config": to_dict(self.feature_config)}
        atomic_write_json(folder / MANIFEST, manifest)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> QCModel:
        """Read a model folder written by :meth:`save`.

        Raises:
            ConfigError: not a QC model folder, another format or version, or a malformed file (named).
        """
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise ConfigError(f"{folder} is not a QC model folder (no {MANIFEST}; make one with `trustseg qc fit`)")
        manifest = _read_json(path)
        if manifest.get("format") != FORMAT:
            raise ConfigError(f"{path}: not a trustseg QC model (format {manifest.get('format')!r})")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"{path}: QC model format version {manifest.get('format_version')!r}; this trustseg reads "
                f"{FORMAT_VERSION} (fit the model again)"
            )
        try:
            config = from_dict(QCConfig, manifest["config"], where=str(path))
            fcfg = from_dict(FeatureConfig, manifest.get("features_config", {}), where=str(path))
            model = cls(config, fcfg)
            model.manifest = manifest
            model.feature_names = list(manifest["feature_names"])
            model.calibration = {k: list(map(float, manifest["calibration"][k])) for k in ("predicted", "true")}
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from None
        for name in config.predictors:
            sub, meta = folder / "predictors" / name, QC_PREDICTORS.meta(name)
            pcls = QC_PREDICTORS.get(name)
            if meta["input"] == "features":
                model.predictors[name] = pcls.from_dict(_read_json(sub / meta["file"]), source=sub / meta["file"])
            else:
                model.predictors[name] = pcls.load(sub)
        model.aggregate = AggregateScore.from_dict(_read_json(folder / "aggregate.json"))
        conformal = _read_json(folder / "conformal.json")
        try:
            model.interval = ConformalInterval.from_dict(conformal["interval"])
            model.ood = ConformalOOD.from_dict(conformal["ood"])
        except KeyError as e:
            raise ConfigError(f"{folder / 'conformal.json'}: missing {e}") from None
        feats = folder / FEATURES
        if feats.is_file():
            try:
                model.features = np.load(feats, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ConfigError(f"{feats}: cannot read ({e})") from None
        return model

    @property
    def uses_images(self) -> bool:
        """Whether a predictor needs each case's image."""
        return any(
            QC_PREDICTORS.meta(n)["input"] == "image" and getattr(self.predictors.get(n), "use_image", True)
            for n in self.config.predictors
        )


def held_out_scores(
    pred: np.ndarray,
    true: np.ndarray,
    cfg: QCConfig,
    threshold: float | None = None,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
    review: np.ndarray | None = None,
) -> dict[str, Any]:
    """R², r, ρ, MAE and failure AUROC of predicted vs true quality (with the interval's coverage and the review
    flag's rates when given), on cases the predictors did not see.

    For a lower-is-better target (HD95) the values are negated (the interval ``[lo, hi]`` becomes ``[−hi, −lo]``),
    so that a failure (true HD95 above the threshold) is a case below ``−threshold``; R², r, ρ, MAE and the
    coverage are unchanged by the negation.
    """
    thr = cfg.threshold if threshold is None else threshold
    if cfg.higher_is_better:
        return quality_prediction_report(pred, true, lo=lo, hi=hi, review=review, threshold=thr)
    neg_lo, neg_hi = (None, None) if lo is None or hi is None else (-hi, -lo)
    return quality_prediction_report(-pred, -true, lo=neg_lo, hi=neg_hi, review=review, threshold=-thr)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing from the QC model folder")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
