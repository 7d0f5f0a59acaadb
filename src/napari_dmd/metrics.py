"""Per-class segmentation metrics: Dice, IoU, surface distances and HD95 in physical units.

Label maps are integer arrays of any spatial shape (``(y, x)`` or ``(z, y, x)``), 0 = background, classes
``1 .. num_classes - 1``. Per-class arrays hold one value per reported class: classes ``1 .. C-1`` by default,
``0 .. C-1`` with ``include_background=True`` (MONAI's convention).

Conventions:
* a class absent from both prediction and reference gives NaN (excluded from means);
* a class present in only one gives Dice = IoU = 0 and HD95 = inf;
* surfaces are the mask's boundary voxels: in the mask, with a face-connected (4 in 2D, 6 in 3D) neighbour
  outside it, or on the array border;
* HD95 follows MONAI's ``compute_hausdorff_distance(..., percentile=95)`` by default (``convention="monai"``):
  the 95th percentile (linear interpolation) of each directed set of surface distances (pred -> reference,
  reference -> pred), the larger of the two. ``convention="pooled"`` is medpy's ``hd95``: the 95th
  percentile of both directions' distances pooled together. They differ most where one map has a small
  far-away part: a false island whose surface is 5-10 % of the prediction's moves the MONAI value to the
  island's distance and leaves the pooled one near 0. Every report names its convention
  (``hd95_convention``; :data:`HD95_CONVENTIONS` holds the descriptions). Units are those of ``spacing``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "HD95_CONVENTIONS",
    "dice_per_class",
    "evaluate",
    "hd95_label",
    "hd95_per_class",
    "iou_per_class",
    "summarize",
    "surface_distances",
    "surface_mask",
]


#: HD95 conventions: name -> what it computes (as printed in reports)
HD95_CONVENTIONS: dict[str, str] = {
    "monai": "MONAI: max of directed 95th percentiles",
    "pooled": "medpy: 95th percentile of both directions pooled",
}


def _check_convention(convention: str) -> str:
    if convention not in HD95_CONVENTIONS:
        raise ValueError(f"HD95 convention must be one of {', '.join(HD95_CONVENTIONS)}, got {convention!r}")
    return convention


def hd95_label(convention: str = "monai") -> str:
    """How a report names HD95 under ``convention``, e.g. ``HD95 (MONAI: max of directed 95th percentiles)``."""
    return f"HD95 ({HD95_CONVENTIONS[_check_convention(convention)]})"


def _check_labels(pred: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate two label maps of equal shape with values in [0, num_classes)."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {target.shape}")
    for name, arr in (("prediction", pred), ("reference", target)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"{name} labels must be integers, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"{name} labels out of range: values in [{arr.min()}, {arr.max()}], "
                f"expected 0 .. {num_classes - 1} for num_classes={num_classes}"
            )
    return pred, target


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(
            f"spacing must be {ndim} positive numbers (one per array axis), got {tuple(spacing)}"
        )
    return sp


def _confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = reference class, columns = predicted class."""
    idx = target.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _overlap_counts(
    pred: np.ndarray, target: np.ndarray, num_classes: int, include_background: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted counts, reference counts per reported class (float64 each)."""
    pred, target = _check_labels(pred, target, num_classes)
    cm = _confusion(pred, target, num_classes).astype(np.float64)
    start = 0 if include_background else 1
    tp = np.diag(cm)[start:]
    return tp, cm.sum(axis=0)[start:], cm.sum(axis=1)[start:]


def dice_per_class(
    pred: np.ndarray, target: np.ndarray, num_classes: int, *, include_background: bool = False
) -> np.ndarray:
    """Dice 2|P∩T| / (|P| + |T|) per class: (C-1,) float64, or (C,) with the background; NaN if absent."""
    tp, n_pred, n_target = _overlap_counts(pred, target, num_classes, include_background)
    denom = n_pred + n_target
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 2.0 * tp / denom, np.nan)


def iou_per_class(
    pred: np.ndarray, target: np.ndarray, num_classes: int, *, include_background: bool = False
) -> np.ndarray:
    """IoU |P∩T| / |P∪T| per class: (C-1,) float64, or (C,) with the background; NaN if absent."""
    tp, n_pred, n_target = _overlap_counts(pred, target, num_classes, include_background)
    union = n_pred + n_target - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask (any shape): in it, with a face neighbour outside or on the edge."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of ``a`` to the nearest of ``b``'s surface, and from ``b`` to ``a``.

    ``a`` and ``b`` are non-empty boolean masks of the same shape; ``spacing`` has one entry per axis.
    Returns two float64 1D arrays (lengths = surface sizes of ``a`` and ``b``) in units of ``spacing``.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    sp = _check_spacing(spacing, a.ndim)
    # crop to the joint bounding box grown by one voxel: the surfaces and the Euclidean distances between
    # them are unchanged (every surface voxel lies in the box), and large volumes cost only the box
    nz = np.nonzero(a | b)
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in nz)
    surf_a, surf_b = surface_mask(a[box]), surface_mask(b[box])
    dist_to_b = ndimage.distance_transform_edt(~surf_b, sampling=sp)
    dist_to_a = ndimage.distance_transform_edt(~surf_a, sampling=sp)
    return dist_to_b[surf_a].astype(np.float64), dist_to_a[surf_b].astype(np.float64)


def hd95_per_class(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    *,
    include_background: bool = False,
    convention: str = "monai",
) -> np.ndarray:
    """95th-percentile Hausdorff distance per class, (C-1,) or (C,) float64, units of ``spacing``.

    ``convention="monai"`` (default): max over the two directions of each direction's 95th percentile, as
    ``monai.metrics.compute_hausdorff_distance(..., percentile=95)``; ``"pooled"``: the 95th percentile of
    both directions' distances together, as medpy's ``hd95``. NaN if a class is absent from both maps, inf
    if present in only one.
    """
    _check_convention(convention)
    pred, target = _check_labels(pred, target, num_classes)
    sp = _check_spacing(spacing, pred.ndim)
    start = 0 if include_background else 1
    out = np.full(num_classes - start, np.nan, dtype=np.float64)
    for i, k in enumerate(range(start, num_classes)):
        a, b = pred == k, target == k
        has_a, has_b = bool(a.any()), bool(b.any())
        if not has_a and not has_b:
            continue
        if has_a != has_b:
            out[i] = np.inf
            continue
        d_ab, d_ba = surface_distances(a, b, sp)
        if convention == "pooled":
            out[i] = float(np.percentile(np.concatenate([d_ab, d_ba]), 95))
        else:
            out[i] = max(float(np.percentile(d_ab, 95)), float(np.percentile(d_ba, 95)))
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN values; NaN (without a warning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values)
    return float(values[keep].mean()) if keep.any() else float("nan")


def _finite_mean(values: np.ndarray) -> float:
    """Mean over finite values; NaN when there are none."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    return float(values[keep].mean()) if keep.any() else float("nan")


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """Names of the foreground classes 1 .. C-1 (``class_names`` may include the background or not)."""
    if class_names is None:
        return [f"class {k}" for k in range(1, num_classes)]
    names = [str(n) for n in class_names]
    if len(names) == num_classes:
        return names[1:]
    if len(names) == num_classes - 1:
        return names
    raise ValueError(
        f"class_names has {len(names)} entries; expected {num_classes} (with background) "
        f"or {num_classes - 1} (foreground only)"
    )


def evaluate(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    hd95_convention: str = "monai",
) -> dict[str, Any]:
    """All foreground metrics of one case.

    Returns a dict: ``classes`` (1 .. C-1), ``class_names``, per-class lists ``dice``, ``iou``, ``hd95``
    (NaN where absent from both, hd95 inf where present in one), ``mean_dice`` and ``mean_iou`` (NaN-aware
    means), ``mean_hd95`` (mean over finite values), ``hd95_convention`` (see :func:`hd95_per_class`),
    ``spacing``.
    """
    pred, target = _check_labels(pred, target, num_classes)
    sp = _check_spacing(spacing, pred.ndim)
    names = _class_names(class_names, num_classes)
    dice = dice_per_class(pred, target, num_classes)
    iou = iou_per_class(pred, target, num_classes)
    hd95 = hd95_per_class(pred, target, num_classes, sp, convention=hd95_convention)
    return {
        "classes": list(range(1, num_classes)),
        "class_names": names,
        "dice": [float(v) for v in dice],
        "iou": [float(v) for v in iou],
        "hd95": [float(v) for v in hd95],
        "mean_dice": _nanmean(dice),
        "mean_iou": _nanmean(iou),
        "mean_hd95": _finite_mean(hd95),
        "hd95_convention": hd95_convention,
        "spacing": list(sp),
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate :func:`evaluate` results over cases.

    Returns ``n_cases``, ``classes``, ``class_names``; per class ``dice_mean``/``dice_std``,
    ``iou_mean``/``iou_std`` (over cases where the class is not NaN), ``hd95_mean``/``hd95_std`` (over finite
    values) and ``hd95_n_inf`` (cases where the class was missed or invented); ``mean_dice``/``mean_dice_std``
    and ``mean_hd95`` over cases' means; ``hd95_convention`` as the cases' (results mixing conventions are
    refused). Standard deviations are population ones (ddof=0); NaN where no value.
    """
    if not results:
        raise ValueError("summarize() needs at least one evaluated case")
    classes = results[0]["classes"]
    for i, r in enumerate(results):
        if r["classes"] != classes:
            raise ValueError(f"case {i} has classes {r['classes']}, the first case {classes}")
    conventions = {r.get("hd95_convention", "monai") for r in results}
    if len(conventions) > 1:
        raise ValueError(f"cases measured HD95 by different conventions ({', '.join(sorted(conventions))}); "
                         "evaluate them all with one")

    def table(key: str) -> np.ndarray:  # (cases, classes)
        return np.array([r[key] for r in results], dtype=np.float64).reshape(len(results), len(classes))

    def col_stats(values: np.ndarray, finite_only: bool) -> tuple[list[float], list[float]]:
        means, stds = [], []
        for col in values.T:
            keep = col[np.isfinite(col)] if finite_only else col[~np.isnan(col)]
            means.append(float(keep.mean()) if keep.size else float("nan"))
            stds.append(float(keep.std()) if keep.size else float("nan"))
        return means, stds

    out: dict[str, Any] = {
        "n_cases": len(results),
        "classes": list(classes),
        "class_names": list(results[0].get("class_names", [f"class {k}" for k in classes])),
        "hd95_convention": conventions.pop(),
    }
    for key in ("dice", "iou"):
        out[f"{key}_mean"], out[f"{key}_std"] = col_stats(table(key), finite_only=False)
    hd = table("hd95")
    out["hd95_mean"], out["hd95_std"] = col_stats(hd, finite_only=True)
    out["hd95_n_inf"] = [int(n) for n in np.isinf(hd).sum(axis=0)]
    case_dice = np.array([r["mean_dice"] for r in results], dtype=np.float64)
    kept = case_dice[~np.isnan(case_dice)]
    out["mean_dice"] = float(kept.mean()) if kept.size else float("nan")
    out["mean_dice_std"] = float(kept.std()) if kept.size else float("nan")
    out["mean_hd95"] = _finite_mean(np.array([r["mean_hd95"] for r in results], dtype=np.float64))
    return out
