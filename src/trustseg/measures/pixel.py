"""Per-pixel uncertainty measures of a :class:`~trustseg.core.predictive.Predictive` (methods.md §1).

Every measure is a pure function ``fn(pred) -> Tensor (B, *spatial)`` registered in :data:`MEASURES` with its
metadata (:func:`~trustseg.measures.registry.register_measure`): the orientation (the last column below) and what
the prediction must have (``M > 1`` or ``alpha``, ``alpha``, an extras key), from which
:func:`~trustseg.measures.registry.available_measures` and :func:`uncertainty_map` are derived.
Notation: ``M`` samples ``p^(m)`` of shape ``(B, K, *spatial)``, their mean ``p̄``, ``H[p] = −Σ_k p_k ln p_k``.

==================  ===========================================================  ======================
name                formula                                                      higher means
==================  ===========================================================  ======================
confidence          ``max_k p̄_k``                                                 more certain
entropy             ``H[p̄]`` (total / predictive)                                 more uncertain
expected_entropy    ``(1/M) Σ_m H[p^(m)]`` (aleatoric)                            more uncertain
mi                  ``H[p̄] − expected_entropy`` (epistemic)                       more uncertain
epkl                ``−Σ_k p̄_k · mean_m ln p_k^(m) − expected_entropy``            more uncertain
variance            ``Σ_k Var_m p_k^(m)`` (population variance over M)           more uncertain
vacuity             ``K / S``, ``S = Σ_k α_k`` (evidential only)                  more uncertain
predicted_variance  ``extras["rater_variance"][:, 0]`` (EDUE)                     more uncertain
==================  ===========================================================  ======================

Evidential predictions (``alpha`` given and ``M == 1``) use the Dirichlet closed forms, with ``p̄ = α / S``:

* ``expected_entropy = E_Dir[H(p)] = ψ(S + 1) − Σ_k (α_k / S) ψ(α_k + 1)``
* ``mi = H[p̄] − E_Dir[H(p)]``
* ``epkl = E_{p,q ~ Dir}[KL(p ‖ q)] = −Σ_k p̄_k E[ln q_k] − E[H] = (K − 1) / S``
  (with ``E[ln q_k] = ψ(α_k) − ψ(S)``; Malinin et al. 2019)
* ``variance = Σ_k Var_Dir[p_k] = (1 − Σ_k p̄_k²) / (S + 1)``

When ``M > 1`` the sample formulas are used even if ``alpha`` is present (e.g. TTA over an evidential model).
Logs are safe: ``0 · ln 0 = 0`` in every entropy; ``ln p`` inside EPKL is taken of ``max(p, LOG_EPS)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from trustseg.core.errors import DataError
from trustseg.core.predictive import Predictive
from trustseg.data import targets
from trustseg.measures.registry import (
    MEASURES,
    as_uncertainty,
    available_measures,
    register_measure,
    require,
)

__all__ = [
    "LOG_EPS",
    "available_measures",  # re-exported from measures.registry, derived from the measures' metadata
    "compute_measures",
    "confidence",
    "entropy",
    "entropy_of",
    "epkl",
    "expected_entropy",
    "mutual_information",
    "predicted_variance",
    "rater_disagreement",
    "safe_log",
    "uncertainty_map",
    "vacuity",
    "variance",
    "xlogx",
]

#: Floor applied to probabilities inside ``ln p`` where ``p`` is not multiplied by itself (EPKL).
LOG_EPS = 1e-12

#: The requirement of the measures that need a distribution over p: M > 1 samples or a Dirichlet.
_DISTRIBUTION = ("samples|alpha",)


# -- safe elementary functions -----------------------------------------------------------------------------
def xlogx(p: Tensor) -> Tensor:
    """``p ln p`` elementwise with ``0 ln 0 = 0`` (and 0 for negative rounding noise)."""
    pos = p > 0
    return torch.where(pos, p * torch.log(torch.where(pos, p, torch.ones_like(p))), torch.zeros_like(p))


def entropy_of(p: Tensor, dim: int) -> Tensor:
    """Shannon entropy ``−Σ p ln p`` (nats) along ``dim``."""
    return -xlogx(p).sum(dim)


def safe_log(p: Tensor) -> Tensor:
    """``ln max(p, LOG_EPS)``."""
    return torch.log(p.clamp_min(LOG_EPS))


def _probs(pred: Predictive) -> Tensor:
    p = pred.probs
    return p if p.is_floating_point() else p.float()


def _alpha(pred: Predictive) -> Tensor:
    a = pred.alpha
    assert a is not None  # measures that read alpha require it (registry "requires")
    return a if a.is_floating_point() else a.float()


def _use_dirichlet(pred: Predictive) -> bool:
    return pred.alpha is not None and pred.num_samples == 1


# -- measures ----------------------------------------------------------------------------------------------
@register_measure(
    "confidence",
    doc="max_k p̄_k (higher = more certain; uncertainty_map gives 1 − confidence)",
    orientation="certainty",
)
def confidence(pred: Predictive) -> Tensor:
    """Top-label confidence ``max_k p̄_k``.

    Args:
        pred: Any prediction.

    Returns:
        ``(B, *spatial)`` in ``[1/K, 1]``.
    """
    return _probs(pred).mean(0).amax(1)


@register_measure("entropy", doc="predictive (total) entropy H[p̄] in nats")
def entropy(pred: Predictive) -> Tensor:
    """Predictive (total) entropy ``H[p̄] = −Σ_k p̄_k ln p̄_k``.

    Returns:
        ``(B, *spatial)`` in ``[0, ln K]``.
    """
    return entropy_of(_probs(pred).mean(0), dim=1)


def _dirichlet_expected_entropy(alpha: Tensor) -> Tensor:
    s = alpha.sum(1)
    return torch.digamma(s + 1) - ((alpha / s.unsqueeze(1)) * torch.digamma(alpha + 1)).sum(1)


@register_measure("expected_entropy", doc="aleatoric: (1/M) Σ_m H[p^(m)] or E_Dir[H(p)]", requires=_DISTRIBUTION)
def expected_entropy(pred: Predictive) -> Tensor:
    """Expected entropy (aleatoric part) ``(1/M) Σ_m H[p^(m)]``.

    For a Dirichlet (``alpha``, ``M == 1``): ``ψ(S + 1) − Σ_k (α_k / S) ψ(α_k + 1)``.

    Returns:
        ``(B, *spatial)``.

    Raises:
        ConfigError: ``M == 1`` and no ``alpha``.
    """
    require(pred, "expected_entropy")
    if _use_dirichlet(pred):
        return _dirichlet_expected_entropy(_alpha(pred))
    return entropy_of(_probs(pred), dim=2).mean(0)


@register_measure("mi", doc="epistemic: mutual information H[p̄] − expected entropy", requires=_DISTRIBUTION)
def mutual_information(pred: Predictive) -> Tensor:
    """Mutual information (epistemic part) ``H[p̄] − expected_entropy``, clamped at 0 against rounding.

    Returns:
        ``(B, *spatial)`` in ``[0, ln min(K, M)]`` for samples.
    """
    require(pred, "mi")
    return (entropy(pred) - expected_entropy(pred)).clamp_min(0)


@register_measure(
    "epkl",
    doc="expected pairwise KL: −Σ_k p̄_k mean_m ln p_k^(m) − expected entropy; (K−1)/S",
    requires=_DISTRIBUTION,
)
def epkl(pred: Predictive) -> Tensor:
    """Expected pairwise KL divergence ``(1/M²) Σ_{m,n} KL(p^(m) ‖ p^(n))``.

    Computed as ``−Σ_k p̄_k · mean_m ln p_k^(m) − expected_entropy`` (``ln`` floored at ``LOG_EPS``), which is
    ``≥ mi`` by Jensen. For a Dirichlet the closed form ``(K − 1) / S``.

    Returns:
        ``(B, *spatial)``.
    """
    require(pred, "epkl")
    if _use_dirichlet(pred):
        alpha = _alpha(pred)
        return (alpha.shape[1] - 1) / alpha.sum(1)
    p = _probs(pred)
    cross = -(p.mean(0) * safe_log(p).mean(0)).sum(1)
    return (cross - entropy_of(p, dim=2).mean(0)).clamp_min(0)


@register_measure(
    "variance",
    doc="Σ_k Var_m p_k^(m) (population variance); Σ_k Var_Dir[p_k] for a Dirichlet",
    requires=_DISTRIBUTION,
)
def variance(pred: Predictive) -> Tensor:
    """Total sample variance ``Σ_k Var_m p_k^(m)`` (population variance, divisor ``M``).

    For a Dirichlet: ``Σ_k α_k (S − α_k) / (S² (S + 1)) = (1 − Σ_k p̄_k²) / (S + 1)``.

    Returns:
        ``(B, *spatial)`` in ``[0, 1]``.
    """
    require(pred, "variance")
    if _use_dirichlet(pred):
        alpha = _alpha(pred)
        s = alpha.sum(1)
        pbar = alpha / s.unsqueeze(1)
        return (1 - (pbar**2).sum(1)) / (s + 1)
    return _probs(pred).var(0, correction=0).sum(1)


@register_measure("vacuity", doc="evidential vacuity K / S (needs alpha)", requires=("alpha",))
def vacuity(pred: Predictive) -> Tensor:
    """Evidential vacuity ``K / S`` with ``S = Σ_k α_k``; 1 when there is no evidence (``α = 1``).

    Raises:
        ConfigError: the prediction has no ``alpha``.
    """
    require(pred, "vacuity")
    alpha = _alpha(pred)
    return alpha.shape[1] / alpha.sum(1)


@register_measure(
    "predicted_variance",
    doc="EDUE's predicted rater variance extras['rater_variance'][:, 0]",
    requires=("extras:rater_variance",),
)
def predicted_variance(pred: Predictive) -> Tensor:
    """The method's own predicted rater-disagreement map ``extras["rater_variance"][:, 0]``.

    Raises:
        ConfigError: the prediction has no ``"rater_variance"`` extra.
    """
    require(pred, "predicted_variance")
    v = pred.extras["rater_variance"][:, 0]
    return v if v.is_floating_point() else v.float()


# -- helpers -----------------------------------------------------------------------------------------------
def uncertainty_map(pred: Predictive, name: str) -> Tensor:
    """Measure ``name`` oriented so that higher always means more uncertain.

    Certainty measures (``orientation="certainty"``: ``confidence``) are returned as ``1 − value``, all others
    unchanged (:func:`~trustseg.measures.registry.as_uncertainty`).

    Returns:
        ``(B, *spatial)``.
    """
    return as_uncertainty(name, MEASURES.get(name)(pred))


def compute_measures(
    pred: Predictive, names: str | Sequence[str] | None = None, as_uncertainty: bool = False
) -> dict[str, Tensor]:
    """Compute several measures at once.

    Args:
        pred: The prediction.
        names: Measure names (list or comma-separated string); ``None`` = :func:`available_measures`.
        as_uncertainty: Orient every map as "higher = more uncertain" (see :func:`uncertainty_map`).

    Returns:
        name -> ``(B, *spatial)`` map, in the order asked.
    """
    if names is None:
        names = available_measures(pred)
    elif isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    fn = uncertainty_map if as_uncertainty else (lambda p, n: MEASURES.get(n)(p))
    return {n: fn(pred, n) for n in names}


def rater_disagreement(
    labels: Tensor, num_classes: int, spatial_dims: int | None = None, classes: Sequence[int] | None = None
) -> Tensor:
    """Per-pixel rater disagreement ``Σ_k ȳ_k (1 − ȳ_k)`` with ``ȳ = mean_r onehot(y^(r))`` (the target).

    :func:`trustseg.data.targets.rater_disagreement` with the rater axis found from ``spatial_dims``. For
    ``K = 2`` the sum over both classes is ``2 ȳ_1 (1 − ȳ_1)``; pass ``classes=[1]`` for the binary convention
    ``ȳ(1 − ȳ)``. The image-level disagreement is the sum of this map over pixels.

    Args:
        labels: ``(R, *spatial)`` or ``(B, R, *spatial)`` integer class maps.
        num_classes: K.
        spatial_dims: 2 or 3; needed only when ``labels`` has 4 dimensions (``(R, D, H, W)`` vs ``(B, R, H, W)``).
        classes: Restrict the sum to these classes (default all ``K``).

    Returns:
        ``(*spatial)`` or ``(B, *spatial)`` float32 (float64 if ``labels`` is float64).

    Raises:
        DataError: ambiguous shape, non-integer values or labels outside ``[0, K)``.
    """
    if spatial_dims is None:
        if labels.dim() == 3:
            spatial_dims = 2
        elif labels.dim() == 5:
            spatial_dims = 3
        else:
            raise DataError(
                f"rater labels of shape {tuple(labels.shape)} are ambiguous: pass spatial_dims=2 for (B, R, H, W) "
                "or spatial_dims=3 for (R, D, H, W)"
            )
    if labels.dim() not in (spatial_dims + 1, spatial_dims + 2):
        raise DataError(f"rater labels must be (R, *spatial) or (B, R, *spatial), got {tuple(labels.shape)}")
    return targets.rater_disagreement(labels, num_classes, rater_dim=labels.dim() - spatial_dims - 1, classes=classes)
