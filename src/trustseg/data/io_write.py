"""Image and label writers of :mod:`trustseg.data.io` (the formats and conventions are described there).

Every file is written atomically (a temporary file renamed into place), so a failure never leaves a partial file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trustseg.core.atomic import atomic_path
from trustseg.core.errors import DataError
from trustseg.data.io_read import NIFTI_EXTS, PIL_EXTS, split_ext


def default_affine(spacing: tuple[float, ...], origin: tuple[float, ...]) -> np.ndarray:
    """``(4, 4)`` affine ``diag(spacing, 1)`` with ``origin`` as translation (missing axes: spacing 1, origin 0)."""
    aff = np.eye(4)
    for i, s in enumerate(spacing[:3]):
        aff[i, i] = float(s)
    for i, o in enumerate(origin[:3]):
        aff[i, 3] = float(o)
    return aff


def _infer_spatial_dims(arr: np.ndarray, ext: str, spatial_dims, spacing, origin) -> int:
    if spatial_dims is not None:
        return int(spatial_dims)
    for hint in (spacing, origin):
        if hint is not None:
            return len(hint)
    if ext in PIL_EXTS:
        return 3 if arr.ndim == 4 else 2
    return {2: 2, 3: 3, 4: 3}.get(arr.ndim, arr.ndim)


def write_image(
    path: str | Path,
    array: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    origin: tuple[float, ...] | None = None,
    affine: np.ndarray | None = None,
    *,
    spatial_dims: int | None = None,
    rescale: bool = False,
) -> Path:
    """Write an image atomically, in the format given by the extension.

    Args:
        path: Destination; its extension picks the format.
        array: ``(C, *spatial)`` or ``(*spatial)``. Which one is read from ``spatial_dims``, else from
            ``len(spacing)``/``len(origin)``, else from the array: 2D formats read a 3D array as ``(C, H, W)``;
            NIfTI/NumPy read ``(H, W)`` and ``(D, H, W)`` as single-channel and 4D as ``(C, D, H, W)``. Pass
            ``spacing`` or ``spatial_dims`` to write a multi-channel 2D array to NIfTI/NumPy.
        spacing: Voxel size per spatial axis (default 1).
        origin: First-voxel position per spatial axis (default 0).
        affine: ``(4, 4)`` NIfTI affine; default :func:`default_affine` of spacing and origin.
        spatial_dims: 2 or 3, to remove any ambiguity about the channel axis.
        rescale: PNG/JPEG/TIFF only: min-max rescale float intensities to ``uint8`` (otherwise floats must be
            integers within the 8/16-bit range, or use TIFF which stores single-channel float32).

    Returns:
        ``path``.

    Raises:
        DataError: unknown extension, a shape or value range the format cannot store.
    """
    path = Path(path)
    ext = split_ext(path)[1]
    arr = np.asarray(array)
    sdims = _infer_spatial_dims(arr, ext, spatial_dims, spacing, origin)
    if arr.ndim == sdims:
        arr = arr[None]
    if arr.ndim != sdims + 1 or sdims not in (2, 3):
        raise DataError(f"cannot write array of shape {arr.shape} as a {sdims}D image", path)
    spacing = tuple(float(s) for s in (spacing or (1.0,) * sdims))
    origin = tuple(float(o) for o in (origin or (0.0,) * sdims))
    if ext in NIFTI_EXTS:
        data = np.moveaxis(arr, 0, -1)  # (*spatial, C)
        if data.shape[-1] == 1:
            data = data[..., 0]
        elif sdims == 2:
            data = data[:, :, None, :]
        _write_nifti(path, data, spacing, origin, affine)
    elif ext in PIL_EXTS:
        _write_pil(path, arr, ext, rescale, label=False)
    else:
        _write_numpy(path, arr, ext, spacing, origin, affine, sdims)
    return path


def write_label(
    path: str | Path,
    labels: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    origin: tuple[float, ...] | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Write an integer class map ``(*spatial)`` atomically as ``uint8`` (or ``uint16`` when values exceed 255).

    Class values are written as they are (a binary mask is stored as 0/1, not 0/255).

    Raises:
        DataError: negative or non-integer values, values above 65535, or a volume written to a 2D format.
    """
    path = Path(path)
    ext = split_ext(path)[1]
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise DataError(f"a label map must be (H, W) or (D, H, W), got shape {arr.shape}", path)
    if arr.dtype.kind not in "biu" or (arr.size and (arr.min() < 0 or arr.max() > 65535)):
        raise DataError(f"label values must be integers in [0, 65535] (dtype {arr.dtype})", path)
    arr = arr.astype(np.uint8 if not arr.size or arr.max() < 256 else np.uint16, copy=False)
    sdims = arr.ndim
    spacing = tuple(float(s) for s in (spacing or (1.0,) * sdims))
    origin = tuple(float(o) for o in (origin or (0.0,) * sdims))
    if ext in NIFTI_EXTS:
        _write_nifti(path, arr, spacing, origin, affine)
    elif ext in PIL_EXTS:
        if ext in (".jpg", ".jpeg"):
            raise DataError("JPEG is lossy and cannot store label maps; use .png", path)
        _write_pil(path, arr[None], ext, rescale=False, label=True)
    else:
        _write_numpy(path, arr, ext, spacing, origin, affine, sdims)
    return path


