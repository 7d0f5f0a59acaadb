"""The Review dock's Fine-tune: a new round of distillation of the student with the painted voxels as ground
truth (:func:`napari_dmd.corrections.start_round`), run in a worker through the one run path
(:func:`napari_dmd.runner.events`), with a progress bar, Stop, and the new student registered at the end.

Closing the viewer quits the worker; its generator is then closed, which closes the engine's and writes
``last.pt`` (as in the Distill widget).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.io import DataError
from ._geometry import cases_from_layers
from ._notify import notify_error, notify_info
from ._review_paint import PaintTracker
from ._workers import ensure_thread_pool, start_worker, training_threads

if TYPE_CHECKING:
    from ..data.cases import Case
    from ..distill.engine import Distiller, Event
    from ..registry import ModelEntry

__all__ = ["ReviewTuning", "RoundStarted", "TuneHandle", "check_parent", "round_folder", "tune_worker"]


@dataclass
class RoundStarted:
    """Yielded once the round's folder exists (round.json and the corrections files are written)."""

    folder: Path
    voxels: int


@dataclass
class TuneHandle:
    """One fine-tuning round: its engine once built, and whether Stop was asked for."""

    distiller: Distiller | None = None
    stop: bool = False

    def request_stop(self, *_: Any) -> None:
        """Ask the round to stop before its next step (the engine then writes last.pt)."""
        self.stop = True
        if self.distiller is not None:
            self.distiller.request_stop()


def check_parent(entry: ModelEntry | None) -> Path:
    """The student checkpoint a round continues; DataError (one line) when the student has none."""
    if entry is None:
        raise DataError("no student model is chosen; load one (Distill widget, or 'Use demo models' in the "
                        "Teacher widget) to fine-tune it")
    path = Path(entry.checkpoint) if entry.checkpoint else None
    if path is None or path.suffix != ".pt" or not path.is_file():
        raise DataError(f"{entry.name}: no napari-dmd checkpoint (.pt) to continue from; fine-tune a student "
                        "trained by napari-dmd")
    return path


def round_folder(parent: Path) -> Path | None:
    """Where the round goes: beside the parent's run folder (None: :func:`start_round`'s default), except for the
    demo student, whose folder is the model cache: then a new ``round-<n>-<time>`` folder in the runs root."""
    from ..corrections import round_info
    from ..pretrained import cache_root
    from ..runs import default_output_dir

    try:
        parent.resolve().relative_to(cache_root().resolve())
    except ValueError:
        return None
    prior = round_info(parent) or {}
    n = int(prior["round"]) + 1 if isinstance(prior.get("round"), int) else 1
    return default_output_dir(f"round-{n}")


def tune_worker(handle: TuneHandle, parent: Path, case: Case, corrections: np.ndarray,
                teacher: ModelEntry | None, iterations: int, threads: int,
                source: str = "the student labels layer",
                augment: bool = False) -> Generator[Any, None, dict[str, Any]]:
    """Thread-worker generator: build the round (teacher copy, round folder, engine), yield
    :class:`RoundStarted`, then every engine event; returns the engine's result. ``augment``: a 2D round with
    intensity, zoom and rotation augmentation (False: the student's own settings as they were)."""
    from .. import runner
    from ..corrections import IGNORE, start_round
    from ..registry import teacher_from_entry

    copy = teacher_from_entry(teacher) if teacher is not None else None  # None: the parent's recorded teacher
    d = start_round(parent, [case], [corrections], teacher=copy, iterations=iterations, out=round_folder(parent),
                    sources=[source], num_threads=threads, round_augment=augment)
    handle.distiller = d
    if handle.stop:
        d.request_stop()
    yield RoundStarted(Path(d.output_dir), int(np.count_nonzero(corrections != IGNORE)))
    return (yield from runner.events(d))


