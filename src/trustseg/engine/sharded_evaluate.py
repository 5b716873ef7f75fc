"""``trustseg evaluate`` under ``torchrun``: the cases shared among the ranks, one results file.

Launched as ``torchrun --nproc_per_node G -m trustseg evaluate --pred P --data D --out results.json``,
:func:`evaluate_sharded`:

1. rank 0 checks ``--out`` (:func:`~trustseg.evaluation.evaluate.check_results_out`) and takes the results
   folder's writer lock; its error, if any, is raised on every rank;
2. rank r scores its contiguous block of the cases (:func:`~trustseg.evaluation.evaluate.load_pairs` with
   ``shard``) with its own :class:`~trustseg.evaluation.suite.EvaluationSuite`;
3. the suites, whose component states are fixed-size (histograms, pooled sums) and whose rows are a handful of
   numbers per case, are gathered (``all_gather_object``) and merged on rank 0 in rank order with
   :meth:`EvaluationSuite.merge <trustseg.evaluation.suite.EvaluationSuite.merge>` — each component's own
   ``merge`` (a sum for the pooled states), which is what makes the merge exact for any state, not only tensors
   that ``all_reduce`` could add. Blocks in rank order are the cases in one process's order, so the rows are too;
4. rank 0 writes the results JSON and CSV (:func:`~trustseg.evaluation.evaluate.write_results`): the same files
   one process writes (the pooled sums agree to float rounding, ~1e-15 relative). The OOD and noise protocols,
   when asked, run on rank 0 after the merge.

An evaluation is not resumed: it writes its results once, at the end (a killed one leaves none).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from trustseg.core.errors import ConfigError
from trustseg.core.lock import exclusive
from trustseg.engine.distributed import DistInfo, gather_checked, on_main
from trustseg.evaluation.context import SuiteConfig
from trustseg.evaluation.evaluate import check_results_out, score_cases, write_results
from trustseg.evaluation.robustness import NoiseConfig, OODConfig


def evaluate_sharded(
    pred_dir: str | Path,
    data_root: str | Path,
    out_json: str | Path,
    info: DistInfo,
    split: str | None = None,
    empty: str | None = None,
    suite: SuiteConfig | None = None,
    *,
    use_image: bool = True,
    predictor: Any = None,
    ood: OODConfig | None = None,
    noise: NoiseConfig | None = None,
    progress: bool = False,
    partial: bool = False,
) -> dict[str, Any] | None:
    """:func:`~trustseg.evaluation.evaluate.evaluate_predictions` as rank ``info.rank`` of ``info.world_size``
    (module docstring).

    Returns:
        The results on rank 0 (``None`` on the other ranks).

    Raises:
        ConfigError, DataError: as :func:`~trustseg.evaluation.evaluate.evaluate_predictions`, on every rank.
    """
    if (ood is not None or noise is not None) and predictor is None:
        raise ConfigError("the OOD and noise protocols predict again: pass the model (predictor=..., CLI --run RUN)")
    cfg = suite or SuiteConfig()
    if empty is not None:
        cfg = replace(cfg, empty=empty)
    with contextlib.ExitStack() as stack:

        def start() -> Path:
            path = check_results_out(out_json, pred_dir, data_root)
            stack.enter_context(exclusive(path.parent, "results folder"))
            return path

        out: Any = on_main(start, info)
        shard = (info.rank, info.world_size)
        suites = gather_checked(lambda: score_cases(pred_dir, data_root, split, cfg, use_image, partial, shard), info)

        def finish() -> dict[str, Any]:
            ev, incomplete = suites[0]
            for other, _ in suites[1:]:
                ev.merge(other)
            return write_results(ev, pred_dir, data_root, out, split, cfg, incomplete, predictor, ood, noise, progress)

        result: Any = on_main(finish, info)
    return result if info.is_main else None
