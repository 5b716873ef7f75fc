"""The results schema: nested per-case values, their means over cases, and the one flattening (for the CSV).

Every per-case value sits at a path of three keys, ``metric -> target -> item``:

* ``metric``: what is computed (``dice``, ``hd95``, ``ece_toplabel``, ``pixel_pearson``, ...);
* ``target``: what it is computed against (``majority``, ``consensus``, ``mean_rater``, ``soft``, a rater name, a
  CURVAS mode) or, for the metrics of an uncertainty map, the map (the oriented measure name);
* ``item``: a class name, ``mean`` (mean over the foreground classes, NaNs skipped), ``all`` (a value over all
  classes at once), or for map metrics the reference (``disagreement``, ``error``, an aggregator name).

:func:`flatten` joins a path with :data:`SEP` for the CSV and the printed summary; it is the only place that
builds flat names, and nothing parses them back. Names that become keys (classes, raters, measures) are checked
by :func:`check_names`: they must not contain :data:`SEP` nor be one of the :data:`RESERVED` words.

Example:
    >>> flatten({"dice": {"majority": {"organ": 0.9, "mean": 0.9}}, "case": "a"})
    {'dice/majority/organ': 0.9, 'dice/majority/mean': 0.9, 'case': 'a'}
    >>> mean_tree([{"dice": {"majority": {"organ": 0.5}}}, {"dice": {"majority": {"organ": float("nan")}}}])
    {'dice': {'majority': {'organ': 0.5}}}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trustseg.core.errors import DataError
from trustseg.metrics import reduction

#: The one separator of flattened names (CSV columns, printed summary).
SEP = "/"
#: Words the schema uses as keys itself; a class, rater or measure may not be named so.
RESERVED = frozenset({"mean", "all", "majority", "consensus", "mean_rater", "soft", "raters"})

Tree = dict[str, Any]


def check_names(names: Iterable[str], what: str, path: str | Path | None = None) -> None:
    """Check that names which become result keys are usable: not empty, no :data:`SEP`, not :data:`RESERVED`.

    Args:
        names: Class, rater or measure names.
        what: What they are ("class", "rater", "measure"), for the message.
        path: The file that defines them (``dataset.json``, ``predictions.json``), named in the error.

    Raises:
        DataError: a name that would corrupt the results' keys.
    """
    for name in names:
        if not isinstance(name, str) or not name or SEP in name:
            raise DataError(f"{what} name {name!r} cannot be used in the results: it must not contain {SEP!r}", path)
        if name in RESERVED:
            raise DataError(
                f"{what} name {name!r} cannot be used in the results: it is a reserved key ({sorted(RESERVED)})", path
            )


def finite(x: Any) -> float:
    """``float(x)``, with NaN for anything infinite or undefined (the results write NaN as ``null``)."""
    x = float(x)
    return x if math.isfinite(x) else math.nan


def put(tree: Tree, path: Sequence[str], value: Any) -> None:
    """Set ``tree[p0][p1]...[pn] = value``, creating the levels."""
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def get(tree: Mapping[str, Any], path: Sequence[str], default: Any = math.nan) -> Any:
    """``tree[p0]...[pn]``, or ``default`` when a level is missing."""
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return default
        tree = tree[key]
    return tree


def leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every ``(path, value)`` of a nested dict, depth first in insertion order (dicts are levels, the rest
    leaves)."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """One flat ``"metric/target/item" -> value`` dict (the CSV row); the only flattening of the schema."""
    return {SEP.join(path): value for path, value in leaves(tree)}


def merge(a: Tree, b: Mapping[str, Any]) -> Tree:
    """Deep-merge ``b`` into ``a`` (in place; ``b`` wins on leaves) and return ``a``."""
    for key, value in b.items():
        if isinstance(value, Mapping) and isinstance(a.get(key), dict):
            merge(a[key], value)
        else:
            a[key] = dict(value) if isinstance(value, Mapping) else value
    return a


def numeric_paths(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """The paths of every numeric leaf over all rows, in first-seen order."""
    seen: dict[tuple[str, ...], None] = {}
    for row in rows:
        for path, value in leaves(row):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                seen.setdefault(path, None)
    return list(seen)


def column(rows: Sequence[Mapping[str, Any]], path: Sequence[str]) -> np.ndarray:
    """The float64 values at ``path`` over the rows (NaN where a row lacks it)."""
    return np.array([float(get(r, path)) for r in rows], dtype=np.float64)


def nanmean(values: Iterable[float]) -> float:
    """:func:`trustseg.metrics.reduction.nanmean` of the values as a float (NaN when none is finite)."""
    return float(reduction.nanmean(np.asarray(list(values), dtype=np.float64)))


def mean_tree(rows: Sequence[Mapping[str, Any]]) -> Tree:
    """The mean over rows of every numeric leaf (non-finite values skipped; NaN when no row has one)."""
    out: Tree = {}
    for path in numeric_paths(rows):
        put(out, path, nanmean(column(rows, path)))
    return out


def count_tree(rows: Sequence[Mapping[str, Any]]) -> Tree:
    """How many rows have a finite value at every numeric leaf."""
    out: Tree = {}
    for path in numeric_paths(rows):
        put(out, path, int(np.isfinite(column(rows, path)).sum()))
    return out
