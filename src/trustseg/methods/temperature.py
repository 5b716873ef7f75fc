"""Post-hoc temperature scaling, fitted on validation data, streamed case by case.

One scalar ``T > 0`` divides the logits: ``p = softmax(z / T)``. It is fitted by minimising the negative
log-likelihood of the labels over ``log T`` (so ``T`` stays positive) with L-BFGS (strong-Wolfe line search),
in float64. Labels may be integer class maps or soft labels (e.g. the raters' mean ȳ); with soft labels the NLL is
the cross-entropy ``−Σ_k y_k log p_k``. For sample-based methods (MC dropout, ensembles, TTA, layer ensembles) the
likelihood is that of the predictive mean ``p̄ = mean_m softmax(z_m / T)``, i.e. one ``T`` shared by all samples.

Every method built on logits (``softmax``, ``mc-dropout``, ``ensemble``, ``layer-ensemble``, ``tta`` over one of
those) divides its logits by ``method.temperature`` in ``predict``; :func:`fit_method_temperature` fits and sets it.

**Bounded memory.** Each NLL evaluation of the fit needs the logits of the validation voxels, and 3D validation
sets do not fit in memory (nor in one batch). :func:`fit_method_temperature` therefore streams over the batches
(e.g. one case per batch) and keeps, per case, at most ``max_voxels`` voxels (:class:`LogitSubsample`): all of
them when the case is smaller, else a uniform random subset drawn without replacement by a generator seeded with
``(seed, case index)``. A kept voxel of case i, which has N_i valid voxels of which n_i are kept, is weighted by
N_i / n_i, and the fit minimises

    L̂(T) = Σ_i (N_i / n_i) Σ_{v ∈ S_i} ℓ_v(T) / Σ_i N_i,

ℓ_v(T) the voxel's NLL. For every T, E[Σ_{v ∈ S_i} ℓ_v(T)] = (n_i / N_i) Σ_{v ∈ case i} ℓ_v(T), so L̂(T) is an
unbiased estimate of the mean NLL over all valid voxels of all cases, and equals it when no case has more than
``max_voxels`` valid voxels (then the streamed fit is the one-batch fit). Memory: Σ_i min(N_i, max_voxels) ×
(M + 1) × K float32 values for M samples and K classes (the default 2¹⁵ voxels per case is 5.8 MB per case for
M = 10, K = 4), plus a few float64 temporaries of the kept logits' size while the NLL is evaluated, and one
batch's logits at a time. Voxels that a batch only carries as padding are dropped before sampling, so padding
never counts as background.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from trustseg.core.errors import ConfigError
from trustseg.methods.base import Batch, Method, TargetMode

#: Default bound on the voxels kept per validation case by :class:`LogitSubsample`.
DEFAULT_MAX_VOXELS = 1 << 15

#: A batch, or a batch and the unpadded spatial shape of each of its items (voxels beyond are padding).
CalibrationBatch = Batch | tuple[Batch, Sequence[Sequence[int]]]


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


def temperature_nll(
    logits: Tensor,
    target: Tensor,
    temperature: float | Tensor,
    samples: bool = False,
    weights: Tensor | None = None,
) -> Tensor:
    """Mean NLL ``mean_{n,x} −Σ_k y_k log p_k`` with ``p = softmax(z / T)`` (or the mean over samples of it).

    Args:
        logits: ``(N, K, *sp)``, or ``(M, N, K, *sp)`` when ``samples``.
        target: ``(N, K, *sp)`` one-hot or soft labels.
        temperature: ``T``.
        samples: Whether ``logits`` has a leading sample axis (the predictive mean is scored).
        weights: Optional ``(N, *sp)`` voxel weights w: the weighted mean ``Σ w ℓ / Σ w`` of the voxel NLLs ℓ.

    Example:
        >>> z = torch.tensor([[2.0, 0.0]])  # one voxel, two classes
        >>> y = torch.tensor([[1.0, 0.0]])
        >>> round(float(temperature_nll(z, y, 2.0)), 6)  # −log softmax([1, 0])_0 = log(1 + e⁻¹)
        0.313262
    """
    z = logits.double() / temperature
    if samples:
        logp = torch.logsumexp(torch.log_softmax(z, 2), 0) - math.log(z.shape[0])
    else:
        logp = torch.log_softmax(z, 1)
    loss = -(target.double() * logp).sum(1)
    if weights is None:
        return loss.mean()
    weights = weights.double()
    return (weights * loss).sum() / weights.sum()


def fit_temperature(
    logits: Tensor, labels: Tensor, max_iter: int = 100, samples: bool = False, weights: Tensor | None = None
) -> float:
    """Fit the temperature minimising the NLL of ``labels`` under ``softmax(logits / T)``.

    Args:
        logits: ``(N, K, *sp)`` validation logits, or ``(M, N, K, *sp)`` with ``samples=True``.
        labels: ``(N, *sp)`` integer class maps or ``(N, K, *sp)`` soft labels.
        max_iter: L-BFGS iterations.
        samples: Whether ``logits`` carries a leading sample axis (fit on the predictive mean).
        weights: Optional ``(N, *sp)`` voxel weights (see :func:`temperature_nll`).

    Returns:
        ``T`` (a float > 0); 1 when the logits carry no information (e.g. all equal).
    """
    logits = logits.detach()
    target = _as_target(labels.detach(), logits.shape, 2 if samples else 1)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = temperature_nll(logits, target, log_t.exp(), samples, weights)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and t > 0 else 1.0


class LogitSubsample:
    """A bounded, seeded subsample of the voxels' sample logits and targets, added one case at a time.

    Keeps at most ``max_voxels`` voxels per case, uniformly without replacement, each weighted by
    N_i / n_i (module docstring: the weighted NLL is unbiased for every T, and exact when nothing is dropped).

    Args:
        max_voxels: Voxels kept per case (> 0).
        seed: Seed of the draws; case i uses a generator seeded by ``(seed, i)``.

    Example:
        >>> sub = LogitSubsample(max_voxels=3)
        >>> sub.add(torch.zeros(1, 2, 4, 4), torch.full((2, 4, 4), 0.5))  # M = 1, K = 2, a 4 × 4 case
        >>> logits, target, weights = sub.tensors()
        >>> tuple(logits.shape), tuple(target.shape), weights.tolist()  # 3 of 16 voxels, weight 16 / 3
        ((1, 3, 2), (3, 2), [5.333333333333333, 5.333333333333333, 5.333333333333333])
    """

    def __init__(self, max_voxels: int = DEFAULT_MAX_VOXELS, seed: int = 0):
        if max_voxels < 1:
            raise ConfigError(f"max_voxels must be a positive number of voxels per case, got {max_voxels}")
        self.max_voxels = int(max_voxels)
        self.seed = int(seed)
        self.n_cases = 0
        self.n_valid = 0  # Σ_i N_i
        self._logits: list[Tensor] = []
        self._target: list[Tensor] = []
        self._weights: list[Tensor] = []

    def add(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """Add one case: sample logits ``(M, K, *sp)``, its target ``(K, *sp)`` and optionally its field of view
        ``valid`` ``(*sp)`` bool (only the voxels inside count; ``None``: every voxel)."""
        m, k = logits.shape[:2]
        if tuple(target.shape) != tuple(logits.shape[1:]):
            raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)} (M, K, *sp)")
        z = logits.detach().reshape(m, k, -1)
        y = target.detach().reshape(k, -1)
        if valid is not None:
            if tuple(valid.shape) != tuple(logits.shape[2:]):
                raise ValueError(f"valid {tuple(valid.shape)} does not match logits {tuple(logits.shape)}")
            inside = valid.reshape(-1).to(z.device).bool()
            z, y = z[..., inside], y[..., inside]
        n_all = z.shape[-1]
        if n_all > self.max_voxels:
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.n_cases) % (1 << 63))
            keep = torch.randperm(n_all, generator=gen)[: self.max_voxels].to(z.device)
            z, y = z[..., keep], y[..., keep]
        n = z.shape[-1]
        self._logits.append(z.float().cpu().movedim(-1, 1))  # (M, n, K)
        self._target.append(y.float().cpu().T)  # (n, K)
        self._weights.append(torch.full((n,), n_all / n, dtype=torch.float64))
        self.n_cases += 1
        self.n_valid += n_all

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """The kept voxels: logits ``(M, V, K)``, targets ``(V, K)`` and weights ``(V,)`` (float64)."""
        if not self._logits:
            raise ConfigError("no validation batches to fit the temperature on")
        return torch.cat(self._logits, 1), torch.cat(self._target, 0), torch.cat(self._weights)

    def fit(self, max_iter: int = 100) -> float:
        """The temperature minimising the weighted NLL of the kept voxels (:func:`fit_temperature`)."""
        logits, target, weights = self.tensors()
        return fit_temperature(logits, target, max_iter=max_iter, samples=True, weights=weights)


def _device(models: Sequence[nn.Module]) -> torch.device:
    for model in models:
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _iter_logits(
    method: Method, models: Sequence[nn.Module], batches: Iterable[CalibrationBatch], target: TargetMode
) -> Iterator[tuple[Tensor, Tensor, list[tuple[int, ...]], Tensor | None]]:
    """Per batch: untempered sample logits ``(M, B, K, *sp)``, targets ``(B, K, *sp)``, each item's valid shape,
    and the batch's field of view ``(B, *sp)`` (``None`` without one)."""
    fn = getattr(method, "sample_logits", None)
    if fn is None:
        raise ConfigError(f"method {method.name!r} predicts no logits; temperature scaling does not apply to it")
    device = _device(models)
    for item in batches:
        batch, given = item if isinstance(item, tuple) else (item, None)
        spatial = tuple(batch.image.shape[2:])
        sizes = [spatial] * batch.image.shape[0] if given is None else [tuple(int(s) for s in sz) for sz in given]
        if len(sizes) != batch.image.shape[0] or any(
            len(sz) != len(spatial) or any(s > t for s, t in zip(sz, spatial)) for sz in sizes
        ):
            raise ValueError(f"item shapes {sizes} do not fit a batch of {batch.image.shape[0]} × {spatial}")
        z = fn(models, batch.image.to(device))
        yield z, batch.target(target).to(z.device), sizes, batch.valid


