"""Image and label readers of :mod:`trustseg.data.io` (the formats and conventions are described there)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from trustseg.core.errors import DataError

NIFTI_EXTS = (".nii.gz", ".nii")
PIL_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
NUMPY_EXTS = (".npy", ".npz")
#: Every extension the readers and writers understand (longest first, so ``.nii.gz`` wins over ``.gz``).
EXTENSIONS = (*NIFTI_EXTS, *PIL_EXTS, *NUMPY_EXTS)


@dataclass
class ImageData:
    """An image read from disk.

    Attributes:
        array: ``(C, *spatial)`` float32 intensities.
        spacing: Voxel size per spatial axis (1.0 where the format stores none).
        origin: World position of the first voxel per spatial axis (0.0 where the format stores none).
        affine: ``(4, 4)`` voxel-to-world matrix (NIfTI and ``.npz`` with one), else ``None``.
        meta: Format details (``format``, original ``dtype``, Pillow ``mode``, ...).
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    affine: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.array.ndim - 1


def split_ext(path: str | Path) -> tuple[str, str]:
    """Split a file name into ``(stem, extension)`` with a known extension (``"a.nii.gz"`` -> ``("a", ".nii.gz")``).

    Raises:
        DataError: when the extension is not one of :data:`EXTENSIONS`.
    """
    name = Path(path).name
    low = name.lower()
    for ext in EXTENSIONS:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], ext
    raise DataError(f"unknown file type; supported extensions: {', '.join(EXTENSIONS)}", path)


def has_known_ext(path: str | Path) -> bool:
    """Whether ``path`` ends with one of :data:`EXTENSIONS`."""
    try:
        split_ext(path)
    except DataError:
        return False
    return True


