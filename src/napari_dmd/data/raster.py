"""PNG/JPEG reading and grey-from-RGB conversion (used by :mod:`napari_dmd.data.io`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_dmd.data.errors import DataError
from napari_dmd.data.limits import check_size

__all__ = ["gray_from_channels", "read_pil"]


def gray_from_channels(array: np.ndarray, where: str, tol: float) -> np.ndarray:
    """Gray image from a (..., 3|4) RGB(A) array whose colour channels are equal (alpha ignored)."""
    if array.shape[-1] not in (3, 4):
        if array.shape[-1] == 2:  # gray + alpha
            return array[..., 0]
        raise DataError(f"{where}: image with {array.shape[-1]} colour samples per pixel is not supported")
    rgb = array[..., :3]
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    if max(np.abs(r - g).max(initial=0), np.abs(r - b).max(initial=0)) > tol:
        raise DataError(f"{where}: colour (RGB) image is not supported; convert it to grayscale")
    return rgb[..., 0]


def read_pil(p: Path) -> np.ndarray:
    """PNG/JPEG via PIL as a grayscale array; RGB with equal channels is accepted, true colour is refused.

    The size in the file's header is checked against the voxel limit before any pixel is decoded.
    """
    from PIL import Image

    where = str(p)
    tol = 3 if p.suffix.lower() in (".jpg", ".jpeg") else 0  # JPEG compression perturbs equal channels
    with Image.open(str(p)) as im:
        frames = getattr(im, "n_frames", 1)
        width, height = im.size
        check_size((frames, height, width) if frames > 1 else (height, width), np.uint8, where)
        if frames > 1:
            raise DataError(f"{where}: multi-frame image with {frames} frames is not supported")
        im.load()
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA")
            mode = "RGBA"
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
            mode = "RGB"
        array = np.asarray(im)
    if mode == "1":
        array = array.astype(np.uint8)
    if array.ndim == 3:
        array = gray_from_channels(array, where, tol=tol)
    return np.array(array)
