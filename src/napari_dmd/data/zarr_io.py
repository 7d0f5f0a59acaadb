"""OME-Zarr (OME-NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) images through the ``zarr`` library.

``zarr`` is the optional extra ``zarr``: ``pip install 'napari-dmd[zarr]'``.

An OME-Zarr image is a folder (``image.ome.zarr``) whose group attributes hold ``multiscales``: a list of
resolution levels (``datasets``, full resolution first), the axes (name, type ``space``/``time``/``channel``,
unit) and coordinate transformations (``scale`` then ``translation``, per level and for the whole image).
napari-dmd computes on level 0 only: its spatial axes become the array (``(z, y, x)`` / ``(y, x)`` in the
file's axis order), a time or channel axis of length 1 is dropped (longer ones are refused), the scale becomes
the spacing and the translation the origin, converted to mm when the unit is a length (micrometer -> 0.001),
kept as given when no unit is written. The affine is NIfTI-style (``x, y, z`` columns, diagonal: OME-NGFF
has no anatomical orientation); the axis names are kept for the napari layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_dmd.data.errors import DataError

__all__ = ["is_ome_zarr", "ome_zarr_name", "read_ome_zarr"]

# OME-NGFF units (UDUNITS-2 names) -> factor to millimetres
_UNIT_TO_MM = {"angstrom": 1e-7, "nanometer": 1e-6, "micrometer": 1e-3, "micron": 1e-3, "millimeter": 1.0,
               "centimeter": 10.0, "decimeter": 100.0, "meter": 1000.0}
_NAMES = ("z", "y", "x")


def _attrs_json(p: Path) -> dict[str, Any] | None:
    """The group attributes of Zarr folder ``p`` read from its metadata file (v3 ``zarr.json`` or v2
    ``.zattrs``), OME-NGFF 0.5's ``ome`` namespace unwrapped; None when there are none or they cannot be read."""
    for name in ("zarr.json", ".zattrs"):
        f = p / name
        if not f.is_file():
            continue
        try:
            meta = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(meta, dict):
            return None
        attrs = meta.get("attributes", {}) if name == "zarr.json" else meta
        if not isinstance(attrs, dict):
            return None
        return attrs.get("ome", attrs) if isinstance(attrs.get("ome"), dict) else attrs
    return None


def is_ome_zarr(p: Path) -> bool:
    """Whether folder ``p`` is an OME-Zarr image (a Zarr group with ``multiscales`` metadata)."""
    try:
        if not p.is_dir():
            return False
    except OSError:
        return False
    attrs = _attrs_json(p)
    return bool(attrs) and isinstance(attrs.get("multiscales"), list) and bool(attrs["multiscales"])


def ome_zarr_name(p: Path) -> str:
    """The image name of an OME-Zarr folder: its name without ``.ome.zarr`` / ``.zarr``."""
    name = p.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _axes(ms: dict[str, Any], ndim: int, where: str) -> list[dict[str, str]]:
    """The axes as ``{"name", "type", "unit"}`` (OME-NGFF 0.3 lists names only; before 0.3 there are none:
    the last three are z, y, x and the others t, c)."""
    raw = ms.get("axes")
    if raw is None:
        raw = ["t", "c", "z", "y", "x"][-ndim:] if ndim <= 5 else None
    if not isinstance(raw, list) or len(raw) != ndim:
        raise DataError(f"{where}: OME-Zarr 'axes' {raw!r} do not fit the {ndim}D level-0 array")
    axes = []
    for ax in raw:
        ax = {"name": ax} if isinstance(ax, str) else ax if isinstance(ax, dict) else {}
        name = str(ax.get("name", "?"))
        kind = ax.get("type") or ("time" if name == "t" else "channel" if name == "c" else "space")
        axes.append({"name": name, "type": str(kind), "unit": str(ax.get("unit") or "")})
    return axes