def _read_raw(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The stored array and geometry of a file, in the format's own layout."""
    ext = split_ext(path)[1]
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a file", path)
    try:
        if ext in NIFTI_EXTS:
            return _read_nifti(path)
        if ext in PIL_EXTS:
            return _read_pil(path)
        return _read_numpy(path, ext)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - every library raises its own error types on corrupt files
        raise DataError(f"cannot read {ext} file (corrupt or truncated?): {type(e).__name__}: {e}", path) from None


def _read_nifti(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import nibabel as nib

    img = cast("nib.spatialimages.SpatialImage", nib.load(str(path)))  # .nii / .nii.gz: a Nifti1/2Image
    arr = np.asanyarray(img.dataobj)
    zooms = tuple(float(z) for z in img.header.get_zooms())
    affine = np.asarray(img.affine, dtype=np.float64)
    shape = arr.shape
    if arr.ndim == 2:
        sdims, channels_last = 2, False
    elif arr.ndim == 3:
        sdims, channels_last = (2, False) if shape[2] == 1 else (3, False)
        if shape[2] == 1:
            arr = arr[:, :, 0]
    elif arr.ndim == 4:
        if shape[2] == 1:
            arr, sdims = arr[:, :, 0, :], 2
        else:
            sdims = 3
        channels_last = True
    else:
        raise DataError(f"unsupported NIfTI shape {shape}: expected (X, Y), (X, Y, Z) or (X, Y, Z, C)", path)
    spacing = tuple(zooms[:sdims]) + (1.0,) * max(0, sdims - len(zooms))
    origin = tuple(float(v) for v in affine[:sdims, 3])
    meta = {"format": "nifti", "dtype": str(img.get_data_dtype()), "channels_last": channels_last}
    return arr, {"spatial_dims": sdims, "spacing": spacing, "origin": origin, "affine": affine, "meta": meta}


def _read_pil(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        frames = getattr(im, "n_frames", 1)
        planes = []
        for i in range(frames):
            im.seek(i)
            frame: Image.Image = im
            if frame.mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                frame = frame.convert("RGB")
            elif frame.mode == "LA":
                frame = frame.convert("L")
            elif frame.mode == "1":
                frame = frame.convert("L")
            planes.append(np.asarray(frame))
    if frames > 1:
        if planes[0].ndim != 2:
            raise DataError("multi-page colour TIFF is not supported (use one file per channel)", path)
        arr, sdims = np.stack(planes, 0), 3
    else:
        arr, sdims = planes[0], 2  # (H, W) or (H, W, C)
    meta = {"format": "pil", "mode": mode, "dtype": str(arr.dtype), "channels_last": arr.ndim == sdims + 1}
    if mode == "1":
        arr = (arr > 0).astype(np.uint8)
    return arr, {
        "spatial_dims": sdims,
        "spacing": (1.0,) * sdims,
        "origin": (0.0,) * sdims,
        "affine": None,
        "meta": meta,
    }


def _read_numpy(path: Path, ext: str) -> tuple[np.ndarray, dict[str, Any]]:
    geo: dict[str, Any] = {"affine": None, "meta": {"format": ext.lstrip("."), "channels_last": False}}
    if ext == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = "array" if "array" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise DataError(f"npz file needs an 'array' entry (or exactly one array); found {keys}", path)
            arr = z[key]
            if "spatial_dims" in keys:
                geo["spatial_dims"] = int(z["spatial_dims"])
            if "spacing" in keys:
                geo["spacing"] = tuple(float(v) for v in z["spacing"])
            if "origin" in keys:
                geo["origin"] = tuple(float(v) for v in z["origin"])
            if "affine" in keys:
                geo["affine"] = np.asarray(z["affine"], dtype=np.float64)
    geo["meta"]["dtype"] = str(arr.dtype)
    return arr, geo


def _finish_geometry(geo: dict[str, Any], sdims: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    spacing = tuple(geo.get("spacing") or (1.0,) * sdims)[:sdims]
    origin = tuple(geo.get("origin") or (0.0,) * sdims)[:sdims]
    spacing = spacing + (1.0,) * (sdims - len(spacing))
    origin = origin + (0.0,) * (sdims - len(origin))
    return spacing, origin


def read_image(path: str | Path) -> ImageData:
    """Read an image as ``(C, *spatial)`` float32 with its geometry.

    Args:
        path: A file with one of :data:`EXTENSIONS`.

    Returns:
        :class:`ImageData` (``array`` ``(C, H, W)`` or ``(C, D, H, W)``).

    Raises:
        DataError: unknown extension, missing, unreadable or corrupt file, unsupported shape or dtype.
    """
    path = Path(path)
    arr, geo = _read_raw(path)
    meta = geo["meta"]
    if arr.dtype.kind not in "biuf":
        raise DataError(f"unsupported pixel type {arr.dtype}", path)
    if meta["channels_last"]:
        arr = np.moveaxis(arr, -1, 0)
    elif meta["format"] in ("npy", "npz") and "spatial_dims" not in geo:
        if arr.ndim == 2:
            arr = arr[None]
        elif arr.ndim not in (3, 4):
            raise DataError(f"unsupported array shape {arr.shape}: expected (H, W), (C, H, W) or (C, D, H, W)", path)
    elif meta["format"] in ("npy", "npz"):
        if arr.ndim == geo["spatial_dims"]:
            arr = arr[None]
    else:
        arr = arr[None]
    sdims = arr.ndim - 1
    if sdims not in (2, 3):
        raise DataError(f"unsupported image shape {arr.shape}: expected 2 or 3 spatial axes", path)
    spacing, origin = _finish_geometry(geo, sdims)
    return ImageData(np.ascontiguousarray(arr, dtype=np.float32), spacing, origin, geo.get("affine"), meta)


def read_label(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """Read an integer class map.

    Args:
        path: A file with one of :data:`EXTENSIONS`.

    Returns:
        ``(labels, spacing, origin)`` with ``labels`` ``(*spatial)`` int64. 8-bit masks with values exactly
        ``{0, 255}`` or ``{255}`` become ``{0, 1}``.

    Raises:
        DataError: as :func:`read_image`, plus non-integer values, colour images whose channels differ, or a
        multi-channel array.
    """
    path = Path(path)
    arr, geo = _read_raw(path)
    meta = geo["meta"]
    if meta["channels_last"]:
        if arr.shape[-1] == 1 or bool(np.all(arr == arr[..., :1])):
            arr = arr[..., 0]
        else:
            raise DataError(
                f"a label map must have one channel; found {arr.shape[-1]} that differ (a colour-coded label "
                "image?): store one class index per pixel, e.g. a grayscale PNG with values 0..K-1",
                path,
            )
    if meta["format"] in ("npy", "npz") and arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]  # (1, D, H, W) written by write_image
    if arr.ndim not in (2, 3):
        raise DataError(f"unsupported label shape {arr.shape}: expected (H, W) or (D, H, W)", path)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError("label values must be integers (found non-integer or NaN/Inf values)", path)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"unsupported label type {arr.dtype}", path)
    if arr.dtype == np.uint8:
        values = np.unique(arr)
        if values.size and values[-1] == 255 and values.size <= 2 and (values.size == 1 or values[0] == 0):
            arr = (arr == 255).astype(np.uint8)
    spacing, origin = _finish_geometry(geo, arr.ndim)
    return np.ascontiguousarray(arr, dtype=np.int64), spacing, origin
