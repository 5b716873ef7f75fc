"""QUBIQ challenge layout (2020/2021 releases), one binary task at a time.

Source layout (``SRC`` is the dataset folder, e.g. ``brain-growth``, or a folder holding exactly one such
folder)::

    SRC/caseNN/image.nii.gz
    SRC/caseNN/<task>_seg01.nii.gz ... <task>_segRR.nii.gz    one binary mask per rater

Each ``caseNN`` folder becomes one case (its own group); raters are ``seg01 .. segRR`` from the file names
and must be the same for every case. Classes default to ``(background, foreground)``. Files are written as
NIfTI, keeping the header's spacing and origin. QUBIQ numbers its cases arbitrarily, so the default splits
(fixed 70/15/15 and 5-fold over the non-test cases) are random by case.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trustseg.core.errors import DataError
from trustseg.data.case import Case
from trustseg.data.dataset import write_dataset
from trustseg.data.importers.registry import IMPORTERS, LazyCases
from trustseg.data.io import read_image, read_label

CASE_RE = re.compile(r"^case\d+$")


def _case_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and CASE_RE.match(d.name))


def find_qubiq_root(src: Path) -> Path:
    """``src`` if it holds ``caseNN`` folders, else its only sub-folder that does."""
    if _case_dirs(src):
        return src
    subs = [d for d in sorted(src.iterdir()) if d.is_dir() and _case_dirs(d)]
    if len(subs) == 1:
        return subs[0]
    if subs:
        raise DataError(f"several QUBIQ datasets here ({', '.join(d.name for d in subs)}); pass one of them", src)
    raise DataError("no caseNN folders found (expected caseNN/image.nii.gz + <task>_segNN.nii.gz)", src)


def _rater_files(case_dir: Path, task: str) -> dict[str, Path]:
    pat = re.compile(rf"^{re.escape(task)}_(seg\d+)\.nii(\.gz)?$")
    found = {}
    for f in case_dir.iterdir():
        m = pat.match(f.name)
        if m:
            found[m.group(1)] = f
    return dict(sorted(found.items()))


def _read_case(case_dir: Path, task: str) -> Case:
    img_path = next((case_dir / n for n in ("image.nii.gz", "image.nii") if (case_dir / n).is_file()), None)
    if img_path is None:
        raise DataError("missing image.nii.gz", case_dir)
    img = read_image(img_path)
    files = _rater_files(case_dir, task)
    if not files:
        raise DataError(f"case has no rater ({task}_segNN.nii.gz files)", case_dir)
    labels = []
    for f in files.values():
        lab, _, _ = read_label(f)
        if lab.shape != img.array.shape[1:]:
            raise DataError(f"label shape {lab.shape} does not match image {img.array.shape[1:]} ({img_path})", f)
        labels.append(lab)
    return Case(
        case_id=case_dir.name,
        image=img.array,
        labels=np.stack(labels, 0),
        spacing=img.spacing,
        origin=img.origin,
        meta={"raters": list(files), "source": str(case_dir)},
    )


@IMPORTERS.register("qubiq", doc="QUBIQ: caseNN/image.nii.gz + <task>_segNN.nii.gz (one mask per rater)")
def import_qubiq(
    src: Path,
    out: Path,
    *,
    name: str = "qubiq",
    task: str = "task01",
    classes: Sequence[str] = ("background", "foreground"),
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Convert a QUBIQ dataset folder into a trustseg dataset (see the module docstring).

    Args:
        src: The dataset folder (``brain-growth``, ``kidney``, ...) or a folder holding exactly one.
        out: Output dataset root.
        name: Dataset name.
        task: Which task's masks to import (``task01``, ``task02``, ...).
        classes: Class names (background first); QUBIQ masks are binary.
        seed: Seed of the default splits.
        progress: Show a progress bar.
    """
    root = find_qubiq_root(Path(src))
    dirs = _case_dirs(root)
    return write_dataset(
        LazyCases(dirs, lambda d: _read_case(d, task)),
        out,
        classes=classes,
        name=name,
        ext=".nii.gz",
        seed=seed,
        progress=progress,
    )
