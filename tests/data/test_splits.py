"""Group-aware splits: no group in two parts, determinism, fractions."""

from __future__ import annotations

import numpy as np
import pytest

from trustseg.data.splits import fixed_split, kfold_split, split_last_groups


def _data(n_groups=40, seed=1):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, n_groups)
    ids, groups = [], []
    for g, s in enumerate(sizes):
        for j in range(s):
            ids.append(f"p{g:03d}_s{j}")
            groups.append(f"p{g:03d}")
    return ids, groups


def _group_sets(parts, ids, groups):
    g = dict(zip(ids, groups))
    return [{g[i] for i in p} for p in parts]


def test_fixed_split_groups_partition_and_fractions():
    ids, groups = _data()
    s = fixed_split(ids, groups, (0.7, 0.15, 0.15), seed=3)
    parts = [s["train"], s["val"], s["test"]]
    assert sorted(sum(parts, [])) == sorted(ids)
    gs = _group_sets(parts, ids, groups)
    assert not (gs[0] & gs[1] or gs[0] & gs[2] or gs[1] & gs[2])
    n, max_group = len(ids), 7
    for part, frac in zip(parts, (0.7, 0.15, 0.15)):
        assert abs(len(part) - frac * n) <= max_group  # within one group of the target
    # input order is kept inside each part
    for part in parts:
        assert part == [i for i in ids if i in set(part)]


def test_fixed_split_is_deterministic_and_seed_dependent():
    ids, groups = _data()
    assert fixed_split(ids, groups, seed=5) == fixed_split(ids, groups, seed=5)
    assert fixed_split(ids, groups, seed=5) != fixed_split(ids, groups, seed=6)
    # order of the input does not change which groups go where
    rev = fixed_split(ids[::-1], groups[::-1], seed=5)
    assert {k: sorted(v) for k, v in rev.items()} == {k: sorted(v) for k, v in fixed_split(ids, groups, seed=5).items()}


def test_fixed_split_small_and_zero_fractions():
    ids = ["a", "b", "c"]
    s = fixed_split(ids, None, (0.7, 0.15, 0.15))
    assert all(len(s[p]) == 1 for p in ("train", "val", "test"))
    s = fixed_split([f"c{i}" for i in range(20)], None, (0.85, 0.15, 0.0))
    assert s["test"] == [] and len(s["val"]) == 3 and len(s["train"]) == 17
    with pytest.raises(ValueError, match="fractions"):
        fixed_split(ids, None, (1.0, -0.5, 0.5))


def test_kfold_partitions_by_group_and_balances():
    ids, groups = _data(n_groups=37)
    folds = kfold_split(ids, groups, k=5, seed=0)
    assert len(folds) == 5 and sorted(sum(folds, [])) == sorted(ids)
    gs = _group_sets(folds, ids, groups)
    for a in range(5):
        for b in range(a + 1, 5):
            assert not gs[a] & gs[b]
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 7  # greedy balance: within one group
    assert kfold_split(ids, groups, k=5, seed=0) == folds
    with pytest.raises(ValueError, match="k must be"):
        kfold_split(["a", "b"], None, k=3)


def test_split_last_groups_holds_out_the_last_sorted_groups():
    ids, groups = _data(n_groups=30)
    s = split_last_groups(ids, groups, n_test_groups=6, val_fraction=0.15, seed=0)
    g = dict(zip(ids, groups))
    assert {g[i] for i in s["test"]} == {f"p{k:03d}" for k in range(24, 30)}
    train_g, val_g = {g[i] for i in s["train"]}, {g[i] for i in s["val"]}
    assert not train_g & val_g and len(val_g) >= 1
    assert sorted(s["train"] + s["val"] + s["test"]) == sorted(ids)
    assert split_last_groups(ids, groups, 0)["test"] == []
