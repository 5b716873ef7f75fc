"""``trustseg predict`` under ``torchrun``: the cases shared among the ranks, one prediction folder.

Launched as ``torchrun --nproc_per_node G -m trustseg predict --model M --input IN --out OUT`` (any number of
nodes that see ``OUT``), :func:`trustseg.engine.predict.predict_folder` runs :func:`predict_sharded`:

1. rank 0 alone takes the folder's writer lock, folds in the parts a killed earlier run left
   (:func:`absorb_parts`), checks the folder (empty, ``--resume`` or ``--overwrite``, as one process does) and
   writes the first, incomplete ``predictions.json`` with every expected case. Its plan (the cases done, the
   measures, a fresh run token) reaches every rank; its error, if any, is raised on every rank;
2. the remaining cases, in the stable order of the expected ids, are shared: rank r predicts those at positions
   ``i % world_size == r``. Every rank writes its case files into ``OUT`` (atomically, as one process does) and,
   after each case, its part of the index ``OUT/.shards/rank<r>.json`` (the run token, its case entries and
   ``summary.csv`` rows): the manifest a resume reads;
3. after every rank finished (or one failed: all ranks then raise its error), rank 0 merges the parts into
   ``predictions.json`` and ``summary.csv``, cases in the order of the expected ids (the order one process
   writes), marks the folder complete and removes the parts.

A run killed part-way leaves the parts; ``--resume`` (any number of ranks) first folds them into the index, so
every case whose files and part entry exist is kept and not predicted again, and the rest is predicted once.

This mode (``--shard cases``, the default) does not spread ensemble members over ranks: every rank predicts whole
cases with all members (sharding cases keeps every rank busy without moving M sample volumes per case between
processes). ``--shard members`` does: every rank predicts every case with its share of the members and rank 0
sums their running sums and writes (:mod:`trustseg.engine.members_over_ranks`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trustseg.core.atomic import atomic_write_csv, atomic_write_json
from trustseg.core.errors import DataError
from trustseg.core.lock import exclusive
from trustseg.data.predictions import INDEX, SUMMARY, case_files
from trustseg.engine.case_prediction import predict_case
from trustseg.engine.checkpoint import remove_leftover_temps
from trustseg.engine.distributed import DistInfo, gather_checked, on_main, shard_of
from trustseg.engine.prediction_folder import FolderWriter, WriterJob
from trustseg.inference.predictor import Predictor

#: Folder of the per-rank parts of the index, inside the prediction folder.
SHARDS = ".shards"


def part_path(out: Path, rank: int) -> Path:
    """The index part of ``rank``: ``OUT/.shards/rank<r>.json``."""
    return Path(out) / SHARDS / f"rank{rank}.json"


class ShardWriter(FolderWriter):
    """A :class:`FolderWriter` of one rank: the same case files, but its index goes to its own part
    (:func:`part_path`) instead of ``predictions.json``/``summary.csv``, which only rank 0 writes.

    Args:
        *args: As :class:`FolderWriter`.
        rank: This rank.
        token: The run token of rank 0's plan (recorded in the part).
        **kwargs: As :class:`FolderWriter`.
    """

    def __init__(self, *args: Any, rank: int, token: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rank, self.token = rank, token

    def _written(self) -> None:
        atomic_write_json(part_path(self.out, self.rank), self.part())

    def part(self) -> dict[str, Any]:
        """This rank's part: ``{"token", "rank", "measures", "notes", "cases", "rows"}``."""
        return {
            "token": self.token,
            "rank": self.rank,
            "measures": self.measures,
            "notes": self.notes,
            "cases": self.cases,
            "rows": self.rows,
        }


def read_parts(out: Path) -> list[dict[str, Any]]:
    """Every index part in ``OUT/.shards`` (sorted by name); an unreadable one (killed mid-write cannot happen,
    they are written atomically; edited by hand can) is refused.

    Raises:
        DataError: naming the part.
    """
    folder = Path(out) / SHARDS
    parts = []
    for path in sorted(folder.glob("rank*.json")) if folder.is_dir() else []:
        try:
            part = json.loads(path.read_text())
            assert isinstance(part, dict) and isinstance(part.get("cases"), list)
        except (OSError, ValueError, AssertionError):
            raise DataError(
                "unreadable part of a sharded prediction index; remove it to predict its cases again", path
            ) from None
        part["_path"] = str(path)
        parts.append(part)
    return parts


def remove_parts(out: Path, parts: Sequence[dict[str, Any]]) -> None:
    """Delete the given parts, and ``.shards`` once empty (nothing else)."""
    for part in parts:
        Path(part["_path"]).unlink(missing_ok=True)
    if (Path(out) / SHARDS).is_dir():
        remove_leftover_temps(Path(out) / SHARDS)  # a part being written when the run was killed
    with contextlib.suppress(OSError):
        (Path(out) / SHARDS).rmdir()


