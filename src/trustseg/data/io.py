"""Image and label readers/writers, chosen by file extension.

Supported extensions:

* ``.nii``/``.nii.gz`` (nibabel). The array keeps the axis order nibabel stores (``(X, Y)`` or ``(X, Y, Z)``),
  so the spatial axes of a case read from NIfTI are the NIfTI voxel axes. A 2D image may be stored as ``(X, Y)``
  or ``(X, Y, 1)``: both are read as 2D. A 4D file ``(X, Y, Z, C)`` holds ``C`` channels (``(X, Y, 1, C)``:
  a 2D image with ``C`` channels). Spacing is the header's zooms, origin the translation column of the affine.
  When writing without an ``affine``, the affine is ``diag(spacing, 1)`` with ``origin`` as translation
  (RAS+ axes aligned with the voxel axes, no rotation).
* ``.png``/``.tif``/``.tiff``/``.jpg``/``.jpeg`` (Pillow): 2D, ``(H, W)`` in row-major order. Grayscale images
  give one channel, RGB three (an alpha channel is dropped, palette images are expanded to RGB). Intensities are
  kept as stored (no rescaling on read). A multi-page TIFF is read as a 3D volume ``(1, D, H, W)``.
* ``.npy`` (raw array, no geometry): :func:`write_image` always stores ``(C, *spatial)``; :func:`read_image`
  reads a 2D array as ``(1, H, W)``, 3D as ``(C, H, W)`` and 4D as ``(C, D, H, W)``. Use ``.npz`` or NIfTI for
  single-channel volumes written by other tools.
* ``.npz``: keys ``array`` plus optional ``spacing``, ``origin``, ``affine`` and ``spatial_dims``; a file from
  another tool with a single array is read like ``.npy``.

Labels (:func:`read_label`) are integer class maps ``(*spatial)``: values are kept as they are, except 8-bit
masks whose values are exactly ``{0, 255}`` or ``{255}``, which are mapped to ``{0, 1}`` (binary masks saved
by image viewers). Non-integer label values are an error.

Every problem (unknown extension, unreadable or corrupt file, unsupported content) raises
:class:`~trustseg.core.errors.DataError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustseg.core.atomic import atomic_path
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


# ----------------------------------------------------------------------------------------------------- reading
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

    img = nib.load(str(path))
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
            frame = im
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
            raise DataError(f"a label map must have one channel; found {arr.shape[-1]}", path)
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


# ----------------------------------------------------------------------------------------------------- writing
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
    arr = arr.astype(np.uint8 if not arr.size or arr.max() < 256 else np.uint16)
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
