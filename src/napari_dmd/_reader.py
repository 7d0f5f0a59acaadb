"""npe2 reader: NIfTI, TIFF, NRRD and MetaImage (.mha/.mhd, with SimpleITK), DICOM series and OME-Zarr folders,
and HC18-style PNG images, as images and label maps in world space.

Image files become image layers placed in world space (:mod:`napari_dmd.data.world`): ``scale`` = voxel
spacing (mm, array order ``(z, y, x)``), ``affine`` = the file's direction, axis flips and origin, ``units`` mm,
``axis_labels`` ``z, y, x``; and ``metadata["napari_dmd"] = {"affine": ..., "spacing": ..., "path": ...}``
(the 4x4 voxel-to-world affine of the layer's array, so labels saved from the layer get it back; a scan
with voxel axes permuted against the world is transposed into world axis order, and ``file_axes`` /
``file_affine`` say how, so the writer saves labels in the file's voxel order). Integer-valued files
in a ``labelsTr/``/``labelsTs/`` folder or named ``*_seg*``, ``*_label*``, ``*_mask*`` become labels layers.
An OME-Zarr image (a folder with ``multiscales`` metadata, :mod:`napari_dmd.data.zarr_io`) opens as its
full-resolution level (the array every widget computes on) with the scale and translation of its metadata
(in mm) and its axis names.
A PNG has no geometry of its own: an HC18-style CSV (``filename`` and ``pixel size(mm)`` columns) in its folder
or the folder above that lists its file name gives its pixel size in mm
(:func:`napari_dmd.data.cases.find_pixel_size`), else it opens with scale 1.
A bad file raises :class:`~napari_dmd.data.io.DataError` with a one-line message naming it; napari shows it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.cases import find_pixel_size
from .data.io import PIL_SUFFIXES, affine_from_spacing, file_suffix, read_image, strip_suffix
from .data.itk_io import is_dicom_folder
from .data.world import display_axes, layer_kwargs, permute_affine
from .data.zarr_io import is_ome_zarr, ome_zarr_name

READABLE = (".nii", ".nii.gz", ".tif", ".tiff", ".nrrd", ".nhdr", ".mha", ".mhd", ".png")
LABEL_FOLDERS = ("labelstr", "labelsts", "labels")
_LABEL_NAME = re.compile(r"(^|[_\-.])(seg|segmentation|label|labels|mask)([_\-.0-9]|$)", re.IGNORECASE)

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]

__all__ = ["get_reader", "is_label_path", "read_layers"]


def _paths(path: PathOrPaths) -> list[str]:
    if isinstance(path, str | os.PathLike):
        return [os.fspath(path)]
    return [os.fspath(p) for p in path]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """The reader for ``path`` (one path or a list) when every path is a NIfTI/TIFF/NRRD/MHA/MHD/PNG file, a
    folder of DICOM files or an OME-Zarr image, else None."""
    paths = _paths(path)
    if not paths or not all((is_ome_zarr(Path(p)) or is_dicom_folder(Path(p))) if Path(p).is_dir()
                            else file_suffix(p) in READABLE for p in paths):
        return None
    return read_layers


def is_label_path(path: str | os.PathLike) -> bool:
    """True when the file's folder or name says it holds a label map (``labelsTr/``, ``*_seg*``, ...)."""
    p = Path(path)
    return p.parent.name.lower() in LABEL_FOLDERS or bool(_LABEL_NAME.search(strip_suffix(p)))


def _as_labels(array: np.ndarray) -> np.ndarray | None:
    """The array as an integer label map when it holds only non-negative integers, else None."""
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.uint8)
    if kind in "iu":
        return array if array.size == 0 or array.min() >= 0 else None
    if kind == "f":
        finite = np.isfinite(array)
        if not finite.all() or array.min() < 0 or not np.array_equal(array, np.round(array)):
            return None
        top = array.max() if array.size else 0
        dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
        return array.astype(dtype)
    return None


def read_layers(path: PathOrPaths) -> list[LayerData]:
    """Read each file as an image or labels layer (see the module docstring)."""
    layers: list[LayerData] = []
    for p in _paths(path):
        data = read_image(p)
        array, affine, spacing = data.array, np.asarray(data.affine), tuple(data.spacing)
        meta_extra: dict[str, Any] = {}
        found = find_pixel_size(p) if file_suffix(p) in PIL_SUFFIXES and array.ndim == 2 else None
        if found is not None:  # HC18: the pixel size in mm from a CSV beside the PNG
            spacing, affine = (found[0],) * 2, affine_from_spacing((found[0],) * 2)
            meta_extra["spacing_csv"] = str(found[1])
        order = display_axes(affine, array.ndim)
        if order is not None:  # voxel axes permuted against the world: show them in world axis order
            array, affine = np.ascontiguousarray(np.transpose(array, order)), permute_affine(affine, order, array.ndim)
            spacing = tuple(spacing[i] for i in order)
            meta_extra = {"file_axes": list(order), "file_affine": np.asarray(data.affine).tolist()}
        meta = {"napari_dmd": {"affine": affine.tolist(), "spacing": [float(s) for s in spacing],
                               "path": data.path, **meta_extra}}
        zarr = is_ome_zarr(Path(p))
        kwargs: dict[str, Any] = {"name": ome_zarr_name(Path(p)) if zarr else strip_suffix(p), "metadata": meta,
                                  **layer_kwargs(affine, spacing)}
        if data.axes is not None and order is None:  # the file's own axis names (OME-Zarr)
            kwargs["axis_labels"] = tuple(data.axes)
        labels = _as_labels(array) if is_label_path(p) else None
        if labels is not None:
            if not _LABEL_NAME.search(kwargs["name"]):  # labelsTr/case.nii.gz: tell it from imagesTr/case
                kwargs["name"] += " labels"
            layers.append((labels, kwargs, "labels"))
        else:
            kwargs["colormap"] = "gray"
            layers.append((array, kwargs, "image"))
    return layers
