"""The protocol's helpers: the input-size check every network applies and the capability requirement."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import ConfigError
from trustseg.models import SegmentationNetwork, UNet, UNetParams
from trustseg.models.protocol import CAPABILITIES, check_input, require


@pytest.mark.parametrize("shape,ok", [((8, 12), True), ((8, 10), False), ((6, 8), False), ((4, 4, 4), False)])
def test_check_input(shape, ok):
    x = torch.zeros(1, 1, *shape)
    if ok:
        check_input(x, 2, 4)
    else:
        with pytest.raises(ValueError, match="size multiple 4|2 spatial axes"):
            check_input(x, 2, 4)


def test_require_names_what_is_missing_and_what_is_offered():
    require("net", {"a", "b"}, {"a"}, "method m")
    with pytest.raises(ConfigError, match=r"^method m needs a network with c, d; net offers a, b$"):
        require("net", {"a", "b"}, {"a", "c", "d"}, "method m")


def test_the_unet_follows_the_protocol():
    net = UNet(2, 1, 2, UNetParams(channels=(4, 8), deep_heads=True, dropout=0.1))
    assert isinstance(net, SegmentationNetwork)
    assert net.capabilities == CAPABILITIES
    assert not isinstance(torch.nn.Conv2d(1, 1, 1), SegmentationNetwork)
