"""Post-hoc temperature scaling, fitted on validation data.

One scalar ``T > 0`` divides the logits: ``p = softmax(z / T)``. It is fitted by minimising the negative
log-likelihood of the labels over ``log T`` (so ``T`` stays positive) with L-BFGS (strong-Wolfe line search),
in float64. Labels may be integer class maps or soft labels (e.g. the raters' mean ȳ); with soft labels the NLL is
the cross-entropy ``−Σ_k y_k log p_k``. For sample-based methods (MC dropout, ensembles, TTA, layer ensembles) the
likelihood is that of the predictive mean ``p̄ = mean_m softmax(z_m / T)``, i.e. one ``T`` shared by all samples.

Every method built on logits (``softmax``, ``mc-dropout``, ``ensemble``, ``layer-ensemble``, ``tta`` over one of
those) divides its logits by ``method.temperature`` in ``predict``; :func:`fit_method_temperature` fits and sets it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from trustseg.core.errors import ConfigError
from trustseg.methods.base import Batch, Method, TargetMode


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``z / T``: logits of any shape divided by the temperature ``T > 0``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return logits / temperature


def _as_target(labels: Tensor, logits_shape: torch.Size, class_dim: int) -> Tensor:
    """Integer maps ``(N, *sp)`` -> one-hot float64 ``(N, K, *sp)``; soft labels pass through."""
    k = logits_shape[class_dim]
    target_shape = logits_shape[class_dim - 1 :] if class_dim > 1 else logits_shape
    if labels.is_floating_point() and labels.shape == target_shape:
        return labels.double()
    if labels.is_floating_point():
        raise ValueError(f"soft labels must have shape {tuple(target_shape)}, got {tuple(labels.shape)}")
    oh = torch.nn.functional.one_hot(labels.long(), k).movedim(-1, 1).double()
    if oh.shape != target_shape:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits_shape)}")
    return oh


def temperature_nll(logits: Tensor, target: Tensor, temperature: float | Tensor, samples: bool = False) -> Tensor:
    """Mean NLL ``mean_{n,x} −Σ_k y_k log p_k`` with ``p = softmax(z / T)`` (or the mean over samples of it).

    Args:
        logits: ``(N, K, *sp)``, or ``(M, N, K, *sp)`` when ``samples``.
        target: ``(N, K, *sp)`` one-hot or soft labels.
        temperature: ``T``.
        samples: Whether ``logits`` has a leading sample axis (the predictive mean is scored).
    """
    z = logits.double() / temperature
    if samples:
        logp = torch.logsumexp(torch.log_softmax(z, 2), 0) - math.log(z.shape[0])
    else:
        logp = torch.log_softmax(z, 1)
    return -(target.double() * logp).sum(1).mean()


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 100, samples: bool = False) -> float:
    """Fit the temperature minimising the NLL of ``labels`` under ``softmax(logits / T)``.

    Args:
        logits: ``(N, K, *sp)`` validation logits, or ``(M, N, K, *sp)`` with ``samples=True``.
        labels: ``(N, *sp)`` integer class maps or ``(N, K, *sp)`` soft labels.
        max_iter: L-BFGS iterations.
        samples: Whether ``logits`` carries a leading sample axis (fit on the predictive mean).

    Returns:
        ``T`` (a float > 0); 1 when the logits carry no information (e.g. all equal).
    """
    logits = logits.detach()
    target = _as_target(labels.detach(), logits.shape, 2 if samples else 1)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = temperature_nll(logits, target, log_t.exp(), samples)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and t > 0 else 1.0


@torch.no_grad()
def collect_logits(method: Method, models: Sequence[nn.Module], batches: Iterable[Batch], target: TargetMode = "soft"):
    """Untempered sample logits ``(M, N, K, *sp)`` and targets ``(N, K, *sp)`` of ``method`` over ``batches``."""
    fn = getattr(method, "sample_logits", None)
    if fn is None:
        raise ConfigError(f"method {method.name!r} predicts no logits; temperature scaling does not apply to it")
    zs, ys = [], []
    for batch in batches:
        zs.append(fn(models, batch.image).float().cpu())
        ys.append(batch.target(target).float().cpu())
    if not zs:
        raise ConfigError("no validation batches to fit the temperature on")
    return torch.cat(zs, 1), torch.cat(ys, 0)


def fit_method_temperature(
    method: Method,
    models: Sequence[nn.Module],
    batches: Iterable[Batch],
    target: TargetMode = "soft",
    max_iter: int = 100,
) -> float:
    """Fit ``method.temperature`` on validation batches (models in eval mode) and set it; returns ``T``.

    The NLL is that of the predictive mean over the method's samples against ``batch.target(target)`` (the soft
    label ȳ by default). Batches must share a spatial shape (crop or pad them beforehand).
    """
    logits, y = collect_logits(method, models, batches, target)
    t = fit_temperature(logits, y, max_iter=max_iter, samples=True)
    method.temperature = t
    return t