@torch.no_grad()
def collect_logits(
    method: Method, models: Sequence[nn.Module], batches: Iterable[CalibrationBatch], target: TargetMode = "soft"
) -> tuple[Tensor, Tensor]:
    """All untempered sample logits ``(M, N, K, *sp)`` and targets ``(N, K, *sp)`` of ``method`` over ``batches``.

    Everything is held in memory and the batches must share a spatial shape (item shapes, if given, are not
    applied): for small data and inspection. :func:`fit_method_temperature` streams instead.
    """
    zs, ys = [], []
    for z, y, _, _ in _iter_logits(method, models, batches, target):
        zs.append(z.float().cpu())
        ys.append(y.float().cpu())
    if not zs:
        raise ConfigError("no validation batches to fit the temperature on")
    return torch.cat(zs, 1), torch.cat(ys, 0)


@torch.no_grad()
def collect_subsample(
    method: Method,
    models: Sequence[nn.Module],
    batches: Iterable[CalibrationBatch],
    target: TargetMode = "soft",
    *,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    seed: int = 0,
) -> LogitSubsample:
    """Stream ``batches`` through ``method`` into a :class:`LogitSubsample`, one case per batch item.

    Args:
        method: A method with ``sample_logits`` (models in eval mode).
        models: Its networks (the batches are moved to their device).
        batches: :class:`Batch` objects, or ``(batch, shapes)`` pairs where ``shapes[b]`` is the unpadded spatial
            shape of item b: the voxels beyond it (at the end of each axis, as the engine pads) are dropped, and
            so are those outside the batch's ``valid`` field of view when it has one.
        target: Which target of the batch to score (:meth:`Batch.target`; the soft label ȳ by default).
        max_voxels: Voxels kept per case.
        seed: Seed of the voxel draws.
    """
    sub = LogitSubsample(max_voxels, seed)
    for z, y, sizes, valid in _iter_logits(method, models, batches, target):
        for b, size in enumerate(sizes):
            crop = tuple(slice(0, s) for s in size)
            fov = None if valid is None else valid[b][crop]
            sub.add(z[:, b][(slice(None), slice(None), *crop)], y[b][(slice(None), *crop)], fov)
    return sub


def fit_method_temperature(
    method: Method,
    models: Sequence[nn.Module],
    batches: Iterable[CalibrationBatch],
    target: TargetMode = "soft",
    max_iter: int = 100,
    *,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    seed: int = 0,
) -> float:
    """Fit ``method.temperature`` on validation batches, streamed, and set it; returns ``T``.

    The NLL is that of the predictive mean over the method's samples against ``batch.target(target)`` (the soft
    label ȳ by default), estimated from at most ``max_voxels`` voxels per case (module docstring; exact when the
    cases are no larger). Batches may differ in spatial shape; pass ``(batch, shapes)`` pairs to exclude padding
    (:func:`collect_subsample`). The method's current temperature does not enter: its untempered logits are fitted.
    """
    t = collect_subsample(method, models, batches, target, max_voxels=max_voxels, seed=seed).fit(max_iter)
    method.temperature = t
    return t
