"""The Distill widget's training run on the worker side: its handle, the thread-worker generator that drives
the engine through the one run path (:mod:`napari_dmd.runner`), and the guard that stops it when the widget
is destroyed.

Closing the viewer quits the worker; :meth:`RunHandle.close_generator` (connected to the worker's ``aborted``
signal, run in the worker thread) then closes the engine's generator, which writes ``last.pt``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import runner
from ..config import TrainConfig
from ..runner import free_folder
from ._workers import Failure

if TYPE_CHECKING:
    from ..data.cases import Case
    from ..distill.engine import Distiller, Event
    from ..registry import ModelEntry
    from ._live import LiveStudent

__all__ = ["Notice", "RunGuard", "RunHandle", "default_output_dir", "free_folder", "train_worker"]


def default_output_dir(method: str) -> Path:
    """A new run folder ``<runs root>/<method>-<time>`` (:func:`napari_dmd.runner.default_output_dir`)."""
    return runner.default_output_dir(method)


@dataclass
class Notice:
    """A warning from preparing the run (e.g. a teacher trained at another spacing), shown on the main thread."""

    message: str
    warning: bool = False  # the model-data guard's: shown as a warning and kept in the status line


def folder_warning(entry: ModelEntry, cases: list[Case]) -> str | None:
    """The model-data guard's warning for an MSD folder's cases against the teacher (the first case unlike its
    training data, and how many more are), or None."""
    from ..guard import check_entry

    found = [w for c in cases if (w := check_entry(entry, c.image, image_name=c.source, image_spacing=c.spacing))]
    if not found:
        return None
    return found[0] + (f" ({len(found) - 1} more of the {len(cases)} cases are unlike it too)" if len(found) > 1
                       else "")


@dataclass
class RunHandle:
    """One training run: its inputs, then the live engine and its generator."""

    config: TrainConfig
    output_dir: Path
    cases: list[Case] | None = None
    folder: str | None = None
    teacher_entry: ModelEntry | None = None
    resume: Path | None = None
    patch_single: int | None = None
    distiller: Distiller | None = None
    gen: Generator | None = None
    stop: bool = False
    stop_requested_at: int | None = None
    aborted: bool = False
    events: list[Event] = field(default_factory=list)

    def request_stop(self) -> None:
        self.stop = True
        d = self.distiller
        if d is not None:
            if self.stop_requested_at is None:
                self.stop_requested_at = d.iteration
            d.request_stop()

    def close_generator(self) -> None:
        """Close the engine's generator (writes last.pt); called in the worker thread when it is quit."""
        self.aborted = True
        gen = self.gen
        if gen is not None:
            with contextlib.suppress(Exception):
                gen.close()


def train_worker(run: RunHandle, live: LiveStudent) -> Generator[Any, None, None]:
    """Thread-worker generator: prepare the run (:func:`napari_dmd.runner.prepare_run`: checks, class names,
    the Distiller), yield its warnings as :class:`Notice`, then ``(event, snapshot or None)`` per event.

    Exceptions are yielded as :class:`~napari_dmd._widgets._workers.Failure` (superqt would swallow a
    RuntimeError raised by a generator worker as "worker deleted"). Closing this generator closes the
    engine's, which writes last.pt.
    """
    from ..data.cases import load_msd_folder
    from ..features import StudentSnapshot
    from ..registry import teacher_from_entry

    gen = None
    try:
        cfg = run.config
        cases, names = run.cases, None
        if cases is None:
            cases, names = load_msd_folder(run.folder or "")
            if run.teacher_entry is not None and (note := folder_warning(run.teacher_entry, cases)):
                yield Notice(note, warning=True)
        teacher = teacher_from_entry(run.teacher_entry) if run.teacher_entry is not None else None
        if run.patch_single is not None:
            dims = cfg.spatial_dims or (teacher.spatial_dims if teacher is not None else cases[0].ndim)
            cfg.patch_size = [run.patch_single] * dims
        d, warnings = runner.prepare_run(cfg, cases, teacher=teacher, output_dir=run.output_dir,
                                         resume=run.resume, class_names=names)
        run.distiller = d
        if run.stop:
            run.request_stop()
        for message in warnings:
            yield Notice(message)
        gen = runner.events(d)
        run.gen = gen
        for ev in gen:
            snap = None
            if (ev.kind == "step" and live.due(ev.iteration)) or ev.kind in ("done", "stopped"):
                snap = StudentSnapshot.take(d.model, heads=d.heads, feature_scales=d.feature_scales,
                                            normalization=d.normalization, iteration=d.iteration,
                                            name=f"live: {run.output_dir.name}")
            yield ev, snap
    except GeneratorExit:
        if gen is not None:
            gen.close()
        raise
    except Exception as exc:  # noqa: BLE001 - shown to the user on the main thread
        yield Failure(exc)


class RunGuard:
    """Holds the current run outside the Qt object, so it can be stopped when the widget is destroyed."""

    def __init__(self) -> None:
        self.run: RunHandle | None = None

    def stop(self, *_: Any) -> None:
        """Ask the current run (if any) to stop before its next step."""
        if self.run is not None:
            self.run.request_stop()

