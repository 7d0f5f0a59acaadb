"""Where to look: rank slices (3D) or tiles (2D) of an image by teacher–student disagreement and by the
student's uncertainty (normalized entropy of its class probabilities).

NumPy only; the Review dock and ``napari-dmd bench corrections`` both use :func:`rank_slices`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["IGNORE", "Region", "class_balanced_weights", "disagreement_map", "entropy_map", "rank_slices",
           "region_slices"]

IGNORE = 255  # label value meaning "no label here" (as in the engine)
TILE = 64  # side of the windows ranked in a 2D image


@dataclass(frozen=True)
class Region:
    """One ranked region: a slice of a volume, or a tile of a 2D image.

    ``axis``/``index``: the slice ``index`` along ``axis``; for a 2D image ``axis`` is -1 and ``index`` the tile
    number (row-major over the tile grid). ``disagreement``: fraction of the region's voxels where teacher and
    student labels differ. ``uncertainty``: mean normalized entropy (0..1) of the student's probabilities there
    (0 without probabilities). ``score``: what the ranking sorts by (descending). ``center``: full-array
    coordinates to centre the view on (centroid of the disagreement; of the high-entropy voxels when the labels
    agree; the region's centre if neither). ``bounds``: ``(start, stop)`` per array axis.
    """

    axis: int
    index: int
    disagreement: float
    uncertainty: float
    score: float
    center: tuple[float, ...]
    bounds: tuple[tuple[int, int], ...] = ()
    voxels: int = 0
    disagreeing: int = 0


def entropy_map(probs: np.ndarray) -> np.ndarray:
    """Per-voxel entropy of class probabilities ``(C, *S)`` divided by ``log(C)``: float32 ``(*S)`` in [0, 1].

    Probabilities are clipped to [0, 1] and renormalized over the class axis (a sum of 0 reads as uniform).
    """
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim < 2:
        raise ValueError(f"probabilities must be (C, *spatial), got shape {p.shape}")
    c = p.shape[0]
    if c < 2:
        return np.zeros(p.shape[1:], np.float32)
    p = np.clip(p, 0.0, 1.0)
    total = p.sum(0, keepdims=True)
    p = np.where(total > 0, p / np.maximum(total, 1e-12), 1.0 / c)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.where(p > 0, np.log(p), 0.0)).sum(0)
    return np.clip(h / math.log(c), 0.0, 1.0).astype(np.float32)


def disagreement_map(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """Boolean map of where the teacher's and the student's labels differ."""
    t, s = np.asarray(teacher), np.asarray(student)
    if t.shape != s.shape:
        raise ValueError(f"teacher labels {t.shape} and student labels {s.shape} differ in shape")
    return t != s


def class_balanced_weights(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """Per-voxel weight of a disagreement when every foreground class counts alike: float32, shape of the labels.

    A voxel the teacher calls ``t`` and the student ``s`` (``t != s``) weighs ``1 / |T_t | S_t|`` for a foreground
    ``t`` plus ``1 / |T_s | S_s|`` for a foreground ``s`` (``T_k | S_k``: the voxels either calls ``k``), divided by
    the number of foreground classes either finds; agreeing voxels weigh 0. A region's sum is then the mean over
    classes of the share of each class's extent mismatched there, so a class the student misses entirely outweighs
    a large organ's uneven border. The whole image sums to the mean over classes of ``1 - IoU``.
    """
    t, s = np.asarray(teacher), np.asarray(student)
    dis = disagreement_map(t, s)
    w = np.zeros(t.shape, np.float32)
    classes = [int(k) for k in np.union1d(np.unique(t), np.unique(s)) if k != 0 and k != IGNORE]
    for k in classes:
        union = int(np.count_nonzero((t == k) | (s == k)))
        w[dis & ((t == k) ^ (s == k))] += 1.0 / union
    return w / max(1, len(classes))


def region_slices(region: Region, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The index expression selecting ``region`` from a full array of ``shape``."""
    if region.bounds:
        return tuple(slice(a, b) for a, b in region.bounds)
    out = [slice(None)] * len(shape)
    out[region.axis] = slice(region.index, region.index + 1)
    return tuple(out)


def _centroid(mask: np.ndarray, offset: tuple[int, ...]) -> tuple[float, ...] | None:
    """Centroid of ``mask``'s True voxels in full-array coordinates, or None when there are none."""
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        return None
    return tuple(float(i.mean()) + o for i, o in zip(idx, offset))


def _region(axis: int, index: int, bounds: tuple[tuple[int, int], ...], dis: np.ndarray, ent: np.ndarray | None,
            w: float, balanced: float | None = None) -> Region:
    """Score one region from its disagreement mask and entropy (both cut to the region); ``balanced``, when given,
    replaces the disagreement fraction in the score (:func:`rank_slices`)."""
    n = int(dis.size)
    k = int(dis.sum())
    frac = k / n if n else 0.0
    unc = float(ent.mean()) if ent is not None and ent.size else 0.0
    d = frac if balanced is None else balanced
    score = d if ent is None else (1.0 - w) * d + w * unc
    offset = tuple(a for a, _ in bounds)
    center = _centroid(dis, offset)
    if center is None and ent is not None and unc > 0:
        center = _centroid(ent >= max(0.5, float(ent.max()) * 0.5), offset)
    if center is None:
        center = tuple((a + b - 1) / 2.0 for a, b in bounds)
    return Region(axis=axis, index=index, disagreement=frac, uncertainty=unc, score=float(score),
                  center=center, bounds=bounds, voxels=n, disagreeing=k)


def rank_slices(teacher: np.ndarray, student: np.ndarray, probs: np.ndarray | None = None, *, axis: int = 0,
                uncertainty_weight: float = 0.5, top_k: int | None = None, tile: int = TILE,
                balance_classes: bool = False) -> list[Region]:
    """Regions of an image ranked by ``score`` (descending; ties: lower index first).

    ``teacher``/``student``: label maps of one image; ``probs``: the student's class probabilities
    ``(C, *shape)`` or None. ``score = (1 - w) * disagreement + w * uncertainty`` with ``w =
    uncertainty_weight``; without ``probs`` the score is the disagreement alone. 3D arrays: one region per slice
    along ``axis``. 2D arrays: ``tile`` x ``tile`` windows (edge tiles smaller), ``axis = -1``, ``index`` = tile
    number in row-major order over the tile grid, ``center`` inside the tile. ``top_k`` keeps the first k.
    ``balance_classes``: the disagreement term of the score weighs every foreground class alike
    (:func:`class_balanced_weights` summed over the region, times the number of regions so that its mean over the
    regions is the mean over classes of ``1 - IoU``), so the slices where a small class is lost come first.
    """
    dis = disagreement_map(teacher, student)
    weights = class_balanced_weights(teacher, student) if balance_classes else None
    ent = None
    if probs is not None:
        p = np.asarray(probs)
        if p.shape[1:] != dis.shape:
            raise ValueError(f"probabilities of shape {p.shape} do not match labels of shape {dis.shape} "
                             f"(expected (C, {', '.join(map(str, dis.shape))}))")
        ent = entropy_map(p)
    if not 0.0 <= uncertainty_weight <= 1.0:
        raise ValueError(f"uncertainty_weight must be in [0, 1], got {uncertainty_weight}")
    regions: list[Region] = []
    cuts: list[tuple[int, int, tuple[tuple[int, int], ...], tuple[slice, ...]]] = []  # (axis, index, bounds, cut)
    if dis.ndim == 3:
        ax = axis % 3
        for i in range(dis.shape[ax]):
            sl = [slice(None)] * 3
            sl[ax] = slice(i, i + 1)
            bounds = tuple((i, i + 1) if a == ax else (0, dis.shape[a]) for a in range(3))
            cuts.append((ax, i, bounds, tuple(sl)))
    elif dis.ndim == 2:
        if tile < 1:
            raise ValueError(f"tile must be >= 1, got {tile}")
        ny, nx = -(-dis.shape[0] // tile), -(-dis.shape[1] // tile)
        for ty in range(ny):
            for tx in range(nx):
                y0, x0 = ty * tile, tx * tile
                y1, x1 = min(y0 + tile, dis.shape[0]), min(x0 + tile, dis.shape[1])
                cuts.append((-1, ty * nx + tx, ((y0, y1), (x0, x1)), (slice(y0, y1), slice(x0, x1))))
    else:
        raise ValueError(f"labels must be 2D or 3D, got shape {dis.shape}")
    for axis_, index, bounds, cut in cuts:
        balanced = None if weights is None else float(weights[cut].sum()) * len(cuts)
        regions.append(_region(axis_, index, bounds, dis[cut], None if ent is None else ent[cut],
                               uncertainty_weight, balanced))
    regions.sort(key=lambda r: (-r.score, r.index))
    return regions if top_k is None else regions[:max(0, int(top_k))]
