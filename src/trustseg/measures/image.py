"""Image-level scores of one prediction: one number per image, for OOD detection, quality control and the
evaluation suite (which all use these functions).

Every score of :func:`image_scores` is oriented so that **higher = more suspicious** (more uncertain, less
agreement):

* ``<measure>:<aggregator>``: a per-pixel measure (:mod:`trustseg.measures.pixel`) oriented as an uncertainty
  (``confidence`` enters as ``1 − confidence``), aggregated by :func:`image_score`;
* ``sample_disagreement``: ``1 − sample_agreement``, the mean Dice between the hard masks of all pairs of samples
  (MC passes, ensemble members, TTA views), only when ``M > 1``. Its complement is the "model agreement" of the
  EDUE paper;
* ``layer_disagreement``: ``1 − AULA`` (:func:`layer_agreement`) for layer ensembles, whose samples are the
  decoder heads in coarse-to-fine order.

The image-level convention of each aggregator (:func:`image_score`) comes from its registered metadata:

=============  ===================================================================================
mean           mean over the whole image
sum            sum over the whole image
fg_mean        mean over the predicted foreground dilated by 2 pixels (a 5-pixel cube); an image with
               no predicted foreground falls back to the whole-image mean
patch_max      max over sliding 8-pixel windows of the window mean
frac_above     fraction of pixels with ``u > threshold`` (``threshold=`` must be given)
=============  ===================================================================================

Agreement of two hard maps is :func:`pooled_foreground_dice`: ``D = 2 Σ_{k≥1} |A_k ∩ B_k| / Σ_{k≥1} (|A_k| +
|B_k|)`` (a voxel agrees only if both maps give it the same foreground class), 1 when both are all background.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from trustseg.core.errors import ConfigError
from trustseg.core.predictive import Predictive
from trustseg.measures.aggregate import aggregate
from trustseg.measures.pixel import uncertainty_map
from trustseg.measures.registry import AGGREGATORS, available_measures

#: The aggregations :func:`image_scores` applies by default.
DEFAULT_AGGREGATORS = ("mean", "fg_mean")


def pooled_foreground_dice(a: Tensor, b: Tensor) -> Tensor:
    """Agreement of two hard class maps ``(B, *spatial)``: Dice over the foreground classes pooled, ``(B,)``.

    ``D = 2 Σ_{k≥1} |A_k ∩ B_k| / Σ_{k≥1} (|A_k| + |B_k|)`` (a voxel agrees only if both maps give it the same
    foreground class), ``D = 1`` when both maps are all background. For K = 2 this is the foreground Dice. Used
    for the agreement of layer-ensemble heads (AULA) and of samples (``sample_disagreement``).

    Returns:
        float64 ``(B,)`` in ``[0, 1]``.

    Example:
        >>> pooled_foreground_dice(torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 1, 2, 2]]))  # 2·2 / (3 + 3)
        tensor([0.6667], dtype=torch.float64)
    """
    dims = tuple(range(1, a.dim()))
    fg_a, fg_b = a > 0, b > 0
    inter = ((a == b) & fg_a).sum(dims).double()
    denom = (fg_a.sum(dims) + fg_b.sum(dims)).double()
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))


def image_score(umap: Tensor, aggregator: str, foreground: Tensor | None = None, **kw) -> Tensor:
    """One score per image from a map, with the image-level convention of ``aggregator``.

    The aggregator's registered metadata sets the convention: one whose ``mask`` is ``"foreground"``
    (``fg_mean``) is applied to the ``foreground`` mask with its ``image_kwargs`` (``dilate=2``); every other one
    to the whole image (``foreground`` is not used). Keywords in ``kw`` override ``image_kwargs``; those the
    aggregator ``needs`` (``threshold`` for ``frac_above``) must be given.

    Args:
        umap: ``(B, *spatial)`` map, oriented as the caller wants the score (see
            :func:`~trustseg.measures.registry.as_uncertainty`).
        aggregator: A name registered in ``AGGREGATORS``.
        foreground: ``(B, *spatial)`` bool, e.g. the predicted segmentation ``!= 0``; required by ``fg_mean``.
        **kw: Extra keyword arguments of the aggregator.

    Returns:
        ``(B,)``.

    Raises:
        ConfigError: a foreground aggregator without ``foreground``, or a needed keyword missing.

    Example:
        >>> u = torch.zeros(1, 8, 8)
        >>> u[0, 0, 0] = 1.0  # uncertain far from the foreground
        >>> fg = torch.zeros(1, 8, 8, dtype=torch.bool)
        >>> fg[0, 5, 5] = True
        >>> image_score(u, "mean"), image_score(u, "fg_mean", fg)  # fg_mean: the 5x5 square around (5, 5)
        (tensor([0.0156]), tensor([0.]))
    """
    meta = AGGREGATORS.meta(aggregator)
    missing = [k for k in meta.get("needs", ()) if k not in kw]
    if missing:
        raise ConfigError(f"aggregator {aggregator!r} needs {', '.join(f'{k}=<value>' for k in missing)}")
    if meta.get("mask") == "foreground":
        if foreground is None:
            raise ConfigError(f"aggregator {aggregator!r} needs a foreground mask (e.g. the predicted classes > 0)")
        return aggregate(umap, aggregator, mask=foreground, **{**meta.get("image_kwargs", {}), **kw})
    return aggregate(umap, aggregator, **{**meta.get("image_kwargs", {}), **kw})


def sample_agreement(pred: Predictive) -> Tensor:
    """Mean pairwise agreement of the samples' hard maps ``(B,)`` float32 (:func:`pooled_foreground_dice` over
    all pairs ``m < n`` of ``argmax_k p^(m)``; 1 when ``M = 1``)."""
    hard = pred.probs.argmax(2)  # (M, B, *sp)
    m = hard.shape[0]
    if m < 2:
        return torch.ones(pred.batch_size)
    vals = [pooled_foreground_dice(hard[i], hard[j]) for i in range(m) for j in range(i + 1, m)]
    return torch.stack(vals).mean(0).float()


def layer_agreement(head_probs: Tensor) -> Tensor:
    """AULA, the area under the layer-agreement curve, per image.

    With hard masks ``h_i = argmax_k p^(i)`` of heads ``i = 1..H`` (coarse -> fine) and the agreement curve
    ``d_i = Dice(h_i, h_{i+1})`` (:func:`pooled_foreground_dice`), ``i = 1..H−1``, AULA is the trapezoid area
    under ``d`` with x-spacing ``1/(H−2)`` (the curve spans x ∈ [0, 1]), so AULA ∈ [0, 1] and equals 1 when all
    heads agree. With H = 2 it is the single Dice ``d_1``. Heads are binarised by argmax over K (the authors'
    code thresholds soft maps at p > 0, which marks every pixel as foreground).

    Args:
        head_probs: ``(H, B, K, *spatial)`` per-head probabilities (or logits), ``H >= 2``.

    Returns:
        ``(B,)`` AULA (float64).
    """
    if head_probs.dim() < 4:
        raise ValueError(f"expected (H, B, K, *spatial), got {tuple(head_probs.shape)}")
    h = head_probs.shape[0]
    if h < 2:
        raise ValueError(f"AULA needs at least two heads, got {h}")
    masks = head_probs.argmax(2)  # (H, B, *spatial)
    d = torch.stack([pooled_foreground_dice(masks[i], masks[i + 1]) for i in range(h - 1)], 0)  # (H-1, B)
    if h == 2:
        return d[0]
    return torch.trapezoid(d, dx=1.0 / (h - 2), dim=0)


def image_scores(
    pred: Predictive,
    measures: Sequence[str] | None = None,
    aggregators: Sequence[str] = DEFAULT_AGGREGATORS,
    layer_heads: bool = False,
) -> dict[str, Tensor]:
    """All image-level scores of a prediction, each ``(B,)``, higher = more suspicious.

    Args:
        pred: The prediction.
        measures: Measure names (default: every measure the prediction supports, :func:`available_measures`).
        aggregators: Aggregations of each map (:func:`image_score`; the foreground is ``pred.hard() > 0``).
        layer_heads: The samples are layer-ensemble heads: add ``layer_disagreement`` (1 − AULA).

    Returns:
        ``"<measure>:<aggregator>"`` for every pair (each map oriented as an uncertainty, in float32), then
        ``sample_disagreement`` when ``M > 1`` and ``layer_disagreement`` when ``layer_heads`` and ``M > 1``.
    """
    names = measures if measures is not None else available_measures(pred)
    fg = pred.hard() > 0
    out: dict[str, Tensor] = {}
    for name in names:
        umap = uncertainty_map(pred, name).float()
        for agg in aggregators:
            out[f"{name}:{agg}"] = image_score(umap, agg, foreground=fg)
    if pred.num_samples > 1:
        out["sample_disagreement"] = 1.0 - sample_agreement(pred)
    if layer_heads and pred.num_samples > 1:
        out["layer_disagreement"] = 1.0 - layer_agreement(pred.probs)
    return out
