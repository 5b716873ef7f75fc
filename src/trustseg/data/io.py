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

The readers live in :mod:`trustseg.data.io_read`, the writers in :mod:`trustseg.data.io_write`; import them from
here.
"""

from trustseg.data.io_read import (
    EXTENSIONS,
    NIFTI_EXTS,
    NUMPY_EXTS,
    PIL_EXTS,
    ImageData,
    has_known_ext,
    read_image,
    read_label,
    split_ext,
)
from trustseg.data.io_write import default_affine, write_image, write_label

__all__ = [
    "EXTENSIONS",
    "NIFTI_EXTS",
    "NUMPY_EXTS",
    "PIL_EXTS",
    "ImageData",
    "default_affine",
    "has_known_ext",
    "read_image",
    "read_label",
    "split_ext",
    "write_image",
    "write_label",
]
