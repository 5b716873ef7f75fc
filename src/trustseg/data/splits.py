"""Group-aware, seeded splits: fixed train/val/test and k-fold.

Every split works on groups (e.g. the patient id): all cases of a group land in the same part, so near-duplicate
slices of one patient never sit on both sides of a split. Results are deterministic for a given ``(ids, groups,
seed)``: groups are sorted, then shuffled with ``numpy.random.default_rng(seed)``. Within each part, ids keep their
input order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PARTS = ("train", "val", "test")
#: ``(train, val, test)`` fractions of a dataset's default fixed split.
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def _group_index(ids: Sequence[str], groups: Sequence[str] | None) -> dict[str, list[str]]:
    if groups is None:
        groups = list(ids)
    if len(groups) != len(ids):
        raise ValueError(f"got {len(ids)} ids but {len(groups)} groups")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    out: dict[str, list[str]] = {}
    for i, g in zip(ids, groups):
        out.setdefault(str(g), []).append(i)
    return out


def _shuffled_groups(index: dict[str, list[str]], seed: int) -> list[str]:
    names = sorted(index)
    order = np.random.default_rng(seed).permutation(len(names))
    return [names[i] for i in order]


def _ordered(ids: Sequence[str], chosen: set[str]) -> list[str]:
    return [i for i in ids if i in chosen]


def fixed_split(
    ids: Sequence[str],
    groups: Sequence[str] | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split cases into train/val/test by group.

    Groups are shuffled, then laid end to end by case count; a group goes to the part whose cumulative-fraction
    interval contains the middle of the group's interval (so part sizes follow ``fractions`` by cases, to within
    one group). Every part with a positive fraction gets at least one group when there are enough groups.

    Args:
        ids: Case ids (unique).
        groups: Group of each case (``None``: each case its own group).
        fractions: ``(train, val, test)`` fractions (normalised to sum 1); a zero leaves that part empty.
        seed: Shuffle seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {tuple(fractions)}")
    fr = fr / fr.sum()
    index = _group_index(ids, groups)
    order = _shuffled_groups(index, seed)
    n = sum(len(v) for v in index.values())
    bounds = np.cumsum(fr)
    assign: dict[str, int] = {}
    pos = 0
    for g in order:
        mid = (pos + len(index[g]) / 2.0) / max(n, 1)
        # side="right" never lands in an empty (zero-fraction) interval
        part = min(int(np.searchsorted(bounds, mid, side="right")), 2)
        assign[g] = part if fr[part] > 0 else int(np.flatnonzero(fr > 0)[-1])  # float round-off at the end
        pos += len(index[g])
    # Give every wanted part at least one group, taking from the part with the most groups.
    wanted = [p for p in range(3) if fr[p] > 0]
    if len(order) >= len(wanted):
        for p in wanted:
            members = [g for g in order if assign[g] == p]
            if members:
                continue
            counts = {q: sum(1 for g in order if assign[g] == q) for q in wanted}
            donor = max(counts, key=lambda q: (counts[q], -q))
            if counts[donor] > 1:
                moved = [g for g in order if assign[g] == donor][-1]
                assign[moved] = p
    return {name: _ordered(ids, {i for g in order if assign[g] == p for i in index[g]}) for p, name in enumerate(PARTS)}


def kfold_split(ids: Sequence[str], groups: Sequence[str] | None = None, k: int = 5, seed: int = 0) -> list[list[str]]:
    """Partition cases into ``k`` folds by group, balanced by case count.

    Groups are shuffled, stably sorted by size (largest first), then each goes to the fold with the fewest cases
    so far (ties: lowest fold index).

    Args:
        ids: Case ids (unique).
        groups: Group of each case (``None``: each case its own group).
        k: Number of folds, ``2 <= k <=`` number of groups.
        seed: Shuffle seed.

    Returns:
        ``k`` lists of ids; fold ``i`` is the validation part of cross-validation round ``i``.
    """
    index = _group_index(ids, groups)
    if k < 2 or k > len(index):
        raise ValueError(f"k must be between 2 and the number of groups ({len(index)}), got {k}")
    order = sorted(_shuffled_groups(index, seed), key=lambda g: -len(index[g]))
    sizes = [0] * k
    members: list[set[str]] = [set() for _ in range(k)]
    for g in order:
        f = int(np.argmin(sizes))
        sizes[f] += len(index[g])
        members[f].update(index[g])
    return [_ordered(ids, m) for m in members]


def split_last_groups(
    ids: Sequence[str],
    groups: Sequence[str],
    n_test_groups: int,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Hold out the last ``n_test_groups`` groups in sorted order as test; split the rest train/val by group.

    This is the LIDC benchmark protocol (the last 60 of the 300 patients, sorted by patient id, form the test set).

    Args:
        ids: Case ids (unique).
        groups: Group of each case.
        n_test_groups: How many groups (from the end of the sorted order) form the test part (0 allowed).
        val_fraction: Fraction of the remaining cases (by group) for validation.
        seed: Shuffle seed of the train/val split.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.
    """
    index = _group_index(ids, groups)
    names = sorted(index)
    if not 0 <= n_test_groups <= len(names):
        raise ValueError(f"n_test_groups must be in [0, {len(names)}], got {n_test_groups}")
    test_groups = set(names[len(names) - n_test_groups :])
    test = {i for g in test_groups for i in index[g]}
    rest_ids = [i for i in ids if i not in test]
    rest_groups = [str(g) for i, g in zip(ids, groups) if i not in test]
    out = {"train": [], "val": [], "test": _ordered(ids, test)}
    if rest_ids:
        tv = fixed_split(rest_ids, rest_groups, (1.0 - val_fraction, val_fraction, 0.0), seed)
        out["train"], out["val"] = tv["train"], tv["val"]
    return out
