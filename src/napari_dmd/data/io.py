"""Read and write images and label maps (NIfTI, TIFF, NRRD/MHA via SimpleITK, OME-Zarr, NumPy, PNG) with geometry.

Array convention (see ``docs/architecture.md``): arrays hold spatial axes only, ``(z, y, x)`` for 3D and
``(y, x)`` for 2D. NIfTI data (stored ``x, y, z``) is transposed on read and back on write. ``spacing`` is in
the array's axis order (mm); ``affine`` is the file's original 4x4 voxel-to-world matrix in NIfTI index
order ``(x, y, z)``, so label maps written with it round-trip exactly.

Every problem with a file raises :class:`DataError` with a one-line message naming the file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_dmd.data import itk_io, zarr_io
from napari_dmd.data.errors import DataError
from napari_dmd.data.itk_io import ITK_SUFFIXES, ITK_WRITABLE_SUFFIXES
from napari_dmd.data.limits import check_size, npy_header
from napari_dmd.data.raster import gray_from_channels, read_pil
from napari_dmd.safe_paths import publish

__all__ = [
    "DataError",
    "ImageData",
    "NIFTI_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "affine_from_spacing",
    "file_suffix",
    "is_supported_file",
    "read_image",
    "strip_suffix",
    "write_image",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
TIFF_SUFFIXES = (".tif", ".tiff")
NPY_SUFFIXES = (".npy",)
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES + ITK_SUFFIXES + NPY_SUFFIXES + PIL_SUFFIXES
WRITABLE_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES + ITK_WRITABLE_SUFFIXES + NPY_SUFFIXES

# Length units found in TIFF/ImageJ metadata -> factor to millimetres.
_UNIT_TO_MM = {
    "mm": 1.0,
    "millimeter": 1.0,
    "millimetre": 1.0,
    "um": 1e-3,
    "µm": 1e-3,
    "μm": 1e-3,
    "\\u00b5m": 1e-3,
    "micron": 1e-3,
    "microns": 1e-3,
    "micrometer": 1e-3,
    "micrometre": 1e-3,
    "nm": 1e-6,
    "nanometer": 1e-6,
    "cm": 10.0,
    "centimeter": 10.0,
    "m": 1000.0,
    "meter": 1000.0,
}


@dataclass
class ImageData:
    """An image read from disk: spatial array ``(z, y, x)`` / ``(y, x)``, spacing in the same order,
    the 4x4 voxel-to-world affine in NIfTI ``(x, y, z)`` index order, and the source path."""

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    path: str | None = None
    axes: tuple[str, ...] | None = None  # the spatial axes' names where the file names them (OME-Zarr)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.array.ndim


# ----------------------------------------------------------------------------------------------- helpers


def file_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix of a file name, treating ``.nii.gz`` as one suffix ('' if none)."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def strip_suffix(path: str | os.PathLike) -> str:
    """File name without its (possibly double, e.g. ``.nii.gz``) suffix."""
    name = Path(path).name
    suffix = file_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def is_supported_file(path: str | os.PathLike) -> bool:
    """True for a visible file name (not ``.*`` / ``._*``) with a readable image suffix."""
    name = Path(path).name
    return not name.startswith(".") and file_suffix(name) in SUPPORTED_SUFFIXES


def affine_from_spacing(spacing: tuple[float, ...] | list[float]) -> np.ndarray:
    """Diagonal 4x4 affine for ``spacing`` given in array order ``(z, y, x)`` / ``(y, x)``."""
    xyz = [float(s) for s in reversed(tuple(spacing))]
    xyz += [1.0] * (3 - len(xyz))
    return np.diag(xyz + [1.0]).astype(np.float64)


def _reason(exc: BaseException) -> str:
    """One-line description of an exception (an OS error's reason without the temp file it names)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _native(array: np.ndarray) -> np.ndarray:
    """Array in native byte order (torch refuses big-endian data)."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _check_spacing(spacing, ndim: int, where: str) -> tuple[float, ...]:
    """Validate a spacing tuple (length ndim, positive, finite)."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: spacing {spacing!r} is not a sequence of numbers") from exc
    if len(values) != ndim:
        raise DataError(f"{where}: spacing {values} has {len(values)} values for a {ndim}D image")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise DataError(f"{where}: spacing {values} must be positive and finite")
    return values


def _check_kind(dtype: np.dtype, where: str, fmt: str) -> None:
    """Refuse colour (structured), complex and other non-numeric voxel types before reading the data."""
    dtype = np.dtype(dtype)
    if dtype.names is not None:
        raise DataError(f"{where}: colour (RGB) {fmt} image is not supported; convert it to grayscale")
    if dtype.kind == "c":
        raise DataError(f"{where}: complex-valued {fmt} image ({dtype}) is not supported; save magnitudes "
                        "(abs) or the real part as a real-valued image")
    if dtype.kind not in "biuf":
        raise DataError(f"{where}: {fmt} data type {dtype} is not an image type")


