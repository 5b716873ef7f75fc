"""Which uncertainty map summarises a method in a report: its declared primary measure when the results hold it,
else the predictive entropy (total uncertainty: rater disagreement is aleatoric), else MI, else the first map."""

from __future__ import annotations

from typing import Any

from trustseg.evaluation.context import oriented_name
from trustseg.methods import METHODS


def primary_measure(method: str, results: dict[str, Any]) -> str | None:
    """The (oriented) map used to summarise a method's uncertainty: the method's declared ``primary_measure`` when
    its results have it, else the predictive entropy (or MI, or the first map)."""
    available = list(results.get("uncertainty", {}))
    first = oriented_name(METHODS.get(method).primary_measure) if method in METHODS else None
    if first in available:
        return first
    for name in ("entropy", "mi"):  # total uncertainty: rater disagreement is aleatoric, MI is epistemic only
        if name in available:
            return name
    return available[0] if available else None
