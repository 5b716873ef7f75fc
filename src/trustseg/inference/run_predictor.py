"""A trained trustseg run as a :class:`~trustseg.inference.predictor.Predictor` (scheme ``run``).

* :func:`load_run`: the method and its trained member networks (``best.pt`` of each member, else ``last.pt``),
  loaded with ``weights_only=True``; the post-hoc temperature of ``run.json`` is applied.
* :class:`RunPredictor`: ``predict(image, spacing)`` for one raw image (normalised with the statistics stored in
  ``run.json``, as in training), through the one inference function
  :func:`trustseg.inference.tensor.predict_tensor`, on the predictor's device. 2D images and volumes no larger
  than the training patch are predicted whole (zero-padded to the network's size multiple and cropped back);
  larger 3D volumes by sliding window.

Capabilities ``temperature`` (:attr:`RunPredictor.temperature`, from ``run.json``, settable), for methods
built on logits, ``logits`` (:meth:`RunPredictor.predict_logits`: the untempered sample logits of a whole image)
and, for runs of several member networks (an ensemble), ``members`` (:attr:`RunPredictor.member_count`,
:meth:`RunPredictor.predict_members`: one member's samples at a time, for ``trustseg predict --shard members``).
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from trustseg.core.config import from_dict
from trustseg.core.errors import ConfigError, DataError
from trustseg.core.memory import available_bytes, is_allocation_failure
from trustseg.core.predictive import Predictive
from trustseg.data.normalization import NormStats
from trustseg.inference.device import resolve_device
from trustseg.inference.memory import MemoryNeededError, check_fits, memory_message, predict_bytes
from trustseg.inference.padding import pad_to_multiple
from trustseg.inference.predictor import PREDICTORS, PredictorInfo, check_image
from trustseg.inference.run_folder import (
    RUN_JSON,
    check_finite_weights,
    check_run_info,
    load_checkpoint,
    member_checkpoint,
    read_run_json,
    size_multiple,
)
from trustseg.inference.tensor import predict_tensor
from trustseg.methods.base import METHODS, Method, build_method
from trustseg.models.config import NetConfig


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", which: str = "best"
) -> tuple[Method, list[nn.Module], dict[str, Any]]:
    """Load a trained run.

    Args:
        run_dir: Run folder (``config.yaml``, ``run.json``, ``member_<m>/``).
        device: Where to put the models.
        which: ``best`` (``best.pt``, falling back to ``last.pt``) or ``last``.

    Returns:
        ``(method, models, info)``: the method (temperature set from ``run.json``), one eval-mode network per
        member, and the ``run.json`` contents plus ``checkpoints`` (the files loaded) and ``run_dir``.

    Raises:
        DataError: not a run folder, a ``run.json`` key missing or out of range (a temperature that is not a
            finite number > 0 included), a member without a checkpoint, or a checkpoint with NaN/Inf weights
            (naming the file and the first bad tensor).
    """
    run_dir = Path(run_dir)
    info = read_run_json(run_dir)
    check_run_info(info, run_dir / RUN_JSON)
    net = from_dict(NetConfig, dict(info.get("net") or {}), where=f"{run_dir / 'run.json'}: net")
    params = METHODS.get(info["method"]).upgrade_params(dict(info["params"]))  # runs saved by older versions
    method = build_method(info["method"], net, info["spatial_dims"], info["in_channels"], info["num_classes"], params)
    t = info.get("temperature")
    method.temperature = 1.0 if t is None else float(t)
    models, files = [], []
    for m in range(int(info["members"])):
        path = member_checkpoint(run_dir, m, which)
        state = load_checkpoint(path)
        check_finite_weights(state, path)
        model = method.build_model(m)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:  # missing/unexpected keys or other shapes: another network or a damaged file
            first = str(e).splitlines()[1:2] or [str(e)]
            raise DataError(
                f"the checkpoint does not fit the network run.json describes ({first[0].strip()[:200]})", path
            ) from None
        models.append(model.to(device).eval())
        files.append(str(path))
    info = {**info, "checkpoints": files, "run_dir": str(run_dir)}
    return method, models, info


class RunPredictor:
    """A trained trustseg run, predicting one image at a time on one device.

    Args:
        run_dir: The run folder.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda:N`` or a device.
        which: Checkpoint of each member: ``best`` (falling back to ``last``) or ``last``.
        overlap: Sliding-window overlap for 3D volumes larger than the training patch.
        seed: Seed of the random draws of a prediction (MC-dropout masks): every :meth:`predict` call reseeds a
            private copy of torch's generators with it, so an image gets the same prediction whatever was
            predicted before it and by whichever path (``trustseg predict``, evaluation, OOD/noise protocols);
            torch's global random state is left as it was.
    """

    def __init__(
        self,
        run_dir: str | Path,
        device: str | torch.device = "auto",
        which: str = "best",
        overlap: float = 0.5,
        seed: int = 0,
    ):
        self.device = resolve_device(device, "predict device")
        self.method, self.models, self.run_info = load_run(run_dir, device=self.device, which=which)
        self.patch_size = self.run_info.get("patch_size")
        self.multiple = size_multiple(self.run_info)
        self.overlap = overlap
        self.seed = int(seed)
        self._outputs: int | None = None  # float32 outputs per voxel (measured by memory_needed)
        ri = self.run_info
        stored = ri.get("normalization")
        #: The run's intensity normalisation (``None`` for runs trained before it existed: raw intensities).
        self.normalization = None if stored is None else NormStats.from_dict(stored, where=f"{run_dir}/run.json")
        self._info = PredictorInfo(
            classes=tuple(ri["classes"]),
            in_channels=int(ri["in_channels"]),
            spatial_dims=int(ri["spatial_dims"]),
            method=str(ri["method"]),
            primary_measure=self.method.primary_measure,
            samples_are_heads=self.method.samples_are_heads,
            capabilities=frozenset(
                {
                    "temperature",
                    *(["logits"] if hasattr(self.method, "sample_logits") else []),
                    *(["members"] if len(self.models) > 1 else []),
                }
            ),
            intensity_scale=None if self.normalization is None else tuple(self.normalization.scale),
            source=str(run_dir),
        )

    @property
    def info(self) -> PredictorInfo:
        """What the run needs and offers."""
        return self._info

    @property
    def temperature(self) -> float:
        """The post-hoc temperature dividing the method's logits (``run.json``'s, 1 without one)."""
        return float(self.method.temperature)

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.method.temperature = float(value)

    @torch.no_grad()
    def predict_logits(self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None) -> Tensor:
        """The ``logits`` capability: the method's untempered sample logits ``(M, 1, K, *spatial)`` of one raw
        image, predicted whole (zero-padded to the size multiple, cropped back; no sliding window), float32 on
        the CPU, seeded as :meth:`predict`.

        Raises:
            ConfigError: a method without logits (e.g. evidential).
        """
        fn = getattr(self.method, "sample_logits", None)
        if fn is None:
            raise ConfigError(f"method {self.method.name!r} predicts no logits; temperature scaling does not apply")
        x, spatial = pad_to_multiple(self.prepare(image)[None].to(self.device), self.multiple)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            z = fn(self.models, x)
        return z[(..., *(slice(0, s) for s in spatial))].float().cpu()

    @torch.no_grad()
    def predict_batch(self, x: Tensor) -> Predictive:
        """Predict a batch ``(B, C, *spatial)`` of prepared images on the predictor's device (stays there)."""
        return predict_tensor(self.method, self.models, x.to(self.device), self.patch_size, self.multiple, self.overlap)

    def prepare(self, image: np.ndarray | Tensor, consume: bool = False) -> Tensor:
        """The network input ``(C, *spatial)`` float32 for a raw image: checked, then normalised as in training.

        A voxel-wise normalisation runs slab by slab along the first spatial axis (its float64 temporaries stay
        slab-sized) into one float32 array: a new one, or with ``consume`` the image's own memory when it is a
        writable C-contiguous float32 numpy array not backed by a file (the raw values are then overwritten; the
        result is the same). The per-image ``percentile`` scheme runs on the whole image.
        """
        check_image(self._info, image)
        return self._normalised(image, consume)

    def _normalised(self, image: np.ndarray | Tensor, consume: bool) -> Tensor:
        """:meth:`prepare` without the check (``image`` already checked)."""
        if self.normalization is not None:
            arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
            if not self.normalization.pointwise or arr.ndim < 3:
                return torch.from_numpy(self.normalization.apply(arr))
            own = consume and _consumable(arr)
            out = arr if own else np.empty(arr.shape, dtype=np.float32)
            step = max(1, (1 << 18) // max(1, int(np.prod(arr.shape[2:])) * arr.shape[0]))
            for i in range(0, arr.shape[1], step):
                out[:, i : i + step] = self.normalization.apply(arr[:, i : i + step])
            return torch.from_numpy(out)
        return torch.as_tensor(np.asarray(image, dtype=np.float32) if not isinstance(image, Tensor) else image).float()

    def memory_needed(self, shape: Sequence[int]) -> int:
        """Estimated peak bytes of predicting (and writing) an image of shape ``(C, *spatial)``
        (:func:`trustseg.inference.memory.predict_bytes`; the per-voxel outputs measured once on a tiny input)."""
        if self._outputs is None:
            side = self.multiple * max(2, -(-8 // self.multiple))  # >= 2 voxels at the coarsest level (norms)
            tiny = torch.zeros((1, self._info.in_channels, *(side,) * self._info.spatial_dims))
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                p = self.predict_batch(tiny)
            self._outputs = sum(int(math.prod(t.shape[: t.dim() - self._info.spatial_dims])) for t in _tensors(p))
        spatial = tuple(int(s) for s in shape[1:])
        patch = self.patch_size
        sliding = self._sliding(spatial)
        channels = (self.run_info.get("net") or {}).get("params", {}).get("channels")
        activations = 4 * int(channels[0]) if isinstance(channels, (list, tuple)) and channels else 64
        return predict_bytes(spatial, int(shape[0]), self._outputs, patch if sliding else None, activations)

    def predict(self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None) -> Predictive:
        """Predict one raw image ``(C, *spatial)``: a Predictive with ``B = 1``, on the CPU, float32.

        Raises:
            MemoryNeededError: the estimated memory (:meth:`memory_needed`) exceeds the available memory
                (:func:`trustseg.core.memory.available_bytes`), checked before anything is allocated, or
                the allocator failed during the prediction; the message names both and the options that help.
        """
        return self._predict(image, consume=False)

    def predict_consuming(self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None) -> Predictive:
        """:meth:`predict` for a caller that gives the image away: it may be normalised in place (see
        :meth:`prepare`; ``trustseg predict`` without ``--qc``), so the prediction holds one copy of the volume
        instead of two. The same prediction as :meth:`predict`; the array's raw values are lost."""
        return self._predict(image, consume=True)

    def _predict(self, image: np.ndarray | Tensor, consume: bool) -> Predictive:
        """The body of :meth:`predict` and :meth:`predict_consuming`."""
        check_image(self._info, image)
        needed = self.memory_needed(tuple(image.shape))
        path = "sliding window" if self._sliding(tuple(image.shape[1:])) else "whole image"
        check_fits(needed, path)
        try:
            x = self._normalised(image, consume)[None]
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                pred = self.predict_batch(x)
            del x
            return pred.map(lambda t: t.float().cpu())
        except (RuntimeError, MemoryError) as e:
            if not is_allocation_failure(e):
                raise
            raise MemoryNeededError(memory_message(needed, available_bytes(), path)) from None

    @property
    def member_count(self) -> int:
        """The number of member networks (the ``members`` capability; 1 for a run of one network)."""
        return len(self.models)

    @torch.no_grad()
    def predict_members(
        self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None, members: Sequence[int] | None = None
    ) -> Iterator[Predictive]:
        """The ``members`` capability: the prediction of each member in ``members`` (default all), one at a time.

        The image is checked and normalised once; member ``i`` is predicted alone, seeded as :meth:`predict`, so
        its samples ``(S, 1, K, *spatial)`` (``S = 1`` for an ensemble, the views of a test-time-augmented one)
        are those :meth:`predict` stacks for it; the union over all members is :meth:`predict`'s prediction.
        Memory: one member's output at a time (float32, on the CPU).

        Raises:
            ConfigError: a member index out of range.
        """
        check_image(self._info, image)
        chosen = list(range(len(self.models))) if members is None else [int(m) for m in members]
        bad = [m for m in chosen if not 0 <= m < len(self.models)]
        if bad:
            raise ConfigError(f"members {bad} out of range 0..{len(self.models) - 1} of run {self._info.source}")
        x = self._normalised(image, False)[None].to(self.device)
        for m in chosen:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                pred = predict_tensor(self.method, [self.models[m]], x, self.patch_size, self.multiple, self.overlap)
            yield pred.map(lambda t: t.float().cpu())
            del pred

    def _sliding(self, spatial: tuple[int, ...]) -> bool:
        """Whether an image of this spatial shape is predicted by sliding window."""
        patch = self.patch_size
        return patch is not None and len(spatial) == 3 and any(s > int(q) for s, q in zip(spatial, patch))


def _consumable(arr: np.ndarray) -> bool:
    """Whether ``arr`` may be normalised in place: float32, C-contiguous, writable and not backed by a file (a
    memory-mapped array, or a view of one, would write the normalised values into that file)."""
    f = arr.flags
    if arr.dtype != np.float32 or not f.c_contiguous or not f.writeable:
        return False
    base: object = arr
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return False
        base = getattr(base, "base", None)
    return True


def _tensors(pred: Predictive) -> list[Tensor]:
    """Every tensor of a prediction (probs, alpha, extras)."""
    return [pred.probs, *([pred.alpha] if pred.alpha is not None else []), *pred.extras.values()]


@PREDICTORS.register(
    "run",
    doc="a run folder trained by trustseg (all members, temperature, padding)",
    capabilities=frozenset({"samples", "temperature", "logits", "members"}),
)
def _run_predictor(location: str, device: str | torch.device = "auto", **options: Any) -> RunPredictor:
    return RunPredictor(location, device=device, **options)


__all__ = ["RunPredictor", "load_run"]