def _check_dims(array: np.ndarray, where: str, channel_axis: int = -1) -> np.ndarray:
    """Squeeze trailing singleton dims beyond 2D and refuse 1D or 4D+ data."""
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim < 2:
        raise DataError(f"{where}: {array.ndim}D data of shape {array.shape} is not an image (need 2D or 3D)")
    if array.ndim > 3:
        n = array.shape[channel_axis]
        raise DataError(
            f"{where}: {array.ndim}D image with {n} channels/frames is not supported "
            f"(shape {array.shape}); save a single 2D or 3D volume"
        )
    return array


# -------------------------------------------------------------------------------------------------- read


def read_image(path: str | os.PathLike) -> ImageData:
    """Read a 2D/3D image: NIfTI, TIFF, NRRD/MHA/MHD or a DICOM series folder (SimpleITK), OME-Zarr, ``.npy``, PNG.

    Returns the spatial array in ``(z, y, x)`` / ``(y, x)`` order with spacing in the same order.
    Raises :class:`DataError` (message naming the file) for anything unreadable or unsupported.
    """
    p = Path(path)
    where = str(p)
    if not p.exists():
        raise DataError(f"{where}: file not found")
    if p.is_dir():
        if zarr_io.is_ome_zarr(p):  # level 0 of the pyramid, spacing and origin in mm, axis names
            array, spacing, affine, axes = zarr_io.read_ome_zarr(p, check_size, _check_kind, _check_dims)
            return ImageData(_native(array), spacing, affine, path=where, axes=axes)
        if not itk_io.is_dicom_folder(p):
            raise DataError(f"{where}: is a folder, not an image file (nor a DICOM series or an OME-Zarr image)")
        return ImageData(*itk_io.read_dicom_series(p, check_size, _check_kind, _check_dims), path=where)
    suffix = file_suffix(p)
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{where}: unsupported file type '{suffix or p.name}' "
            f"(supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise DataError(f"{where}: cannot access file ({_reason(exc)})") from exc
    if size == 0:
        raise DataError(f"{where}: file is empty (0 bytes)")
    try:
        if suffix in NIFTI_SUFFIXES:
            data = _read_nifti(p)
        elif suffix in TIFF_SUFFIXES:
            data = _read_tiff(p)
        elif suffix in NPY_SUFFIXES:
            data = _read_npy(p)
        elif suffix in ITK_SUFFIXES:
            array, spacing, affine = itk_io.read_itk(p, check_size, _check_kind, _check_dims)
            data = ImageData(array=array, spacing=spacing, affine=affine)
        else:
            data = _from_array(_check_dims(read_pil(p), str(p)))
    except DataError:
        raise
    except MemoryError as exc:
        raise DataError(f"{where}: not enough memory to read this file") from exc
    except Exception as exc:  # any library error on a bad file becomes one clear line
        kind = {".nii": "NIfTI", ".nii.gz": "NIfTI", ".tif": "TIFF", ".tiff": "TIFF", ".npy": "NumPy"}
        fmt = kind.get(suffix, suffix.lstrip(".").upper() if suffix in ITK_SUFFIXES else "image")
        raise DataError(
            f"{where}: cannot read {fmt} file, it may be corrupt or truncated ({_reason(exc)})"
        ) from exc
    data.array = _native(data.array)
    data.path = where
    return data


def _read_nifti(p: Path) -> ImageData:
    """NIfTI via nibabel; data transposed to (z, y, x), spacing reversed, affine unchanged."""
    import nibabel as nib
    from nibabel.imageglobals import logger as nib_logger

    where = str(p)
    # nibabel logs header problems to stderr itself; the DataError raised for them is the one message
    level = nib_logger.level
    nib_logger.setLevel(logging.CRITICAL + 1)
    try:
        img = nib.load(str(p), mmap=False)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise DataError(f"{where}: not a NIfTI image ({type(img).__name__})")
        check_size(img.shape, img.get_data_dtype(), where)  # before the data is decompressed
        _check_kind(img.get_data_dtype(), where, "NIfTI")
        array = np.asanyarray(img.dataobj)
    finally:
        nib_logger.setLevel(level)
    array = _check_dims(np.asarray(array), where, channel_axis=-1)
    ndim = array.ndim
    # float32 header values -> shortest decimal (7.7, not 7.699999809265137)
    zooms = [float(str(np.float32(z))) for z in img.header.get_zooms()[:ndim]]
    affine = np.asarray(img.affine, dtype=np.float64)
    if len(zooms) < ndim or not all(np.isfinite(z) and z > 0 for z in zooms):
        # Bad pixdim in the header: fall back to the affine's column norms, then 1.
        norms = np.linalg.norm(affine[:3, :ndim], axis=0)
        zooms = [float(n) if np.isfinite(n) and n > 0 else 1.0 for n in norms]
    array = np.ascontiguousarray(array.transpose(tuple(range(ndim))[::-1]))
    return ImageData(array=array, spacing=tuple(reversed(zooms)), affine=affine)


