"""Teacher vs student on one image: both predictions, their times and per-class Dice (Qt-free core).

:func:`compare_models` runs both registry models on an array and scores them against each other and, when
given, a ground-truth label map; the Compare widget (:mod:`napari_dmd._widgets.compare`) calls it in a worker
and shows the :class:`CompareResult`. Dice comes from :func:`napari_dmd.metrics.dice_per_class`.
"""

from __future__ import annotations

import statistics
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
    timing_runs: int = 1

    @property
    def disagreement(self) -> np.ndarray:
        """1 where teacher and student predict different classes, else 0 (uint8)."""
        return (self.teacher != self.student).astype(np.uint8)


def compare_models(teacher: ModelEntry, student: ModelEntry, image: np.ndarray, truth: np.ndarray | None = None,
                   *, progress: Callable[[int, int], object] | None = None,
                   should_stop: Callable[[], bool] | None = None, source: str = "image",
                   timing_runs: int = 3) -> CompareResult:
    """Run both models on ``image`` and compute per-class Dice (pure function, runs in the worker).

    Times are medians of ``timing_runs`` further predictions after a first one (the warm-up, which also gives the
    labels), teacher and student alternating, so one slow run on a busy machine does not decide the speed-up.
    ``progress(done, total)`` counts windows over all runs; ``should_stop()`` is polled before each window.
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
    runs = max(1, int(timing_runs))
    stages = 2 * (1 + runs)

    def report(stage: int) -> Callable[[int, int], object] | None:
        return None if progress is None else (lambda d, t: progress(stage * t + d, stages * t))

    kw = {"should_stop": should_stop, "source": source}
    t_lab = teacher.segmenter(image, progress=report(0), **kw)  # warm-up runs that give the labels
    s_lab = student.segmenter(image, progress=report(1), **kw)
    times: dict[str, list[float]] = {"t": [], "s": []}
    for i in range(runs):
        order = (("t", teacher), ("s", student)) if i % 2 == 0 else (("s", student), ("t", teacher))
        for j, (key, entry) in enumerate(order):
            times[key].append(entry.segmenter.timed(image, progress=report(2 + 2 * i + j), **kw)[1])
    t_s, s_s = statistics.median(times["t"]), statistics.median(times["s"])
    names = teacher.segmenter.class_names or student.segmenter.class_names
    names = list(names)[1:n] if names and len(names) == n else [f"class {k}" for k in range(1, n)]
    res = CompareResult(t_lab, s_lab, t_s, s_s, names, dice_per_class(s_lab, t_lab, n), timing_runs=runs)
    if truth is not None:
        res.dice_tg = dice_per_class(t_lab, truth, n)
        res.dice_sg = dice_per_class(s_lab, truth, n)
    return res
