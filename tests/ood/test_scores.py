"""Image-level scores through the ood.scores re-export (the functions live in measures.image): orientation, sample
and layer disagreement."""

import pytest
import torch

from trustseg import Predictive
from trustseg.measures.image import layer_agreement
from trustseg.ood.scores import image_scores, sample_agreement


def _confident(classes: torch.Tensor, k: int = 2) -> torch.Tensor:
    return torch.nn.functional.one_hot(classes, k).movedim(-1, 1).float() * 0.98 + 0.01


def test_sample_agreement_is_one_for_identical_samples_and_drops_when_they_differ():
    seg = torch.zeros(1, 8, 8, dtype=torch.long)
    seg[:, 2:6, 2:6] = 1
    same = Predictive(probs=torch.stack([_confident(seg)] * 3))
    assert torch.allclose(sample_agreement(same), torch.ones(1))
    other = seg.clone()
    other[:, 2:6, 2:4] = 0  # half of the square
    mixed = Predictive(probs=torch.stack([_confident(seg), _confident(other)]))
    # Dice between a 16-pixel and an 8-pixel square inside it: 2*8/24
    assert sample_agreement(mixed).item() == pytest.approx(2 * 8 / 24)


def test_sample_agreement_needs_the_same_class_like_layer_agreement():
    seg = torch.zeros(1, 8, 8, dtype=torch.long)
    seg[:, 2:6, 2:6] = 1
    relabelled = seg * 2  # same foreground voxels, another class
    probs = torch.stack([_confident(seg, 3), _confident(relabelled, 3)])
    assert sample_agreement(Predictive(probs=probs)).item() == 0.0
    assert layer_agreement(probs).item() == 0.0  # both scores use measures.image.pooled_foreground_dice


def test_image_scores_keys_and_orientation():
    seg = torch.zeros(2, 8, 8, dtype=torch.long)
    seg[:, 2:6, 2:6] = 1
    sharp = _confident(seg)
    flat = torch.full_like(sharp, 0.5)
    pred = Predictive(probs=torch.stack([torch.cat([sharp[:1], flat[1:]]), torch.cat([sharp[:1], flat[1:]])]))
    scores = image_scores(pred, measures=["entropy", "confidence"])
    assert {"entropy:mean", "entropy:fg_mean", "confidence:mean", "sample_disagreement"} <= set(scores)
    # image 1 (flat 0.5) is more uncertain than image 0 under every measure oriented higher = worse
    assert scores["entropy:mean"][1] > scores["entropy:mean"][0]
    assert scores["confidence:mean"][1] > scores["confidence:mean"][0]
    layered = image_scores(pred, measures=["entropy"], layer_heads=True)
    assert "layer_disagreement" in layered and layered["layer_disagreement"].shape == (2,)