def _tiff_unit_factor(unit: str | None) -> float | None:
    """Factor from a TIFF/ImageJ length unit to mm; None if unknown or 'pixel'."""
    if not unit:
        return None
    return _UNIT_TO_MM.get(str(unit).strip().lower())


def _read_tiff(p: Path) -> ImageData:
    """TIFF via tifffile; spacing from ImageJ metadata / resolution tags (converted to mm), else 1."""
    import tifffile

    where = str(p)
    with tifffile.TiffFile(str(p)) as tif:
        if not tif.series:
            raise DataError(f"{where}: TIFF holds no image data")
        series = tif.series[0]
        axes = series.axes
        check_size(series.shape, series.dtype, where)  # before any page is decompressed
        _check_kind(series.dtype, where, "TIFF")
        array = series.asarray()
        page = tif.pages[0]
        ij = tif.imagej_metadata or {}
        shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else {}
        try:
            res = page.resolution
            res_unit = int(page.resolutionunit)
        except Exception:  # missing or malformed tags: no physical size
            res, res_unit = (1.0, 1.0), 1
    if axes.endswith("S") and array.ndim >= 3:  # samples per pixel (RGB / RGBA)
        array = gray_from_channels(array, where, tol=0)
        axes = axes[:-1]
    for ax in "CT":
        if ax in axes and array.ndim > 2 and array.shape[axes.index(ax)] > 1:
            n = array.shape[axes.index(ax)]
            kind = "channels" if ax == "C" else "frames"
            raise DataError(
                f"{where}: {array.ndim}D image with {n} {kind} is not supported (axes {axes}, "
                f"shape {array.shape}); save a single 2D or 3D volume"
            )
    array = _check_dims(array, where, channel_axis=0)
    ndim = array.ndim

    # In-plane spacing from resolution tags (pixels per unit).
    sx = sy = 1.0
    factor: float | None = None
    if ij:
        factor = _tiff_unit_factor(ij.get("unit")) or 1.0
    elif shaped:
        factor = _tiff_unit_factor(shaped.get("unit")) or 1.0
    elif res_unit == 3:  # CENTIMETER
        factor = 10.0
    elif res_unit == 1:  # NONE: raw numbers
        factor = 1.0
    # res_unit == 2 (INCH) is a print resolution (dpi), not a physical voxel size: ignored.
    if factor is not None and res and all(np.isfinite(r) and r > 0 for r in res):
        sx, sy = factor / float(res[0]), factor / float(res[1])
    spacing: tuple[float, ...] = (sy, sx)
    if ndim == 3:
        sz = ij.get("spacing", shaped.get("spacing", None))
        try:
            sz = float(sz) * (factor or 1.0) if sz is not None else 1.0
        except (TypeError, ValueError):
            sz = 1.0
        if not (np.isfinite(sz) and sz > 0):
            sz = 1.0
        spacing = (sz, sy, sx)
    return ImageData(array=np.ascontiguousarray(array), spacing=spacing, affine=affine_from_spacing(spacing))


def _from_array(array: np.ndarray) -> ImageData:
    """ImageData of a file without geometry (NumPy, PNG, JPEG): spacing 1."""
    spacing = (1.0,) * array.ndim
    return ImageData(array=np.ascontiguousarray(array), spacing=spacing, affine=affine_from_spacing(spacing))


def _read_npy(p: Path) -> ImageData:
    """NumPy ``.npy`` (no pickles); spacing 1."""
    where = str(p)
    shape, dtype = npy_header(p)
    check_size(shape, dtype, where)
    _check_kind(dtype, where, "NumPy")
    array = np.load(str(p), allow_pickle=False)
    return _from_array(_check_dims(array, where, channel_axis=0))


# ------------------------------------------------------------------------------------------------- write


def _storage_array(array: np.ndarray, where: str) -> np.ndarray:
    """Array in a dtype every writer handles: bool/integers -> smallest of uint8/int16/int32."""
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.uint8)
    if kind in "iu":
        lo = int(array.min()) if array.size else 0
        hi = int(array.max()) if array.size else 0
        if lo >= 0 and hi < 256:
            return array.astype(np.uint8)
        if lo >= -32768 and hi < 32768:
            return array.astype(np.int16)
        if lo >= -(2**31) and hi < 2**31:
            return array.astype(np.int32)
        raise DataError(f"{where}: integer values {lo}..{hi} do not fit in int32")
    if kind == "f":
        return array.astype(np.float32) if array.dtype.itemsize < 4 else array
    raise DataError(f"{where}: cannot write data of type {array.dtype}")


