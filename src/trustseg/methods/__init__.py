"""Uncertainty methods behind one interface (see :mod:`trustseg.methods.base`), registered by name in
:data:`METHODS`.

Every module of the package is imported here, explicitly, so every method is registered once
``trustseg.methods`` is imported (``tests/methods/test_init.py`` checks that none is forgotten).
"""

from trustseg.methods.base import METHODS, Batch, Method, TrainContext, build_method, cosine_decay, param_error
from trustseg.methods.edl_losses import edl_loss, evidence_to_alpha, vacuity
from trustseg.methods.edue import Edue
from trustseg.methods.edue_heads import EdueHeads
from trustseg.methods.ensemble import Ensemble
from trustseg.methods.evidential import Evidential
from trustseg.methods.layer_ensemble import LayerEnsemble, layer_agreement
from trustseg.methods.losses import dice_ce_loss, soft_cross_entropy, soft_dice_loss
from trustseg.methods.mc_dropout import MCDropout
from trustseg.methods.softmax import LogitMethod, Softmax
from trustseg.methods.sure import Sure
from trustseg.methods.sure_losses import sure_ramp
from trustseg.methods.temperature import fit_method_temperature, fit_temperature
from trustseg.methods.tta import TTA

__all__ = [
    "METHODS",
    "TTA",
    "Batch",
    "Edue",
    "EdueHeads",
    "Ensemble",
    "Evidential",
    "LayerEnsemble",
    "LogitMethod",
    "MCDropout",
    "Method",
    "Softmax",
    "Sure",
    "TrainContext",
    "build_method",
    "cosine_decay",
    "dice_ce_loss",
    "edl_loss",
    "evidence_to_alpha",
    "fit_method_temperature",
    "fit_temperature",
    "layer_agreement",
    "param_error",
    "soft_cross_entropy",
    "soft_dice_loss",
    "sure_ramp",
    "vacuity",
]
