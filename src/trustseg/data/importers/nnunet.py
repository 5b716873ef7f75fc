"""nnU-Net raw dataset folders (v1 and v2), with one label map per rater.

Source layout::

    SRC/dataset.json                      optional: the "labels" mapping names the classes
    SRC/imagesTr/<case>_0000.<ext>        channel 0 (then _0001, _0002, ... for more channels)

and the rater labels in one of two patterns:

* several label folders, one per rater: ``SRC/labelsTr_<rater>/<case>.<ext>`` (e.g. ``labelsTr_rater1``,
  ``labelsTr_rater2``; a plain ``labelsTr`` beside them is the rater ``labelsTr``);
* one ``SRC/labelsTr`` folder with a suffix per rater: ``<case>_rater<N>.<ext>`` (rater ``rater<N>``), or plain
  ``<case>.<ext>`` files (a single rater, ``rater0``).

Classes come from ``dataset.json`` ``labels`` (v2 ``{"background": 0, "tumor": 1}`` or v1
``{"0": "background", "1": "tumor"}``; values must be 0..K-1), else ``background, class1 .. class{max}`` from the
largest label value found (this reads every label file twice). Region-based v2 labels are not supported.
``imagesTs`` (no labels) is ignored. Files are written in the source's file type.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from trustseg.core.errors import DataError
from trustseg.data.case import Case
from trustseg.data.dataset import write_dataset
from trustseg.data.importers.registry import IMPORTERS, LazyCases
from trustseg.data.io import has_known_ext, read_image, read_label, split_ext

CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
RATER_SUFFIX_RE = re.compile(r"^(?P<case>.+)_(?P<rater>rater\d+)$")


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and has_known_ext(f))


def scan_images(src: Path) -> dict[str, list[Path]]:
    """Case id -> channel files (ordered by channel index) from ``imagesTr``."""
    folder = src / "imagesTr"
    if not folder.is_dir():
        raise DataError("no imagesTr folder (not an nnU-Net raw dataset?)", src)
    cases: dict[str, dict[int, Path]] = {}
    for f in _files(folder):
        m = CHANNEL_RE.match(split_ext(f)[0])
        if not m:
            raise DataError("image file name must end with a 4-digit channel index (<case>_0000)", f)
        cases.setdefault(m["case"], {})[int(m["ch"])] = f
    out = {}
    for cid, chans in sorted(cases.items()):
        if sorted(chans) != list(range(len(chans))):
            raise DataError(f"case {cid!r} has channels {sorted(chans)}; expected 0..{len(chans) - 1}", folder)
        out[cid] = [chans[c] for c in range(len(chans))]
    if not out:
        raise DataError("empty dataset: no images in imagesTr", folder)
    return out


def scan_labels(src: Path, case_ids: list[str]) -> tuple[list[str], dict[str, dict[str, Path]]]:
    """Rater ids and case id -> rater -> label file, for either label pattern (see the module docstring)."""
    folders = sorted(d for d in src.iterdir() if d.is_dir() and d.name.startswith("labelsTr"))
    if not folders:
        raise DataError("no labelsTr folder", src)
    table: dict[str, dict[str, Path]] = {c: {} for c in case_ids}
    if len(folders) > 1:
        raters = [d.name[len("labelsTr") :].lstrip("_-") or "labelsTr" for d in folders]
        for rater, d in zip(raters, folders):
            for f in _files(d):
                stem = split_ext(f)[0]
                if stem in table:
                    table[stem][rater] = f
    else:
        suffixed: set[str] = set()
        for f in _files(folders[0]):
            stem = split_ext(f)[0]
            m = RATER_SUFFIX_RE.match(stem)
            if m and m["case"] in table:
                table[m["case"]][m["rater"]] = f
                suffixed.add(m["rater"])
            elif stem in table:
                table[stem]["rater0"] = f
        raters = sorted(suffixed, key=lambda r: int(r[5:])) if suffixed else ["rater0"]
    for cid, found in table.items():
        missing = [r for r in raters if r not in found]
        if len(missing) == len(raters):
            raise DataError(f"case {cid!r} has no rater label", folders[0])
        if missing:
            raise DataError(f"case {cid!r} has no label for raters {missing}", src)
    return raters, table


def read_classes(src: Path, table: dict[str, dict[str, Path]]) -> list[str]:
    """Class names from ``dataset.json`` ``labels``, else from the largest label value."""
    dj = src / "dataset.json"
    if dj.is_file():
        try:
            labels = json.loads(dj.read_text()).get("labels")
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise DataError(f"cannot parse dataset.json: {e}", dj) from None
        if labels:
            try:
                if all(str(k).isdigit() for k in labels):  # v1: {"0": "background"}
                    pairs = {int(k): str(v) for k, v in labels.items()}
                else:  # v2: {"background": 0}
                    pairs = {int(v): str(k) for k, v in labels.items()}
            except (TypeError, ValueError):
                raise DataError("region-based or malformed 'labels' (need name <-> integer value)", dj) from None
            if sorted(pairs) != list(range(len(pairs))):
                raise DataError(f"label values {sorted(pairs)} must be 0..K-1", dj)
            return [pairs[i] for i in range(len(pairs))]
    top = max(int(read_label(f)[0].max(initial=0)) for raters in table.values() for f in raters.values())
    return ["background"] + [f"class{k}" for k in range(1, max(top, 1) + 1)]


def _read_case(cid: str, channels: list[Path], labels: dict[str, Path], raters: list[str]) -> Case:
    imgs = [read_image(f) for f in channels]
    for f, im in zip(channels[1:], imgs[1:]):
        if im.array.shape[1:] != imgs[0].array.shape[1:]:
            raise DataError(f"channel shape {im.array.shape[1:]} differs from channel 0 {imgs[0].array.shape[1:]}", f)
    maps = []
    for r in raters:
        lab, _, _ = read_label(labels[r])
        if lab.shape != imgs[0].array.shape[1:]:
            raise DataError(f"label shape {lab.shape} does not match image {imgs[0].array.shape[1:]}", labels[r])
        maps.append(lab)
    return Case(
        case_id=cid,
        image=np.concatenate([im.array for im in imgs], 0),
        labels=np.stack(maps, 0),
        spacing=imgs[0].spacing,
        origin=imgs[0].origin,
        meta={"raters": raters, "source": str(channels[0])},
    )


@IMPORTERS.register("nnunet", doc="nnU-Net raw: imagesTr/<case>_0000 + labelsTr_<rater>/ or labelsTr/<case>_raterN")
def import_nnunet(
    src: Path,
    out: Path,
    *,
    name: str | None = None,
    ext: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Convert an nnU-Net raw dataset folder into a trustseg dataset (see the module docstring).

    Args:
        src: The nnU-Net raw dataset folder (holding ``imagesTr``).
        out: Output dataset root.
        name: Dataset name (default: the folder name).
        ext: Output file type (default: the source's).
        seed: Seed of the default splits.
        progress: Show a progress bar.
    """
    src = Path(src)
    images = scan_images(src)
    raters, table = scan_labels(src, list(images))
    classes = read_classes(src, table)
    ext = ext or split_ext(next(iter(images.values()))[0])[1]
    return write_dataset(
        LazyCases(list(images.items()), lambda it: _read_case(it[0], it[1], table[it[0]], raters)),
        out,
        classes=classes,
        name=name or src.name,
        ext=ext,
        seed=seed,
        progress=progress,
    )
