"""The Review dock's ranking (run in a worker: models, probabilities, :func:`napari_dmd.review.rank_slices`) and
its jumps (on the main thread: the viewer's slider to the region's slice, the camera on its centre).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.io import DataError
from ..review import Region, rank_slices

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from ..registry import ModelEntry

__all__ = ["RankResult", "jump_to", "rank_image", "region_label"]

AXIS_NAMES = ("z", "y", "x")


@dataclass
class RankResult:
    """The ranked regions, and the label maps the ranking computed (None: taken from a layer)."""

    regions: list[Region]
    teacher: np.ndarray | None = None
    student: np.ndarray | None = None
    uncertainty: bool = False  # the student's probabilities were part of the score
    seconds: dict[str, float] = field(default_factory=dict)


def rank_image(image: np.ndarray, *, teacher: ModelEntry | None, student: ModelEntry | None,
               teacher_labels: np.ndarray | None, student_labels: np.ndarray | None, axis: int = 0,
               uncertainty_weight: float = 0.5, balance_classes: bool = False,
               progress: Callable[[int, int], Any] | None = None,
               should_stop: Callable[[], bool] | None = None, source: str = "image") -> RankResult:
    """Teacher and student labels of ``image`` (from the given arrays, else from the models), the student's
    probabilities when a student model is given, and the regions ranked by :func:`rank_slices` (every class
    weighed alike with ``balance_classes``).

    Runs in a worker. ``progress(done, total)`` counts sliding windows over the model runs.
    """
    import time

    runs = [("teacher", teacher) if teacher_labels is None else None,
            ("student", student) if student is not None else None]
    runs = [r for r in runs if r is not None]
    for role, entry in runs:
        if entry is None:
            raise DataError(f"choose a {role} labels layer, or load a {role} model (Teacher / Distill widget, or "
                            "'Use demo models' in the Teacher widget)")
    if student_labels is None and student is None:
        raise DataError("choose a student labels layer, or load a student model")
    if teacher is not None and student is not None and teacher_labels is None \
            and teacher.segmenter.num_classes != student.segmenter.num_classes:
        raise DataError(f"{teacher.name} predicts {teacher.segmenter.num_classes} classes but {student.name} "
                        f"predicts {student.segmenter.num_classes}; review models trained on the same classes")
    for what, arr in (("teacher labels", teacher_labels), ("student labels", student_labels)):
        if arr is not None and arr.shape != image.shape:
            raise DataError(f"{what} of shape {arr.shape} do not match {source} of shape {image.shape}")

    def stage(i: int) -> Callable[[int, int], Any] | None:
        n = len(runs)
        return None if progress is None else (lambda d, t: progress(i * t + d, n * t))

    result = RankResult([])
    t_lab, s_lab, probs = teacher_labels, student_labels, None
    for i, (role, entry) in enumerate(runs):
        t0 = time.perf_counter()
        if role == "teacher":
            t_lab = result.teacher = entry.segmenter(image, progress=stage(i), should_stop=should_stop,
                                                     source=source)
        else:
            probs = entry.segmenter.probabilities(image, progress=stage(i), should_stop=should_stop, source=source)
            if s_lab is None:
                s_lab = result.student = probs.argmax(0).astype(np.uint8)
        result.seconds[role] = time.perf_counter() - t0
    result.uncertainty = probs is not None
    result.regions = rank_slices(t_lab, s_lab, probs, axis=axis, uncertainty_weight=uncertainty_weight,
                                 balance_classes=balance_classes)
    return result


def region_label(region: Region) -> str:
    """How a region is named in the table: "z 12" (slice 12 along z) or "tile 3" (2D)."""
    if region.axis < 0:
        return f"tile {region.index}"
    return f"{AXIS_NAMES[region.axis] if region.axis < 3 else region.axis} {region.index}"


def jump_to(viewer: napari.Viewer, layer: Layer, region: Region) -> tuple[float, ...]:
    """Show ``region`` of ``layer`` (a layer over the ranked image): the slider on the region's slice along its
    axis (that axis made a slider axis when it was displayed) and the camera centred on ``region.center``, both
    in world coordinates (the layer's scale, translate and affine). Returns the world point of the centre."""
    dims = viewer.dims
    world = np.asarray(layer.data_to_world(np.asarray(region.center, dtype=float)), dtype=float)
    offset = dims.ndim - layer.ndim  # napari aligns a layer's axes with the viewer's last axes
    if region.axis >= 0:
        axis = offset + region.axis
        if axis in dims.displayed:
            rest = [a for a in dims.order if a != axis]
            dims.order = tuple(rest[:-dims.ndisplay] + [axis] + rest[-dims.ndisplay:])
        slice_point = np.asarray(layer.data_to_world(_slice_coords(region)), dtype=float)
        dims.set_point(axis, float(slice_point[region.axis]))
    full = list(dims.point)
    for i, value in enumerate(world):
        full[offset + i] = float(value)
    scene = getattr(viewer, "scene", None)  # napari 0.9: viewer.scene.camera (viewer.camera before)
    camera = scene.camera if scene is not None else viewer.camera
    camera.center = tuple(full[a] for a in dims.displayed)
    return tuple(float(v) for v in world)


def _slice_coords(region: Region) -> np.ndarray:
    """The region's centre with its slice coordinate set to the slice index (the centre may sit between)."""
    coords = np.asarray(region.center, dtype=float).copy()
    coords[region.axis] = float(region.index)
    return coords
