"""``trustseg predict --shard members`` under ``torchrun``: the members of an ensemble spread over the ranks.

Launched as ``torchrun --nproc_per_node G -m trustseg predict --model RUN --shard members --input IN --out OUT``
(gloo on the CPU, NCCL on CUDA), :func:`trustseg.engine.predict.predict_folder` runs :func:`predict_members_sharded`:

1. rank 0 alone takes the folder's writer lock, checks the folder (empty, ``--resume`` or ``--overwrite``, as one
   process does) and writes the first, incomplete ``predictions.json``; its plan (the cases done, the measures)
   reaches every rank, its error is raised on every rank;
2. every rank reads every remaining case and predicts only its members, those ``i`` with
   ``i % world_size == rank`` (:func:`~trustseg.engine.distributed.shard_of`), one at a time, into the running
   sums of :class:`~trustseg.inference.adapters.nnunet_members.MemberMoments` (float32, only the sums the measures
   need: ``S1`` ``(K, *sp)``, ``SX`` ``(*sp)``, ``SL`` ``(K, *sp)`` for ``epkl``, ``S2`` ``(*sp)`` for
   ``variance``) and the count ``n``;
3. the sums and the count are summed onto rank 0 (``torch.distributed.reduce``, SUM: only rank 0 needs them);
   rank 0 derives ``p̄ = S1 / n`` and the measures and writes the case with the one-process writer
   (:class:`~trustseg.engine.prediction_folder.FolderWriter`), which keeps ``predictions.json`` current. The
   other ranks write nothing. A failure on any rank is raised on every rank (no rank waits forever).

The folder is the one a single process writes, to float round-off (the measures come from the sums instead of
the stacked samples). Memory per rank: one member's output plus the sums. The per-member samples are not written
in this mode (``--samples`` is refused, as is ``--qc``, whose features read the samples): use ``--shard cases``.
A killed run leaves a folder that ``--resume`` continues (any number of ranks, either mode).

Refused with a :class:`~trustseg.core.errors.ConfigError` (:func:`check_members_sharding`, before the process
group starts): no ``torchrun`` launch, a predictor without the ``members`` capability (``M = 1`` methods, a single
network), or more ranks than members.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trustseg.core.errors import ConfigError, DataError
from trustseg.core.lock import exclusive
from trustseg.core.memory import available_bytes, is_allocation_failure
from trustseg.core.predictive import PRECOMPUTED, Predictive
from trustseg.engine.distributed import DistInfo, gather_checked, on_main, shard_of
from trustseg.engine.prediction_folder import Annotator, FolderWriter, InputItem, WriterJob, loaded
from trustseg.inference.adapters.nnunet_members import STREAMED_MEASURES, MemberMoments
from trustseg.inference.memory import MemoryNeededError, memory_message
from trustseg.inference.predictor import MemberPredictor, Predictor, check_image
from trustseg.measures import MEASURES
from trustseg.measures.registry import available_measures

#: The capability a predictor declares to have its members spread over ranks.
CAPABILITY = "members"


def check_members_sharding(
    predictor: Predictor, info: DistInfo, save_samples: bool = False, annotate: Annotator | None = None
) -> int:
    """Refuse what ``--shard members`` cannot do; the number of members.

    Raises:
        ConfigError: not launched by ``torchrun`` (one process), a predictor without several members, more ranks
            than members, ``--samples`` or ``--qc`` (each naming the option and the fix).
    """
    if not info.enabled:
        raise ConfigError(
            "--shard members spreads the members over torchrun ranks: launch with "
            "`torchrun --nproc_per_node N -m trustseg predict ... --shard members` (one process predicts every "
            "member anyway)"
        )
    count = int(getattr(predictor, "member_count", 1)) if CAPABILITY in predictor.info.capabilities else 1
    if count < 2 or not isinstance(predictor, MemberPredictor):
        raise ConfigError(
            f"--shard members needs a model of several member networks (an ensemble); {predictor.info.source!r} "
            f"(method {predictor.info.method!r}) has one: use --shard cases"
        )
    if info.world_size > count:
        raise ConfigError(
            f"--shard members: {info.world_size} ranks but the model has {count} members; launch at most {count} "
            "ranks (--nproc_per_node x nodes), or use --shard cases"
        )
    if save_samples:
        raise ConfigError(
            "--samples is not written with --shard members (no rank holds every member): use --shard cases"
        )
    if annotate is not None:
        raise ConfigError("--qc reads every member's samples, which --shard members does not gather: use --shard cases")
    return count


def member_measures(num_classes: int, requested: Sequence[str] | None) -> list[str]:
    """The measures written: ``requested``, or every measure of an ``M > 1`` prediction of probabilities, in
    display order; each must be one :class:`MemberMoments` streams.

    Example:
        >>> member_measures(3, None)
        ['confidence', 'entropy', 'expected_entropy', 'mi', 'epkl', 'variance']

    Raises:
        ConfigError: a measure that does not follow from the members' sums (named).
    """
    if requested is None:
        probe = Predictive(probs=torch.full((2, 1, num_classes, 1), 1.0 / num_classes))
        return available_measures(probe)
    names = [MEASURES.entry(m).name for m in requested]
    bad = [m for m in names if m not in STREAMED_MEASURES]
    if bad:
        raise ConfigError(
            f"--measures {bad} do not follow from the members' running sums (--shard members computes "
            f"{list(STREAMED_MEASURES)}): drop them, or use --shard cases"
        )
    return names


def accumulate(
    predictor: MemberPredictor, item: InputItem, members: Sequence[int], names: Sequence[str]
) -> MemberMoments:
    """Predict ``members`` of ``predictor`` on one case, one at a time, into running sums.

    Raises:
        ConfigError: a member prediction with a Dirichlet or extras (nothing the sums carry).
        DataError: an image that does not fit the predictor, or a prediction needing more memory than there is.
    """
    check_image(predictor.info, item.image, item.source)
    moments = MemberMoments(len(predictor.info.classes), names)
    try:
        for pred in predictor.predict_members(item.image, item.spacing, members):
            if pred.alpha is not None or pred.extras:
                raise ConfigError(
                    f"--shard members sums member probabilities; method {predictor.info.method!r} predicts "
                    f"{'a Dirichlet' if pred.alpha is not None else sorted(pred.extras)} too: use --shard cases"
                )
            for s in range(pred.num_samples):
                moments.update(pred.probs[s, 0])
            del pred
    except MemoryNeededError as e:
        raise DataError(f"case {item.case_id!r}: {e.problem}", item.source) from None
    except (RuntimeError, MemoryError) as e:
        if not is_allocation_failure(e):
            raise
        raise DataError(
            f"case {item.case_id!r}: {memory_message(None, available_bytes(), 'predict')}", item.source
        ) from None
    return moments


def reduce_moments(moments: MemberMoments, info: DistInfo) -> MemberMoments:
    """Sum every rank's sums and count onto rank 0 (``torch.distributed.reduce``, SUM; in place). On NCCL the
    tensors travel through this rank's CUDA device, one at a time."""
    if not info.enabled:
        return moments
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    count = torch.tensor([float(moments.count)], dtype=torch.float64)
    for t in (moments.s1, moments.sx, moments.sl, moments.s2, count):
        if t is None:
            continue
        moved = t if device is None else t.to(device)
        dist.reduce(moved, dst=0, op=dist.ReduceOp.SUM)
        if moved is not t:
            t.copy_(moved.cpu())
        del moved
    moments.count = int(round(float(count.item())))
    return moments


