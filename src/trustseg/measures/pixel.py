"""Per-pixel uncertainty measures of a :class:`~trustseg.core.predictive.Predictive` (methods.md §1).

Every measure is a pure function ``fn(pred) -> Tensor (B, *spatial)`` registered in :data:`MEASURES`.
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

from trustseg.core.errors import ConfigError, DataError
from trustseg.core.predictive import Predictive
from trustseg.measures.registry import MEASURES

#: Floor applied to probabilities inside ``ln p`` where ``p`` is not multiplied by itself (EPKL).
LOG_EPS = 1e-12

#: Measures where a higher value means MORE certain; :func:`uncertainty_map` flips them (``1 − value``).
CERTAINTY_MEASURES = frozenset({"confidence"})

#: The measures this module defines, in display order.
PIXEL_MEASURES = (
    "confidence",
    "entropy",
    "expected_entropy",
    "mi",
    "epkl",
    "variance",
    "vacuity",
    "predicted_variance",
)


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
    return a if a.is_floating_point() else a.float()


def _use_dirichlet(pred: Predictive) -> bool:
    return pred.alpha is not None and pred.num_samples == 1


def _require_distribution(pred: Predictive, name: str) -> None:
    if pred.num_samples < 2 and pred.alpha is None:
        raise ConfigError(
            f"measure {name!r} needs M >= 2 samples or a Dirichlet (alpha); this prediction has M = 1 and no alpha"
        )


# -- measures ----------------------------------------------------------------------------------------------
@MEASURES.register("confidence", doc="max_k p̄_k (higher = more certain; uncertainty_map gives 1 − confidence)")
def confidence(pred: Predictive) -> Tensor:
    """Top-label confidence ``max_k p̄_k``.

    Args:
        pred: Any prediction.

    Returns:
        ``(B, *spatial)`` in ``[1/K, 1]``.
    """
    return _probs(pred).mean(0).amax(1)


@MEASURES.register("entropy", doc="predictive (total) entropy H[p̄] in nats")
def entropy(pred: Predictive) -> Tensor:
    """Predictive (total) entropy ``H[p̄] = −Σ_k p̄_k ln p̄_k``.

    Returns:
        ``(B, *spatial)`` in ``[0, ln K]``.
    """
    return entropy_of(_probs(pred).mean(0), dim=1)


def _dirichlet_expected_entropy(alpha: Tensor) -> Tensor:
    s = alpha.sum(1)
    return torch.digamma(s + 1) - ((alpha / s.unsqueeze(1)) * torch.digamma(alpha + 1)).sum(1)


@MEASURES.register("expected_entropy", doc="aleatoric: (1/M) Σ_m H[p^(m)] or E_Dir[H(p)]")
def expected_entropy(pred: Predictive) -> Tensor:
    """Expected entropy (aleatoric part) ``(1/M) Σ_m H[p^(m)]``.

    For a Dirichlet (``alpha``, ``M == 1``): ``ψ(S + 1) − Σ_k (α_k / S) ψ(α_k + 1)``.

    Returns:
        ``(B, *spatial)``.

    Raises:
        ConfigError: ``M == 1`` and no ``alpha``.
    """
    _require_distribution(pred, "expected_entropy")
    if _use_dirichlet(pred):
        return _dirichlet_expected_entropy(_alpha(pred))
    return entropy_of(_probs(pred), dim=2).mean(0)


@MEASURES.register("mi", doc="epistemic: mutual information H[p̄] − expected entropy")
def mutual_information(pred: Predictive) -> Tensor:
    """Mutual information (epistemic part) ``H[p̄] − expected_entropy``, clamped at 0 against rounding.

    Returns:
        ``(B, *spatial)`` in ``[0, ln min(K, M)]`` for samples.
    """
    _require_distribution(pred, "mi")
    return (entropy(pred) - expected_entropy(pred)).clamp_min(0)


@MEASURES.register("epkl", doc="expected pairwise KL: −Σ_k p̄_k mean_m ln p_k^(m) − expected entropy; (K−1)/S")
def epkl(pred: Predictive) -> Tensor:
    """Expected pairwise KL divergence ``(1/M²) Σ_{m,n} KL(p^(m) ‖ p^(n))``.

    Computed as ``−Σ_k p̄_k · mean_m ln p_k^(m) − expected_entropy`` (``ln`` floored at ``LOG_EPS``), which is
    ``≥ mi`` by Jensen. For a Dirichlet the closed form ``(K − 1) / S``.

    Returns:
        ``(B, *spatial)``.
    """
    _require_distribution(pred, "epkl")
    if _use_dirichlet(pred):
        alpha = _alpha(pred)
        return (alpha.shape[1] - 1) / alpha.sum(1)
    p = _probs(pred)
    cross = -(p.mean(0) * safe_log(p).mean(0)).sum(1)
    return (cross - entropy_of(p, dim=2).mean(0)).clamp_min(0)


@MEASURES.register("variance", doc="Σ_k Var_m p_k^(m) (population variance); Σ_k Var_Dir[p_k] for a Dirichlet")
def variance(pred: Predictive) -> Tensor:
    """Total sample variance ``Σ_k Var_m p_k^(m)`` (population variance, divisor ``M``).

    For a Dirichlet: ``Σ_k α_k (S − α_k) / (S² (S + 1)) = (1 − Σ_k p̄_k²) / (S + 1)``.

    Returns:
        ``(B, *spatial)`` in ``[0, 1]``.
    """
    _require_distribution(pred, "variance")
    if _use_dirichlet(pred):
        alpha = _alpha(pred)
        s = alpha.sum(1)
        pbar = alpha / s.unsqueeze(1)
        return (1 - (pbar**2).sum(1)) / (s + 1)
    return _probs(pred).var(0, correction=0).sum(1)


@MEASURES.register("vacuity", doc="evidential vacuity K / S (needs alpha)")
def vacuity(pred: Predictive) -> Tensor:
    """Evidential vacuity ``K / S`` with ``S = Σ_k α_k``; 1 when there is no evidence (``α = 1``).

    Raises:
        ConfigError: the prediction has no ``alpha``.
    """
    if pred.alpha is None:
        raise ConfigError("measure 'vacuity' needs an evidential prediction (alpha); this one has none")
    alpha = _alpha(pred)
    return alpha.shape[1] / alpha.sum(1)


@MEASURES.register("predicted_variance", doc="EDUE's predicted rater variance extras['rater_variance'][:, 0]")
def predicted_variance(pred: Predictive) -> Tensor:
    """The method's own predicted rater-disagreement map ``extras["rater_variance"][:, 0]``.

    Raises:
        ConfigError: the prediction has no ``"rater_variance"`` extra.
    """
    if "rater_variance" not in pred.extras:
        raise ConfigError("measure 'predicted_variance' needs extras['rater_variance'] (an EDUE-style method)")
    v = pred.extras["rater_variance"][:, 0]
    return v if v.is_floating_point() else v.float()


# -- helpers -----------------------------------------------------------------------------------------------
def available_measures(pred: Predictive) -> list[str]:
    """Names of the measures of this module that ``pred`` supports, in display order.

    ``confidence`` and ``entropy`` always; ``expected_entropy``, ``mi``, ``epkl`` and ``variance`` when ``M > 1``
    or ``alpha`` is present; ``vacuity`` with ``alpha``; ``predicted_variance`` with ``extras["rater_variance"]``.
    """
    names = ["confidence", "entropy"]
    if pred.num_samples > 1 or pred.alpha is not None:
        names += ["expected_entropy", "mi", "epkl", "variance"]
    if pred.alpha is not None:
        names.append("vacuity")
    if "rater_variance" in pred.extras:
        names.append("predicted_variance")
    return names


def uncertainty_map(pred: Predictive, name: str) -> Tensor:
    """Measure ``name`` oriented so that higher always means more uncertain.

    Certainty measures (``confidence``) are returned as ``1 − value``; all others unchanged.

    Returns:
        ``(B, *spatial)``.
    """
    value = MEASURES.get(name)(pred)
    return 1 - value if name in CERTAINTY_MEASURES else value


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

    For ``K = 2`` the sum over both classes is ``2 ȳ_1 (1 − ȳ_1)``; pass ``classes=[1]`` for the binary
    convention ``ȳ(1 − ȳ)``. The image-level disagreement is the sum of this map over pixels.

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
    out_dtype = torch.float64 if labels.dtype == torch.float64 else torch.float32
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise DataError("rater labels must be integer class indices")
    lab = labels.long()
    if lab.numel() and (lab.min() < 0 or lab.max() >= num_classes):
        raise DataError(f"rater labels must lie in [0, {num_classes}), got [{int(lab.min())}, {int(lab.max())}]")
    rater_dim = lab.dim() - spatial_dims - 1
    ks = range(num_classes) if classes is None else classes
    out = torch.zeros(lab.shape[:rater_dim] + lab.shape[rater_dim + 1 :], dtype=out_dtype, device=lab.device)
    for k in ks:
        ybar = (lab == k).to(out_dtype).mean(rater_dim)
        out += ybar * (1 - ybar)
    return out
