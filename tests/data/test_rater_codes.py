"""Rater codes and their lookup tables against the per-voxel formulas of data.targets (issue 14)."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import DataError
from trustseg.data.rater_codes import code_dtype, code_tables, num_codes, rater_code, uses_codes
from trustseg.data.targets import majority_vote, rater_disagreement, soft_label


@pytest.mark.parametrize(("k", "r"), [(2, 1), (2, 3), (3, 3), (4, 2), (3, 5), (7, 3)])
def test_tables_are_the_formulas_on_every_label_tuple(k, r):
    g = torch.Generator().manual_seed(k * 10 + r)
    labels = torch.randint(0, k, (r, 500), generator=g)
    code = rater_code(labels, k)
    assert code.dtype == code_dtype(k, r)
    t = code_tables(k, r)
    idx = code.long()
    assert torch.equal(t.labels[:, idx], labels)  # the code names the tuple
    assert torch.equal(t.majority[idx], majority_vote(labels, k))
    assert torch.equal(t.soft[:, idx], soft_label(labels, k))  # bit for bit
    assert torch.equal(t.disagreement[idx], rater_disagreement(labels, k))
    for j in range(k):
        assert torch.equal(t.all_k[j, idx], (labels == j).all(0))
        assert torch.equal(t.any_k[j, idx], (labels == j).any(0))


def test_known_codes_and_tie_to_the_lower_class():
    labels = torch.tensor([[0, 1, 2, 2], [2, 2, 0, 1], [1, 0, 1, 2]])  # columns (0,2,1), (1,2,0), (2,0,1), (2,1,2)
    code = rater_code(labels, 3)
    assert code.tolist() == [0 + 3 * 2 + 9 * 1, 1 + 3 * 2, 2 + 9 * 1, 2 + 3 * 1 + 9 * 2]
    t = code_tables(3, 3)
    assert t.majority[code.long()].tolist() == [0, 0, 0, 2]  # three-way ties go to class 0
    assert t.disagreement[code.long()].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 4 / 9])


def test_dtypes_and_limits():
    assert code_dtype(3, 5) == torch.uint8 and code_dtype(4, 4) == torch.uint8  # 243 and 256 codes: 0..255
    assert code_dtype(3, 6) == torch.int32
    assert num_codes(3, 3) == 27 and uses_codes(3, 10) and not uses_codes(3, 11)
    with pytest.raises(ValueError, match="MAX_CODES"):
        code_tables(3, 11)


@pytest.mark.parametrize("bad", [-1, 3])
def test_labels_outside_the_classes_are_refused(bad):
    labels = torch.zeros(2, 4, dtype=torch.long)
    labels[1, 2] = bad
    with pytest.raises(DataError, match=r"rater labels must lie in \[0, 3\)"):
        rater_code(labels, 3)
