"""Inference: one path from images to :class:`~trustseg.core.predictive.Predictive`, for every model.

* :mod:`~trustseg.inference.predictor`: the :class:`Predictor` protocol, :class:`PredictorInfo` and the
  :data:`PREDICTORS` registry (keyed by scheme, ``run:RUN_DIR``);
* :mod:`~trustseg.inference.run_predictor`: a trained trustseg run (:class:`RunPredictor`, :func:`load_run`);
* :mod:`~trustseg.inference.tensor`: :func:`predict_tensor`, the one function that runs a method's networks on a
  batch (padding to the size multiple, sliding window for large volumes);
* :mod:`~trustseg.inference.adapters`: models trained elsewhere (``torchscript:``, ``state_dict:``), with MC
  dropout, test-time flips and Gaussian sliding windows;
* :mod:`~trustseg.inference.padding`, :mod:`~trustseg.inference.sliding_window`, :mod:`~trustseg.inference.device`,
  :mod:`~trustseg.inference.run_folder` (the trained-run format as inference reads it).
"""

from trustseg.inference.adapters import TorchModulePredictor
from trustseg.inference.device import resolve_device, use_amp
from trustseg.inference.padding import crop_prediction, pad_to_multiple, padded
from trustseg.inference.predictor import PREDICTORS, Predictor, PredictorInfo, load_predictor, split_spec
from trustseg.inference.run_predictor import RunPredictor, load_run
from trustseg.inference.sliding_window import sliding_window_predict
from trustseg.inference.tensor import predict_tensor

__all__ = [
    "PREDICTORS",
    "Predictor",
    "PredictorInfo",
    "RunPredictor",
    "TorchModulePredictor",
    "crop_prediction",
    "load_predictor",
    "load_run",
    "pad_to_multiple",
    "padded",
    "predict_tensor",
    "resolve_device",
    "sliding_window_predict",
    "split_spec",
    "use_amp",
]
