import pytest
import torch

from trustseg import Predictive


def test_from_logits_shapes_and_mean():
    logits = torch.randn(3, 2, 4, 5, 6)
    p = Predictive.from_logits(logits)
    assert (p.num_samples, p.batch_size, p.num_classes) == (3, 2, 4)
    assert tuple(p.spatial_shape) == (5, 6) and p.spatial_dims == 2
    torch.testing.assert_close(p.probs.sum(2), torch.ones(3, 2, 5, 6))
    torch.testing.assert_close(p.mean(), torch.softmax(logits, 2).mean(0))
    assert p.hard().shape == (2, 5, 6)


def test_alpha_gives_dirichlet_mean():
    alpha = torch.rand(2, 3, 4, 4, 4) + 1
    p = Predictive.from_alpha(alpha)
    assert p.is_evidential and p.num_samples == 1 and p.spatial_dims == 3
    torch.testing.assert_close(p.probs[0], alpha / alpha.sum(1, keepdim=True))


def test_validation_errors():
    with pytest.raises(ValueError, match="needs probs"):
        Predictive()
    with pytest.raises(ValueError, match=r"\(M, B, K"):
        Predictive(probs=torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="extra map 'v'"):
        Predictive(probs=torch.rand(1, 2, 3, 4, 4), extras={"v": torch.rand(2, 1, 5, 4)})


def test_concat_select_and_to():
    a = Predictive.from_logits(torch.randn(2, 3, 2, 4, 4), rater_variance=torch.rand(3, 1, 4, 4))
    b = Predictive.from_logits(torch.randn(1, 3, 2, 4, 4), rater_variance=torch.rand(3, 1, 4, 4))
    c = Predictive.concat_samples([a, b])
    assert c.num_samples == 3 and c.extras["rater_variance"].shape == (3, 1, 4, 4)
    s = c.select(1)
    assert s.batch_size == 1 and s.extras["rater_variance"].shape == (1, 1, 4, 4)
    joined = Predictive.concat_batch([s, c.select(slice(0, 2))])
    assert joined.batch_size == 3
    assert c.to(torch.float64).probs.dtype == torch.float64
