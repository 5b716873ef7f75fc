"""Probabilities saved by another tool (nnU-Net's ``--save_probabilities``, a MONAI script, a notebook): finding
them in a folder and reading each case as members ``(M, K, *spatial)``.

Layouts (detected from the names; ``<case>`` is a dataset case id, ``<ext>`` ``.npz``, ``.npy``, ``.nii.gz`` or
``.nii``)::

    stacked     SRC/<case>.<ext>                one file per case: (K, *spatial), or (M, K, *spatial) members
                                                (also SRC/<case>_probs.<ext>, SRC/<case>_probabilities.<ext>)
    case-major  SRC/<case>/<member>.<ext>       one file per member, (K, *spatial) each
    member-major SRC/<member>/<case>.<ext>      one sub-folder per member (e.g. fold_0/ .. fold_4/)

An ``.npz`` file's array is ``probabilities`` (nnU-Net), ``probs``, ``array``, or its only array (``key``
overrides). nnU-Net writes its arrays in SimpleITK's axis order (z, y, x), the reverse of the NIfTI order trustseg
reads: an array whose spatial axes are the case's reversed is transposed back (``spatial_order="auto"``; a shape
that reads the same both ways is taken as it is, so give ``"reversed"`` for such volumes). Pickle files (nnU-Net's
``.pkl``) are never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from trustseg.core.errors import DataError
from trustseg.data.io import read_image

#: The extensions a saved probability file may have.
SAVED_EXTS = (".npz", ".npy", ".nii.gz", ".nii")
#: ``.npz`` keys tried in order when no ``key`` is given.
NPZ_KEYS = ("probabilities", "probs", "array")
#: Stem suffixes that name a case's probability file (``case_probs.npy``).
SUFFIXES = ("", "_probs", "_probabilities")

SpatialOrder = Literal["auto", "as_is", "reversed"]


def _saved_files(folder: Path) -> dict[str, Path]:
    """Stem -> file for the probability files directly in ``folder`` (two files of one stem: an error)."""
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        ext = next((e for e in SAVED_EXTS if f.name.lower().endswith(e) and len(f.name) > len(e)), None)
        if ext is None or not f.is_file():  # nnU-Net's .pkl and .json files, previews, ...: not probabilities
            continue
        stem = f.name[: -len(ext)]
        if stem in out:
            raise DataError(f"two probability files for {stem!r} ({out[stem].name}, {f.name})", folder)
        out[stem] = f
    return out


def _case_of(stem: str, ids: set[str]) -> str | None:
    for suffix in SUFFIXES:
        if suffix and stem.endswith(suffix) and stem[: -len(suffix)] in ids:
            return stem[: -len(suffix)]
        if not suffix and stem in ids:
            return stem
    return None


def scan_saved(src: str | Path, case_ids: Sequence[str]) -> dict[str, list[Path]]:
    """Find the saved probabilities of each case: case id -> its files (one stacked file, or one per member, in
    member order).

    Args:
        src: The folder (module docstring: stacked, case-major or member-major).
        case_ids: The dataset's case ids (files of other names are ignored).

    Returns:
        The cases found (in ``case_ids`` order); the caller decides whether missing cases are an error.

    Raises:
        DataError: no folder, no probability file of any case, a folder mixing layouts, or member folders that
            do not all hold the same cases.
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError("no such folder of saved probabilities", src)
    ids = set(case_ids)
    top = {c: f for stem, f in _saved_files(src).items() if (c := _case_of(stem, ids)) is not None}
    subdirs = sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    case_dirs = [d for d in subdirs if d.name in ids]
    member_dirs = [d for d in subdirs if d.name not in ids and any(_case_of(s, ids) for s in _saved_files(d))]
    used = [name for name, hit in (("stacked", top), ("case-major", case_dirs), ("member-major", member_dirs)) if hit]
    if not used:
        raise DataError(
            f"no saved probabilities of any dataset case ({', '.join(SAVED_EXTS)} files named <case>, or "
            "<case>/<member> or <member>/<case>; see `trustseg import-predictions --help`)",
            src,
        )
    if len(used) > 1:
        raise DataError(f"the folder mixes layouts ({' and '.join(used)}); keep one", src)
    found: dict[str, list[Path]] = {}
    if top:
        found = {c: [top[c]] for c in case_ids if c in top}
    elif case_dirs:
        for d in case_dirs:
            files = list(_saved_files(d).values())
            if not files:
                raise DataError(f"case folder {d.name!r} holds no probability file", d)
            found[d.name] = files
        found = {c: found[c] for c in case_ids if c in found}
    else:
        per_member = [{c: f for s, f in _saved_files(d).items() if (c := _case_of(s, ids))} for d in member_dirs]
        cases = set(per_member[0])
        for d, of_member in zip(member_dirs, per_member):
            if set(of_member) != cases:
                odd = sorted(set(of_member) ^ cases)[:5]
                raise DataError(f"member folder {d.name!r} does not hold the same cases as the others ({odd})", d)
        found = {c: [of_member[c] for of_member in per_member] for c in case_ids if c in cases}
    return found


