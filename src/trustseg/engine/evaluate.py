"""Moved to :mod:`trustseg.evaluation.evaluate`; this re-export remains for ``benchmarks/`` and older scripts."""

from trustseg.evaluation.evaluate import evaluate_predictions, load_pairs

__all__ = ["evaluate_predictions", "load_pairs"]
