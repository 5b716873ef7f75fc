"""Contract tests over the MEASURES and AGGREGATORS registries, driven by the registered metadata."""

from __future__ import annotations

import pytest
import torch

from trustseg import Predictive
from trustseg.core.errors import ConfigError
from trustseg.core.registry import Registry
from trustseg.measures import AGGREGATORS, MEASURES
from trustseg.measures.image import image_score
from trustseg.measures.registry import (
    MASKS,
    ORIENTATIONS,
    as_uncertainty,
    available_measures,
    is_certainty,
    register_measure,
    supports,
)

SHAPE2, SHAPE3 = (6, 7), (3, 4, 5)


def _two_class(p_fg: float, shape) -> torch.Tensor:
    """``(B=2, K=2, *shape)`` probabilities with foreground probability ``p_fg`` everywhere."""
    fg = torch.full((2, 1, *shape), p_fg, dtype=torch.float64)
    return torch.cat([1 - fg, fg], 1)


def _pair(kind: str, shape=SHAPE2) -> tuple[Predictive, Predictive]:
    """A confident and an uncertain prediction of one kind.

    Confident: every sample says p = 0.98, the Dirichlet is α = (1, 100), the predicted rater variance is 0.
    Uncertain: samples alternate p = 0.75 / 0.25 (a flat mean, aleatoric and epistemic uncertainty), α = (1, 1),
    the predicted rater variance is 0.25.
    """
    conf = torch.stack([_two_class(0.98, shape)] * 4)
    unc = torch.stack([_two_class(0.75, shape), _two_class(0.25, shape)] * 2)
    a_conf = torch.cat([torch.ones(2, 1, *shape), torch.full((2, 1, *shape), 100.0)], 1).double()
    a_unc = torch.ones(2, 2, *shape, dtype=torch.float64)
    if kind == "softmax":
        return Predictive(probs=conf[:1]), Predictive(probs=torch.stack([_two_class(0.55, shape)]))
    if kind == "samples":
        return Predictive(probs=conf), Predictive(probs=unc)
    if kind == "dirichlet":
        return Predictive(alpha=a_conf), Predictive(alpha=a_unc)
    if kind == "dirichlet+samples":
        return Predictive(probs=conf, alpha=a_conf), Predictive(probs=unc, alpha=a_unc)
    if kind == "extras":
        v0, v1 = torch.zeros(2, 1, *shape, dtype=torch.float64), torch.full((2, 1, *shape), 0.25).double()
        return (
            Predictive(probs=conf[:1], extras={"rater_variance": v0}),
            Predictive(probs=torch.stack([_two_class(0.55, shape)]), extras={"rater_variance": v1}),
        )
    raise ValueError(kind)


KINDS = ["softmax", "samples", "dirichlet", "dirichlet+samples", "extras"]


def test_every_measure_declares_valid_metadata():
    assert len(MEASURES) >= 8
    for entry in MEASURES:
        assert entry.meta["orientation"] in ORIENTATIONS, entry.name
        for req in entry.meta["requires"]:
            for alt in req.split("|"):
                assert alt in ("samples", "alpha") or alt.startswith("extras:"), (entry.name, req)
    assert [n for n in MEASURES.names() if is_certainty(n)] == ["confidence"]


@pytest.mark.parametrize("shape", [SHAPE2, SHAPE3])
@pytest.mark.parametrize("kind", KINDS)
def test_every_measure_on_every_kind_it_claims(kind, shape):
    confident, uncertain = _pair(kind, shape)
    claimed = available_measures(confident)
    assert claimed == available_measures(uncertain)
    assert {"confidence", "entropy"} <= set(claimed)
    for name in MEASURES.names():
        fn = MEASURES[name]
        if name not in claimed:
            assert not supports(name, confident)
            with pytest.raises(ConfigError, match=name):
                fn(confident)
            continue
        u_conf, u_unc = fn(confident), fn(uncertain)
        for u in (u_conf, u_unc):
            assert u.shape == (2, *shape), name
            assert torch.isfinite(u).all(), name
        # orientation sanity: oriented as an uncertainty, the uncertain prediction scores higher everywhere
        assert (as_uncertainty(name, u_unc) > as_uncertainty(name, u_conf)).all(), (kind, name)


def test_available_measures_follow_the_requirements():
    soft, samples = _pair("softmax")[0], _pair("samples")[0]
    assert available_measures(soft) == ["confidence", "entropy"]
    assert available_measures(samples) == ["confidence", "entropy", "expected_entropy", "mi", "epkl", "variance"]
    assert available_measures(_pair("dirichlet")[0])[-1] == "vacuity"
    assert available_measures(_pair("extras")[0]) == ["confidence", "entropy", "predicted_variance"]


def test_a_new_measure_is_listed_from_its_metadata(monkeypatch):
    reg = Registry("measure")
    monkeypatch.setattr("trustseg.measures.registry.MEASURES", reg)
    monkeypatch.setattr("trustseg.measures.registry._ORDER", [])

    @register_measure("spread", orientation="certainty", requires=("samples", "extras:aux"))
    def spread(pred):
        return pred.probs.std(0).sum(1)

    samples = _pair("samples")[0]
    assert available_measures(samples) == []
    with_aux = Predictive(probs=samples.probs, extras={"aux": torch.zeros(2, 1, *SHAPE2)})
    assert available_measures(with_aux) == ["spread"] and is_certainty("spread")
    with pytest.raises(ValueError, match="requirement"):
        register_measure("bad", requires=("samples|gpu",))
    with pytest.raises(ValueError, match="orientation"):
        register_measure("bad", orientation="higher")


def test_as_uncertainty_flips_only_certainty_measures():
    x = torch.tensor([0.2, 0.9])
    assert torch.allclose(as_uncertainty("confidence", x), torch.tensor([0.8, 0.1]))
    assert as_uncertainty("entropy", x) is x
    assert as_uncertainty("confidence", 0.25) == 0.75


# -- aggregators --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 12, 11), (2, 5, 6, 7)])
def test_every_aggregator_gives_one_finite_monotone_score_per_image(shape):
    g = torch.Generator().manual_seed(0)
    u = torch.rand(*shape, generator=g)
    fg = torch.zeros(shape, dtype=torch.bool)
    fg[(slice(None),) + (slice(1, 3),) * (len(shape) - 1)] = True
    assert len(AGGREGATORS) >= 5
    for entry in AGGREGATORS:
        meta = entry.meta
        assert meta["mask"] in MASKS and isinstance(meta["image_kwargs"], dict), entry.name
        kw = {k: 0.5 for k in meta["needs"]}
        s = image_score(u, entry.name, fg, **kw)
        assert s.shape == (2,) and torch.isfinite(s).all(), entry.name
        # orientation: a uniformly higher map never scores lower, a much higher one scores higher
        assert (image_score(u + 0.25, entry.name, fg, **kw) >= s).all(), entry.name
        assert (image_score(u + 2.0, entry.name, fg, **kw) > s).all(), entry.name
        # the same function, called directly with the convention's mask and keywords
        mask = fg if meta["mask"] == "foreground" else None
        assert torch.equal(entry.obj(u, mask=mask, **meta["image_kwargs"], **kw), s), entry.name
