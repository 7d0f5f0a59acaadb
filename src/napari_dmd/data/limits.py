"""Size limits checked from a file's header before its data is read.

A few kilobytes of compressed file can declare a volume of billions of voxels (a ``.nii.gz`` of zeros, a TIFF or
PNG with a forged size); reading it would exhaust memory before any other check runs. Every reader asks
:func:`check_size` with the shape and data type the header declares, before allocating anything.

The limit is :data:`DEFAULT_MAX_VOXELS` = 512 x 512 x 1024 = 268,435,456 voxels (a large CT volume; 1 GiB as
float32, 2 GiB as float64 on read). Prediction needs a few float32 copies plus one per class, so that volume
takes roughly 5-10 GiB. Set the environment variable ``NAPARI_DMD_MAX_VOXELS`` to raise or lower it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_dmd.data.errors import DataError

__all__ = ["DEFAULT_MAX_VOXELS", "MAX_VOXELS_ENV", "check_size", "max_voxels", "npy_header"]

MAX_VOXELS_ENV = "NAPARI_DMD_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 512 * 512 * 1024


def max_voxels() -> int:
    """The voxel limit: ``NAPARI_DMD_MAX_VOXELS`` when set (``1e9`` style accepted), else the default."""
    raw = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_VOXELS
    try:
        value = float(raw.replace("_", ""))
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 1):
        raise DataError(f"{MAX_VOXELS_ENV}={raw!r} is not a positive number of voxels "
                        f"(default {DEFAULT_MAX_VOXELS:,})")
    return int(value)


def _bytes_text(n: float) -> str:
    """Human-readable byte count (MB, GB, TB)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_size(shape: Sequence[int], dtype: np.dtype | str | type | None, where: str) -> None:
    """Raise DataError when a header declares more voxels than the limit (nothing is allocated).

    ``shape`` is the header's shape in the file's own axis order (all axes, channels included).
    """
    dims = [int(s) for s in shape]
    n = math.prod(dims)  # Python integers: no overflow for forged headers
    limit = max_voxels()
    if n <= limit:
        return
    itemsize = np.dtype(dtype).itemsize if dtype is not None else 1
    raise DataError(
        f"{where}: implausible size: the header declares shape {tuple(dims)} = {n:,} voxels "
        f"({_bytes_text(n * itemsize)} in memory), over the limit of {limit:,} voxels; if the file is genuine, "
        f"raise the limit with {MAX_VOXELS_ENV}={n}"
    )


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` file's header, without reading its data (ValueError if malformed)."""
    from numpy.lib import format as npformat

    with open(Path(path), "rb") as fh:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _fortran, dtype = npformat.read_array_header_2_0(fh)
        else:  # (3, 0): utf-8 field names; same layout as 2.0
            shape, _fortran, dtype = npformat._read_array_header(fh, version)  # noqa: SLF001
    return tuple(int(s) for s in shape), np.dtype(dtype)
