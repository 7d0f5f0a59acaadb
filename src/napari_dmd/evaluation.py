"""One evaluator: labelled cases -> per-class metrics and time per case, for any model or teacher.

Used by ``napari-dmd evaluate``, the export model card, the demo's compression report and the benchmarks,
so every report computes Dice, HD95 and latency the same way.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import dice_per_class, evaluate, summarize
from .segment import Segmenter


def teacher_segmenter(teacher: Any, *, fallback_patch: Sequence[int] | None = None, device: str = "cpu",
                      name: str | None = None) -> Segmenter:
    """A :class:`Segmenter` for a Teacher of any format, with its own patch size, else ``fallback_patch``.

    The fallback, when neither is known, is 64 per axis in 2D and 32 in 3D (as for checkpoints without one).
    """
    dims = int(teacher.spatial_dims)
    patch = teacher.patch_size or fallback_patch or [64 if dims == 2 else 32] * dims
    teacher.to(device)
    return Segmenter(teacher, teacher.num_classes, dims, [int(p) for p in list(patch)[-dims:]],
                     teacher.normalization, teacher.class_names, str(device),
                     name=name or Path(str(teacher.source)).name)


def evaluate_cases(seg: Segmenter, cases: Sequence[Any], *, hd95: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Predict every labelled case and measure it.

    Returns :func:`napari_dmd.metrics.summarize`'s fields (per-class Dice/IoU/HD95 means and spreads over
    cases; with ``hd95=False`` only Dice) plus ``per_case`` (each case's mean foreground Dice),
    ``dice_per_class`` (per-class mean over cases), ``mean_dice``, ``seconds_per_case`` (mean) and
    ``median_seconds_per_case``, ``parameters`` and ``name``.
    """
    labelled = [c for c in cases if c.label is not None]
    if not labelled:
        raise ValueError("evaluate_cases needs at least one labelled case")
    results, secs = [], []
    for i, c in enumerate(labelled):
        t0 = time.perf_counter()
        pred = seg(c.image, source=getattr(c, "image_path", None) or c.name)
        secs.append(time.perf_counter() - t0)
        if hd95:
            results.append(evaluate(pred, c.label, seg.num_classes, c.spacing, class_names=seg.class_names))
        else:
            d = dice_per_class(pred, c.label, seg.num_classes)
            results.append({"classes": list(range(1, seg.num_classes)), "dice": [float(v) for v in d],
                            "mean_dice": float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")})
        if progress is not None:
            progress(i + 1, len(labelled))
    if hd95:
        out = summarize(results)
    else:
        table = np.array([r["dice"] for r in results], dtype=np.float64).reshape(len(results), -1)
        with warnings.catch_warnings():  # a class absent from every case has no mean: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            out = {"n_cases": len(results), "classes": results[0]["classes"],
                   "dice_mean": [float(v) for v in np.nanmean(table, axis=0)] if table.size else [],
                   "mean_dice": float(np.nanmean([r["mean_dice"] for r in results]))}
    out["per_case"] = [r["mean_dice"] for r in results]
    out["dice_per_class"] = list(out["dice_mean"])
    out["seconds_per_case"] = float(np.mean(secs))
    out["median_seconds_per_case"] = float(statistics.median(secs))
    out["parameters"] = seg.parameters
    out["name"] = seg.name
    return out


def compression(teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, float]:
    """Parameter ratio, speed-up and Dice retention of a student against its teacher (two evaluations)."""
    return {
        "compression": teacher["parameters"] / max(student["parameters"], 1),
        "speedup": teacher["seconds_per_case"] / max(student["seconds_per_case"], 1e-12),
        "retention": student["mean_dice"] / max(teacher["mean_dice"], 1e-9),
    }
