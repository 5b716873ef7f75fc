"""Finding the files of a ``folder`` source: each case's image, its raters' labels, its mask and its split part.

The default templates describe the three classic layouts (detected from the folder names, see
:mod:`trustseg.data.importers.folder`); ``--image-pattern``, ``--label-pattern`` and ``--mask-pattern`` replace
them (:mod:`trustseg.data.importers.templates`). Every refusal names the option that fixes it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trustseg.core.errors import DataError
from trustseg.data.importers.source_splits import SourcePart
from trustseg.data.importers.templates import Template

#: The default image template (``SUFFIX``: ``Tr``/``Ts`` in nnU-Net-ish sources, else empty).
DEFAULT_IMAGES = "images{suffix}/{{case}}.*"
#: An example label template, quoted in refusals.
LABEL_EXAMPLE = "'{rater}_manual/{case}_{rater}HO.png' or 'labels/{case}/{rater}.nii.gz'"


@dataclass
class FolderCase:
    """The files of one case.

    Attributes:
        case_id: The id (from the image template's ``{case}``).
        image: The image file.
        labels: Rater id -> label file.
        part: The source's split part (``train``/``val``/``test``) or ``None``.
        root: The folder its templates are relative to (named in errors).
        mask: The field-of-view mask file, when a mask template is given.
        label_template: The label template it was found with (named in errors).
    """

    case_id: str
    image: Path
    labels: dict[str, Path] = field(default_factory=dict)
    part: str | None = None
    root: Path = Path(".")
    mask: Path | None = None
    label_template: Template | None = None


def _default_label_template(labels_dir: Path, case_ids: Collection[str]) -> str:
    """``labels/{case}/{rater}.*`` (case-major), ``labels/{rater}/{case}.*`` (rater-major) or ``labels/{case}.*``."""
    name = labels_dir.name
    subdirs = sorted(d.name for d in labels_dir.iterdir() if d.is_dir())
    if not subdirs:
        return f"{name}/{{case}}.*"
    if any(d in case_ids for d in subdirs):
        return f"{name}/{{case}}/{{rater}}.*"
    return f"{name}/{{rater}}/{{case}}.*"


def scan_part(
    sp: SourcePart, image_pattern: str | None, label_pattern: str | None, mask_pattern: str | None
) -> dict[str, FolderCase]:
    """The cases of one source folder.

    Raises:
        DataError: no ``images/`` or ``labels/`` folder (naming ``--image-pattern``/``--label-pattern``), no image,
            two files for one case (or one case and rater), a case without any label, a case without a mask.
        ConfigError: a malformed template.
    """
    root = sp.root
    if image_pattern is None and not (root / f"images{sp.suffix}").is_dir():
        raise DataError(
            f"no images{sp.suffix}/ folder; if the images are elsewhere, say where with --image-pattern, "
            "e.g. --image-pattern 'img/{case}.jpg'",
            root,
        )
    img_t = Template(image_pattern or DEFAULT_IMAGES.format(suffix=sp.suffix), "--image-pattern")
    cases: dict[str, FolderCase] = {}
    for f, g in img_t.matches(root):
        cid = g["case"]
        if cid in cases:
            raise DataError(
                f"two files for case {cid!r} ({cases[cid].image.name}, {f.name}); make --image-pattern match one "
                f"of them, e.g. {img_t.expected('{case}').replace('.*', f.suffix)!r}",
                f.parent,
            )
        cases[cid] = FolderCase(cid, f, part=sp.part, root=root)
    if not cases:
        raise DataError(f"empty dataset: no images match --image-pattern {img_t.text!r}", root)
    if label_pattern is None:
        lab_dir = root / f"labels{sp.suffix}"
        if not lab_dir.is_dir():
            raise DataError(
                f"no labels{sp.suffix}/ folder; if the labels are elsewhere, say where with --label-pattern, "
                f"e.g. {LABEL_EXAMPLE}",
                root,
            )
        label_pattern = _default_label_template(lab_dir, cases)
    lab_t = Template(label_pattern, "--label-pattern", allowed=("case", "rater"))
    ids = sorted(cases)
    for f, g in lab_t.matches(root, cases=ids):
        c, rater = cases[g["case"]], g.get("rater") or "rater0"
        if rater in c.labels:
            raise DataError(
                f"two label files for case {c.case_id!r}, rater {rater!r} ({c.labels[rater].name}, {f.name}); "
                "make --label-pattern match one of them",
                f.parent,
            )
        c.labels[rater] = f
    for c in cases.values():
        c.label_template = lab_t
        if not c.labels:
            raise DataError(
                f"case {c.case_id!r} has no rater label: nothing matches --label-pattern {lab_t.text!r} "
                f"(e.g. {lab_t.expected(c.case_id, '<rater>')}); pass --label-pattern to say where the labels are, "
                f"e.g. {LABEL_EXAMPLE}",
                c.image,
            )
    if mask_pattern is not None:
        _scan_masks(root, cases, Template(mask_pattern, "--mask-pattern"))
    return cases


def _scan_masks(root: Path, cases: dict[str, FolderCase], mask_t: Template) -> None:
    for f, g in mask_t.matches(root, cases=sorted(cases)):
        c = cases[g["case"]]
        if c.mask is not None:
            raise DataError(
                f"two mask files for case {c.case_id!r} ({c.mask.name}, {f.name}); make --mask-pattern match one",
                f.parent,
            )
        c.mask = f
    for c in cases.values():
        if c.mask is None:
            raise DataError(
                f"case {c.case_id!r} has no mask: expected {mask_t.expected(c.case_id)} (from --mask-pattern "
                f"{mask_t.text!r}); fix the pattern, or leave --mask-pattern out to score every pixel",
                root,
            )


def check_raters(cases: Sequence[FolderCase]) -> list[str]:
    """The raters (every one found, sorted); every case must have each.

    Raises:
        DataError: a case missing a rater's label, naming the case, the rater and the expected path.
    """
    raters = sorted({r for c in cases for r in c.labels})
    for c in cases:
        missing = [r for r in raters if r not in c.labels]
        if missing:
            t = c.label_template
            assert t is not None
            raise DataError(
                f"case {c.case_id!r} has no label of rater {missing[0]!r}: expected "
                f"{c.root / t.expected(c.case_id, missing[0])} (from --label-pattern {t.text!r}; raters found: "
                f"{raters}); add the file, or fix --label-pattern",
                c.root,
            )
    return raters


def scan_source(
    parts: Sequence[SourcePart], image_pattern: str | None, label_pattern: str | None, mask_pattern: str | None
) -> tuple[list[FolderCase], list[str]]:
    """Every case of every source folder (in folder, then id order) and the rater ids.

    Raises:
        DataError: as :func:`scan_part`; a case id in two split folders; a case missing a rater.
    """
    out: dict[str, FolderCase] = {}
    for sp in parts:
        found = scan_part(sp, image_pattern, label_pattern, mask_pattern)
        for cid, c in found.items():
            if cid in out:
                raise DataError(
                    f"case id {cid!r} is in two split folders ({out[cid].image}, {c.image}); case ids must be unique "
                    "across the source's split: rename one, or read one folder with --split-dirs",
                    c.root,
                )
            out[cid] = c
    cases = list(out.values())
    return cases, check_raters(cases)
