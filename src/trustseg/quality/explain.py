"""Interpretation of the quality predictors (``trustseg qc explain``): Grad-CAM of the quality CNN, 2-D embeddings
of cases (UMAP or PCA) and their figures.

**Grad-CAM** (Selvaraju et al. 2017) of a network's scalar output ``y`` at a hooked layer with activation
``A`` ``(C_l, *sp_l)``:

    α_c = mean over the positions of ∂y/∂A_c,    CAM = ReLU(Σ_c α_c A_c),

upsampled to the input size (bilinear/trilinear, ``align_corners=False``) and divided by its maximum (all zeros
when the maximum is 0), so that it lies in [0, 1]. For :class:`~trustseg.quality.cnn_net.QualityNet`, ``y`` is the
head's output before the sigmoid/softplus (:meth:`~trustseg.quality.cnn_net.QualityNet.score`): both activations
are increasing, so the map is the same up to a positive factor, which the normalisation removes, and it does not
vanish where the sigmoid saturates. ``negate=True`` explains ``-y`` instead: for Dice, the regions that lower the
predicted quality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import Tensor, nn
from torch.nn import functional as F

from trustseg.core.errors import ConfigError, DataError
from trustseg.core.figures import pyplot, save_figure
from trustseg.quality.cnn import CNNPredictor
from trustseg.quality.cnn_channels import qc_channels
from trustseg.quality.inputs import CaseInput

EMBED_METHODS = ("auto", "umap", "pca")
#: ``method="auto"`` uses UMAP (when installed) from this many cases on; below it, PCA (UMAP's neighbour graph
#: and spectral initialisation are meaningless, and may fail, on a handful of points).
UMAP_MIN_CASES = 10


def _upsample(cam: Tensor, size: Sequence[int]) -> Tensor:
    """``(*sp)`` -> ``(*size)`` by bilinear/trilinear interpolation (a convex combination: stays in [0, 1])."""
    if tuple(cam.shape) == tuple(size):
        return cam
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(cam[None, None], size=tuple(size), mode=mode, align_corners=False)[0, 0]


def grad_cam(net: nn.Module, x: Tensor, layer: str | None = None, negate: bool = False) -> Tensor:
    """Grad-CAM of ``net``'s scalar output for one input (see the module docstring for the formula).

    Args:
        net: A network with the ``features`` contract (``feature_layers()``) returning ``(1,)`` or ``(1, 1)`` for
            one input; its :meth:`score` (pre-activation output) is used when it has one. It is run in eval mode
            (its mode is restored afterwards); no gradient is written to its parameters.
        x: ``(C, *spatial)``, one input (2D or 3D).
        layer: Name of the hooked layer (a key of ``net.feature_layers()``); None: the last one.
        negate: Explain ``-y`` (what lowers the output).

    Returns:
        ``(*spatial)`` float32 in [0, 1], on the CPU.

    Raises:
        ConfigError: a network without ``feature_layers``, an unknown layer, or an output that is not one scalar.
    """
    if not hasattr(net, "feature_layers"):
        raise ConfigError(
            f"grad_cam needs a network with feature_layers() (the features contract); {type(net).__name__} has none"
        )
    layers: dict[str, nn.Module] = getattr(net, "feature_layers")()  # noqa: B009 - a duck-typed capability
    if not layers:
        raise ConfigError(f"grad_cam: {type(net).__name__}.feature_layers() is empty")
    name = list(layers)[-1] if layer is None else layer
    if name not in layers:
        raise ConfigError(f"grad_cam: unknown layer {name!r}; the network offers {list(layers)}")
    module = layers[name]
    captured: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = net.training
    dev = next(net.parameters()).device
    fn: Callable[[Tensor], Tensor] = getattr(net, "score", net)
    try:
        net.eval()
        with torch.enable_grad():
            inp = x.detach().float().to(dev)[None].requires_grad_(True)  # the hooked activation needs a graph
            out = fn(inp).reshape(-1)
            if out.numel() != 1:
                raise ConfigError(f"grad_cam: the network's output has {out.numel()} values for one input, not 1")
            act = captured[-1]
            (grad,) = torch.autograd.grad(-out[0] if negate else out[0], act)
    finally:
        handle.remove()
        net.train(was_training)
    a, g = act.detach()[0], grad[0]
    alpha = g.flatten(1).mean(1)
    cam = torch.relu(torch.einsum("c,c...->...", alpha, a)).float().cpu()
    cam = _upsample(cam, x.shape[1:])
    top = float(cam.max())
    return cam / top if top > 0 else torch.zeros_like(cam)


def cnn_grad_cams(
    predictor: CNNPredictor, inputs: Sequence[CaseInput], layer: str | None = None, negate: bool = False
) -> list[Tensor]:
    """Grad-CAM of a fitted :class:`~trustseg.quality.cnn.CNNPredictor` for each case, at each case's own size.

    The map is computed on the case's input stack at the predictor's fixed size, then resized back to the case's
    spatial shape (bilinear/trilinear); every map lies in [0, 1].

    Returns:
        One ``(*inp.spatial_shape)`` tensor per case.
    """
    if predictor.net is None or predictor.size is None:
        raise ConfigError("cnn_grad_cams: the cnn quality predictor is not fitted (call fit or load)")
    net, size, n_img = predictor.net, predictor.size, predictor.image_channels
    cams = []
    for inp in inputs:
        x = qc_channels(inp, predictor.map_names, size, image_channels=n_img)
        cams.append(_upsample(grad_cam(net, x, layer, negate), inp.spatial_shape).clamp(0, 1))
    return cams


def _umap() -> Any:
    """The ``umap`` module, or None when umap-learn is not installed."""
    try:
        import umap  # optional extra trustseg[umap]
    except ImportError:
        return None
    return umap


def embed(X: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D embedding of ``N`` cases' feature vectors (one point per case, for a scatter plot).

    ``"pca"``: the first two principal components of the standardised features (each column ``(x - mean) / std``,
    constant columns left at 0; scikit-learn's PCA with its deterministic sign convention; a single feature gives
    a second coordinate of 0). ``"umap"``: UMAP of the standardised features (``umap-learn``, ``n_neighbors =
    min(15, N - 1)``, ``random_state = seed``). ``"auto"``: UMAP when umap-learn is installed and
    ``N >= UMAP_MIN_CASES``, else PCA.

    Args:
        X: ``(N, F)`` features (e.g. :meth:`CNNPredictor.embeddings` or a feature table), N >= 3.
        method: ``"auto"``, ``"umap"`` or ``"pca"``.
        seed: Random state (UMAP; PCA is deterministic).

    Returns:
        ``(emb (N, 2) float64, used)`` with ``used`` the method actually used (``"umap"`` or ``"pca"``).

    Raises:
        ConfigError: an unknown method, or ``"umap"`` asked for without umap-learn installed.
        DataError: not a 2-D array, fewer than 3 cases, or non-finite values.

    Example:
        >>> X = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
        >>> emb, used = embed(X, method="pca")
        >>> used, emb.shape, bool(np.allclose(emb[:, 1], 0))
        ('pca', (4, 2), True)
    """
    if method not in EMBED_METHODS:
        raise ConfigError(f"embed: method must be one of {EMBED_METHODS}, got {method!r}")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"embed: features must be (N, F), got shape {X.shape}")
    if X.shape[0] < 3:
        raise DataError(f"embed: a 2-D embedding needs at least 3 cases, got {X.shape[0]}")
    if X.shape[1] < 1 or not np.isfinite(X).all():
        raise DataError("embed: features must have at least one column and only finite values")
    umap = _umap() if method in ("auto", "umap") else None
    if method == "umap" and umap is None:
        raise ConfigError("embed: method 'umap' needs umap-learn (pip install 'trustseg[umap]'); or use 'pca'")
    std = X.std(0)
    Z = (X - X.mean(0)) / np.where(std > 0, std, 1.0)
    n = X.shape[0]
    if umap is not None and (method == "umap" or n >= UMAP_MIN_CASES):
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed)
        return np.asarray(reducer.fit_transform(Z), dtype=np.float64), "umap"
    k = min(2, Z.shape[1], n)
    emb = np.zeros((n, 2))
    emb[:, :k] = PCA(n_components=k, svd_solver="full", random_state=seed).fit_transform(Z)
    return emb, "pca"


