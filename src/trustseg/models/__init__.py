"""Networks behind one protocol (:mod:`trustseg.models.protocol`), registered by name in :data:`MODELS`.

Every module of the package is imported here, explicitly, so every model is registered once ``trustseg.models``
is imported.
"""

from trustseg.models.config import NetConfig, network_params
from trustseg.models.factory import build_network, model_capabilities, require_capabilities, size_multiple
from trustseg.models.monai_nets import MONAI_MODELS
from trustseg.models.monai_wrapper import MonaiNet
from trustseg.models.protocol import CAPABILITIES, SegmentationNetwork, check_input
from trustseg.models.registry import MODELS
from trustseg.models.unet import UNet, UNetParams
from trustseg.models.unet_blocks import ConvBlock, ForwardState

__all__ = [
    "CAPABILITIES",
    "MODELS",
    "MONAI_MODELS",
    "MonaiNet",
    "ConvBlock",
    "ForwardState",
    "NetConfig",
    "SegmentationNetwork",
    "UNet",
    "UNetParams",
    "build_network",
    "check_input",
    "model_capabilities",
    "network_params",
    "require_capabilities",
    "size_multiple",
]
