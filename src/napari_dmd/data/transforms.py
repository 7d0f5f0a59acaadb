"""Intensity normalization and patch augmentation (NumPy only).

Arrays hold spatial axes only: ``(z, y, x)`` or ``(y, x)`` (see ``docs/architecture.md``).
NumPy rather than MONAI's transforms: measured 5-21x faster per patch than the equivalent MONAI chain, and
``normalize`` (once per case) faster on small volumes, tied on large ones, with outliers left out of the
statistics, which ``NormalizeIntensity`` cannot do (``benchmarks/bench_data_pipeline.py``;
``docs/architecture.md``, "Own code vs the field's libraries (measured)").
"""

from __future__ import annotations

import numpy as np

NORMALIZATION_SCHEMES = ("zscore", "zscore-fg", "ct", "none")

_EPS = 1e-8


def _zscore(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Z-score ``image`` in place with the mean/std of ``values`` (two passes, float64 sums of float32 terms);
    a constant input gives zeros."""
    n = values.size
    mean = float(np.add.reduce(values, axis=None, dtype=np.float64)) / n if n else 0.0
    if n:
        dev = values - np.float32(mean)
        np.multiply(dev, dev, out=dev)
        std = (float(np.add.reduce(dev, axis=None, dtype=np.float64)) / n) ** 0.5
    else:
        std = 0.0
    np.subtract(image, np.float32(mean), out=image)
    if std > _EPS:
        np.multiply(image, np.float32(1.0 / std), out=image)
    else:
        image[...] = 0.0
    return image


_TAIL = 1e-3  # fraction of voxels on each side left out of the outlier band's reference range
_MARGIN = 4.0  # band = reference range widened by this many widths on each side
_SAMPLE = 1 << 17  # voxels (evenly strided) used to find the band in larger volumes: 1 ms, not 2-20
_PRESELECT_STEP = 8  # every 8th value guesses thresholds beyond which both tails' order statistics lie


def _tail_order_statistics(flat: np.ndarray, k: int) -> tuple[float, float]:
    """The ``k``-th smallest and ``k``-th largest (0-based) of the finite values ``flat``, exactly as
    ``np.partition(flat, (k, n - 1 - k))`` gives them, for a third of its time on a volume of 60 k voxels: a
    strided sample's 4x wider tails give thresholds ``t_lo``/``t_hi``; when more than ``k`` values lie at or
    below ``t_lo`` the ``k``-th smallest is among them (likewise above ``t_hi``), so only those are partitioned.
    A sample that misses (never for a real scan, possible for a contrived pattern) falls back to the whole."""
    n = flat.size
    if n >= 64 * _PRESELECT_STEP:
        sample = flat[::_PRESELECT_STEP]
        m = sample.size
        j = int(np.ceil(m * 4 * _TAIL))  # m >= 64, so j < m // 2: the two tails never meet
        guess = np.partition(sample, (j, m - 1 - j))
        low, high = flat[flat <= guess[j]], flat[flat >= guess[m - 1 - j]]
        if low.size > k and high.size > k:
            return float(np.partition(low, k)[k]), float(np.partition(high, high.size - 1 - k)[high.size - 1 - k])
    part = np.partition(flat, (k, n - 1 - k))
    return float(part[k]), float(part[n - 1 - k])


def outlier_band(image: np.ndarray) -> tuple[float, float] | None:
    """Intensity band outside which a voxel is an outlier, or None when the image gives no usable range.

    The reference range ``[lo, hi]`` spans the 0.1 % to 99.9 % order statistics; the band widens it by 4 widths
    on each side. Every scan of the three datasets in ``docs/results.md`` lies inside it (the farthest voxel,
    in MSD hippocampus, lies 2.4 widths out), while a corrupt voxel (3e38, a stray 65535) lies far outside.
    A range of zero width (a sparse image, mostly one value) gives None.
    """
    flat = image.reshape(-1)
    if flat.size > _SAMPLE:
        flat = flat[:: flat.size // _SAMPLE]
    n = flat.size
    k = max(1, int(np.ceil(n * _TAIL)))
    if n < 2 * k + 2:
        return None
    lo, hi = _tail_order_statistics(flat, k)
    width = hi - lo
    if not (np.isfinite(width) and width > 0):
        return None
    return lo - _MARGIN * width, hi + _MARGIN * width


def _robust_values(img: np.ndarray) -> np.ndarray:
    """Voxels to take statistics from: outliers (see :func:`outlier_band`) left out and clipped in ``img``."""
    band = outlier_band(img)
    if band is None or (img.min() >= band[0] and img.max() <= band[1]):
        return img
    lo, hi = band
    inside = img[(img >= lo) & (img <= hi)]
    np.clip(img, lo, hi, out=img)
    return inside


def normalize(
    image: np.ndarray, scheme: str = "zscore", *, clip: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Normalize one case's intensities; returns a new float32 array of the same shape.

    Schemes:
      * ``"zscore"``: mean/std over all voxels.
      * ``"zscore-fg"``: mean/std of voxels above the 10th percentile (MRI foreground), applied to all voxels.
      * ``"ct"``: clip to the ``clip`` percentiles (low, high), then z-score.
      * ``"none"``: cast to float32 only.
    ``zscore`` and ``zscore-fg`` leave extreme outliers (:func:`outlier_band`) out of the statistics and clip
    them to the band, so one corrupt voxel cannot flatten the image; real scans are unchanged by this.
    A constant image gives zeros (never a division by zero).
    """
    if scheme not in NORMALIZATION_SCHEMES:
        raise ValueError(f"unknown normalization scheme {scheme!r}; expected one of {NORMALIZATION_SCHEMES}")
    img = np.array(image, dtype=np.float32, copy=True)
    if scheme == "none":
        return img
    if scheme == "zscore":
        return _zscore(img, _robust_values(img))
    if scheme == "zscore-fg":
        values = _robust_values(img)
        threshold = np.percentile(values, 10.0)
        fg = values[values > threshold]
        if fg.size == 0:  # (near-)constant image: fall back to all voxels
            fg = values
        return _zscore(img, fg)
    lo_q, hi_q = clip
    if not 0.0 <= lo_q <= hi_q <= 100.0:
        raise ValueError(f"clip percentiles must satisfy 0 <= low <= high <= 100, got {clip}")
    lo, hi = np.percentile(img, [lo_q, hi_q])
    np.clip(img, lo, hi, out=img)
    return _zscore(img, img)


def augment(
    image: np.ndarray,
    label: np.ndarray | None,
    rng: np.random.Generator,
    *,
    flip: bool = True,
    rot90: bool = True,
    intensity: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Randomly augment a spatial float32 patch and its label (same spatial shape, or ``None``).

    Flips along every spatial axis (p=0.5 each); rot90 (k in 0..3) in the last two axes when those
    sizes are equal; intensity scale U(0.9, 1.1) and shift U(-0.1, 0.1), Gaussian noise with
    sigma U(0, 0.05) with p=0.15. The label gets the same spatial transform (no interpolation).
    All randomness comes from ``rng``; the number of draws depends only on the flags and shape.
    """
    if label is not None and label.shape != image.shape:
        raise ValueError(f"label shape {label.shape} differs from image shape {image.shape}")
    img = image
    lab = label
    if flip:
        for axis in range(img.ndim):
            if rng.random() < 0.5:
                img = np.flip(img, axis=axis)
                if lab is not None:
                    lab = np.flip(lab, axis=axis)
    if rot90 and img.ndim >= 2 and img.shape[-1] == img.shape[-2]:
        k = int(rng.integers(4))
        if k:
            img = np.rot90(img, k=k, axes=(-2, -1))
            if lab is not None:
                lab = np.rot90(lab, k=k, axes=(-2, -1))
    img = np.ascontiguousarray(img, dtype=np.float32)
    if img is image:
        img = img.copy()
    if intensity:
        scale = rng.uniform(0.9, 1.1)
        shift = rng.uniform(-0.1, 0.1)
        img *= np.float32(scale)
        img += np.float32(shift)
        if rng.random() < 0.15:
            sigma = rng.uniform(0.0, 0.05)
            img += rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
    if lab is not None:
        lab = np.ascontiguousarray(lab)
    return img, lab


ZOOM_RANGE = (0.8, 1.25)  # spatial augmentation: in-plane scale factor, drawn log-uniformly
MAX_ANGLE_DEG = 30.0  # spatial augmentation: in-plane rotation, drawn uniformly in +- this


def zoom_rotate(
    image: np.ndarray,
    label: np.ndarray | None,
    rng: np.random.Generator,
    *,
    zoom: tuple[float, float] = ZOOM_RANGE,
    max_angle_deg: float = MAX_ANGLE_DEG,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Randomly zoom and rotate a patch in its last two axes about the patch centre (every slice of a 3D patch
    alike). The image is interpolated linearly, the label by nearest neighbour; what comes from outside the patch
    is 0 in both, as :func:`napari_dmd.data.sampling.crop_pad` pads. Two draws from ``rng``.
    """
    from scipy.ndimage import affine_transform

    s = float(np.exp(rng.uniform(np.log(zoom[0]), np.log(zoom[1]))))
    a = float(np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg)))
    # output (y, x) -> input (y, x): rotate by a and shrink by s (s > 1 magnifies the content)
    m2 = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) / s
    nd = image.ndim
    matrix = np.eye(nd)
    matrix[-2:, -2:] = m2
    centre = (np.asarray(image.shape, dtype=float) - 1) / 2
    offset = centre - matrix @ centre
    img = affine_transform(np.asarray(image, dtype=np.float32), matrix, offset=offset, order=1, mode="constant",
                           cval=0.0, output=np.float32)
    lab = None
    if label is not None:
        lab = affine_transform(np.asarray(label), matrix, offset=offset, order=0, mode="constant", cval=0,
                               output=np.asarray(label).dtype)
    return img, lab

