"""The official SURE code's behaviours, selectable in trustseg's losses (hand-built cases, known answers).

Each test checks the official option against a value computed by hand from the official formula
(github.com/suiannaius/SURE: training/criterions.py, training/train.py, utilities/utils.py) and that the default
(trustseg's) gives a different value on the same input, so the option is what makes the difference.
"""

from __future__ import annotations

import math

import pytest
import torch

from trustseg.core.errors import ConfigError
from trustseg.methods import Batch, TrainContext, build_method
from trustseg.methods.sure_losses import (
    boundary_distance,
    gradient_uncertainty_loss,
    noise_distance_loss,
    noise_mu_loss,
    sure_ramp,
)
from trustseg.methods.sure_patches import select_patch_centres
from trustseg.models.config import NetConfig


def _row(*v):
    return torch.tensor([v], dtype=torch.float64)


# -- the ramp's end value -----------------------------------------------------------------------------------------
def _official_ramp(e: int, total: int, e0: int) -> float:
    """train.py: annealing_start · exp(−ln(annealing_start) / (total − e0) · (e − e0)), annealing_start = 0.01."""
    return 0.01 * math.exp(-math.log(0.01) / (total - e0) * (e - e0))


@pytest.mark.parametrize(("epoch", "official", "ours"), [(30, 0.01, 0.01), (64, 0.0936, 0.0967), (98, 0.877, 0.935)])
def test_ramp_official_end_reproduces_the_review_values(epoch, official, ours):
    assert sure_ramp(epoch, 100, end="official") == pytest.approx(official, abs=5e-4)
    assert sure_ramp(epoch, 100, end="official") == pytest.approx(_official_ramp(epoch, 100, 30), rel=1e-12)
    assert sure_ramp(epoch, 100) == pytest.approx(ours, abs=5e-4)


def test_ramp_official_never_reaches_one():
    assert sure_ramp(99, 100, end="official") == pytest.approx(0.01 ** (1 / 70))  # 0.936
    assert sure_ramp(99, 100) == 1.0
    assert sure_ramp(29, 100, end="official") == 0.0
    with pytest.raises(ValueError, match="ramp end"):
        sure_ramp(50, 100, end="first")  # type: ignore[arg-type]


# -- L_gu: violating-pair mean, chunk sum -------------------------------------------------------------------------
D_BAND = _row(0, 1, 0.5, 5)
G = _row(1, 2, 3, 9)


def test_gu_violating_mean():
    u = _row(0.1, 0.3, 0.2, 0.0)  # pair products .2, .2, −.1: two violations of .2
    assert float(gradient_uncertainty_loss(u, G, D_BAND, num_pairs=None)) == pytest.approx(0.4 / 3)
    assert float(gradient_uncertainty_loss(u, G, D_BAND, num_pairs=None, reduction="violating")) == pytest.approx(0.2)


