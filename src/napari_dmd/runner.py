"""The one run path: choose a run's folder, check and build it, drive it, and name its final checkpoint.

Every way of training goes through here: the CLI (``train-teacher``, ``distill``, ``demo``), the Teacher and
Distill widgets, the demo models and the benchmarks. The engine (:class:`napari_dmd.distill.engine.Distiller`)
does the training; :mod:`napari_dmd.runs` keeps its folder to one run.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .runs import default_output_dir, free_folder, runs_root  # noqa: F401 - live in runs, importable here

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data.cases import Case
    from .distill.engine import Distiller, Event

EventFn = Callable[["Event"], Any]
StopFn = Callable[[], bool]


def final_checkpoint(run: Distiller) -> Path:
    """The checkpoint a run leaves for use: ``best.pt`` when it validated, else ``last.pt``."""
    return run.best_path if run.best_path.exists() else run.last_path


def check_dims(cases: Sequence[Case], spatial_dims: int | None, model: str) -> None:
    """A 3D model needs 3D images (a one-slice volume reads as 2D); the message names the image and model."""
    from .data.checks import shape_text
    from .data.io import DataError

    case = min(cases, key=lambda c: c.ndim)
    if spatial_dims is not None and spatial_dims > case.ndim:
        hint = " (a volume with a single slice reads as 2D)" if case.ndim == 2 else ""
        shape = shape_text(case.image.shape, case.image_path)  # as the file stores it
        raise DataError(f"{case.source}: {case.ndim}D image of shape {shape}{hint}, but {model} is "
                        f"{spatial_dims}D; give {spatial_dims}D volumes or a {case.ndim}D model")


def prepare_run(cfg: TrainConfig, cases: Sequence[Case], *, teacher: Any = None,
                val_cases: Sequence[Case] | None = None, output_dir: str | Path | None = None,
                resume: str | Path | None = None, role: str = "student",
                class_names: Sequence[str] | None = None) -> tuple[Distiller, list[str]]:
    """Check the inputs against each other and build the engine; returns ``(distiller, warnings)``.

    Class names: the config's, else the teacher's, else ``class_names`` (e.g. from dataset.json). Without an
    ``output_dir`` a resumed run stays in its folder and a new one gets :func:`default_output_dir`. Warnings
    (e.g. a teacher trained at another spacing) are for the caller to show.
    """
    from .distill.engine import Distiller

    by_teacher = teacher is not None and cfg.spatial_dims is None
    check_dims(cases, teacher.spatial_dims if by_teacher else cfg.spatial_dims,
               f"the teacher {teacher.source}" if by_teacher else "the model (spatial_dims)")
    warnings: list[str] = []
    if teacher is not None:
        from .teachers import check_teacher

        warnings = list(check_teacher(teacher, cases, num_classes=cfg.num_classes))
    names = cfg.class_names or (teacher.class_names if teacher is not None else None) or class_names
    cfg.class_names = list(names) if names else None
    if output_dir is None and resume is None:
        output_dir = default_output_dir(f"{role}-{cfg.method}" if role == "student" else role)
    run = Distiller(cfg, cases, val_cases=val_cases, teacher=teacher, output_dir=output_dir, resume=resume,
                    role=role)
    if cfg.patch_size:  # an explicit patch the model must pad (the fast students' stride is 32)
        from .distill.resolve import padding_warning

        padded = padding_warning(run.patch_size, run.model.total_stride)
        if padded:
            warnings.append(padded)
    if cfg.augment and cfg.flips:  # classes told apart by position: flips swap them (data.positional)
        from .data.positional import flip_warning

        flip = flip_warning(cases, run.num_classes, cfg.class_names)
        if flip:
            warnings.append(flip)
    return run, warnings


def events(run: Distiller, should_stop: StopFn | None = None) -> Generator[Event, None, dict[str, Any]]:
    """The run's events; ``should_stop()`` is asked after each one and, when True, the run stops at the next
    step (writing ``last.pt``). Closing this generator closes the engine's, which also writes ``last.pt``.
    Returns the engine's result (iterations, best Dice, checkpoint paths, wall time)."""
    gen = run.run()
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                return stop.value
            yield ev
            if should_stop is not None and should_stop():
                run.request_stop()
    finally:
        gen.close()


def drive(run: Distiller, on_event: EventFn | None = None, should_stop: StopFn | None = None,
          on_interrupt: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Run to the end, calling ``on_event`` for every event, and return the engine's result.

    In the main thread the first Ctrl-C asks the run to stop at its next step (it then writes ``last.pt``
    and returns as usual; ``on_interrupt`` is told); a second Ctrl-C interrupts at once.
    :func:`final_checkpoint` names the checkpoint to use.
    """
    import signal
    import threading

    previous: Any = None
    installed = threading.current_thread() is threading.main_thread()
    if installed:
        def interrupted(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGINT, previous)  # a second Ctrl-C: the default, immediate interrupt
            run.request_stop()
            if on_interrupt is not None:
                on_interrupt()

        previous = signal.signal(signal.SIGINT, interrupted)
        if previous is None:  # a handler not set from Python
            previous = signal.default_int_handler
    try:
        gen = events(run, should_stop)
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                return stop.value
            if on_event is not None:
                on_event(ev)
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous)
