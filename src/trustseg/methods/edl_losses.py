"""Evidential deep learning (EDL) losses for segmentation, after SURE's public code (``training/criterions.py``).

Two deliberate differences from that code: the ``mse`` form is Sensoy et al.'s L_err + Σ_k L_var,k (the official
``edl_loss_a`` broadcasts an ``(N, 1)`` L_err against the ``(N, K)`` L_var and so computes K·L_err + Σ_k L_var,k, a
broadcasting bug; the authors' older ``mse_loss`` has the Sensoy form), and the Tversky Dice uses the target as
given (the official code adds ε = 1e-3 to it, ``class_mask = y_true + epsilon``). ``digamma`` and ``log``, the KL
term and the weights are the official ones.

A network's raw outputs ``z`` ``(B, K, *spatial)`` are turned into Dirichlet concentrations

    α = g(z) + 1,    S = Σ_k α_k,    p = α / S,    u = K / S (vacuity),

with the evidence activation g = softplus (the default, SURE's code) or g(z) = exp(clamp(z, −10, 10))
(``activation="exp"``: ln α ≈ z for large evidence, so the network's outputs grow like softmax logits instead of
having to reach the evidence itself; see ``docs/methods_evidential.md``, Calibration).

The training loss (all terms per pixel, then averaged) is

    L = mean[w_ace·L_ACE + λ_t·w_kl·L_KL] + w_dice·mean_k L_Dice,k,    λ_t = min(1, epoch / anneal_epochs)

with, for a (possibly soft) target ``y`` ``(B, K, *spatial)`` that sums to 1 over ``K``:

* ``L_ACE`` (the Bayes risk of cross-entropy under Dir(α)), one of three forms:

  - ``digamma``: Σ_k y_k (ψ(S) − ψ(α_k))  (exact expected cross-entropy),
  - ``log``: Σ_k y_k (ln S − ln α_k)  (cross-entropy of the Dirichlet mean),
  - ``mse``: Σ_k (y_k − p_k)² + p_k(1 − p_k)/(S + 1)  (expected squared error);

* ``L_KL`` = KL(Dir(α̃) ‖ Dir(1)) with α̃ = y + (1 − y)·α, the evidence left on the wrong classes, in closed form

    KL = lnΓ(S̃) − lnΓ(K) − Σ_k lnΓ(α̃_k) + Σ_k (α̃_k − 1)(ψ(α̃_k) − ψ(S̃)),    S̃ = Σ_k α̃_k;

* ``L_Dice`` a Tversky-style soft Dice on p, per class, pooled over the batch and all pixels:

    TP = Σ p·y,  FP = Σ p(1 − y),  FN = Σ (1 − p)y,  A = clamp(FP / (FP + FN), 0.2, 0.8),  B = 1 − A,
    L_Dice = 1 − TP / (TP + A·FP + B·FN + ε).

  A and B are *not* detached (as in the authors' code): the loss may also lower itself by trading FP for FN
  inside the clamp range. In practice the clamp keeps this effect small.

All functions are pure tensor functions; soft targets work everywhere.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from trustseg.methods.losses import voxel_weight, weighted_mean

AceVariant = Literal["digamma", "log", "mse"]
EvidenceActivation = Literal["softplus", "exp"]

#: Smoothing constant of the Tversky-style Dice (denominator and the A ratio).
DICE_EPS = 1e-5
#: The ``exp`` activation clamps z to [−EXP_CLAMP, EXP_CLAMP] (evidence at most e¹⁰ ≈ 2.2·10⁴, no overflow).
EXP_CLAMP = 10.0


def evidence_to_alpha(logits: Tensor, activation: EvidenceActivation = "softplus") -> Tensor:
    """Dirichlet concentration α = g(z) + 1 from raw outputs ``z`` ``(B, K, *spatial)`` (same shape).

    Args:
        logits: Raw outputs z.
        activation: ``softplus`` (g = softplus) or ``exp`` (g(z) = exp(clamp(z, −10, 10))).

    Half-precision inputs are computed in float32; float64 stays float64.

    Example:
        >>> z = torch.tensor([0.0, 2.0])
        >>> evidence_to_alpha(z).tolist(), evidence_to_alpha(z, "exp").tolist()  # softplus(0) = ln 2
        ([1.6931471824645996, 3.1269280910491943], [2.0, 8.389056205749512])
    """
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    if activation == "softplus":
        return F.softplus(logits) + 1.0
    if activation == "exp":
        return torch.exp(torch.clamp(logits, -EXP_CLAMP, EXP_CLAMP)) + 1.0
    raise ValueError(f"unknown evidence activation {activation!r}; use 'softplus' or 'exp'")


def tempered_mean(alpha: Tensor, temperature: float = 1.0) -> Tensor:
    """Temperature-scaled Dirichlet mean ``p_T = softmax(ln α / T) = α^(1/T) / Σ_k α_k^(1/T)`` ``(B, K, *sp)``.

    ``ln α`` plays the role of the logits: at ``T = 1`` this is the Dirichlet mean α / S exactly (returned as
    :func:`dirichlet_mean`, bit-identical); ``T < 1`` sharpens an under-confident mean, ``T > 1`` flattens it.

    Example:
        >>> a = torch.tensor([[[3.0], [1.0]]])  # B = 1, K = 2, one pixel: mean (0.75, 0.25)
        >>> [round(v, 6) for v in tempered_mean(a, 0.5)[0, :, 0].tolist()]  # (9, 1) / 10
        [0.9, 0.1]
    """
    if temperature == 1.0:
        return dirichlet_mean(alpha)
    return torch.softmax(torch.log(alpha) / temperature, 1)


def dirichlet_mean(alpha: Tensor) -> Tensor:
    """Expected class probabilities p = α / S ``(B, K, *spatial)``."""
    return alpha / alpha.sum(1, keepdim=True)


def vacuity(alpha: Tensor) -> Tensor:
    """Evidential uncertainty u = K / S ``(B, *spatial)`` in (0, 1]; 1 when there is no evidence (α = 1)."""
    return alpha.shape[1] / alpha.sum(1)


def edl_ace(alpha: Tensor, y: Tensor, variant: AceVariant = "digamma") -> Tensor:
    """Per-pixel Bayes-risk term L_ACE.

    Args:
        alpha: ``(B, K, *spatial)`` concentrations (≥ 1).
        y: ``(B, K, *spatial)`` one-hot or soft target summing to 1 over ``K``.
        variant: ``digamma`` Σ_k y_k(ψ(S) − ψ(α_k)); ``log`` Σ_k y_k(ln S − ln α_k);
            ``mse`` Σ_k (y_k − p_k)² + p_k(1 − p_k)/(S + 1).

    Returns:
        ``(B, *spatial)`` loss per pixel.
    """
    s = alpha.sum(1, keepdim=True)
    if variant == "digamma":
        return (y * (torch.digamma(s) - torch.digamma(alpha))).sum(1)
    if variant == "log":
        return (y * (torch.log(s) - torch.log(alpha))).sum(1)
    if variant == "mse":
        p = alpha / s
        return ((y - p) ** 2 + p * (1 - p) / (s + 1)).sum(1)
    raise ValueError(f"unknown EDL loss variant {variant!r}; use 'digamma', 'log' or 'mse'")


def edl_kl(alpha: Tensor, y: Tensor) -> Tensor:
    """KL(Dir(α̃) ‖ Dir(1)) per pixel with α̃ = y + (1 − y)·α (the misleading evidence).

    Args:
        alpha: ``(B, K, *spatial)`` concentrations.
        y: ``(B, K, *spatial)`` one-hot or soft target.

    Returns:
        ``(B, *spatial)``: lnΓ(S̃) − lnΓ(K) − Σ_k lnΓ(α̃_k) + Σ_k (α̃_k − 1)(ψ(α̃_k) − ψ(S̃)); 0 when α̃ = 1.
    """
    k = alpha.shape[1]
    a = y + (1 - y) * alpha
    s = a.sum(1, keepdim=True)
    log_norm = torch.lgamma(s.squeeze(1)) - torch.lgamma(a).sum(1) - torch.lgamma(torch.tensor(float(k)))
    return log_norm + ((a - 1) * (torch.digamma(a) - torch.digamma(s))).sum(1)


def tversky_dice_loss(p: Tensor, y: Tensor, eps: float = DICE_EPS, weight: Tensor | None = None) -> Tensor:
    """Tversky-style soft Dice loss per class, pooled over the batch and all pixels.

    Args:
        p: ``(B, K, *spatial)`` probabilities.
        y: ``(B, K, *spatial)`` one-hot or soft target.
        eps: Smoothing added to the denominators.
        weight: ``(B, *spatial)`` voxel weight of every sum (a field of view); ``None``: all voxels.

    Returns:
        ``(K,)``: 1 − TP / (TP + A·FP + B·FN + ε) with A = clamp(FP/(FP + FN + ε), 0.2, 0.8), B = 1 − A.
    """
    dims = [0, *range(2, p.dim())]
    w = voxel_weight(weight, p)
    one = 1 if w is None else w
    tp = (p * y * one).sum(dims)
    fp = (p * (1 - y) * one).sum(dims)
    fn = ((1 - p) * y * one).sum(dims)
    a = torch.clamp(fp / (fp + fn + eps), 0.2, 0.8)
    return 1 - tp / (tp + a * fp + (1 - a) * fn + eps)


def kl_annealing(epoch: int, anneal_epochs: int) -> float:
    """λ_t = min(1, epoch / anneal_epochs) (1 from the start when ``anneal_epochs <= 0``)."""
    if anneal_epochs <= 0:
        return 1.0
    return min(1.0, epoch / anneal_epochs)


def edl_loss(
    logits: Tensor,
    y: Tensor,
    epoch: int,
    variant: AceVariant = "digamma",
    anneal_epochs: int = 20,
    w_ace: float = 10.0,
    w_kl: float = 1.0,
    w_dice: float = 10.0,
    weight: Tensor | None = None,
    activation: EvidenceActivation = "softplus",
) -> tuple[Tensor, dict[str, float]]:
    """The full EDL loss: mean[w_ace·L_ACE + λ_t·w_kl·L_KL] + w_dice·mean_k L_Dice.

    Args:
        logits: ``(B, K, *spatial)`` raw network outputs z (α = g(z) + 1, g the ``activation``).
        y: ``(B, K, *spatial)`` one-hot or soft target.
        epoch: Current epoch (0-based), for the KL annealing λ_t = min(1, epoch / anneal_epochs).
        variant: ``digamma``, ``log`` or ``mse`` form of L_ACE.
        anneal_epochs: Epochs over which the KL weight ramps linearly from 0 to 1.
        w_ace: Weight of L_ACE.
        w_kl: Weight of L_KL (multiplied by λ_t).
        w_dice: Weight of L_Dice.
        weight: ``(B, *spatial)`` voxel weight (a field of view): the means over voxels become weighted means
            and the Dice sums are weighted; ``None``: all voxels.
        activation: Evidence activation of :func:`evidence_to_alpha`.

    Returns:
        The scalar loss and logs ``{"edl_ace", "edl_kl", "edl_dice", "kl_weight"}`` (unweighted term means).
    """
    if logits.shape != y.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(y.shape)} must have the same shape")
    alpha = evidence_to_alpha(logits, activation)
    y = y.to(alpha.dtype)
    lam = kl_annealing(epoch, anneal_epochs)
    w = voxel_weight(weight, alpha)
    w = None if w is None else w.squeeze(1)
    ace = weighted_mean(edl_ace(alpha, y, variant), w)
    kl = weighted_mean(edl_kl(alpha, y), w)
    dice = tversky_dice_loss(dirichlet_mean(alpha), y, weight=weight).mean()
    loss = w_ace * ace + lam * w_kl * kl + w_dice * dice
    logs = {"edl_ace": float(ace.detach()), "edl_kl": float(kl.detach()), "edl_dice": float(dice.detach())}
    logs["kl_weight"] = lam
    return loss, logs
