"""Layer geometry and metadata: spacing, affine, placement, napari-dmd metadata, and layers -> training cases.

Layer metadata written by napari-dmd lives under ``layer.metadata["napari_dmd"]`` (keys ``affine``,
``spacing``, ``path``, ``class_names``; ``features`` on the Features widget's layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Layer

from ..data.io import affine_from_spacing
from ..data.world import data_to_world, napari_affine, nifti_affine, same_transform

if TYPE_CHECKING:
    import napari

    from ..data.cases import Case

META_KEY = "napari_dmd"

__all__ = [
    "META_KEY",
    "cases_from_layers",
    "dmd_metadata",
    "image_layers",
    "is_feature_layer",
    "labels_layers",
    "labels_metadata",
    "layer_affine",
    "layer_spacing",
    "placement_kwargs",
    "world_kwargs",
]


def image_layers(viewer: napari.Viewer) -> list[Image]:
    """The viewer's image layers (greyscale or not), in layer-list order."""
    return [layer for layer in viewer.layers if isinstance(layer, Image)]


def labels_layers(viewer: napari.Viewer) -> list[Labels]:
    """The viewer's labels layers, in layer-list order."""
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def dmd_metadata(layer: Layer) -> dict[str, Any]:
    """The napari-dmd part of a layer's metadata (an empty dict if there is none)."""
    meta = layer.metadata.get(META_KEY) if isinstance(layer.metadata, dict) else None
    return meta if isinstance(meta, dict) else {}


def is_feature_layer(layer: Any) -> bool:
    """Whether ``layer`` is one the Features widget added (its metadata says ``features``)."""
    return bool(dmd_metadata(layer).get("features"))


def layer_spacing(layer: Layer) -> tuple[float, ...]:
    """Voxel spacing of a layer in array axis order (mm): the layer's ``scale`` (set from the file's spacing
    by the reader; the user may have changed it since, so ``scale`` wins over the metadata)."""
    return tuple(float(s) for s in np.asarray(layer.scale)[-layer.ndim:])


def layer_affine(layer: Layer) -> np.ndarray:
    """4x4 voxel-to-world affine (NIfTI x, y, z index order, RAS mm) of where a layer sits in napari.

    The affine the reader kept in the metadata (bit-exact) while the layer's data-to-world transform is still
    the one it gives; else (the layer was moved or has no metadata) the affine of the layer's transform.
    """
    ndim = layer.ndim
    world = data_to_world({"scale": layer.scale, "translate": layer.translate, "rotate": layer.rotate,
                           "shear": layer.shear, "affine": layer.affine.affine_matrix}, ndim)
    affine = dmd_metadata(layer).get("affine")
    if affine is not None:
        arr = np.asarray(affine, dtype=np.float64)
        if arr.shape == (4, 4) and np.all(np.isfinite(arr)) and same_transform(world, napari_affine(arr, ndim)):
            return arr
    if ndim in (2, 3) and np.all(np.isfinite(world)) and abs(np.linalg.det(world[:ndim, :ndim])) > 1e-12:
        return nifti_affine(world, ndim)
    return affine_from_spacing(layer_spacing(layer))


def labels_metadata(source: Layer, **extra: Any) -> dict[str, Any]:
    """Metadata for a labels layer derived from ``source``: its napari-dmd part (affine, spacing, path)
    copied, plus ``extra`` keys, so saving the labels writes the source's affine."""
    meta = dict(dmd_metadata(source))
    meta["affine"] = layer_affine(source).tolist()
    meta["spacing"] = list(layer_spacing(source))
    meta.update(extra)
    return {META_KEY: meta}


def world_kwargs(layer: Layer) -> dict[str, Any]:
    """Layer keyword arguments that put a layer in ``layer``'s world: its ``affine`` (the physical-to-world
    part of its transform: direction, flips, origin), ``units`` and ``axis_labels``. For layers placed by
    their own scale and translate in ``layer``'s physical space (the Features widget's maps)."""
    return {"affine": layer.affine.affine_matrix, "units": tuple(layer.units),
            "axis_labels": tuple(layer.axis_labels)}


def differs(current: Any, value: Any) -> bool:
    """Whether a layer attribute (scale, translate, rotate, shear, affine, units, axis labels) would change."""
    current, value = getattr(current, "affine_matrix", current), getattr(value, "affine_matrix", value)
    try:
        a, b = np.asarray(current), np.asarray(value)
        if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
            return a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=0)
        return bool(tuple(current) != tuple(value))
    except Exception:  # noqa: BLE001 - not comparable: set it
        return True


def placement_kwargs(layer: Image) -> dict[str, Any]:
    """Layer keyword arguments that place a new layer exactly over ``layer``: its data-to-world transform,
    world units and axis labels."""
    return {"scale": tuple(layer.scale), "translate": tuple(layer.translate), "rotate": layer.rotate,
            "shear": layer.shear, **world_kwargs(layer)}


def cases_from_layers(pairs: Sequence[tuple[Image, Labels | None]]) -> list[Case]:
    """Training cases (copies of the layer data) from (image, labels or None) layer pairs.

    Spacing and affine come from the image layer; a multiscale layer gives its full-resolution level.
    DataError names the layer at fault.
    """
    from ..data.cases import Case
    from ..data.io import DataError

    cases = []
    for image, labels in pairs:
        if image.rgb:
            raise DataError(f"layer {image.name!r} is an RGB image; training needs single-channel images")
        data = np.asarray(image.data[0] if image.multiscale else image.data)
        if data.ndim not in (2, 3):
            raise DataError(f"layer {image.name!r}: {data.ndim}D data (shape {data.shape}); expected a 2D "
                            "image or a 3D volume with one channel")
        lab = None
        if labels is not None:
            lab = np.array(labels.data[0] if labels.multiscale else labels.data)
            if lab.shape != data.shape:
                raise DataError(f"labels layer {labels.name!r}: shape {lab.shape} does not match image layer "
                                f"{image.name!r} shape {data.shape}")
        cases.append(Case(image=np.array(data, dtype=np.float32), label=lab, spacing=layer_spacing(image),
                          affine=layer_affine(image), name=image.name, image_path=f"layer {image.name!r}",
                          label_path=f"labels layer {labels.name!r}" if labels is not None else None))
    return cases