def _transform(transforms: Any, ndim: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale, translation) of an OME-NGFF ``coordinateTransformations`` list (identity for a missing one)."""
    scale, shift = np.ones(ndim), np.zeros(ndim)
    for t in transforms or []:
        kind = t.get("type") if isinstance(t, dict) else None
        if kind == "identity":
            continue
        if kind not in ("scale", "translation") or not isinstance(t.get(kind), list):
            raise DataError(f"{where}: OME-Zarr coordinate transformation {t!r} is not supported (scale and "
                            "translation values are)")
        values = np.asarray(t[kind], dtype=np.float64)
        if values.shape != (ndim,) or not np.all(np.isfinite(values)):
            raise DataError(f"{where}: OME-Zarr {kind} {t[kind]} does not give {ndim} finite values")
        if kind == "scale":
            scale, shift = scale * values, shift * values
        else:
            shift = shift + values
    return scale, shift


def _zarr(where: str) -> Any:
    """The zarr module, or a DataError saying how to install it."""
    try:
        import zarr
    except ImportError as exc:
        raise DataError(f"{where}: reading OME-Zarr needs the zarr package; install it with "
                        "pip install 'napari-dmd[zarr]'") from exc
    return zarr


def read_ome_zarr(p: Path, check_size, check_kind, check_dims
                  ) -> tuple[np.ndarray, tuple[float, ...], np.ndarray, tuple[str, ...]]:
    """(array of level 0's spatial axes, spacing in mm in array order, NIfTI-style affine, axis names) of the
    OME-Zarr image ``p``. ``check_size``, ``check_kind``, ``check_dims`` are io's checks, run before the voxels
    are read. A bad image raises DataError naming the folder."""
    where = str(p)
    attrs = _attrs_json(p)
    if not attrs or not isinstance(attrs.get("multiscales"), list) or not attrs["multiscales"]:
        raise DataError(f"{where}: not an OME-Zarr image (no 'multiscales' in its Zarr attributes)")
    ms = attrs["multiscales"][0]
    datasets = ms.get("datasets") if isinstance(ms, dict) else None
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict) \
            or "path" not in datasets[0]:
        raise DataError(f"{where}: OME-Zarr 'multiscales' lists no resolution level (datasets)")
    zarr = _zarr(where)
    level = str(datasets[0]["path"])
    try:
        arr = zarr.open_array(store=str(p / level), mode="r")
    except Exception as exc:  # a missing or corrupt level
        raise DataError(f"{where}: cannot open OME-Zarr level {level!r} ({type(exc).__name__}: {exc})"
                        .splitlines()[0]) from exc
    shape, dtype = tuple(int(s) for s in arr.shape), np.dtype(arr.dtype)
    axes = _axes(ms, len(shape), where)
    scale, shift = _transform(datasets[0].get("coordinateTransformations"), len(shape), where)
    whole, whole_shift = _transform(ms.get("coordinateTransformations"), len(shape), where)
    scale, shift = scale * whole, shift * whole + whole_shift
    index: list[Any] = []
    for ax, n in zip(axes, shape):
        if ax["type"] == "space":
            index.append(slice(None))
        elif n == 1:
            index.append(0)
        else:
            raise DataError(f"{where}: OME-Zarr image with {n} {ax['type']} points along axis {ax['name']!r} is "
                            "not supported; save a single-channel, single-time-point image")
    space = [i for i, ax in enumerate(axes) if ax["type"] == "space"]
    check_size(tuple(shape[i] for i in space), dtype, where)
    check_kind(dtype, where, "OME-Zarr")
    try:
        array = np.asarray(arr[tuple(index)])
    except MemoryError:
        raise
    except Exception as exc:  # missing or corrupt chunks
        raise DataError(f"{where}: cannot read the OME-Zarr voxels of level {level!r} ({type(exc).__name__}: "
                        f"{exc})".splitlines()[0]) from exc
    array = check_dims(array, where, 0)
    space = space[: array.ndim]  # check_dims squeezes a trailing singleton axis of a 3D image
    factor = []
    for i in space:
        unit = axes[i]["unit"].lower()
        if unit and unit not in _UNIT_TO_MM:
            raise DataError(f"{where}: OME-Zarr axis {axes[i]['name']!r} has unit {axes[i]['unit']!r}, not a length")
        factor.append(_UNIT_TO_MM.get(unit, 1.0))
    spacing = tuple(float(scale[i] * f) for i, f in zip(space, factor))
    origin = [float(shift[i] * f) for i, f in zip(space, factor)]
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise DataError(f"{where}: OME-Zarr scale {tuple(float(scale[i]) for i in space)} must be positive")
    affine = np.eye(4)
    n = len(spacing)
    affine[:n, :n] = np.diag(spacing[::-1])
    affine[:n, 3] = origin[::-1]
    names = tuple(axes[i]["name"] for i in space)
    return np.ascontiguousarray(array), spacing, affine, names
