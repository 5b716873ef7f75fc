"""Predict a batch of images with a method and its trained networks: the one inference function.

:func:`predict_tensor` is what every path that turns images into a :class:`~trustseg.core.predictive.Predictive`
calls: :class:`~trustseg.inference.run_predictor.RunPredictor` (``trustseg predict``, the OOD and noise
protocols), validation during training and temperature fitting. Whole images are zero-padded to the network's
size multiple (:mod:`trustseg.inference.padding`); 3D volumes larger than the training patch go through the
sliding window (:mod:`trustseg.inference.sliding_window`), each window padded the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from trustseg.core.predictive import Predictive
from trustseg.inference.padding import padded
from trustseg.inference.sliding_window import sliding_window_predict
from trustseg.methods.base import Method


def predict_tensor(
    method: Method,
    models: Sequence[nn.Module],
    x: Tensor,
    patch_size: Sequence[int] | None = None,
    multiple: int = 1,
    overlap: float = 0.5,
    blend: Literal["gaussian", "constant"] = "gaussian",
) -> Predictive:
    """Predict a batch ``x`` ``(B, C, *spatial)`` (models already in eval mode, on ``x``'s device).

    Args:
        method: The method (its ``predict`` turns the models' outputs into a Predictive).
        models: Trained member networks.
        x: ``(B, C, *spatial)`` images (already intensity-normalised).
        patch_size: Training patch size; 3D inputs larger than it along any axis go through a sliding window.
        multiple: The network's size multiple: whole-image inputs (and windows) are zero-padded to it.
        overlap: Sliding-window overlap.
        blend: Sliding-window blending (``gaussian`` or ``constant``).

    Returns:
        Predictive ``(M, B, K, *spatial)`` on ``x``'s device.
    """

    def run(t: Tensor) -> Predictive:
        return padded(lambda xp: method.predict(models, xp), t, multiple)

    spatial = tuple(x.shape[2:])
    if patch_size is not None and len(spatial) == 3 and any(s > p for s, p in zip(spatial, patch_size)):
        return sliding_window_predict(run, x, patch_size, overlap=overlap, blend=blend)
    return run(x)