def _write_nifti(path, data, spacing, origin, affine) -> None:
    import nibabel as nib

    if data.dtype in (np.float64, np.float16):
        data = data.astype(np.float32)
    elif data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype in (np.int64, np.uint64, np.uint32):  # NIfTI tools expect at most 32-bit integers
        fits = not data.size or (data.min() >= -(2**31) and data.max() < 2**31)
        data = data.astype(np.int32 if fits else np.float64)
    aff = default_affine(spacing, origin) if affine is None else np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(data, aff)
    zooms = list(spacing) + [1.0] * (data.ndim - len(spacing))
    img.header.set_zooms(zooms[: data.ndim])
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _to_pil_dtype(arr: np.ndarray, path: Path, ext: str, rescale: bool) -> np.ndarray:
    if arr.dtype in (np.uint8, np.uint16) or arr.dtype == np.bool_:
        return arr.astype(np.uint8) if arr.dtype == np.bool_ else arr
    if rescale:
        a = arr.astype(np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        scaled = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    finite = np.all(np.isfinite(arr))
    integral = finite and np.all(arr == np.round(arr))
    if integral and arr.min() >= 0 and arr.max() <= 255:
        return arr.astype(np.uint8)
    if integral and arr.min() >= 0 and arr.max() <= 65535 and arr.shape[0] == 1 and ext != ".jpg":
        return arr.astype(np.uint16)
    if ext in (".tif", ".tiff") and arr.shape[0] == 1:
        return arr.astype(np.float32)
    raise DataError(
        f"{ext} cannot store these {arr.dtype} values without loss (range {np.nanmin(arr)}..{np.nanmax(arr)}); "
        "pass rescale=True, or use .tif (one float channel), .npy or .nii.gz",
        path,
    )


def _write_pil(path: Path, arr: np.ndarray, ext: str, rescale: bool, label: bool) -> None:
    from PIL import Image

    if arr.ndim == 4:  # (C, D, H, W): multi-page TIFF only
        if ext not in (".tif", ".tiff") or arr.shape[0] != 1:
            raise DataError(f"{ext} stores 2D images only (multi-page .tif for one-channel volumes)", path)
        pages = [_to_pil_dtype(p[None], path, ext, rescale)[0] for p in arr[0]]
        images = [Image.fromarray(p) for p in pages]
        with atomic_path(path) as tmp:
            images[0].save(tmp, format="TIFF", save_all=True, append_images=images[1:])
        return
    if arr.shape[0] not in (1, 3, 4):
        raise DataError(f"{ext} stores 1, 3 or 4 channels, got {arr.shape[0]}", path)
    data = arr if label else _to_pil_dtype(arr, path, ext, rescale)
    if data.shape[0] > 1 and data.dtype != np.uint8:
        raise DataError(f"colour {ext} images must be 8-bit; got {data.dtype}", path)
    if ext in (".jpg", ".jpeg") and (data.dtype != np.uint8 or data.shape[0] == 4):
        raise DataError("JPEG stores 8-bit grayscale or RGB only", path)
    img = Image.fromarray(data[0] if data.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(data, 0, -1)))
    fmt = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG"}[ext]
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **kwargs)


def _write_numpy(path, arr, ext, spacing, origin, affine, sdims) -> None:
    with atomic_path(path) as tmp:
        if ext == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
        else:
            extra: dict[str, Any] = {"spacing": np.asarray(spacing), "origin": np.asarray(origin)}
            if affine is not None:
                extra["affine"] = np.asarray(affine, dtype=np.float64)
            with open(tmp, "wb") as f:
                np.savez_compressed(f, array=arr, spatial_dims=np.int64(sdims), **extra)
