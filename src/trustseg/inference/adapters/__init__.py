"""Predictors for models trained outside trustseg (each module registers its schemes in ``PREDICTORS``).

* :mod:`~trustseg.inference.adapters.torch_module`: ``torchscript:PATH`` and ``state_dict:PATH?factory=...``,
  any module mapping ``(B, C, *sp)`` to logits, with MC dropout, test-time flips and sliding windows;
* :mod:`~trustseg.inference.adapters.module_spec`: the location keys and the loading of those files;
* :mod:`~trustseg.inference.adapters.views`: the test-time views (``--tta``);
* :mod:`~trustseg.inference.adapters.monai_bundle`: ``bundle:FOLDER``, a MONAI bundle (its ``network_def`` and
  weights) through the same seam;
* :mod:`~trustseg.inference.adapters.nnunet`: ``nnunet:MODEL_FOLDER``, an nnU-Net v2 model folder whose folds ×
  mirror views are the members (nnunetv2 optional), streamed into
  :mod:`~trustseg.inference.adapters.nnunet_members`.
"""

from trustseg.inference.adapters.module_spec import ModuleSpec, parse_location
from trustseg.inference.adapters.monai_bundle import bundle_keys
from trustseg.inference.adapters.nnunet import NnunetPredictor
from trustseg.inference.adapters.torch_module import TorchModulePredictor, dropout_layers
from trustseg.inference.adapters.views import TTA_VIEWS

__all__ = [
    "TTA_VIEWS",
    "ModuleSpec",
    "bundle_keys",
    "NnunetPredictor",
    "TorchModulePredictor",
    "dropout_layers",
    "parse_location",
]
