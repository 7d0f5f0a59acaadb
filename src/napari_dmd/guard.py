"""Model–data guard: does an image look like the data a model was trained on? (Qt-free.)

A checkpoint written by the engine records a summary of its training data (:func:`data_summary`: spatial
dims, median spacing, the raw intensity percentiles 1/50/99 before normalization, number of cases). Before a
model segments an image, or a teacher teaches on images, :func:`check_image` compares the image with that
summary and returns one plain warning naming both when they disagree — a warning, not a refusal: the caller
shows it and proceeds. Checkpoints written before the summary existed are checked only on what they record
(spatial dims, spacing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["SPACING_RATIO", "check_entry", "check_image", "data_summary", "describe_data", "intensity_percentiles"]

SPACING_RATIO = 2.0  # an axis whose spacing differs by more than this factor from the training data's disagrees
SAMPLE_VOXELS = 1 << 20  # percentiles are taken on at most about this many voxels (strided), so big volumes are quick


def _sample(image: Any, voxels: int = SAMPLE_VOXELS) -> np.ndarray:
    """A strided sample of ``image`` (NumPy or dask array) of at most about ``voxels`` voxels, as float64."""
    shape = tuple(int(s) for s in image.shape)
    size = int(np.prod(shape)) if shape else 1
    step = max(1, int(np.ceil((size / voxels) ** (1.0 / max(1, len(shape))))))
    sub = image[tuple(slice(None, None, step) for _ in shape)] if step > 1 else image
    values = np.asarray(sub, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def intensity_percentiles(images: Iterable[Any]) -> list[float] | None:
    """The 1st, 50th and 99th percentiles of the raw intensities of ``images`` together (None if no values)."""
    parts = [_sample(im, max(1, SAMPLE_VOXELS // 4)) for im in images]
    values = np.concatenate(parts) if parts else np.zeros(0)
    if values.size == 0:
        return None
    return [float(v) for v in np.percentile(values, [1.0, 50.0, 99.0])]


def data_summary(cases: Sequence[Any], spatial_dims: int) -> dict[str, Any]:
    """What a model is trained on, for its checkpoint: spatial dims, median spacing (of the trained axes), raw
    intensity percentiles 1/50/99 before normalization, number of cases. ``cases`` have image and spacing."""
    spacing = np.median(np.array([tuple(c.spacing)[-spatial_dims:] for c in cases], dtype=float), axis=0) \
        if cases else None
    return {
        "spatial_dims": int(spatial_dims),
        "image_dims": sorted({int(np.asarray(c.image).ndim) for c in cases}),
        "spacing": None if spacing is None else [float(s) for s in spacing],
        "intensity_percentiles": intensity_percentiles([c.image for c in cases]),
        "cases": len(cases),
    }


def _fmt_spacing(spacing: Sequence[float]) -> str:
    return " x ".join(f"{s:g}" for s in spacing)


def _fmt_num(v: float) -> str:
    return f"{v:.3g}"


def describe_data(summary: dict[str, Any] | None, spatial_dims: int, spacing: Sequence[float] | None) -> str:
    """How the training data is described in a warning, e.g. "2D images with spacing 1 x 1 and intensities
    1st/50th/99th percentile 0.1 / 1 / 3.2 (12 cases)"."""
    summary = summary or {}
    dims = summary.get("image_dims") or [spatial_dims]
    kind = " and ".join("2D images" if d == 2 else "3D volumes" for d in dims)
    if spatial_dims == 2 and 3 in dims:
        kind += " (as 2D slices)"
    parts = [kind]
    sp = summary.get("spacing") or spacing
    if sp:
        parts.append(f"with spacing {_fmt_spacing(sp)}")
    p = summary.get("intensity_percentiles")
    if p:
        parts.append(f"and intensities ~{_fmt_num(p[1])} (1st-99th percentile {_fmt_num(p[0])} to {_fmt_num(p[2])})")
    n = summary.get("cases")
    text = " ".join(parts)
    return f"{text} ({n} cases)" if n else text


def _intensity_disagrees(train: Sequence[float], image: Sequence[float]) -> bool:
    """True when the image's intensity range is far from the training data's (a raw-intensity model only)."""
    t_lo, t_mid, t_hi = train
    i_lo, i_mid, i_hi = image
    t_range = max(t_hi - t_lo, 1e-6)
    i_range = max(i_hi - i_lo, 1e-6)
    if i_range / t_range > 4.0 or t_range / i_range > 4.0:
        return True
    return not (t_lo - t_range <= i_mid <= t_hi + t_range)


def check_image(model_name: str, image: Any, *, image_name: str, image_spacing: Sequence[float] | None,
                spatial_dims: int, model_spacing: Sequence[float] | None = None,
                summary: dict[str, Any] | None = None, normalization: str = "zscore") -> str | None:
    """A one-line warning when ``image`` disagrees with what ``model_name`` was trained on, else None.

    Compared: dimensions (a 3D model on a 2D image; a 2D model runs slice by slice on a 3D volume and is
    warned only when its training data held no 3D volumes and something else disagrees too), spacing (any
    trained axis off by more than :data:`SPACING_RATIO`), and — for a model fed raw intensities
    (``normalization="none"``) — the intensity percentiles. Without a ``summary`` only dims and spacing count.
    """
    summary = summary or {}
    ndim = len(image.shape)
    reasons: list[str] = []
    if ndim < spatial_dims:
        reasons.append(f"it is {ndim}D but the model is {spatial_dims}D")
    train_sp = summary.get("spacing") or model_spacing
    img_sp = list(image_spacing)[-spatial_dims:] if image_spacing is not None else None
    if train_sp and img_sp and len(train_sp) == len(img_sp):
        ratios = [max(a, b) / max(min(a, b), 1e-9) for a, b in zip(train_sp, img_sp, strict=True)]
        if max(ratios) > SPACING_RATIO:
            reasons.append(f"its spacing {_fmt_spacing(img_sp)} differs from {_fmt_spacing(train_sp)}")
    train_p = summary.get("intensity_percentiles")
    img_p = None
    if train_p and normalization == "none":
        img_p = intensity_percentiles([image])
        if img_p is not None and _intensity_disagrees(train_p, img_p):
            reasons.append(f"its intensities (~{_fmt_num(img_p[1])}, 1st-99th percentile {_fmt_num(img_p[0])} to "
                           f"{_fmt_num(img_p[2])}) are in a very different range")
    if not reasons:
        return None
    dims = summary.get("image_dims") or [spatial_dims]
    if ndim == 3 and spatial_dims == 2 and 3 not in dims:
        reasons.insert(0, "the 2D model runs on it slice by slice")
    spacing_text = f" with spacing {_fmt_spacing(image_spacing)}" if image_spacing is not None else ""
    return (f"{model_name} was trained on {describe_data(summary, spatial_dims, model_spacing)}; "
            f"{image_name!r} is a {ndim}D image{spacing_text}: " + "; ".join(reasons)
            + " — its labels may be meaningless")


def check_entry(entry: Any, image: Any, *, image_name: str, image_spacing: Sequence[float] | None) -> str | None:
    """:func:`check_image` for a registry entry (:class:`napari_dmd.registry.ModelEntry`)."""
    seg = entry.segmenter
    info = getattr(entry, "info", None) or {}
    return check_image(entry.name, image, image_name=image_name, image_spacing=image_spacing,
                       spatial_dims=int(seg.spatial_dims), model_spacing=info.get("spacing"),
                       summary=info.get("train_data"), normalization=str(seg.normalization or "zscore"))
