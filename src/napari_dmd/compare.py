"""Teacher vs student on one image: both predictions, their times and per-class Dice (Qt-free core).

:func:`compare_models` runs both registry models on an array and scores them against each other and, when
given, a ground-truth label map; the Compare widget (:mod:`napari_dmd._widgets.compare`) calls it in a worker
and shows the :class:`CompareResult`. Dice comes from :func:`napari_dmd.metrics.dice_per_class`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .data.io import DataError

if TYPE_CHECKING:
    from .registry import ModelEntry

__all__ = ["CompareResult", "compare_models"]


@dataclass
class CompareResult:
    """Both predictions, their times, and per-class Dice (foreground classes 1..C-1)."""

    teacher: np.ndarray
    student: np.ndarray
    teacher_s: float
    student_s: float
    class_names: list[str]
    dice_ts: np.ndarray
    dice_tg: np.ndarray | None = None
    dice_sg: np.ndarray | None = None

    @property
    def disagreement(self) -> np.ndarray:
        """1 where teacher and student predict different classes, else 0 (uint8)."""
        return (self.teacher != self.student).astype(np.uint8)


def compare_models(teacher: ModelEntry, student: ModelEntry, image: np.ndarray, truth: np.ndarray | None = None,
                   *, progress: Callable[[int, int], object] | None = None,
                   should_stop: Callable[[], bool] | None = None, source: str = "image") -> CompareResult:
    """Run both models on ``image`` and compute per-class Dice (pure function, runs in the worker).

    ``progress(done, total)`` counts windows over both models; ``should_stop()`` is polled before each window.
    DataError names what does not match (class counts, ground-truth shape or values).
    """
    from .metrics import dice_per_class

    n = teacher.segmenter.num_classes
    if student.segmenter.num_classes != n:
        raise DataError(f"{teacher.name} predicts {n} classes but {student.name} predicts "
                        f"{student.segmenter.num_classes}; compare models trained on the same classes")
    if truth is not None:
        truth = np.asarray(truth)
        if truth.shape != image.shape:
            raise DataError(f"ground-truth shape {truth.shape} does not match {source} shape {image.shape}")
        if truth.size and (truth.min() < 0 or truth.max() >= n):
            raise DataError(f"ground-truth labels hold values {int(truth.min())}..{int(truth.max())} but the "
                            f"models know only classes 0..{n - 1}")
    report = None if progress is None else (lambda stage: (lambda d, t: progress(stage * t + d, 2 * t)))
    t_lab, t_s = teacher.segmenter.timed(image, progress=report and report(0), should_stop=should_stop,
                                         source=source)
    s_lab, s_s = student.segmenter.timed(image, progress=report and report(1), should_stop=should_stop,
                                         source=source)
    names = teacher.segmenter.class_names or student.segmenter.class_names
    names = list(names)[1:n] if names and len(names) == n else [f"class {k}" for k in range(1, n)]
    res = CompareResult(t_lab, s_lab, t_s, s_s, names, dice_per_class(s_lab, t_lab, n))
    if truth is not None:
        res.dice_tg = dice_per_class(t_lab, truth, n)
        res.dice_sg = dice_per_class(s_lab, truth, n)
    return res