def test_gu_official_sums_the_chunks_and_divides_by_the_batch():
    # pairs (0,1) .1, (0,2) .6, (1,2) .2; chunks of 2 pairs: [.1, .6] -> .35, [.2] -> .2; sum .55;
    # the second image has one band pixel (no pair) and still counts in the batch size: .55 / 2
    u = torch.tensor([[0.1, 0.2, 0.4, 0.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    g, d = torch.cat([G, G]), torch.cat([D_BAND, _row(0, 7, 7, 7)])
    loss = gradient_uncertainty_loss(u, g, d, num_pairs=None, reduction="official", chunk=2)
    assert float(loss.detach()) == pytest.approx(0.275)
    violating = gradient_uncertainty_loss(u.detach(), g, d, num_pairs=None, reduction="violating")
    assert float(violating) == pytest.approx(0.3)
    loss.backward()
    assert u.grad is not None and float(u.grad[0].abs().sum()) > 0


def test_gu_official_scales_with_the_number_of_chunks():
    gen = torch.Generator().manual_seed(0)
    u, g = torch.rand(1, 60, generator=gen, dtype=torch.float64), torch.rand(1, 60, generator=gen, dtype=torch.float64)
    d = torch.zeros(1, 60, dtype=torch.float64)
    viol = float(gradient_uncertainty_loss(u, g, d, num_pairs=None, reduction="violating"))
    # 1770 pairs: 1 chunk = the violating mean; chunks of 222 -> 8 chunks, about 8x as large
    one = gradient_uncertainty_loss(u, g, d, num_pairs=None, reduction="official", chunk=20000)
    assert float(one) == pytest.approx(viol)
    eight = float(gradient_uncertainty_loss(u, g, d, num_pairs=None, reduction="official", chunk=222))
    assert eight == pytest.approx(8 * viol, rel=0.1)
    # the official draw is capped at n(n−1)/2 = 1770 draws (i = j dropped): at most one chunk of 20000 here
    drawn = gradient_uncertainty_loss(u, g, d, num_pairs=10**7, reduction="official", generator=gen)
    assert float(drawn) == pytest.approx(viol, rel=0.15)


# -- L_mu: the dropped clean -> mu2 term and the official form -----------------------------------------------------
CENTRES = [torch.tensor([[1, 1], [4, 4]])]


def _mu_maps():
    """Centre A: u0 .3, u1 .2, u2 .25; centre B: u0 .1, u1 .5, u2 .2 (other pixels distracting noise)."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for a, b in ((0.3, 0.1), (0.2, 0.5), (0.25, 0.2)):
        u = torch.rand(1, 6, 6, generator=gen, dtype=torch.float64)
        u[0, 1, 1], u[0, 4, 4] = a, b
        out.append(u)
    return out


def test_mu_chain_direct_adds_the_clean_to_mu2_term():
    u0, u1, u2 = _mu_maps()
    # chain: A .1 + 0, B 0 + .3 -> .2 ; direct clean->mu2: A relu(.3 − .25) = .05, B 0 -> (.15 + .3) / 2
    assert float(noise_mu_loss(u0, u1, u2, CENTRES)) == pytest.approx(0.2)
    assert float(noise_mu_loss(u0, u1, u2, CENTRES, form="chain_direct")) == pytest.approx(0.225)


def test_mu_official_three_weighted_terms():
    u0, u1, u2 = _mu_maps()
    # mu = (.2, .6): t1 = (v2 − v1)·.4 = (.02, −.12) -> .12; t2 = (v1 − v0)·.2 = (−.02, .08) -> .02;
    # t3 = (v2 − v0)·.6 = (−.03, .06) -> .03 ; each the mean of its negative entries, negated
    assert float(noise_mu_loss(u0, u1, u2, CENTRES, form="official", mu=(0.2, 0.6))) == pytest.approx(0.17)
    # unsorted draw mu = (.6, .2): t1 = (v2 − v1)·(−.4) = (−.02, .12) -> .02; t2 ·.6 -> .06; t3 ·.2 -> .01
    assert float(noise_mu_loss(u0, u1, u2, CENTRES, form="official", mu=(0.6, 0.2))) == pytest.approx(0.09)
    # a centre beyond d > 4 (B) is masked out: only A's negative entries t2 −.02 and t3 −.03 remain
    d = torch.zeros(1, 6, 6, dtype=torch.float64)
    d[0, 4, 4] = 6.0
    assert float(noise_mu_loss(u0, u1, u2, CENTRES, form="official", mu=(0.2, 0.6), d=d)) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="mu="):
        noise_mu_loss(u0, u1, u2, CENTRES, form="official")


# -- L_d: far fill-up centres kept with delta u = 0, official normalisation -----------------------------------------
def _d_case():
    """Centres A (d 1), B (d 2), C (d 6, beyond near): Δ1 = (−.2, .1, .9), Δ2 = (.1, .4, .9); a second image
    without centres."""
    centres = [torch.tensor([[1, 1], [3, 3], [4, 4]]), torch.zeros(0, 2, dtype=torch.long)]
    d = torch.zeros(2, 6, 6, dtype=torch.float64)
    d[0, 1, 1], d[0, 3, 3], d[0, 4, 4] = 1.0, 2.0, 6.0
    u0 = torch.full((2, 6, 6), 0.1, dtype=torch.float64)
    u1, u2 = u0.clone(), u0.clone()
    for um, deltas in ((u1, (-0.2, 0.1, 0.9)), (u2, (0.1, 0.4, 0.9))):
        for (y, x), dv in zip(centres[0].tolist(), deltas):
            um[0, y, x] += dv
    return u0, u1, u2, d, centres


def test_d_far_centres_zero_and_official_reduction():
    u0, u1, u2, d, centres = _d_case()
    # drop: the pair (A, B) only: (1 − 2)(−.2 − .1) = .3 and (1 − 2)(.1 − .4) = .3
    assert float(noise_distance_loss(u0, u1, u2, d, centres)) == pytest.approx(0.6)
    # zero: C joins with Δ = 0 (its .9 is ignored): mu1 pairs .3, (1 − 6)(−.2 − 0) = 1.0, (2 − 6)(.1) < 0;
    # mu2 pairs .3, (−5)(.1) < 0, (−4)(.4) < 0 -> 1.3/3 + .3/3
    assert float(noise_distance_loss(u0, u1, u2, d, centres, far_centres="zero")) == pytest.approx(1.6 / 3)
    # official: violating means (.3 + 1.0)/2 + .3 = .95, summed over images / batch size 2
    official = noise_distance_loss(u0, u1, u2, d, centres, far_centres="zero", reduction="official")
    assert float(official) == pytest.approx(0.475)
    assert float(noise_distance_loss(u0, u1, u2, d, centres, reduction="official")) == pytest.approx(0.3)


# -- fill-up patches anywhere ------------------------------------------------------------------------------------
def test_fill_up_anywhere_takes_far_patches():
    sp, k = (24, 24), 3
    lab = torch.zeros(sp, dtype=torch.long)
    lab[3:8, 3:8] = 1
    y = torch.nn.functional.one_hot(lab, 2).movedim(-1, 0)[None].float()
    d = boundary_distance(y)
    active = torch.zeros(1, *sp, dtype=torch.bool)
    active[0, 3, 3] = True  # one active sample of class 1
    results = {}
    for rule in ("near", "anywhere"):
        gen = torch.Generator().manual_seed(0)
        (c,) = select_patch_centres(d, active, lab[None], 2, k=k, per_class=3, near=4.0, generator=gen, fill_up=rule)
        results[rule] = c
        assert c.shape == (6, 2) and (3, 3) in [tuple(x) for x in c.tolist()]
        occupied = torch.zeros(sp, dtype=torch.int)
        for cy, cx in c.tolist():
            occupied[cy - 1 : cy + 2, cx - 1 : cx + 2] += 1
        assert occupied.max() == 1
    dist = {rule: [float(d[0, cy, cx]) for cy, cx in c.tolist()] for rule, c in results.items()}
    assert max(dist["near"]) <= 4.0
    assert max(dist["anywhere"]) > 4.0  # the official fill-up is not limited to the near-boundary zone
    with pytest.raises(ValueError, match="fill-up"):
        select_patch_centres(d, active, lab[None], 2, fill_up="far")  # type: ignore[arg-type]


# -- the parameters reach the losses --------------------------------------------------------------------------------
NET = NetConfig(params={"channels": (4, 8)})


def _batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    lab = torch.zeros(2, 16, 16, dtype=torch.long)
    lab[:, 4:13, 4:13] = 1
    image = lab[:, None].float() + 0.2 * torch.randn(2, 1, 16, 16, generator=g)
    return Batch(image=image, labels=lab[:, None].repeat(1, 2, 1, 1), num_classes=2)


def test_params_official_options_reach_the_loss():
    official = {
        "ramp_end": "official",
        "gu_reduction": "official",
        "mu_form": "official",
        "sort_mu": False,
        "fill_up": "anywhere",
        "d_far_centres": "zero",
        "d_reduction": "official",
        "patch_size": 3,
    }
    m = build_method("sure", NET, 2, 1, 2, official)
    torch.manual_seed(0)
    model = m.build_model()
    ctx = TrainContext(epoch=9, max_epochs=10, generator=torch.Generator().manual_seed(0))
    loss, logs = m.loss(model, _batch(), ctx)
    assert logs["sure_weight"] == pytest.approx(0.01 ** (1 / 7))  # e0 = 3, T = 10: 1 is reached at epoch 10
    assert logs["sure_patches"] == 6.0 and math.isfinite(float(loss.detach()))
    loss.backward()
    default = build_method("sure", NET, 2, 1, 2, {"patch_size": 3})
    _, logs = default.loss(model, _batch(), TrainContext(epoch=9, max_epochs=10, generator=torch.Generator()))
    assert logs["sure_weight"] == 1.0


@pytest.mark.parametrize("name", ["ramp_end", "gu_reduction", "mu_form", "fill_up", "d_far_centres", "d_reduction"])
def test_params_refuse_unknown_choices(name):
    with pytest.raises(ConfigError, match=f"method.sure.{name}: 'sure-ish' is not one of"):
        build_method("sure", NET, 2, 1, 2, {name: "sure-ish"})