class ReviewTuning:
    """The Review widget's Fine-tune / Stop handlers (a mixin: the widget holds the buttons, the choosers, the
    progress bar, the status line and :class:`TuneHandle` ``_tune``)."""

    def fine_tune(self) -> Any:
        """Start a round: the student continued with the painted voxels as ground truth; returns the worker."""
        if self.rank_worker is not None or self.tune_worker is not None:
            return None
        from ..corrections import corrections_labels

        image, labels, tracker = self.image_box.layer(), self.student_labels_box.layer(), self.tracker()
        try:
            parent = check_parent(self.student_box.entry())
            if image is None or labels is None or tracker is None:
                raise DataError("choose the image and the student labels layer you corrected (Rank first)")
            if tuple(labels.data.shape) != tuple(image.data.shape):
                raise DataError(f"student labels layer {labels.name!r} of shape {labels.data.shape} does not "
                                f"match image layer {image.name!r} of shape {image.data.shape}")
            if tracker.count == 0:
                raise DataError(f"no voxels painted on {labels.name!r} since the last round; paint corrections "
                                "first (Paint corrections)")
            corrections = corrections_labels(np.asarray(labels.data), tracker.mask())
            case = cases_from_layers([(image, None)])[0]
        except (ValueError, OSError) as exc:
            self.status.setText(notify_error(exc, "Review"))
            return None
        ensure_thread_pool()
        self._tune.distiller, self._tune.stop = None, False
        steps = self.steps_spin.value()
        self.progress_bar.setRange(0, steps)
        self.progress_bar.setValue(0)
        self.progress_bar.show()
        self.paint_button.setChecked(False)
        self.status.setText(f"preparing a round from {parent} …")
        self.tune_worker = start_worker(tune_worker, self._tune, parent, case, corrections, self.teacher_box.entry(),
                                        steps, training_threads(), f"layer {labels.name!r}",
                                        self.augment_check.isChecked(),
                                        on_yielded=self._on_tune_event,
                                        on_returned=lambda res: self._round_done(res, tracker),
                                        on_failed=self._tune_failed, on_finished=self._tune_finished)
        self._update_buttons()
        return self.tune_worker

    def stop(self) -> None:
        """Ask the round to stop before its next step (it writes last.pt)."""
        self._tune.request_stop()
        self.status.setText(self.status.text() + " — stopping …")

    def _on_tune_event(self, item: Any) -> None:
        if isinstance(item, RoundStarted):
            self.round_folder = item.folder
            self.status.setText(f"round folder {item.folder}: fine-tuning with {item.voxels} painted voxels …")
            return
        ev: Event = item
        now = time.perf_counter()
        if ev.kind == "step" and now - self._shown_at < 0.5:  # a repaint per step would slow the run
            return
        self._shown_at = now
        self.progress_bar.setValue(ev.iteration)
        if ev.kind == "step":
            total = ev.parts.get("total", float("nan"))
            self.status.setText(f"round folder {self.round_folder}: step {ev.iteration}/{ev.total}, loss "
                                f"{total:.4f}")

    def _round_done(self, result: dict[str, Any], tracker: PaintTracker) -> None:
        from ..registry import REGISTRY, entry_from_checkpoint
        from ..runner import final_checkpoint

        d = self._tune.distiller
        self.progress_bar.setValue(int(result.get("iteration", 0)))
        try:
            entry = entry_from_checkpoint(final_checkpoint(d), role="student", device=d.config.device) \
                if d is not None else None
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback
            entry = None
            notify_error(exc, "Review")
        stopped = self._tune.stop
        if entry is not None:
            REGISTRY.add(entry)  # the newest student: chosen here and in Compare / Segment
        if not stopped:
            tracker.reset()
            self.student_labels_box.combo.value = None  # the next Rank runs the new student
        what = "stopped" if stopped else "done"
        keep = " The painted voxels stay marked: Fine-tune again to continue." if stopped else \
            " Rank again to review it."
        message = (f"round {what} at step {result.get('iteration')}: {self.round_folder}. New student "
                   f"{entry.name if entry else '?'} loaded for Compare / Segment.{keep}")
        self.status.setText(message)
        notify_info(f"Review: {message}")

    def _tune_failed(self, exc: BaseException) -> None:
        self.status.setText(notify_error(exc, "Review"))

    def _tune_finished(self) -> None:
        self.tune_worker = None
        with contextlib.suppress(RuntimeError):
            self._update_buttons()

