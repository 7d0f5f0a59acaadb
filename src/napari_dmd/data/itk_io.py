"""NRRD and MetaImage (MHA/MHD) files through SimpleITK (optional extra ``itk``: ``pip install 'napari-dmd[itk]'``).

ITK geometry is in LPS+ (x towards the patient's Left, y Posterior, z Superior): a voxel index ``(i, j, k)``
lies at ``origin + direction @ diag(spacing) @ (i, j, k)``. napari-dmd keeps NIfTI's RAS+ affine (see
:mod:`napari_dmd.data.world`), so x and y change sign both ways: ``affine = diag(-1, -1, 1) @ [direction @
diag(spacing) | origin]``. A scan saved as NIfTI and as MHA with the same world geometry reads to the same
affine. SimpleITK's array is already ``(z, y, x)``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from napari_dmd.data.errors import DataError

__all__ = ["ITK_SUFFIXES", "ITK_WRITABLE_SUFFIXES", "affine_from_itk", "itk_from_affine", "read_itk", "write_itk"]

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
ITK_WRITABLE_SUFFIXES = (".nrrd", ".mha")  # one file each (.nhdr / .mhd need a companion data file)
_LPS = np.diag([-1.0, -1.0, 1.0])


def _sitk(where: str, suffix: str) -> Any:
    """The SimpleITK module, or a DataError saying how to install it."""
    try:
        import SimpleITK as sitk
    except ImportError as exc:
        raise DataError(f"{where}: reading and writing {suffix} files needs SimpleITK; install it with "
                        "pip install 'napari-dmd[itk]'") from exc
    return sitk


def affine_from_itk(spacing, origin, direction) -> np.ndarray:
    """NIfTI-style (RAS) 4x4 affine of an ITK image's spacing, origin and (row-major) direction."""
    n = len(spacing)
    d = np.asarray(direction, dtype=np.float64).reshape(n, n)
    lps = np.eye(3)
    lps[:n, :n] = d @ np.diag(np.asarray(spacing, dtype=np.float64))
    shift = np.zeros(3)
    shift[:n] = np.asarray(origin, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS @ lps
    affine[:3, 3] = _LPS @ shift
    return affine


def itk_from_affine(affine: np.ndarray, ndim: int) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(spacing, origin, row-major direction) in ITK's LPS convention of a NIfTI-style (RAS) affine."""
    a = np.asarray(affine, dtype=np.float64)
    lps = _LPS @ a[:3, :3]
    spacing = np.linalg.norm(lps[:ndim, :ndim], axis=0)
    direction = lps[:ndim, :ndim] / spacing
    origin = (_LPS @ a[:3, 3])[:ndim]
    return tuple(map(float, spacing)), tuple(map(float, origin)), tuple(map(float, direction.ravel()))


def _itk_reason(exc: BaseException) -> str:
    """`` (reason)`` from an ITK exception's last message line without ITK's prefixes; '' when it says
    nothing true (MetaIO reports a bad header as 'No such file or directory')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception thrown")]
    text = lines[-1] if lines else type(exc).__name__
    text = re.sub(r"^(sitk::|itk::)?ERROR:\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", text)
    return "" if "No such file" in text else f" ({text})"


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence what ITK's C++ readers print to stderr themselves (MetaIO's parse errors): the DataError
    raised for the file is the one message."""
    try:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):  # no real stderr (a GUI without a console)
        yield
        return
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def read_itk(p: Path, check_size, check_kind, check_dims) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """(array in (z, y, x) order, spacing in array order, RAS affine) of an NRRD/MHA/MHD file.

    ``check_size``, ``check_kind`` and ``check_dims`` are io's checks, run before the voxels are read.
    """
    where, suffix = str(p), p.suffix.lower()
    sitk = _sitk(where, suffix)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        with _quiet_stderr():
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{where}: cannot read {suffix.lstrip('.').upper()} file, it may be corrupt or truncated"
                        f"{_itk_reason(exc)}") from exc
    comps = reader.GetNumberOfComponents()
    if comps != 1:
        raise DataError(f"{where}: image with {comps} components per voxel (colour or vector) is not "
                        "supported; save a single-channel image")
    size = tuple(int(s) for s in reader.GetSize())[::-1]
    dtype = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1] * len(size), reader.GetPixelID())).dtype)
    check_size(size, dtype, where)
    check_kind(dtype, where, suffix.lstrip(".").upper())
    try:
        with _quiet_stderr():
            image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(f"{where}: cannot read the {suffix.lstrip('.').upper()} file's voxels, it may be truncated"
                        f"{_itk_reason(exc)}") from exc
    array = check_dims(np.asarray(sitk.GetArrayFromImage(image)), where, 0)
    ndim = array.ndim
    spacing, origin = image.GetSpacing()[:ndim], image.GetOrigin()[:ndim]
    full = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(full, full)[:ndim, :ndim]
    affine = affine_from_itk(spacing, origin, direction)
    return np.ascontiguousarray(array), tuple(float(s) for s in reversed(spacing)), affine


def write_itk(tmp: Path, data: np.ndarray, spacing, affine) -> None:
    """Write ``data`` ((z, y, x)) to ``tmp`` (.mha / .nrrd by suffix) with its world geometry in LPS; without
    an affine, the diagonal RAS affine of ``spacing`` (as NIfTI files get), so the two formats overlay."""
    sitk = _sitk(str(tmp), tmp.suffix)
    ndim = data.ndim
    image = sitk.GetImageFromArray(np.ascontiguousarray(data))
    if affine is None:  # no world information: the diagonal RAS affine NIfTI files get (x, y flipped in LPS)
        xyz = [float(s) for s in reversed(spacing)] if spacing is not None else [1.0] * ndim
        affine = np.diag(xyz + [1.0] * (4 - ndim))
    sp, origin, direction = itk_from_affine(affine, ndim)
    image.SetSpacing(sp)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(tmp), True)
