"""In-plane down-sampling of a case by an integer factor, as the committed CHAOS teacher saw its data.

The image is block-averaged (``f`` x ``f`` blocks of the last two axes, as float32), the label map keeps every
``f``-th voxel starting at ``f // 2`` (a strided pick: label values are never mixed), edges that do not fill a
block are cut, and the in-plane spacing (and the affine's in-plane columns) grow by ``f``. The slice axis of a 3D
case is left alone. The ablation (``benchmarks/ablation_specs.py``) down-samples CHAOS and HC18 with it too.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .case import Case

__all__ = ["downsample_arrays", "downsample_case"]


def downsample_arrays(image: np.ndarray, label: np.ndarray | None, factor: int
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """(image block mean, label strided pick) of the last two axes by ``factor`` (>= 1; 1 returns them as given)."""
    f = int(factor)
    if f < 1:
        raise ValueError(f"down-sampling factor must be a whole number >= 1, got {factor}")
    if f == 1:
        return image, label
    if min(image.shape[-2:]) < f:
        raise ValueError(f"an image of in-plane size {tuple(image.shape[-2:])} is smaller than the down-sampling "
                         f"factor {f}")
    y, x = (image.shape[-2] // f) * f, (image.shape[-1] // f) * f
    im = image[..., :y, :x].astype(np.float32)
    im = im.reshape(*im.shape[:-2], y // f, f, x // f, f).mean(axis=(-3, -1))
    lab = None if label is None else np.ascontiguousarray(label[..., f // 2:y:f, f // 2:x:f])
    return im, lab


def downsample_case(case: Case, factor: int) -> Case:
    """A new :class:`Case` down-sampled in-plane by ``factor`` (module docstring); ``case`` is left as it was."""
    if int(factor) == 1:
        return case
    image, label = downsample_arrays(case.image, case.label, factor)
    f = float(factor)
    spacing = tuple(case.spacing[:-2]) + tuple(s * f for s in case.spacing[-2:])
    affine = np.array(case.affine, dtype=float, copy=True)
    if affine.shape == (4, 4):  # NIfTI (x, y, z) columns: array axis -1 is x, -2 is y
        centre = (f - 1) / 2  # the first block's centre, in the old voxels
        affine[:3, 3] += affine[:3, 0] * centre + affine[:3, 1] * centre
        affine[:3, :2] *= f
    return dataclasses.replace(case, image=image, label=label, spacing=spacing, affine=affine)
