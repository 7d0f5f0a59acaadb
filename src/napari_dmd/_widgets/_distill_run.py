"""The Distill widget's training run: its handle, the thin worker thread that starts the run in a child process
(:mod:`napari_dmd.child`, the one run path of :mod:`napari_dmd.runner` there) and relays what it streams, and
the guard that stops it when the widget is destroyed.

The engine never runs in napari's process, so it cannot hold the Qt event loop (the GIL, the CPU of the GUI
thread). The worker thread only waits on the child's pipe and hands each message to the main thread; Stop sets
the child's stop event (the engine abandons the step in progress, writes ``last.pt`` of the last completed one
and sends its last event). The worker ends at that last event: the child's exit is reaped in the background
(:meth:`~napari_dmd.child.ChildProcess.finish_in_background`). Closing the viewer quits the worker:
:meth:`RunHandle.close_generator` (connected to the worker's ``aborted`` signal, run in the worker thread) asks
the child to stop, waits up to 1.5 s for it, then terminates it (it writes ``last.pt`` as it exits).
:attr:`RunHandle.timeline` records when each part of a stop happened (``napari-dmd bench gui`` reports it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import runner
from ..child import folder_warning  # noqa: F401 - the model-data guard's folder warning, importable here
from ..config import TrainConfig
from ..runner import free_folder
from ._workers import Failure

if TYPE_CHECKING:
    from ..child import ChildProcess
    from ..data.cases import Case
    from ..distill.engine import Event
    from ..registry import ModelEntry
    from ._live import LiveStudent

__all__ = ["Notice", "RunGuard", "RunHandle", "RunView", "default_output_dir", "free_folder", "train_worker"]

#: How often the worker thread looks at the child when it has nothing to say (s): quitting acts this fast.
POLL_S = 0.1
#: The engine's last event of a run: the worker ends when it arrives (the child's exit is not waited for).
FINAL_KINDS = ("done", "stopped")


def default_output_dir(method: str) -> Path:
    """A new run folder ``<runs root>/<method>-<time>`` (:func:`napari_dmd.runner.default_output_dir`)."""
    return runner.default_output_dir(method)


@dataclass
class Notice:
    """A warning from preparing the run (e.g. a teacher trained at another spacing), shown on the main thread."""

    message: str
    warning: bool = False  # the model-data guard's: shown as a warning and kept in the status line


class RunView:
    """What the widget knows of the engine in the child: its folder, checkpoints and progress.

    Stands where the in-process :class:`~napari_dmd.distill.engine.Distiller` stood (``iteration``,
    ``last_path``, ``best_path``, ``val_cases``, ``teacher``, ``request_stop``).
    """

    def __init__(self, run: RunHandle) -> None:
        self._run = run
        self.config = run.config
        self.output_dir = Path(run.output_dir)
        self.iteration = 0
        self.total = run.config.iterations
        self.best_dice: float | None = None
        self._val_cases: list[Case] | None = None
        self._teacher: Any = None

    @property
    def last_path(self) -> Path:
        return self.output_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.output_dir / "best.pt"

    def request_stop(self) -> None:
        self._run.request_stop()

    def see(self, ev: Event) -> None:
        """Follow the run's events."""
        self.iteration = max(self.iteration, int(ev.iteration)) if ev.kind != "start" else int(ev.iteration)
        if ev.kind == "validation" and ev.mean_dice is not None:
            self.best_dice = max(self.best_dice or -1.0, float(ev.mean_dice))

    @property
    def teacher(self) -> Any:
        """The run's teacher (a private copy of the registry model), built on first use."""
        entry = self._run.teacher_entry
        if self._teacher is None and entry is not None:
            from ..registry import teacher_from_entry

            self._teacher = teacher_from_entry(entry)
        return self._teacher

    @property
    def val_cases(self) -> list[Case]:
        """The run's validation cases: the engine's seeded split, done again here (a folder is read again)."""
        if self._val_cases is None:
            from ..data.cases import load_msd_folder
            from ..distill.validation import split_train_val

            run, cfg = self._run, self.config
            cases = run.cases if run.cases is not None else load_msd_folder(run.folder or "")[0]
            self._val_cases = split_train_val(cases, None, has_teacher=run.teacher_entry is not None,
                                              val_fraction=cfg.val_fraction, max_val_cases=cfg.max_val_cases,
                                              seed=cfg.seed)[1]
        return self._val_cases