def write_image(
    path: str | os.PathLike,
    array: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    affine: np.ndarray | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a 2D/3D array (``(z, y, x)`` / ``(y, x)``) to NIfTI, TIFF, MHA/NRRD or ``.npy`` (by suffix).

    ``spacing`` is in array order; ``affine`` (NIfTI, MHA/NRRD) is used as given, so a label map written with its
    image's affine round-trips exactly. Integer/bool arrays are stored as uint8/int16/int32. The file is
    written to a temporary file in the same folder and moved into place; an existing file is refused
    unless ``overwrite=True``. Returns the written path.
    """
    p = Path(path)
    where = str(p)
    suffix = file_suffix(p)
    if suffix not in WRITABLE_SUFFIXES:
        raise DataError(
            f"{where}: cannot write file type '{suffix or p.name}' "
            f"(supported: {', '.join(WRITABLE_SUFFIXES)})"
        )
    if p.is_dir():
        raise DataError(f"{where}: is a folder; give a file name to write to")
    if p.exists() and not overwrite:
        raise DataError(f"{where}: file already exists; choose another name or allow overwriting")
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise DataError(f"{where}: can only write 2D or 3D arrays, got shape {array.shape}")
    data = _storage_array(array, where)
    if spacing is not None:
        spacing = _check_spacing(spacing, array.ndim, where)
    if affine is not None:
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise DataError(f"{where}: affine must be a finite 4x4 matrix, got shape {affine.shape}")

    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{where}: cannot create folder {p.parent} ({_reason(exc)})") from exc
    # Hidden temp file of random name in the same folder (same file system, so the rename is atomic), created
    # exclusively (never an existing file, never through a planted link); it ends with the file type's suffix
    # for the writers, and gets the umask's mode when it is published.
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{strip_suffix(p)}.", suffix=f".tmp{suffix}", dir=p.parent)
    except OSError as exc:
        raise DataError(f"{where}: could not write file ({_reason(exc)})") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if suffix in NIFTI_SUFFIXES:
            _write_nifti(tmp, data, spacing, affine)
        elif suffix in TIFF_SUFFIXES:
            _write_tiff(tmp, data, spacing)
        elif suffix in ITK_WRITABLE_SUFFIXES:
            itk_io.write_itk(tmp, data, spacing, affine)
        else:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(data), allow_pickle=False)
        if p.exists() and not overwrite:  # appeared while we were writing
            raise DataError(f"{where}: file already exists; choose another name or allow overwriting")
        publish(tmp, p)
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{where}: could not write file ({_reason(exc)})") from exc
    return p


def _write_nifti(tmp: Path, data: np.ndarray, spacing, affine) -> None:
    """NIfTI-1 with data transposed back to (x, y, z)."""
    import nibabel as nib

    ndim = data.ndim
    xyz = np.ascontiguousarray(data.transpose(tuple(range(ndim))[::-1]))
    if affine is None:
        aff = affine_from_spacing(spacing if spacing is not None else (1.0,) * ndim)
        code = 0  # no world information: 'unknown' qform, 'aligned' sform
    else:
        aff = affine
        code = 1  # the file's world coordinates ('scanner')
    img = nib.Nifti1Image(xyz, aff)
    img.header.set_data_dtype(xyz.dtype)
    img.set_qform(aff, code=code if code else "unknown")
    img.set_sform(aff, code=code if code else "aligned")
    if spacing is not None:
        img.header.set_zooms(tuple(reversed(spacing)))
    img.header.set_xyzt_units("mm")
    nib.save(img, str(tmp))


def _write_tiff(tmp: Path, data: np.ndarray, spacing) -> None:
    """ImageJ-compatible TIFF (unit mm) when the dtype allows, else a tifffile 'shaped' TIFF."""
    import tifffile

    ndim = data.ndim
    spacing = spacing if spacing is not None else (1.0,) * ndim
    sy, sx = spacing[-2], spacing[-1]
    resolution = (1.0 / sx, 1.0 / sy)
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    if data.dtype.char in "BHhf":
        metadata: dict = {"axes": "ZYX" if ndim == 3 else "YX", "unit": "mm"}
        if ndim == 3:
            metadata["spacing"] = float(spacing[0])
        tifffile.imwrite(
            str(tmp), data, imagej=True, photometric="minisblack", resolution=resolution, metadata=metadata
        )
    else:  # e.g. int32 labels: ImageJ cannot hold them; keep spacing in tifffile's JSON description
        metadata = {"axes": "ZYX" if ndim == 3 else "YX", "unit": "mm"}
        if ndim == 3:
            metadata["spacing"] = float(spacing[0])
        tifffile.imwrite(
            str(tmp),
            data,
            photometric="minisblack",
            resolution=resolution,
            resolutionunit="NONE",
            metadata=metadata,
        )
