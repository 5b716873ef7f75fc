"""Field-of-view masks in training: a batch's ``valid`` map leaves the voxels outside it out of every loss.

Known answers for the losses (a weighted loss equals the plain loss of the voxels inside), and a contract over
every registered method: labels outside the field of view do not change the loss.
"""

from __future__ import annotations

import pytest
import torch

from trustseg.methods import METHODS, Batch, TrainContext, build_method
from trustseg.methods.edl_losses import edl_loss, tversky_dice_loss
from trustseg.methods.losses import dice_ce_loss, soft_cross_entropy, soft_dice_loss
from trustseg.methods.temperature import LogitSubsample
from trustseg.models.config import NetConfig

K = 3


def _inputs(seed=0, shape=(2, K, 6, 8)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g)
    target = torch.nn.functional.one_hot(torch.randint(0, K, (shape[0], *shape[2:]), generator=g), K)
    return logits, target.movedim(-1, 1).float()


def test_an_all_ones_weight_changes_nothing():
    z, y = _inputs()
    ones = torch.ones(z.shape[0], *z.shape[2:])
    p = torch.softmax(z, 1)
    assert torch.allclose(soft_dice_loss(p, y, weight=ones), soft_dice_loss(p, y))
    assert torch.allclose(soft_cross_entropy(z, y, weight=ones), soft_cross_entropy(z, y))
    assert torch.allclose(dice_ce_loss(z, y, weight=ones), dice_ce_loss(z, y))
    assert torch.allclose(tversky_dice_loss(p, y, weight=ones), tversky_dice_loss(p, y))
    a, _ = edl_loss(z, y, epoch=3, weight=ones)
    b, _ = edl_loss(z, y, epoch=3)
    assert torch.allclose(a, b)


def test_a_weight_equals_the_loss_of_the_voxels_inside():
    """Inside = the first 4 columns: the masked loss is the loss of the cropped inputs (CE: the mean over the
    inside voxels; Dice/Tversky: sums over them)."""
    z, y = _inputs()
    valid = torch.zeros(z.shape[0], *z.shape[2:], dtype=torch.bool)
    valid[..., :4] = True
    zc, yc = z[..., :4], y[..., :4]
    assert torch.allclose(soft_cross_entropy(z, y, weight=valid), soft_cross_entropy(zc, yc))
    p, pc = torch.softmax(z, 1), torch.softmax(zc, 1)
    assert torch.allclose(soft_dice_loss(p, y, weight=valid), soft_dice_loss(pc, yc))
    assert torch.allclose(tversky_dice_loss(p, y, weight=valid), tversky_dice_loss(pc, yc))
    a, la = edl_loss(z, y, epoch=3, weight=valid)
    b, lb = edl_loss(zc, yc, epoch=3)
    assert torch.allclose(a, b) and la == pytest.approx(lb)


def test_no_gradient_reaches_the_logits_outside():
    z, y = _inputs()
    valid = torch.zeros(z.shape[0], *z.shape[2:], dtype=torch.bool)
    valid[:, 2:5, 1:6] = True
    for loss in (lambda t: dice_ce_loss(t, y, weight=valid), lambda t: edl_loss(t, y, epoch=5, weight=valid)[0]):
        t = z.clone().requires_grad_(True)
        loss(t).backward()
        outside = (~valid).unsqueeze(1).expand_as(t)
        assert t.grad is not None and t.grad[outside].abs().max() == 0
        assert t.grad[~outside].abs().max() > 0


def test_a_weight_of_the_wrong_shape_is_refused():
    z, y = _inputs()
    with pytest.raises(ValueError, match="voxel weight"):
        soft_cross_entropy(z, y, weight=torch.ones(2, 6, 7))


#: SURE's ranking terms work on the patch's image gradients and boundary distances (its EDL term is masked);
#: they are switched off here so that the contract checks what the mask promises.
PARAMS = {"sure": {"beta": 0.0, "gamma": 0.0}, "ensemble": {"members": 2}, "mc-dropout": {"samples": 3}}


@pytest.mark.parametrize("name", METHODS.names())
def test_labels_outside_the_field_of_view_do_not_change_any_methods_loss(name):
    method = build_method(name, NetConfig(params={"channels": (4, 8)}), 2, 1, K, PARAMS.get(name))
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 1, 16, 16, generator=g)
    labels = torch.randint(0, K, (2, 3, 16, 16), generator=g)
    valid = torch.zeros(2, 16, 16, dtype=torch.bool)
    valid[:, 3:13, 2:11] = True
    other = labels.clone()
    other[(~valid).unsqueeze(1).expand_as(labels)] = torch.randint(0, K, (int((~valid).sum()) * 3,), generator=g)
    assert not torch.equal(other, labels)
    model = method.build_model(0)
    model.eval()  # dropout off: the two passes see the same network

    def loss(lab):
        ctx = TrainContext(epoch=1, max_epochs=4, step=1, generator=torch.Generator().manual_seed(1))
        return method.loss(model, Batch(image, lab, K, valid), ctx)[0]

    assert torch.allclose(loss(labels), loss(other))
    ctx = TrainContext(epoch=1, max_epochs=4, step=1, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(loss(labels), method.loss(model, Batch(image, other, K), ctx)[0])


def test_temperature_fitting_keeps_only_the_voxels_inside():
    z = torch.randn(2, K, 4, 5)
    y = torch.softmax(torch.randn(K, 4, 5), 0)
    valid = torch.zeros(4, 5, dtype=torch.bool)
    valid[1:3] = True
    sub, ref = LogitSubsample(), LogitSubsample()
    sub.add(z, y, valid)
    ref.add(z[..., 1:3, :], y[..., 1:3, :])
    for a, b in zip(sub.tensors(), ref.tensors()):
        assert torch.equal(a, b)
