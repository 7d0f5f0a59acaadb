"""World geometry: a file's NIfTI voxel-to-world affine <-> a napari layer's data-to-world transform.

Convention (see ``docs/architecture.md``): napari world coordinates are the file's world coordinates in
millimetres, NIfTI's RAS+ frame (x towards the patient's Right, y Anterior, z Superior), listed in array
order: a 3D layer's world axes are ``(z, y, x)`` = ``(S, A, R)``, a 2D layer's ``(y, x)`` = ``(A, R)``.
A layer therefore lands where nibabel, ITK-SNAP, 3D Slicer or any NIfTI viewer puts the scan, and two files
with the same world geometry overlay exactly whatever their voxel grids.

napari draws a 2D view from the in-plane part of a layer's transform, so a scan whose voxel axes are
permuted against the world axes (a sagittal or coronal acquisition) is shown transposed into world axis
order (:func:`display_axes`, :func:`permute_affine`: exact, no resampling); flips and small obliquities stay in
the layer's transform. The writer transposes labels back to the file's voxel order.

A layer gets ``scale`` = voxel spacing and ``affine`` = the rest (direction, flips, origin), so ``scale``
stays the spacing the widgets read. Pure NumPy: no napari import.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["AXIS_LABELS", "data_to_world", "display_axes", "layer_kwargs", "napari_affine", "nifti_affine",
           "permute_affine", "same_transform"]

AXIS_LABELS = ("z", "y", "x")


def napari_affine(affine: np.ndarray, ndim: int) -> np.ndarray:
    """The ``(ndim+1)``-square array-order data-to-world matrix of a NIfTI ``(x, y, z)`` 4x4 affine."""
    a = np.asarray(affine, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = a[:3, :3][::-1, ::-1]  # index (k, j, i) -> world (z, y, x)
    m[:3, 3] = a[:3, 3][::-1]
    if ndim == 3:
        return m
    out = np.eye(3)  # 2D: array (y, x) = NIfTI (j, i) -> world (y, x)
    out[:2, :2] = m[1:3, 1:3]
    out[:2, 2] = m[1:3, 3]
    return out


def nifti_affine(matrix: np.ndarray, ndim: int) -> np.ndarray:
    """The NIfTI 4x4 affine of an array-order data-to-world matrix (inverse of :func:`napari_affine`).

    A 2D layer's third (slice) axis gets unit spacing along z at z = 0.
    """
    m = np.asarray(matrix, dtype=np.float64)
    full = m
    if ndim == 2:
        full = np.eye(4)
        full[1:3, 1:3] = m[:2, :2]
        full[1:3, 3] = m[:2, 2]
    a = np.eye(4)
    a[:3, :3] = full[:3, :3][::-1, ::-1]
    a[:3, 3] = full[:3, 3][::-1]
    return a


def display_axes(affine: np.ndarray, ndim: int) -> tuple[int, ...] | None:
    """The transpose of a file's array that puts its axes in world axis order (each array axis then runs
    mainly along the world axis of its position), or None when they already are."""
    from nibabel.orientations import io_orientation

    ornt = io_orientation(napari_affine(affine, ndim))
    if np.isnan(ornt[:, 0]).any():
        return None
    order = tuple(int(c) for c in np.argsort(ornt[:, 0]))
    return None if order == tuple(range(ndim)) else order


def permute_affine(affine: np.ndarray, order: tuple[int, ...], ndim: int) -> np.ndarray:
    """The NIfTI affine of ``np.transpose(array, order)`` given the affine of ``array`` (exact: columns moved)."""
    a = np.asarray(affine, dtype=np.float64)
    out = a.copy()
    for new, old in enumerate(order):  # array axis a is NIfTI column ndim - 1 - a
        out[:, ndim - 1 - new] = a[:, ndim - 1 - old]
    return out


def layer_kwargs(affine: np.ndarray, spacing: tuple[float, ...]) -> dict[str, Any]:
    """napari layer keyword arguments placing an array with this NIfTI affine and spacing in world space:
    ``scale`` (the spacing), ``affine`` (direction, flips and origin), ``units`` (mm), ``axis_labels``."""
    ndim = len(spacing)
    full = napari_affine(affine, ndim)
    physical = full @ np.diag([1.0 / float(s) for s in spacing] + [1.0])
    return {"scale": tuple(float(s) for s in spacing), "affine": physical,
            "units": ("mm",) * ndim, "axis_labels": AXIS_LABELS[-ndim:]}


def _upper(shear: Any, ndim: int) -> np.ndarray:
    """napari's shear (upper-triangular values, or a full matrix) as an ``ndim``-square matrix."""
    s = np.asarray(shear if shear is not None else [], dtype=np.float64)
    if s.ndim == 2:
        return s[-ndim:, -ndim:]
    out = np.eye(ndim)
    if s.size:
        out[np.triu_indices(ndim, 1)] = s[-(ndim * (ndim - 1) // 2):]
    return out


def data_to_world(state: dict[str, Any], ndim: int) -> np.ndarray:
    """The data-to-world matrix of a napari layer state (``scale``, ``translate``, ``rotate``, ``shear``,
    ``affine`` as in ``layer._get_state()``): ``affine @ [rotate @ shear @ diag(scale) | translate]``."""
    scale = np.asarray(state.get("scale") if state.get("scale") is not None else [1.0] * ndim, float)[-ndim:]
    translate = np.asarray(state.get("translate") if state.get("translate") is not None else [0.0] * ndim,
                           float)[-ndim:]
    rotate = state.get("rotate")
    rot = np.eye(ndim) if rotate is None else np.asarray(rotate, dtype=np.float64)[-ndim:, -ndim:]
    physical = np.eye(ndim + 1)
    physical[:ndim, :ndim] = rot @ _upper(state.get("shear"), ndim) @ np.diag(scale)
    physical[:ndim, ndim] = translate
    aff = state.get("affine")
    aff = getattr(aff, "affine_matrix", aff)  # a napari Affine or a matrix
    world = np.eye(ndim + 1) if aff is None else np.asarray(aff, dtype=np.float64)[-ndim - 1:, -ndim - 1:]
    return world @ physical


def same_transform(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two data-to-world matrices agree to float32 precision (of the mm values they hold)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(b).max())))
