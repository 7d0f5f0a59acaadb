"""npe2 writer: a labels layer to NIfTI (.nii.gz, .nii) with its source image's affine, or to TIFF.

The affine comes from ``metadata["napari_dmd"]["affine"]`` (set by the reader on the image and copied onto
labels made by the Segment/Compare widgets), so a label map saved next to its scan overlays it exactly in
any NIfTI viewer; without it, a diagonal affine from the layer's ``scale``. TIFF files get the spacing as
ImageJ resolution (mm).

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

WRITABLE = (".nii.gz", ".nii", ".tif", ".tiff")

__all__ = ["write_labels"]


def _affine_and_spacing(meta: dict[str, Any], ndim: int, where: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """(affine, spacing) for a layer: the napari-dmd metadata when it fits ``ndim``, else the layer scale."""
    scale = tuple(float(s) for s in (meta.get("scale") or (1.0,) * ndim))[-ndim:]
    dmd = (meta.get("metadata") or {}).get("napari_dmd") or {}
    spacing = dmd.get("spacing")
    affine = dmd.get("affine")
    if affine is not None and (spacing is None or len(spacing) == ndim):
        arr = np.asarray(affine, dtype=np.float64)
        if arr.shape != (4, 4) or not np.all(np.isfinite(arr)):
            raise DataError(f"{where}: the layer's napari_dmd affine is not a finite 4x4 matrix")
        return arr, tuple(float(s) for s in (spacing if spacing is not None else scale))
    return affine_from_spacing(scale), scale


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer to ``path`` (.nii.gz, .nii, .tif, .tiff); return ``[path]``."""
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
    if suffix in (".tif", ".tiff"):
        write_image(where, array, spacing, overwrite=True)
    else:
        write_image(where, array, spacing, affine, overwrite=True)
    return [where]