def _read_array(path: Path, key: str | None) -> np.ndarray:
    """The raw array of one file: ``.npy``/``.npz`` as stored, NIfTI as ``(C, *spatial)``."""
    ext = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()
    if ext in (".nii", ".nii.gz"):
        return read_image(path).array
    try:
        if ext == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            pick = key if key is not None else next((k for k in NPZ_KEYS if k in keys), None)
            if pick is None and len(keys) == 1:
                pick = keys[0]
            if pick is None or pick not in keys:
                wanted = repr(key) if key is not None else " or ".join(NPZ_KEYS)
                raise DataError(f"npz file has no array {wanted} (found {keys}); name it with --key", path)
            return z[pick]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy raises several types on corrupt or object arrays
        raise DataError(
            f"cannot read {ext} file (corrupt, truncated or pickled?): {type(e).__name__}: {e}", path
        ) from None


def _orient(arr: np.ndarray, shape: tuple[int, ...], order: SpatialOrder, path: Path) -> np.ndarray:
    """``arr`` ``(..., *spatial)`` with its spatial axes in the case's order."""
    sd = len(shape)
    got = tuple(arr.shape[-sd:])
    rev = tuple(reversed(shape))
    flip = order == "reversed" or (order == "auto" and got != shape and got == rev)
    if flip:
        lead = arr.ndim - sd
        arr = arr.transpose(*range(lead), *reversed(range(lead, arr.ndim)))
    if tuple(arr.shape[-sd:]) != shape:
        raise DataError(f"spatial shape {got} is not the case's {shape} (nor its reverse)", path)
    return arr


def read_saved(
    files: Sequence[Path],
    shape: Sequence[int],
    num_classes: int,
    *,
    key: str | None = None,
    spatial_order: SpatialOrder = "auto",
) -> np.ndarray:
    """One case's saved members as ``(M, K, *spatial)`` float32, as stored (probabilities or logits).

    Args:
        files: The case's files (:func:`scan_saved`): one file ``(K, *sp)`` or ``(M, K, *sp)``, or one ``(K, *sp)``
            file per member.
        shape: The case's spatial shape (its labels').
        num_classes: K.
        key: The ``.npz`` array to read.
        spatial_order: ``auto`` (transpose an array whose spatial axes are the case's reversed), ``as_is``,
            ``reversed`` (module docstring).

    Raises:
        DataError: an unreadable file, an array that is not ``(K, *sp)``/``(M, K, *sp)`` of this case, or members
            of different shapes (naming the file).
    """
    shape = tuple(int(s) for s in shape)
    sd = len(shape)
    members = []
    for f in files:
        arr = np.asarray(_read_array(Path(f), key))
        if arr.dtype.kind not in "fiu":
            raise DataError(f"probabilities must be numbers, got dtype {arr.dtype}", f)
        if arr.ndim == sd + 1:
            arr = arr[None]
        if arr.ndim != sd + 2 or arr.shape[1] != num_classes or (len(files) > 1 and arr.shape[0] != 1):
            want = f"(K={num_classes}, *spatial)" + ("" if len(files) > 1 else f" or (M, K={num_classes}, *spatial)")
            raise DataError(f"array of shape {arr.shape} is not {want} for a case of shape {shape}", f)
        members.append(_orient(arr, shape, spatial_order, Path(f)).astype(np.float32, copy=False))
    return np.ascontiguousarray(np.concatenate(members, 0))
