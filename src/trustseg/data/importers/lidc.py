"""LIDC-IDRI lung-nodule slice export (the Kaggle "LIDC-IDRI" layout), 4 radiologists.

Source layout (``SRC`` is the ``LIDC-IDRI-slices`` folder or its parent)::

    SRC/LIDC-IDRI-XXXX/nodule-N/images/slice-S.png        128x128 uint8 CT crop
    SRC/LIDC-IDRI-XXXX/nodule-N/mask-{0,1,2,3}/slice-S.png one 0/255 mask per radiologist

Each slice becomes one 2D case ``LIDC-IDRI-XXXX_nN_sS`` (group = the patient id, so splits never separate
slices of one patient), with classes ``(background, nodule)``, raters ``rater0..rater3`` (``mask-0..mask-3``),
intensities kept as stored (0..255) and files written as PNG. An all-zero mask is kept: that radiologist did not
outline the nodule on that slice.

Default splits (the benchmark protocol): test = the last ``test_patients`` patients in sorted order
(``min(test_patients, patients // 5)``, so 60 of the 300 patients), the rest split 85/15 train/val by patient;
5 folds by patient over the non-test cases.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from trustseg.core.errors import DataError
from trustseg.data.case import Case
from trustseg.data.dataset import write_dataset
from trustseg.data.importers.registry import IMPORTERS
from trustseg.data.io import read_image, read_label
from trustseg.data.splits import split_last_groups

PATIENT_RE = re.compile(r"^LIDC-IDRI-\d+$")
NUM_RATERS = 4


def _number(path: Path) -> int:
    m = re.search(r"(\d+)$", path.stem if path.suffix else path.name)
    return int(m.group(1)) if m else -1


def find_lidc_root(src: Path) -> Path:
    """The folder holding the ``LIDC-IDRI-XXXX`` patient folders: ``src`` or ``src/LIDC-IDRI-slices``."""
    for cand in (src, src / "LIDC-IDRI-slices"):
        if cand.is_dir() and any(PATIENT_RE.match(p.name) and p.is_dir() for p in cand.iterdir()):
            return cand
    raise DataError("no LIDC-IDRI-XXXX patient folders found here or in LIDC-IDRI-slices/", src)


def list_slices(root: Path, limit_patients: int | None = None) -> list[tuple[str, int, int, Path]]:
    """``(patient, nodule, slice, nodule_dir)`` for every slice, sorted by patient, nodule and slice number."""
    patients = sorted(p for p in root.iterdir() if p.is_dir() and PATIENT_RE.match(p.name))
    if limit_patients is not None:
        patients = patients[: int(limit_patients)]
    out = []
    for pdir in patients:
        for ndir in sorted((d for d in pdir.iterdir() if d.is_dir() and d.name.startswith("nodule-")), key=_number):
            img_dir = ndir / "images"
            if not img_dir.is_dir():
                raise DataError("nodule folder has no images/ folder", ndir)
            for s in sorted((f for f in img_dir.iterdir() if f.suffix.lower() == ".png"), key=_number):
                out.append((pdir.name, _number(ndir), _number(s), ndir))
    return out


def _read_slice(item: tuple[str, int, int, Path]) -> Case:
    patient, nodule, s, ndir = item
    name = f"slice-{s}.png"
    img = read_image(ndir / "images" / name)
    masks = []
    for r in range(NUM_RATERS):
        path = ndir / f"mask-{r}" / name
        lab, _, _ = read_label(path)
        if lab.max(initial=0) > 1:
            raise DataError(f"expected a binary 0/255 mask, found values up to {lab.max()}", path)
        masks.append(lab)
    return Case(
        case_id=f"{patient}_n{nodule}_s{s}",
        image=img.array,
        labels=np.stack(masks, 0),
        spacing=img.spacing,
        origin=img.origin,
        group=patient,
        meta={"raters": [f"rater{r}" for r in range(NUM_RATERS)], "source": str(ndir / "images" / name)},
    )


def _cases(items, workers: int = 4, chunk: int = 64) -> Iterator[Case]:
    """Read slices with a small thread pool (PNG decoding releases the GIL), in order, ``chunk`` at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(items), chunk):
            yield from pool.map(_read_slice, items[start : start + chunk])


class _Sized:
    """An iterable with a length (for the progress bar)."""

    def __init__(self, items, it):
        self.n, self.it = len(items), it

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return self.it


@IMPORTERS.register("lidc", doc="LIDC-IDRI slice export: LIDC-IDRI-XXXX/nodule-N/{images,mask-0..3}/slice-S.png")
def import_lidc(
    src: Path,
    out: Path,
    *,
    name: str = "lidc",
    limit_patients: int | None = None,
    test_patients: int = 60,
    val_fraction: float = 0.15,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Convert the LIDC slice export into a trustseg dataset (see the module docstring).

    Args:
        src: The ``LIDC-IDRI-slices`` folder or its parent.
        out: Output dataset root.
        name: Dataset name.
        limit_patients: Import only the first N patients (sorted by id).
        test_patients: Patients held out as test, from the end of the sorted order (capped at patients // 5).
        val_fraction: Validation fraction (by patient) of the remaining patients.
        seed: Seed of the train/val split and the folds.
        progress: Show a progress bar.
    """
    root = find_lidc_root(Path(src))
    items = list_slices(root, limit_patients)
    if not items:
        raise DataError("no slices found (expected LIDC-IDRI-XXXX/nodule-N/images/slice-S.png)", root)
    ids = [f"{p}_n{n}_s{s}" for p, n, s, _ in items]
    groups = [p for p, _, _, _ in items]
    n_patients = len(set(groups))
    fixed = split_last_groups(ids, groups, min(test_patients, n_patients // 5), val_fraction, seed)
    return write_dataset(
        _Sized(items, _cases(items)),
        out,
        classes=("background", "nodule"),
        name=name,
        ext=".png",
        splits={"fixed": fixed},
        seed=seed,
        progress=progress,
    )
