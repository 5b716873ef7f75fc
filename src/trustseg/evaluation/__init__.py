"""Evaluation: the suite of registered components over predicted cases, and the evaluation of a prediction
folder (``trustseg evaluate``). Sits between ``metrics`` and ``models``: it composes metrics and measures and
reads the on-disk prediction format of :mod:`trustseg.data.predictions`.

* :class:`EvaluationSuite`, :class:`SuiteConfig`: stream cases, get one results dict;
* :data:`SUITE`, :class:`SuiteComponent`, :class:`DatasetAnalysis`, :func:`register`: the components;
* :class:`CaseContext`, :class:`CaseInputError`, :func:`oriented_name`: what components read;
* :func:`flatten`, :func:`check_names`: the results schema;
* :func:`evaluate_predictions`: a prediction folder against a dataset.
"""

from trustseg.evaluation.component import SUITE, DatasetAnalysis, SuiteComponent, register
from trustseg.evaluation.context import CaseContext, CaseInputError, SuiteConfig, oriented_name
from trustseg.evaluation.evaluate import evaluate_predictions, load_pairs, verify_results
from trustseg.evaluation.results import SEP, check_names, flatten
from trustseg.evaluation.suite import EvaluationSuite

__all__ = [
    "SEP",
    "SUITE",
    "CaseContext",
    "CaseInputError",
    "DatasetAnalysis",
    "EvaluationSuite",
    "SuiteComponent",
    "SuiteConfig",
    "check_names",
    "evaluate_predictions",
    "verify_results",
    "flatten",
    "load_pairs",
    "oriented_name",
    "register",
]
