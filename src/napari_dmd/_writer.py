"""npe2 writer: a labels layer to NIfTI (.nii.gz, .nii), MHA or NRRD with its source image's geometry, or to TIFF.

The affine is where the layer sits in napari's world (mm, RAS, see :mod:`napari_dmd.data.world`): exactly
``metadata["napari_dmd"]["affine"]`` (set by the reader on the image and copied onto labels made by the
Segment/Compare widgets) while the layer has not been moved, so a label map saved next to its scan overlays it
exactly in any NIfTI viewer; else the layer's scale, translate, rotate, shear and affine. Labels of a scan
the reader transposed into world axis order (``file_axes``) are written back in the file's voxel order.
TIFF files get the spacing as ImageJ resolution (mm).

Overwriting: this function is only called by napari's *File > Save Layers* (whose Qt save dialog already
asked "replace existing file?" and got a yes) or by ``viewer.layers.save(path)`` in code (where the caller
named the file on purpose), so it writes with ``overwrite=True``. The file is written to a temporary name
and renamed into place, so a failed write never destroys the existing file.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .data.io import DataError, affine_from_spacing, file_suffix, write_image
from .data.world import data_to_world, napari_affine, nifti_affine, permute_affine, same_transform

WRITABLE = (".nii.gz", ".nii", ".tif", ".tiff", ".mha", ".nrrd")  # .mha/.nrrd need SimpleITK

__all__ = ["write_labels"]


_TRANSFORM_KEYS = ("affine", "rotate", "translate", "shear")


def _affine_and_spacing(meta: dict[str, Any], ndim: int, where: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """(NIfTI affine, spacing) for a layer state: where the layer is.

    The napari-dmd metadata affine (bit-exact, as read from the source file) while the layer still sits where
    that affine puts it; else (the layer was moved, rescaled or carries no metadata) the affine of the
    layer's own data-to-world transform (scale, translate, rotate, shear, affine). A state with only
    ``scale`` (a caller's dict, not napari's) trusts the metadata.
    """
    scale = tuple(float(s) for s in (meta.get("scale") or (1.0,) * ndim))[-ndim:]
    dmd = (meta.get("metadata") or {}).get("napari_dmd") or {}
    spacing = dmd.get("spacing")
    affine = dmd.get("affine")
    has_transform = any(meta.get(k) is not None for k in _TRANSFORM_KEYS)
    world = data_to_world(meta, ndim) if has_transform else None
    if affine is not None and (spacing is None or len(spacing) == ndim):
        arr = np.asarray(affine, dtype=np.float64)
        if arr.shape != (4, 4) or not np.all(np.isfinite(arr)):
            raise DataError(f"{where}: the layer's napari_dmd affine is not a finite 4x4 matrix")
        spacing = tuple(float(s) for s in (spacing if spacing is not None else scale))
        if world is None or same_transform(world, napari_affine(arr, ndim)):
            return arr, spacing
    if world is None:
        return affine_from_spacing(scale), scale
    if not np.all(np.isfinite(world)) or abs(np.linalg.det(world[:ndim, :ndim])) < 1e-12:
        raise DataError(f"{where}: the layer's transform is not invertible; reset its scale/affine")
    spacing = tuple(float(n) for n in np.linalg.norm(world[:ndim, :ndim], axis=0))
    return nifti_affine(world, ndim), spacing


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer to ``path`` (.nii.gz, .nii, .tif, .tiff, .mha, .nrrd); return ``[path]``."""
    where = os.fspath(path)
    suffix = file_suffix(where)
    if suffix not in WRITABLE:
        raise DataError(f"{where}: napari-dmd saves labels as {', '.join(WRITABLE)}, not '{suffix or where}'")
    if isinstance(data, list | tuple):  # multiscale labels: save the full-resolution level
        data = data[0]
    array = np.asarray(data)
    if array.ndim not in (2, 3):
        raise DataError(f"{where}: can only save 2D or 3D labels, the layer has shape {array.shape}")
    affine, spacing = _affine_and_spacing(meta, array.ndim, where)
    axes = ((meta.get("metadata") or {}).get("napari_dmd") or {}).get("file_axes")
    if axes is not None and sorted(axes) == list(range(array.ndim)):  # back to the file's voxel order
        back = tuple(int(i) for i in np.argsort(axes))
        array = np.transpose(array, back)
        affine, spacing = permute_affine(affine, back, array.ndim), tuple(spacing[i] for i in back)
    if suffix in (".tif", ".tiff"):
        write_image(where, array, spacing, overwrite=True)
    else:
        write_image(where, array, spacing, affine, overwrite=True)
    return [where]
