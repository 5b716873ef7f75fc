"""Any trained module as a :class:`~trustseg.inference.predictor.Predictor`: schemes ``torchscript:`` and
``state_dict:``, with MC dropout, test-time augmentation and sliding windows.

The module maps images ``(B, C, *sp)`` to logits ``(B, K, *sp)`` (location keys: :mod:`.module_spec`). A
prediction of one image ``(C, *sp)``:

1. checked (dimensions, channels, finite), normalised (``normalize``), on the predictor's device;
2. for each test-time view ``v`` (``tta``: :data:`~trustseg.inference.adapters.views.TTA_VIEWS`) and each of
   ``S = max(1, mc_dropout)`` passes: ``p = v⁻¹(softmax(f(v(x))))``, the module's input zero-padded to
   ``multiple`` and its output cropped back. With ``mc_dropout = N > 0`` the module is in eval mode except its
   dropout modules (``torch.nn.Dropout*``, also inside TorchScript), which are in train mode, so every pass
   draws new masks; a module without dropout modules is refused. The samples are stacked view-major:
   ``probs`` ``(V·S, 1, K, *sp)``, never folded into the batch axis;
3. with ``patch_size`` and an image larger than it along an axis: MONAI's ``sliding_window_inference``
   (``mode="gaussian"``, σ = patch/8, the given ``overlap``) over step 2 for each window, blending the
   probabilities of each sample (a 1x1-convolution module gives exactly the whole-image result).

**Logits and temperature** (capabilities ``logits`` and ``temperature``): :meth:`TorchModulePredictor.predict_logits`
gives the untempered sample logits ``z`` ``(M, 1, K, *sp)`` of step 2 (views inverted on the logits; windows blend
logits), and with ``temperature = T`` every prediction is ``softmax(z / T)`` per sample (without sliding windows
exactly the softmax of :meth:`~TorchModulePredictor.predict_logits` over T). ``trustseg calibrate --model`` fits
T from the logits (:func:`trustseg.engine.calibrate.calibrate_predictor`).

Every :meth:`TorchModulePredictor.predict` reseeds a private copy of torch's generators with ``seed`` (dropout
masks), so predictions are reproducible and torch's global random state is left as it was.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from trustseg.core.errors import ConfigError
from trustseg.core.predictive import Predictive
from trustseg.inference.adapters.module_spec import (
    ModuleSpec,
    load_state_dict_module,
    load_torchscript,
    parse_location,
)
from trustseg.inference.adapters.views import TTA_VIEWS
from trustseg.inference.device import resolve_device
from trustseg.inference.padding import pad_to_multiple
from trustseg.inference.predictor import PREDICTORS, PredictorInfo, check_image

#: Class names of dropout modules, as TorchScript records them (``original_name``).
DROPOUT_NAMES = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"})
#: What predictions of these schemes can carry (``samples`` with ``tta``/``mc_dropout``).
MODULE_CAPABILITIES = frozenset({"samples", "logits", "temperature"})
#: The options ``trustseg predict`` may pass to these schemes.
MODULE_OPTIONS = frozenset({"tta", "mc_dropout", "patch_size", "overlap", "seed", "temperature"})


def dropout_layers(module: nn.Module) -> list[nn.Module]:
    """The dropout modules of ``module``: :class:`~torch.nn.modules.dropout._DropoutNd` instances, or TorchScript
    submodules compiled from one (their ``original_name``)."""
    return [
        m for m in module.modules() if isinstance(m, _DropoutNd) or getattr(m, "original_name", "") in DROPOUT_NAMES
    ]


class TorchModulePredictor:
    """A trained module (TorchScript or a state dict and its factory) predicting one image at a time.

    Args:
        module: The module, logits ``(B, K, *sp)`` of ``(B, C, *sp)``.
        spec: What it takes and predicts (:class:`~trustseg.inference.adapters.module_spec.ModuleSpec`).
        device: Where it runs (``auto``, ``cpu``, ``cuda:N``).
        tta: Test-time views (``none`` or ``flips``).
        mc_dropout: Stochastic passes per view with dropout active (0 = off: one deterministic pass).
        patch_size: Sliding-window size per spatial axis (``None``: whole images).
        overlap: Sliding-window overlap in ``[0, 1)``.
        seed: Seed of the dropout masks of every prediction.
        scheme: The scheme it was loaded by (for ``info.method``).
        temperature: Post-hoc temperature T > 0 dividing the logits (1: none); settable later as ``.temperature``.

    Raises:
        ConfigError: an unknown ``tta`` ("did you mean"), ``mc_dropout`` < 0 or on a module without dropout
            modules, a ``patch_size`` of another dimensionality, or an overlap outside ``[0, 1)``.
    """

    def __init__(
        self,
        module: nn.Module,
        spec: ModuleSpec,
        device: str | torch.device = "auto",
        tta: str = "none",
        mc_dropout: int = 0,
        patch_size: Sequence[int] | None = None,
        overlap: float = 0.5,
        seed: int = 0,
        scheme: str = "torchscript",
        temperature: float = 1.0,
    ):
        self.device = resolve_device(device, "predict device")
        self.module = module.to(self.device).eval()
        self.spec = spec
        self.views = TTA_VIEWS.get(tta)(spec.spatial_dims)
        self.mc_dropout = int(mc_dropout)
        self.dropout = dropout_layers(self.module)
        if self.mc_dropout < 0:
            raise ConfigError(f"--mc-dropout must be >= 0 (0 = off), got {self.mc_dropout}")
        if self.mc_dropout and not self.dropout:
            raise ConfigError(
                f"--mc-dropout needs dropout layers (torch.nn.Dropout*) in the model; {spec.path} has none "
                "(predict without --mc-dropout, or export the model with its dropout modules)"
            )
        self.patch_size = None if patch_size is None else tuple(int(p) for p in patch_size)
        if self.patch_size is not None and (len(self.patch_size) != spec.spatial_dims or min(self.patch_size) < 1):
            raise ConfigError(f"--patch-size must hold {spec.spatial_dims} sizes >= 1, got {list(self.patch_size)}")
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
        self.overlap = float(overlap)
        self.seed = int(seed)
        self.temperature = float(temperature)
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ConfigError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.samples = len(self.views) * max(1, self.mc_dropout)
        extras = [f"tta={tta}"] if tta != "none" else []
        extras += [f"mc_dropout={self.mc_dropout}"] if self.mc_dropout else []
        self._info = PredictorInfo(
            classes=spec.classes,
            in_channels=spec.in_channels,
            spatial_dims=spec.spatial_dims,
            method="+".join([scheme, *extras]),
            num_samples=self.samples,
            capabilities=frozenset({"logits", "temperature", *(["samples"] if self.samples > 1 else [])}),
            source=f"{scheme}:{spec.path}",
        )

    @property
    def info(self) -> PredictorInfo:
        """What the model needs and offers."""
        return self._info

    def prepare(self, image: np.ndarray | Tensor) -> Tensor:
        """The module's input ``(C, *sp)`` float32: checked, then normalised (``normalize``)."""
        check_image(self._info, image)
        x = (image.detach().cpu() if isinstance(image, Tensor) else torch.from_numpy(np.asarray(image))).float()
        if self.spec.normalize == "zscore":
            flat = x.reshape(x.shape[0], -1)
            mean, std = flat.mean(1), flat.std(1, unbiased=False).clamp_min(1e-8)
            x = (x - mean.view(-1, *[1] * (x.dim() - 1))) / std.view(-1, *[1] * (x.dim() - 1))
        return x

    def _logits(self, x: Tensor) -> Tensor:
        """``f(x)`` ``(B, K, *sp)``, padded to ``multiple`` and cropped back."""
        xp, spatial = pad_to_multiple(x, self.spec.multiple)
        z = self.module(xp)
        if not isinstance(z, Tensor) or z.dim() != x.dim() or z.shape[1] != len(self.spec.classes):
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ConfigError(
                f"{self._info.source}: the module returned {shape} for an input {tuple(xp.shape)}; expected logits "
                f"(B, K = {len(self.spec.classes)}, *spatial) (check classes=)"
            )
        crop: tuple[Any, ...] = (..., *(slice(0, s) for s in spatial))
        return z[crop]

    def sample_probs(self, x: Tensor) -> Tensor:
        """Probabilities ``(V·S, B, K, *sp)`` of a batch ``x`` ``(B, C, *sp)``: every view and pass, view-major."""
        out = []
        for view in self.views:
            for _ in range(max(1, self.mc_dropout)):
                z = self._logits(view.forward(x)).float() / self.temperature
                out.append(view.inverse(torch.softmax(z, 1)))
        return torch.stack(out, 0)

    def sample_logits(self, x: Tensor) -> Tensor:
        """Untempered logits ``(V·S, B, K, *sp)`` of a batch ``x`` ``(B, C, *sp)``, view-major as
        :meth:`sample_probs` (each view's inverse applied to its logits)."""
        out = []
        for view in self.views:
            for _ in range(max(1, self.mc_dropout)):
                out.append(view.inverse(self._logits(view.forward(x)).float()))
        return torch.stack(out, 0)

    def _windowed(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``fn`` over Gaussian-weighted sliding windows (MONAI), samples kept apart: ``(M, B, K, *sp)``."""
        m, k = self.samples, len(self.spec.classes)

        def flat(w: Tensor) -> Tensor:  # (M, B, K, *w) -> (B, M·K, *w): MONAI blends channels
            p = fn(w)
            return p.movedim(0, 1).reshape(p.shape[1], m * k, *p.shape[3:])

        patch = tuple(self.patch_size or x.shape[2:])
        out = cast(Tensor, sliding_window_inference(x, patch, 1, flat, overlap=self.overlap, mode="gaussian"))
        return out.reshape(x.shape[0], m, k, *x.shape[2:]).movedim(1, 0)

    @torch.no_grad()
    def predict_batch(self, x: Tensor) -> Predictive:
        """Predict a batch ``(B, C, *sp)`` of prepared images on the predictor's device (stays there)."""
        x = x.to(self.device)
        with self._modes():
            return Predictive(probs=self._run(self.sample_probs, x))

    def _run(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``fn`` over ``x``, by sliding window when a patch size is set and ``x`` is larger."""
        spatial = tuple(x.shape[2:])
        if self.patch_size is not None and any(s > p for s, p in zip(spatial, self.patch_size)):
            return self._windowed(fn, x)
        return fn(x)

    @contextlib.contextmanager
    def _modes(self) -> Iterator[None]:
        """Eval mode, dropout in train mode with ``mc_dropout``; the modules' modes restored afterwards."""
        modes = {m: m.training for m in self.module.modules()}
        try:
            self.module.eval()
            for m in self.dropout if self.mc_dropout else ():
                m.train()
            yield
        finally:
            for m, mode in modes.items():
                m.training = mode

    @torch.no_grad()
    def predict_logits(self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None) -> Tensor:
        """The ``logits`` capability: untempered sample logits ``(M, 1, K, *sp)`` of one raw image, float32 on
        the CPU, with the same views, dropout masks (seeded as :meth:`predict`) and windows as :meth:`predict`;
        ``predict(image).probs == softmax(predict_logits(image) / temperature, 2)`` without sliding windows."""
        x = self.prepare(image)[None].to(self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), self._modes():
            torch.manual_seed(self.seed)
            return self._run(self.sample_logits, x).float().cpu()

    def predict(self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None) -> Predictive:
        """Predict one raw image ``(C, *sp)``: ``B = 1``, CPU, float32, ``M = views × max(1, mc_dropout)``."""
        x = self.prepare(image)[None]
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            pred = self.predict_batch(x)
        return pred.map(lambda t: t.float().cpu())


def check_module_options(options: dict[str, Any], scheme: str) -> dict[str, Any]:
    """``options`` when every key is one of :data:`MODULE_OPTIONS` (else a ConfigError naming the scheme)."""
    unknown = sorted(set(options) - MODULE_OPTIONS)
    if unknown:
        raise ConfigError(f"{scheme}: unknown option(s) {unknown}; known: {', '.join(sorted(MODULE_OPTIONS))}")
    return options


@PREDICTORS.register(
    "torchscript",
    doc="a TorchScript module (logits); PATH?classes=...; --tta flips, --mc-dropout N, --patch-size",
    options=MODULE_OPTIONS,
    capabilities=MODULE_CAPABILITIES,
)
def _torchscript(location: str, device: str | torch.device = "auto", **options: Any) -> TorchModulePredictor:
    spec = parse_location(location, "torchscript")
    dev = resolve_device(device, "predict device")
    return TorchModulePredictor(
        load_torchscript(spec, dev), spec, dev, scheme="torchscript", **check_module_options(options, "torchscript")
    )


@PREDICTORS.register(
    "state_dict",
    doc="weights (weights_only) + a module factory: PATH?factory=pkg.mod:fn&classes=...; --tta, --mc-dropout",
    options=MODULE_OPTIONS,
    capabilities=MODULE_CAPABILITIES,
)
def _state_dict(location: str, device: str | torch.device = "auto", **options: Any) -> TorchModulePredictor:
    spec = parse_location(location, "state_dict")
    dev = resolve_device(device, "predict device")
    module = load_state_dict_module(spec, dev)
    return TorchModulePredictor(module, spec, dev, scheme="state_dict", **check_module_options(options, "state_dict"))


__all__ = ["DROPOUT_NAMES", "MODULE_OPTIONS", "TorchModulePredictor", "dropout_layers"]