@dataclass
class RunHandle:
    """One training run: its inputs, then its child process and what it reported."""

    config: TrainConfig
    output_dir: Path
    cases: list[Case] | None = None
    folder: str | None = None
    teacher_entry: ModelEntry | None = None
    resume: Path | None = None
    patch_single: int | None = None
    distiller: RunView | None = None
    child: ChildProcess | None = None
    stop: bool = False
    stop_requested_at: int | None = None
    aborted: bool = False
    events: list[Event] = field(default_factory=list)
    #: time.monotonic() of a stop's parts: click; the child's seen, step_end, saved, sent; received (the worker
    #: got the last event), finished (the worker ended), shown (the widget says stopped), registered
    timeline: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.distiller = RunView(self)

    def request_stop(self) -> None:
        """Ask the engine to stop: the child abandons the step in progress and writes last.pt of the last
        completed one."""
        self.stop = True
        self.timeline.setdefault("click", time.monotonic())
        if self.stop_requested_at is None and self.distiller is not None:
            self.stop_requested_at = self.distiller.iteration
        if self.child is not None:
            self.child.request_stop()

    def close_generator(self) -> None:
        """The viewer closes (the worker was quit; called in the worker thread): stop the child, wait up to
        1.5 s for its result, then terminate it (it writes last.pt as it exits); its exit is not waited for."""
        self.aborted = True
        self.stop = True
        self.timeline.setdefault("click", time.monotonic())
        child = self.child
        if child is not None:
            with contextlib.suppress(Exception):
                for kind, payload in child.close():
                    if kind == "event" and self.distiller is not None:
                        self.distiller.see(payload)
                    elif kind == "timing":
                        self.timeline.update(payload)
            self.timeline["finished"] = time.monotonic()


def run_spec(run: RunHandle) -> Any:
    """The child's :class:`~napari_dmd.child.RunSpec` (the teacher copied from its registry entry)."""
    from ..child import GuardInfo, RunSpec, spec_teacher

    entry = run.teacher_entry
    return RunSpec(run.config, str(run.output_dir), cases=run.cases, folder=run.folder,
                   teacher=spec_teacher(entry) if entry is not None else None,
                   guard=GuardInfo.of(entry) if entry is not None and run.cases is None else None,
                   resume=str(run.resume) if run.resume is not None else None, patch_single=run.patch_single,
                   snapshot_name=f"live: {run.output_dir.name}")


def train_worker(run: RunHandle, live: LiveStudent) -> Generator[Any, None, None]:
    """Thread-worker generator: start the run in a child process and relay what it streams: warnings as
    :class:`Notice`, each engine event as ``(event, None)``, each student snapshot as ``(None, snapshot)``,
    and ``None`` when there is nothing new (every :data:`POLL_S`, so that a quit acts at once).

    Ends at the engine's last event (:data:`FINAL_KINDS`; last.pt is written by then), leaving the child's exit
    to a background thread. Failures (in the child or here, or a child that dies) are yielded as
    :class:`~napari_dmd._widgets._workers.Failure`. Closing this generator closes the child (last.pt kept).
    """
    from ..child import ChildProcess, distill_target
    from ..distill.engine import TrainingError

    child = None
    try:
        child = ChildProcess(distill_target, run_spec(run), live_every=live.every, name="napari-dmd-distill")
        run.child = child
        if run.stop:
            child.request_stop()
        child.start()
        final = False
        while not child.done and not final:
            child.set_live_every(live.every)
            if live.take_request():
                child.request_snapshot()
            messages = child.poll(POLL_S)
            if not messages:
                yield None
            for kind, payload in messages:
                if kind == "event":
                    run.distiller.see(payload)
                    if payload.kind in FINAL_KINDS:
                        final = True
                        run.timeline["received"] = time.monotonic()
                    yield payload, None
                elif kind == "snapshot":
                    yield None, payload
                elif kind == "notice":
                    yield Notice(*payload)
                elif kind == "failure":
                    yield Failure(payload)
                elif kind == "timing":
                    run.timeline.update(payload)
        if not final and (message := child.ended_message()) is not None and not run.aborted:
            yield Failure(TrainingError(message))
        child.finish_in_background()  # its result and exit: nobody waits for them
        run.timeline["finished"] = time.monotonic()
    except GeneratorExit:
        if child is not None:
            child.close()
        raise
    except Exception as exc:  # noqa: BLE001 - shown to the user on the main thread
        if child is not None:
            child.close()
        yield Failure(exc)


class RunGuard:
    """Holds the current run outside the Qt object, so it can be stopped when the widget is destroyed."""

    def __init__(self) -> None:
        self.run: RunHandle | None = None

    def stop(self, *_: Any) -> None:
        """Ask the current run (if any) to stop before its next step."""
        if self.run is not None:
            self.run.request_stop()