def as_prediction(moments: MemberMoments) -> Predictive:
    """The writer's input from the summed moments: ``probs`` ``(1, 1, K, *sp)`` = p̄ and each measure as
    ``extras["measure:<name>"]`` ``(1, 1, *sp)`` (:data:`~trustseg.core.predictive.PRECOMPUTED`)."""
    extras = {f"{PRECOMPUTED}{k}": v.contiguous()[None, None] for k, v in moments.compute().items()}
    return Predictive(probs=moments.mean().contiguous()[None, None], extras=extras)


def predict_members_sharded(
    predictor: Predictor,
    items: list,
    out: Path,
    info: DistInfo,
    writer_info: dict[str, Any],
    job: WriterJob,
) -> Path:
    """Predict ``items`` into ``out`` with the writer settings ``job`` and the members shared among the ranks
    (module docstring); this process is rank ``info.rank`` of ``info.world_size``; every rank returns ``out``.

    Raises:
        ConfigError, DataError: as :func:`trustseg.engine.predict.predict_folder` and
            :func:`check_members_sharding`, on every rank (the first failing rank's error).
    """
    count = check_members_sharding(predictor, info, job.save_samples, job.annotate)
    assert isinstance(predictor, MemberPredictor)
    out = Path(out)
    mine = shard_of(list(range(count)), info)
    main: dict[str, FolderWriter] = {}
    with contextlib.ExitStack() as stack:

        def start() -> dict[str, Any]:
            stack.enter_context(exclusive(out, "prediction folder"))  # rank 0 holds the one lock of the run
            writer = job.writer(out, writer_info)  # no samples, no annotator: refused above
            done = writer.begin([load.case_id for load in items], resume=job.resume, overwrite=job.overwrite)
            names = writer.measures or member_measures(len(predictor.info.classes), writer.requested)
            member_measures(len(predictor.info.classes), names)  # a resumed folder's measures must stream too
            main["writer"] = writer
            return {"done": sorted(done), "measures": names}

        plan: Any = on_main(start, info)
        done = set(plan["done"])
        todo = [load for load in items if load.case_id not in done]
        state: dict[str, MemberMoments] = {}
        for item in loaded(todo, job.progress and info.is_main):

            def predict(item: InputItem = item) -> None:
                state["sums"] = accumulate(predictor, item, mine, plan["measures"])

            gather_checked(predict, info)  # every rank's sums exist, or every rank raises the first error
            moments = reduce_moments(state.pop("sums"), info)

            def write(item: InputItem = item, moments: MemberMoments = moments) -> None:
                if info.is_main:
                    main["writer"].write(item, as_prediction(moments))

            gather_checked(write, info)
            del moments
        on_main(lambda: main["writer"].finish(), info)
    return out