def plot_embedding(
    emb: np.ndarray, colour: np.ndarray, path: str | Path, colour_label: str = "Dice", title: str = ""
) -> Path:
    """Scatter plot of a 2-D embedding, coloured by a per-case value (true or predicted Dice), with a colour bar.

    Args:
        emb: ``(N, 2)`` points (:func:`embed`).
        colour: ``(N,)`` values (NaN drawn grey).
        path: Output PNG (written atomically).
        colour_label: Colour bar label.
        title: Figure title.
    """
    emb, colour = np.asarray(emb, float), np.asarray(colour, float).reshape(-1)
    if emb.ndim != 2 or emb.shape[1] != 2 or len(colour) != len(emb):
        raise DataError(f"plot_embedding: need (N, 2) points and N colours, got {emb.shape} and {colour.shape}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4))
    ok = np.isfinite(colour)
    if (~ok).any():
        ax.scatter(emb[~ok, 0], emb[~ok, 1], s=14, c="lightgrey", label="no value")
        ax.legend(fontsize=7)
    sc = ax.scatter(emb[ok, 0], emb[ok, 1], s=14, c=colour[ok], cmap="viridis")
    fig.colorbar(sc, ax=ax, label=colour_label)
    ax.set(xlabel="embedding 1", ylabel="embedding 2", title=title or "case embedding")
    return save_figure(fig, path)


def largest_cam_slice(cam: np.ndarray | Tensor) -> int:
    """The index along the first axis of a 3-D map ``(D, H, W)`` whose slice has the largest sum (CAM mass).

    Example:
        >>> cam = np.zeros((4, 2, 2)); cam[2, 0, 0] = 1.0
        >>> largest_cam_slice(cam)
        2
    """
    a = np.asarray(torch.as_tensor(cam).detach().cpu(), dtype=float)
    return int(np.argmax(a.reshape(a.shape[0], -1).sum(1)))


def plot_grad_cam(
    image: np.ndarray | Tensor | None,
    cam: np.ndarray | Tensor,
    seg: np.ndarray | Tensor,
    path: str | Path,
    title: str = "",
) -> Path:
    """Figure of one case's Grad-CAM: the image with the segmentation's contours, and the CAM over it.

    Args:
        image: ``(*spatial)`` intensities of one channel (2D, or 3D), or None (a blank background).
        cam: ``(*spatial)`` map in [0, 1] (:func:`grad_cam`, :func:`cnn_grad_cams`).
        seg: ``(*spatial)`` predicted classes (one contour per foreground class).
        path: Output PNG (written atomically).
        title: Figure title; a 3-D case shows the slice along the first axis with the largest CAM mass
            (its index is added to the title).
    """
    cam_a = np.asarray(torch.as_tensor(cam).detach().cpu(), dtype=float)
    seg_a = np.asarray(torch.as_tensor(seg).detach().cpu())
    img_a = np.zeros_like(cam_a) if image is None else np.asarray(torch.as_tensor(image).detach().cpu(), dtype=float)
    if not (cam_a.shape == seg_a.shape == img_a.shape) or cam_a.ndim not in (2, 3):
        raise DataError(
            f"plot_grad_cam: image {img_a.shape}, CAM {cam_a.shape} and segmentation {seg_a.shape} must be one 2D "
            "or 3D shape"
        )
    if cam_a.ndim == 3:
        z = largest_cam_slice(cam_a)
        cam_a, seg_a, img_a = cam_a[z], seg_a[z], img_a[z]
        title = f"{title} (slice {z})".strip()
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for ax in axes:
        ax.imshow(img_a, cmap="gray")
        for k in np.unique(seg_a[seg_a > 0]):
            mask = (seg_a == k).astype(float)
            if 0 < mask.sum() < mask.size:
                ax.contour(mask, levels=[0.5], colors=[plt.cm.tab10(int(k) % 10)], linewidths=1)
        ax.set_axis_off()
    im = axes[1].imshow(cam_a, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    fig.colorbar(im, ax=axes[1], fraction=0.046, label="Grad-CAM")
    axes[0].set_title("image + segmentation", fontsize=8)
    axes[1].set_title("Grad-CAM", fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


#: How many of the largest feature importances :func:`plot_importance` shows.
TOP_FEATURES = 20


def plot_importance(importance: dict[str, float], path: str | Path, title: str) -> Path:
    """A horizontal bar chart of the :data:`TOP_FEATURES` largest feature importances, written atomically."""
    plt = pyplot()
    items = sorted(importance.items(), key=lambda kv: -kv[1])[:TOP_FEATURES][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    ax.set_xlabel("importance")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)
