"""NRRD and MetaImage (MHA/MHD) files and DICOM series (a folder) through SimpleITK.

SimpleITK is the optional extra ``itk``: ``pip install 'napari-dmd[itk]'``.

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

__all__ = ["ITK_SUFFIXES", "ITK_WRITABLE_SUFFIXES", "affine_from_itk", "is_dicom_folder", "itk_from_affine",
           "read_dicom_series", "read_itk", "write_itk"]

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


def _info(sitk: Any, path: str, where: str, fmt: str) -> Any:
    """An ImageFileReader of ``path`` with its header read (DataError naming ``where`` if it cannot be)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        with _quiet_stderr():
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{where}: cannot read {fmt} file, it may be corrupt or truncated{_itk_reason(exc)}") from exc
    comps = reader.GetNumberOfComponents()
    if comps != 1:
        raise DataError(f"{where}: image with {comps} components per voxel (colour or vector) is not "
                        "supported; save a single-channel image")
    return reader


def _execute(reader: Any, where: str, fmt: str) -> Any:
    """Run a SimpleITK reader (DataError naming ``where`` if the voxels cannot be read)."""
    try:
        with _quiet_stderr():
            return reader.Execute()
    except RuntimeError as exc:
        raise DataError(f"{where}: cannot read the {fmt} file's voxels, it may be truncated{_itk_reason(exc)}") from exc


def _geometry(sitk: Any, image: Any, where: str, check_dims) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """(array (z, y, x), spacing in array order, RAS affine) of a SimpleITK image."""
    array = check_dims(np.asarray(sitk.GetArrayFromImage(image)), where, 0)
    ndim = array.ndim
    spacing, origin = image.GetSpacing()[:ndim], image.GetOrigin()[:ndim]
    full = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(full, full)[:ndim, :ndim]
    affine = affine_from_itk(spacing, origin, direction)
    return np.ascontiguousarray(array), tuple(float(s) for s in reversed(spacing)), affine


def _dtype(sitk: Any, reader: Any, ndim: int) -> np.dtype:
    """NumPy voxel type of a reader's pixel type."""
    return np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1] * ndim, reader.GetPixelID())).dtype)


def read_itk(p: Path, check_size, check_kind, check_dims) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """(array in (z, y, x) order, spacing in array order, RAS affine) of an NRRD/MHA/MHD file.

    ``check_size``, ``check_kind`` and ``check_dims`` are io's checks, run before the voxels are read.
    """
    where, fmt = str(p), p.suffix.lower().lstrip(".").upper()
    sitk = _sitk(where, p.suffix.lower())
    reader = _info(sitk, str(p), where, fmt)
    size = tuple(int(s) for s in reader.GetSize())[::-1]
    dtype = _dtype(sitk, reader, len(size))
    check_size(size, dtype, where)
    check_kind(dtype, where, fmt)
    return _geometry(sitk, _execute(reader, where, fmt), where, check_dims)


def is_dicom_folder(p: Path) -> bool:
    """Whether folder ``p`` holds DICOM files (``.dcm`` names or the ``DICM`` mark), checking a few files."""
    try:
        files = [q for q in sorted(p.iterdir())[:50] if q.is_file() and not q.name.startswith(".")]
    except OSError:
        return False
    for q in files[:5]:
        try:
            with open(q, "rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return any(q.suffix.lower() == ".dcm" for q in files)


def read_dicom_series(p: Path, check_size, check_kind, check_dims) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """(array (z, y, x), spacing, RAS affine) of the one DICOM series in folder ``p`` (slices sorted by GDCM
    along the slice normal, geometry from ImagePositionPatient / ImageOrientationPatient / PixelSpacing)."""
    where = str(p)
    sitk = _sitk(where, "DICOM")
    with _quiet_stderr():
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p))
    if not ids:
        raise DataError(f"{where}: no readable DICOM series in this folder")
    if len(ids) > 1:
        raise DataError(f"{where}: {len(ids)} DICOM series in one folder; put each series in a folder of its own")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(p), ids[0])
    first = _info(sitk, files[0], f"{where} ({Path(files[0]).name})", "DICOM")
    size = (len(files), *(int(s) for s in first.GetSize()[:2][::-1]))
    dtype = _dtype(sitk, first, first.GetDimension())
    check_size(size, dtype, where)
    check_kind(dtype, where, "DICOM")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return _geometry(sitk, _execute(reader, where, "DICOM"), where, check_dims)
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # GDCM / NumPy on a broken series
        raise DataError(f"{where}: cannot read the DICOM series ({type(exc).__name__}: {exc})"
                        .splitlines()[0]) from exc


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