def fold(
    cases: list[dict[str, Any]], rows: list[dict[str, Any]], parts: Sequence[dict[str, Any]], out: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``cases`` and ``rows`` with every part entry whose files all exist (a part entry replaces an entry of the
    same case); the rows follow the cases."""
    by_id = {c["id"]: c for c in cases}
    row_of = {str(r.get("case")): r for r in rows}
    for part in parts:
        part_rows = {str(r.get("case")): r for r in part.get("rows", [])}
        for entry in part["cases"]:
            if all(p.is_file() for p in case_files(out, entry).values()):
                by_id[entry["id"]] = entry
                if entry["id"] in part_rows:
                    row_of[entry["id"]] = part_rows[entry["id"]]
    merged = list(by_id.values())
    return merged, [row_of[c["id"]] for c in merged if c["id"] in row_of]


def absorb_parts(out: Path) -> int:
    """Fold the parts a killed sharded run left into ``predictions.json`` and ``summary.csv`` (still marked
    incomplete), then remove them; returns the number of parts. Nothing happens without an index."""
    out = Path(out)
    parts = read_parts(out)
    if not parts or not (out / INDEX).is_file():
        return 0
    index = json.loads((out / INDEX).read_text())
    rows: list[dict[str, Any]] = []
    if (out / SUMMARY).is_file():
        with open(out / SUMMARY, newline="") as fh:
            rows = [dict(r) for r in csv.DictReader(fh)]
    cases, rows = fold(list(index.get("cases", [])), rows, parts, out)
    for part in parts:
        if not index.get("measures") and part.get("measures"):
            index["measures"] = part["measures"]
        index.setdefault("notes", {}).update(part.get("notes") or {})
    index["cases"], index["complete"] = cases, False
    atomic_write_json(out / INDEX, index)
    atomic_write_csv(out / SUMMARY, rows)
    remove_parts(out, parts)
    return len(parts)


def _finish(writer: FolderWriter, parts: Sequence[dict[str, Any]], ids: Sequence[str]) -> Path:
    """Rank 0: merge the parts into the writer's index, cases and ``"expected"`` in the order of the inputs
    ``ids`` (then any earlier case not among them), write it, finish."""
    cases, rows = fold(writer.cases, writer.rows, parts, writer.out)
    writer.expected = list(dict.fromkeys([*ids, *writer.expected]))
    order = {cid: i for i, cid in enumerate(writer.expected)}
    cases.sort(key=lambda c: order.get(c["id"], len(order)))
    row_of = {str(r.get("case")): r for r in rows}
    writer.cases = cases
    writer.rows = [row_of[c["id"]] for c in cases if c["id"] in row_of]
    for part in parts:
        writer.measures = writer.measures or part.get("measures")
        writer.notes.update(part.get("notes") or {})
    writer._written()
    out = writer.finish()
    remove_parts(writer.out, parts)
    return out


def predict_sharded(
    predictor: Predictor,
    items: list,
    out: Path,
    info: DistInfo,
    writer_info: dict[str, Any],
    job: WriterJob,
) -> Path:
    """Predict ``items`` (loaders of :func:`~trustseg.engine.prediction_folder.iter_inputs`) into ``out`` with the
    writer settings ``job``, this process being rank ``info.rank`` of ``info.world_size`` (module docstring);
    every rank returns ``out``.

    Raises:
        ConfigError, DataError: as :func:`trustseg.engine.predict.predict_folder`, on every rank (the first
            failing rank's error).
    """
    out = Path(out)
    main: dict[str, FolderWriter] = {}
    with contextlib.ExitStack() as stack:

        def start() -> dict[str, Any]:
            stack.enter_context(exclusive(out, "prediction folder"))  # rank 0 holds the one lock of the run
            absorb_parts(out)
            writer = job.writer(out, writer_info)
            done = writer.begin([load.case_id for load in items], resume=job.resume, overwrite=job.overwrite)
            main["writer"] = writer
            return {"done": sorted(done), "measures": writer.measures, "notes": writer.notes, "token": uuid.uuid4().hex}

        plan: Any = on_main(start, info)
        done = set(plan["done"])
        mine = shard_of([load for load in items if load.case_id not in done], info)
        shard = ShardWriter(out, writer_info, job.measures, rank=info.rank, token=plan["token"], **job.options())
        shard.measures = plan["measures"]

        def run() -> dict[str, Any]:
            for item in shard.track(mine, job.progress and info.is_main):
                predict_case(predictor, item, shard, job.annotate)
            return {**shard.part(), "_path": str(part_path(out, info.rank))}

        try:
            parts = gather_checked(run, info)
        except BaseException:
            if info.is_main and "writer" in main:  # keep what every rank finished: indexed, still incomplete
                writer = main["writer"]
                cases, rows = fold(writer.cases, writer.rows, read_parts(out), out)
                writer.cases, writer.rows = cases, rows
                writer._written()
                remove_parts(out, read_parts(out))
            raise
        if info.is_main:
            _finish(main["writer"], [p for p in parts if p["token"] == plan["token"]], [x.case_id for x in items])
        gather_checked(lambda: None, info)  # every rank returns once the index is merged
    return out
