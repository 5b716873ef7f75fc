"""OOD detection metrics against scikit-learn (including ties)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from trustseg.core.errors import DataError
from trustseg.metrics import METRICS
from trustseg.metrics import ood_detection as ood


def _sk(clean, shifted):
    y = np.r_[np.zeros(len(clean)), np.ones(len(shifted))]
    s = np.r_[clean, shifted]
    fpr, tpr, _ = roc_curve(y, s)
    return roc_auc_score(y, s), fpr[np.argmax(tpr >= 0.95)], average_precision_score(y, s)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    clean, shifted = rng.normal(0, 1, 57), rng.normal(0.8, 1, 41)
    if ties:
        clean, shifted = np.round(clean * 2), np.round(shifted * 2)
    auroc, fpr95, ap = _sk(clean, shifted)
    rep = ood.detection_report(torch.tensor(clean), torch.tensor(shifted))
    assert rep["auroc"] == pytest.approx(auroc, abs=1e-12)
    assert rep["fpr_at_95_tpr"] == pytest.approx(fpr95, abs=1e-12)
    assert rep["aupr_ood"] == pytest.approx(ap, abs=1e-12)
    assert (rep["n_clean"], rep["n_ood"]) == (57, 41)


def test_hand_computed():
    clean, shifted = torch.tensor([0.1, 0.4, 0.5]), torch.tensor([0.5, 0.9])
    # pairs (ood > clean): 0.5>0.1, 0.5>0.4, 0.5=0.5 (½), 0.9 > all three -> 5.5 / 6
    assert ood.ood_auroc(clean, shifted) == pytest.approx(5.5 / 6)
    # TPR 1 needs t ≤ 0.5, which flags the clean 0.5 -> FPR 1/3
    assert ood.fpr_at_95_tpr(clean, shifted) == pytest.approx(1 / 3)
    assert ood.ood_auroc(torch.zeros(3), torch.ones(2)) == 1.0
    assert ood.fpr_at_95_tpr(torch.zeros(3), torch.ones(2)) == 0.0


def test_errors_and_registry():
    with pytest.raises(DataError, match="NaN"):
        ood.ood_auroc(torch.tensor([0.1, float("nan")]), torch.tensor([0.5]))
    with pytest.raises(DataError, match="need clean and OOD"):
        ood.ood_auroc(torch.tensor([]), torch.tensor([0.5]))
    assert {"ood_auroc", "fpr_at_95_tpr", "ood_detection_report"} <= set(METRICS.names())
