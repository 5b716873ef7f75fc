"""The image-based quality predictor (``trustseg qc fit --predictor cnn``): a CNN on a stack of the image, the
prediction and its uncertainty maps, trained to regress a case's Dice (or HD95) without ground truth.

The two frameworks of the segmentation-quality study (methods.md, "Segmentation quality prediction") are the two
settings of ``use_image``: (a) prediction + uncertainty maps, (b) image + prediction + uncertainty maps.

The input stack is :func:`trustseg.quality.cnn_channels.qc_channels` (its module documents the channel order);
the network is :class:`trustseg.quality.cnn_net.QualityNet`.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from trustseg.core.atomic import atomic_torch_save, atomic_write_json
from trustseg.core.errors import ConfigError, DataError
from trustseg.engine.seeding import epoch_seed, make_generator
from trustseg.inference.device import resolve_device
from trustseg.measures.registry import MEASURES
from trustseg.quality.cnn_channels import channel_names, qc_channels
from trustseg.quality.cnn_net import QualityNet
from trustseg.quality.inputs import CaseInput
from trustseg.quality.registry import register_qc_predictor

#: ``kind`` written into ``cnn.json`` (a JSON of another kind is refused on load).
KIND = "trustseg.quality.cnn"
#: Version of the ``cnn.json`` / ``cnn.pt`` pair.
FORMAT_VERSION = 1
WEIGHTS_FILE = "cnn.pt"
CONFIG_FILE = "cnn.json"
TARGETS = {"dice": "sigmoid", "hd95": "softplus"}
DEFAULT_SIZE = {2: (64, 64), 3: (32, 32, 32)}


@register_qc_predictor("cnn", input="image", file=WEIGHTS_FILE, doc="CNN on image + prediction + uncertainty maps")
class CNNPredictor:
    """Regress a case's quality (Dice or HD95) from its :func:`qc_channels` stack with a :class:`QualityNet`.

    Training: MSE between the network's output and ``y / y_scale`` (``y_scale`` = 1 for Dice, the mean training
    HD95 for HD95, so the softplus output starts at the right order of magnitude), AdamW, mini-batches in an order
    drawn from :func:`~trustseg.engine.seeding.epoch_seed` ``(seed, "order", epoch)``, optional random flips along
    every spatial axis; the head's bias starts at the inverse activation of the mean target. The weights are
    initialised under ``epoch_seed(seed, "init")`` inside a forked RNG (the global generators are untouched),
    so a fit is deterministic on CPU.

    Args:
        map_names: Uncertainty maps stacked as channels (registered measure names; may be empty).
        size: Fixed spatial size of the stack; None: ``(64, 64)`` in 2D, ``(32, 32, 32)`` in 3D (chosen from the
            first training case).
        use_image: Stack the image channels (framework (b)); False: prediction and maps only (framework (a)).
        width: First block's channels.
        depth: Blocks of the network.
        epochs: Passes over the training cases.
        batch_size: Cases per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        seed: Base seed.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (resolved when fitting or predicting).
        target: ``"dice"`` (sigmoid output) or ``"hd95"`` (softplus output).
        flip: Random flips along each spatial axis as augmentation (quality is flip-invariant).

    Raises:
        ConfigError: an argument out of range or an unknown map name.
    """

    def __init__(
        self,
        map_names: Sequence[str] = (),
        size: Sequence[int] | None = None,
        use_image: bool = True,
        width: int = 16,
        depth: int = 3,
        epochs: int = 30,
        batch_size: int = 16,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        device: str = "auto",
        target: str = "dice",
        flip: bool = True,
    ):
        if isinstance(map_names, str):
            raise ConfigError(f"cnn quality predictor: map_names must be a list of names, got {map_names!r}")
        for m in map_names:
            MEASURES.get(m)  # unknown name -> UnknownNameError with "did you mean"
        if target not in TARGETS:
            raise ConfigError(f"cnn quality predictor: target must be one of {sorted(TARGETS)}, got {target!r}")
        if size is not None and (len(size) not in (2, 3) or any(int(s) < 1 for s in size)):
            raise ConfigError(f"cnn quality predictor: size must be 2 or 3 positive sizes, got {size!r}")
        ints = {"width": width, "depth": depth, "batch_size": batch_size, "epochs": epochs, "seed": seed}
        for name, v in ints.items():
            low = 0 if name in ("epochs", "seed") else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"cnn quality predictor: {name} must be an integer >= {low}, got {v!r}")
        if not (lr > 0 and math.isfinite(lr)) or not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise ConfigError(f"cnn quality predictor: need lr > 0 and weight_decay >= 0, got {lr!r}, {weight_decay!r}")
        self.map_names = list(map_names)
        self.size = None if size is None else tuple(int(s) for s in size)
        self.use_image = bool(use_image)
        self.width, self.depth, self.epochs, self.batch_size = width, depth, epochs, batch_size
        self.lr, self.weight_decay, self.seed, self.device = float(lr), float(weight_decay), seed, device
        self.target = target
        self.flip = bool(flip)
        self.net: QualityNet | None = None
        self.num_classes: int | None = None
        self.image_channels = 0
        self.y_scale = 1.0
        self.losses: list[float] = []

    # ---------------------------------------------------------------- configuration
    def params(self) -> dict[str, Any]:
        """Every constructor argument, JSON-ready."""
        return {
            "map_names": list(self.map_names),
            "size": None if self.size is None else list(self.size),
            "use_image": self.use_image,
            "width": self.width,
            "depth": self.depth,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "device": self.device,
            "target": self.target,
            "flip": self.flip,
        }

    @property
    def channels(self) -> list[str]:
        """The input channels' names (after :meth:`fit`)."""
        self._check_fitted()
        assert self.num_classes is not None
        return channel_names(self.num_classes, self.map_names, self.image_channels)

    @property
    def spatial_dims(self) -> int:
        """2 or 3 (after :meth:`fit`, or when ``size`` was given)."""
        if self.size is None:
            raise ConfigError("cnn quality predictor: not fitted yet (no size)")
        return len(self.size)

    def _check_fitted(self) -> None:
        if self.net is None:
            raise ConfigError("cnn quality predictor: not fitted yet (call fit or load)")

    def _stack(self, inputs: Sequence[CaseInput]) -> Tensor:
        """``(B, C', *size)`` of a batch, checking every case's classes against the fitted ones."""
        assert self.size is not None
        for inp in inputs:
            if inp.num_classes != self.num_classes:
                raise DataError(
                    f"case {inp.case_id!r}: {inp.num_classes} classes, the quality predictor was fitted on "
                    f"{self.num_classes}"
                )
        return torch.stack(
            [qc_channels(i, self.map_names, self.size, image_channels=self.image_channels) for i in inputs]
        )

    def _build(self, in_channels: int) -> QualityNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_seed(self.seed, "init"))
            return QualityNet(in_channels, len(self.size or ()), self.width, self.depth, TARGETS[self.target])

    # ---------------------------------------------------------------- fit / predict
    def fit(self, inputs: Sequence[CaseInput], y: np.ndarray, progress: bool = False) -> CNNPredictor:
        """Train on cases ``inputs`` with true quality ``y`` ``(N,)``.

        Raises:
            DataError: no case, ``y`` of another length or with non-finite values, Dice outside [0, 1], a
                negative HD95, cases of mixed class counts, image channels or dimensionality.
        """
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if len(inputs) == 0:
            raise DataError("cnn quality predictor: no training case")
        if len(y) != len(inputs):
            raise DataError(f"cnn quality predictor: {len(inputs)} cases but {len(y)} target values")
        bad = [inputs[int(i)].case_id for i in np.flatnonzero(~np.isfinite(y))]
        if bad:
            raise DataError(f"cnn quality predictor: non-finite {self.target} for case(s) {bad[:10]}")
        lo, hi = (0.0, 1.0) if self.target == "dice" else (0.0, math.inf)
        if y.min() < lo or y.max() > hi:
            raise DataError(f"cnn quality predictor: {self.target} values must lie in [{lo}, {hi}]")
        first = inputs[0]
        dims = len(first.spatial_shape)
        if self.size is None:
            self.size = DEFAULT_SIZE.get(dims, (32,) * dims)
        self.num_classes = first.num_classes
        if self.use_image:
            if first.image is None:
                raise DataError(f"case {first.case_id!r}: no image; pass images or use use_image=False")
            self.image_channels = int(first.image.shape[0])
        else:
            self.image_channels = 0
        names = channel_names(self.num_classes, self.map_names, self.image_channels)
        self.y_scale = 1.0 if self.target == "dice" else max(float(y.mean()), 1e-6)
        t = torch.as_tensor(y / self.y_scale, dtype=torch.float32)
        dev = resolve_device(self.device, "cnn quality predictor device")
        net = self._build(len(names))
        m = float(t.mean())
        with torch.no_grad():  # start at the mean target
            net.head.bias.fill_(math.log(m / (1 - m)) if self.target == "dice" else math.log(math.expm1(m)))
            net.head.bias.clamp_(-4.0, 4.0)
        net.to(dev).train()
        self.net = net
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.losses = []
        epochs: Any = range(self.epochs)
        if progress:
            from rich.progress import track  # optional display dependency, imported only when shown

            epochs = track(epochs, description="quality CNN")
        n = len(inputs)
        for epoch in epochs:
            gen = make_generator(epoch_seed(self.seed, "order", epoch))
            order = torch.randperm(n, generator=gen).tolist()
            total = 0.0
            for s in range(0, n, self.batch_size):
                idx = order[s : s + self.batch_size]
                if len(idx) < 2 and n >= 2:  # BatchNorm needs two samples; fold a lone last case into the batch
                    idx = order[s - 1 : s + 1]
                x = self._stack([inputs[i] for i in idx])
                if self.flip:
                    axes = [a + 2 for a in range(dims) if bool(torch.rand((), generator=gen) < 0.5)]
                    x = x.flip(axes) if axes else x
                pred = net(x.to(dev))
                loss = F.mse_loss(pred, t[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            self.losses.append(total / n)
        net.eval()
        return self

    @torch.no_grad()
    def predict(self, inputs: Sequence[CaseInput]) -> np.ndarray:
        """Predicted quality ``(N,)`` float64 (Dice in (0, 1), or HD95 > 0 in the training targets' unit)."""
        self._check_fitted()
        assert self.net is not None
        net = self.net.eval()
        dev = next(net.parameters()).device
        out = [
            net(self._stack(inputs[s : s + self.batch_size]).to(dev)).cpu()
            for s in range(0, len(inputs), self.batch_size)
        ]
        return (torch.cat(out).double().numpy() * self.y_scale) if out else np.zeros(0)

    @torch.no_grad()
    def embeddings(self, inputs: Sequence[CaseInput]) -> np.ndarray:
        """The pooled features the head reads, ``(N, width * 2**(depth-1))`` float64 (for UMAP/PCA plots)."""
        self._check_fitted()
        assert self.net is not None
        net = self.net.eval()
        dev = next(net.parameters()).device
        out = [
            net.embed(self._stack(inputs[s : s + self.batch_size]).to(dev)).cpu()
            for s in range(0, len(inputs), self.batch_size)
        ]
        return torch.cat(out).double().numpy() if out else np.zeros((0, net.embedding_dim))

    # ---------------------------------------------------------------- save / load
    def save(self, folder: str | Path) -> list[Path]:
        """Write ``cnn.pt`` (the network's ``state_dict``) and ``cnn.json`` (every constructor argument, channel
        names, spatial dims, classes, target scale, format version) into ``folder``, each atomically."""
        self._check_fitted()
        assert self.net is not None
        folder = Path(folder)
        state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        meta = {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "params": self.params(),
            "channels": self.channels,
            "spatial_dims": self.spatial_dims,
            "num_classes": self.num_classes,
            "image_channels": self.image_channels,
            "y_scale": self.y_scale,
        }
        return [atomic_torch_save(state, folder / WEIGHTS_FILE), atomic_write_json(folder / CONFIG_FILE, meta)]

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> CNNPredictor:
        """The predictor :meth:`save` wrote into ``folder`` (``device`` overrides the saved one).

        Raises:
            ConfigError: a missing, truncated or foreign ``cnn.json`` or ``cnn.pt`` (naming the file and the
                problem).
        """
        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        meta = _read_meta(cfg_path)
        try:
            params = dict(meta["params"])
            if device is not None:
                params["device"] = device
            self = cls(**params)
            self.size = tuple(int(s) for s in meta["params"]["size"])
            self.num_classes = int(meta["num_classes"])
            self.image_channels = int(meta["image_channels"])
            self.y_scale = float(meta["y_scale"])
            names = channel_names(self.num_classes, self.map_names, self.image_channels)
            if names != list(meta["channels"]) or int(meta["spatial_dims"]) != len(self.size):
                raise ValueError("channels or spatial dims do not agree with the parameters")
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{cfg_path}: not a valid cnn quality predictor description ({e})") from None
        net = self._build(len(names))
        state = _read_state(w_path)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ConfigError(
                f"{w_path}: weights do not fit the network described in {CONFIG_FILE} ({' '.join(first[:3])})"
            ) from None
        self.net = net.to(resolve_device(self.device, "cnn quality predictor device")).eval()
        return self


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing (not a cnn quality predictor folder)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); truncated or not a cnn quality predictor") from None
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        kind = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
        raise ConfigError(f"{path}: of kind {kind!r}, not a cnn quality predictor ({KIND!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{path}: format version {meta.get('format_version')!r}, this trustseg reads {FORMAT_VERSION}"
        )
    return meta


def _read_state(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing (the quality CNN's weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise ConfigError(
            f"{path}: holds a pickled object{what}, not a plain state dict; refused by weights_only loading"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: unreadable, truncated or not a torch checkpoint ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ConfigError(f"{path}: not a state dict (name -> tensor), got {type(state).__name__}")
    return state


__all__ = ["CNNPredictor", "channel_names", "qc_channels"]
