"""One-pass calibration states of coded targets against calibration_state per target, on both backends."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import DataError
from trustseg.data.rater_codes import code_tables, rater_code
from trustseg.metrics.calibration_codes import coded_states, fits
from trustseg.metrics.calibration_state import calibration_state, metrics_from_state


def _case(n=3000, k=3, r=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(2 * torch.randn(k, n, generator=g), 0)
    p[:, :20] = 1.0 / k  # exact ties: the first maximum is the prediction
    p[:, 20:25] = torch.eye(k)[0][:, None]  # confidence exactly 1 (the last bin)
    lab = torch.randint(0, k, (r, n), generator=g)
    return p, lab


@pytest.mark.parametrize("backend", ["kernel", "torch"])
@pytest.mark.parametrize(("k", "r", "bins"), [(3, 3, 15), (2, 4, 10), (4, 2, 7)])
def test_coded_states_equal_the_per_target_states(backend, k, r, bins):
    p, lab = _case(k=k, r=r, seed=k + r)
    tab = code_tables(k, r)
    code = rater_code(lab, k)
    valid = torch.rand(p.shape[1], generator=torch.Generator().manual_seed(1)) > 0.2
    targets = {"majority": tab.majority, "soft": tab.soft, **{f"r{i}": tab.labels[i] for i in range(r)}}
    got = coded_states(p, p.argmax(0), code, targets, bins=bins, valid=valid, chunk=333)
    per_voxel = {"majority": tab.majority[code.long()], "soft": tab.soft[:, code.long()]}
    per_voxel.update({f"r{i}": lab[i] for i in range(r)})
    for name, t in per_voxel.items():
        ref = calibration_state(p[:, valid], t[..., valid], bins=bins, backend=backend)
        for key in ("top", "cls", "n"):  # counts exact, sums of the same float64 terms
            torch.testing.assert_close(got[name][key], ref[key], rtol=1e-12, atol=1e-9)
        for key in ("nll", "brier"):  # the documented bound of the two backends
            torch.testing.assert_close(got[name][key], ref[key], rtol=1e-8, atol=0)
        m_got, m_ref = metrics_from_state(got[name], bins), metrics_from_state(ref, bins)
        assert m_got["ece_toplabel"] == pytest.approx(m_ref["ece_toplabel"], rel=1e-10, abs=1e-12)
        assert m_got["nll"] == pytest.approx(m_ref["nll"], rel=1e-8)


def test_known_answer():
    p = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.8, 0.4]])
    st = coded_states(p, p.argmax(0), torch.tensor([0, 1, 1]), {"t": torch.tensor([0, 1])}, bins=2)
    # targets 0, 1, 1: predictions 0, 1, 0 -> two right; Brier (0.1² + 0.1²) + (0.2² + 0.2²) + (0.6² + 0.6²)
    assert float(st["t"]["top"][2].sum()) == 2.0
    assert float(st["t"]["brier"]) == pytest.approx(0.02 + 0.08 + 0.72)
    assert float(st["t"]["n"]) == 3


def test_invalid_probabilities_and_limits():
    p = torch.tensor([[0.9, 0.5], [0.3, 0.5]])  # the first voxel sums to 1.2
    with pytest.raises(DataError, match="do not sum to 1"):
        coded_states(p, p.argmax(0), torch.tensor([0, 0]), {"t": torch.tensor([0])})
    assert fits(3, 27) and not fits(14, 14**3)
