"""Distill widget: train a student from a teacher on layers or an MSD folder, live, in a child process.

A thin view of :class:`napari_dmd.distill.engine.Distiller`: the widget collects settings, and the run is built
and trained in a child process (:mod:`napari_dmd.child`: the cases, config and teacher travel as a spec file;
the engine cannot hold napari's event loop from there). A thin worker thread relays the engine's events (one
per step) to the main thread, where they are only recorded; a timer (``STATUS_HZ``) then updates the progress
bar, the status line, the live plot (:mod:`.loss_plot`) and the checkpoint path together, in one window
repaint. Warning events (e.g. a class the student lost) are shown at once. Stop makes the child abandon the step
in progress (``last.pt`` holds the last completed one), and the widget says "stopped" as soon as the child has
saved; closing the viewer stops the child (waits up to 1.5 s for it, then terminates it; ``last.pt`` is
written either way). When a run ends its checkpoints are added to :data:`napari_dmd.registry.REGISTRY` as
students, and :data:`LIVE` shares snapshots of the student being trained (sent by the child every N steps)
with the Features widget. Export… writes the finished student with :func:`napari_dmd.export.export_student`
(TorchScript, ONNX, model card) in a worker.

The settings boxes are in :mod:`._distill_form`, the worker side of a run in :mod:`._distill_run`, the
Export… button in :mod:`._distill_export` and the shared live student in :mod:`._live`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..config import ConfigError, TrainConfig
from ..distill.methods import head_weight
from ._distill_export import DistillExport, export_formats
from ._distill_form import METHOD_TIPS, METHODS, STUDENT_PRESETS, DistillSettings, available_devices
from ._distill_run import Notice, RunGuard, RunHandle, default_output_dir, free_folder, train_worker
from ._live import LIVE, LiveStudent
from ._notify import notify_error, notify_info, notify_warning
from ._scroll import make_scrollable
from ._workers import MIN_POOL_THREADS, Failure, ensure_thread_pool, training_threads
from .loss_plot import LossPlot, StatusLine

if TYPE_CHECKING:
    import napari

    from ..distill.engine import Event
    from ._distill_run import RunView

__all__ = [
    "LIVE",
    "METHODS",
    "METHOD_TIPS",
    "MIN_POOL_THREADS",
    "STATUS_HZ",
    "STUDENT_PRESETS",
    "DistillWidget",
    "LiveStudent",
    "RunHandle",
    "available_devices",
    "default_output_dir",
    "export_formats",
    "train_worker",
]

# Status line, progress bar, plot and checkpoint path refresh together at this rate. Each refresh repaints the
# window, which costs the GUI thread 10-15 ms *with the GIL held* under software OpenGL (Xvfb, VMs, remote
# desktops: the window is composited with OpenGL because of napari's canvas), time the training thread waits.
# For the same reason the widget shows its own progress bar instead of napari's activity dock: while a napari
# ``progress`` is open, its animated "in progress" indicator repaints the window ~33 times a second, which cut
# training throughput in the viewer by half or more (napari-dmd bench gui); its progress bar also runs
# QApplication.processEvents() on every update (re-entrant event handling).
STATUS_HZ = 1.0


class DistillWidget(DistillSettings, DistillExport, QWidget):
    """Distil a student from a teacher: data, method, size, schedule; Start / Stop / Resume; live plot."""

    run_event = Signal(object)  # every engine Event, on the main thread
    run_finished = Signal(object)  # the RunHandle, when the worker has finished (any reason)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        ensure_thread_pool()
        self.viewer = napari_viewer
        self.worker = None
        self.run: RunHandle | None = None
        self.registered: list[str] = []
        self.export_worker = None
        self.last_export: dict[str, Any] | None = None  # the model card of the last export
        self.last_error = ""
        self._data_note = ""  # the model-data guard's warnings for the run, kept in the status line
        self._last_step: Event | None = None
        self._checkpoint_path: str | None = None  # shown at the next status tick
        self._guard = RunGuard()
        self.destroyed.connect(self._guard.stop)

        layout = QVBoxLayout(self)
        layout.addWidget(self._build_data_box(napari_viewer))
        layout.addWidget(self._build_settings_box())

        # --- run
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(self.resume)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write the run's student (best.pt, else last.pt) as TorchScript and ONNX "
                                      "with a model card (JSON + Markdown) into a folder")
        self.export_button.clicked.connect(lambda: self.export())
        for b in (self.start_button, self.stop_button, self.resume_button, self.export_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%v / %m iterations")
        layout.addWidget(self.progress_bar)
        self.live_line = StatusLine()  # iteration, loss, samples/s, ETA: changes every status tick
        layout.addWidget(self.live_line)
        self.progress_bar.hide()  # shown from the first run on
        self.live_line.hide()
        self.status_label = QLabel("idle")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.plot = LossPlot()
        layout.addWidget(self.plot)
        self.checkpoint_label = QLabel("checkpoint: –")
        self.checkpoint_label.setWordWrap(True)
        self.checkpoint_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.checkpoint_label)
        layout.addStretch(1)

        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / STATUS_HZ))
        self._timer.timeout.connect(self._tick)
        self._update_buttons()
        make_scrollable(self)  # the dock scrolls instead of growing past a small screen

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        """Whether a training run's worker is active."""
        return self.worker is not None

    @property
    def distiller(self) -> RunView | None:
        """The current (or last) run's engine as the widget sees it (folder, checkpoints, iteration)."""
        return self.run.distiller if self.run is not None else None

    @property
    def events(self) -> list[Event]:
        """Engine events of the current (or last) run."""
        return self.run.events if self.run is not None else []

    @property
    def stop_requested_at(self) -> int | None:
        """The engine's iteration when Stop was pressed."""
        return self.run.stop_requested_at if self.run is not None else None

    def _update_buttons(self, *_: Any) -> None:
        idle = not self.running and self.export_worker is None
        self.start_button.setEnabled(idle)
        self.stop_button.setEnabled(self.running)
        text = self.output_edit.text().strip()
        self.resume_button.setEnabled(idle and bool(text) and (Path(text) / "last.pt").is_file())
        self.export_button.setEnabled(idle and self.export_checkpoint() is not None)

    # ------------------------------------------------------------------ run control
    def start(self) -> None:
        """Start a new run with the widget's settings."""
        if self.running or self.export_worker is not None:
            return
        try:
            cfg, single = self._config()
            teacher = self._teacher()
            cases, folder, names = self._cases()
            warnings = self._guard_teacher(teacher)
            if names and cfg.class_names is None:
                cfg.class_names = list(names)
            text = self.output_edit.text().strip()
            out = Path(text).expanduser() if text else default_output_dir(cfg.method)
            free = free_folder(out)
            if free != out:
                from ..runs import run_files_in

                notify_info(f"Distill: {out} already holds a run ({', '.join(run_files_in(out))}); writing to "
                            f"{free} (use Resume to continue a run)")
            run = RunHandle(cfg, free, cases=cases, folder=folder, teacher_entry=teacher, patch_single=single)
        except Exception as exc:  # noqa: BLE001 - every problem becomes a message
            self._fail(exc)
            return
        self.output_edit.setText(str(free))
        self.plot.clear()
        self._data_note = "".join(f"\nWarning: {w}" for w in warnings)  # a warning, not a refusal: it runs
        self._launch(run, start_iteration=0)

    def resume(self) -> None:
        """Continue the run in the output folder (its last.pt) up to the Iterations setting."""
        if self.running or self.export_worker is not None:
            return
        from ..checkpoint import load_checkpoint

        try:
            out = Path(self.output_edit.text().strip()).expanduser()
            last = out / "last.pt"
            ckpt = load_checkpoint(last)
            done = int(ckpt.get("iteration", 0))
            cfg = TrainConfig.from_dict(ckpt["config"])
            total = self.iterations_spin.value()
            if total <= done:
                raise ConfigError(f"{last}: the run is already at iteration {done}; set Iterations above "
                                  f"{done} to continue it")
            cfg.iterations = total
            for key, value in self._intervals(total).items():
                setattr(cfg, key, value)
            cfg.device = str(self.device_combo.currentData())
            cfg.cpu_bf16 = self.bf16_check.isChecked()
            cfg.num_threads = training_threads()
            self.set_method(cfg.method)
            self.heads_check.setChecked(head_weight(cfg.method, cfg.head_supervision) > 0)  # the run's own setting
            self.flips_check.setChecked(cfg.flips)  # the run's own augmentation, which the resume keeps
            self.spatial_check.setChecked(cfg.spatial_augment)
            self.student_combo.setCurrentText(cfg.model)
            teacher = self._teacher() if cfg.method != "none" else self.teacher_chooser.entry()
            cases, folder, _ = self._cases()
            self._data_note = "".join(f"\nWarning: {w}" for w in self._guard_teacher(teacher))
            run = RunHandle(cfg.validate(), out, cases=cases, folder=folder, teacher_entry=teacher, resume=last)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return
        # the whole curve so far: loss parts and Dice from the run's events.jsonl (else the checkpoint's Dice)
        self.plot.load_history(out / "events.jsonl", done, ckpt.get("history") or [])
        self._launch(run, start_iteration=done)

    def stop(self) -> None:
        """Ask the engine to stop: it abandons the step in progress and writes last.pt of the last completed one."""
        if self.run is not None and self.running:
            self.run.request_stop()
            self.status_label.setText(self.status_label.text() + " — stopping…")

    def _launch(self, run: RunHandle, start_iteration: int) -> None:
        from napari.qt.threading import create_worker

        self.run = run
        self._guard.run = run
        self._last_step = None
        self._checkpoint_path = None
        self.last_error = ""
        self.plot.set_run(run.config.method, run.output_dir.name)
        self.progress_bar.setRange(0, run.config.iterations)
        self.progress_bar.setValue(start_iteration)
        self.live_line.setText("")
        self.progress_bar.show()
        self.live_line.show()
        worker = create_worker(train_worker, run, LIVE, _start_thread=False)
        worker.yielded.connect(self._on_yield)
        worker.finished.connect(self._on_finished)
        # quit (e.g. the viewer closes): stop the child from the worker thread (<= 1.5 s, then terminated) -> last.pt
        worker.aborted.connect(run.close_generator, Qt.ConnectionType.DirectConnection)
        self.worker = worker
        LIVE.running = True
        LIVE.name = f"live: {run.output_dir.name}"
        LIVE.latest = None
        LIVE.changed.emit()
        self.status_label.setText(f"preparing {run.config.method} run in {run.output_dir} …{self._data_note}")
        self._update_buttons()
        self._timer.start()
        worker.start()

    # ------------------------------------------------------------------ main-thread handlers
    def _on_yield(self, item: Any) -> None:
        """Record one engine event; widgets change at the next :meth:`_tick` (one repaint for many events)."""
        run = self.run
        if run is None:
            return
        if item is None:  # the worker's heartbeat
            return
        if isinstance(item, Failure):
            self._fail(item.exc)
            return
        if isinstance(item, Notice):
            if item.warning:  # a warning, not a refusal: the run goes on
                notify_warning(f"Distill: {item.message}")
                self._data_note += f"\nWarning: {item.message}"
                self.status_label.setText(self.status_label.text() + f"\nWarning: {item.message}")
            else:
                notify_info(f"Distill: {item.message}")
            return
        ev, snap = item
        if snap is not None:
            LIVE.latest = snap
            LIVE.snapshot.emit(snap)
        if ev is None:
            return
        run.events.append(ev)
        if ev.kind == "warning":  # e.g. a class the student lost: shown at once, kept in the status line
            notify_warning(f"Distill: {ev.message}")
            self._data_note += f"\nWarning: {ev.message}"
            self.status_label.setText(self.status_label.text() + f"\nWarning: {ev.message}")
        if ev.kind == "step":
            self._last_step = ev
            self.plot.add_parts(ev.iteration, ev.parts)
        elif ev.kind == "validation":
            self.plot.add_dice(ev.iteration, ev.mean_dice)
            if ev.path:
                self._checkpoint_path = ev.path
        elif ev.kind in ("checkpoint", "done", "stopped"):
            if ev.path:
                self._checkpoint_path = ev.path
        if ev.kind == "start":
            self.status_label.setText(ev.message + self._data_note)
        self.run_event.emit(ev)

    def _checkpoint_message(self, path: str) -> str:
        run = self.run
        last = str(run.distiller.last_path) if run is not None and run.distiller is not None else path
        best_path = run.distiller.best_path if run is not None and run.distiller is not None else None
        text = f"checkpoint: {last}"
        if best_path is not None and Path(best_path).exists():
            text += f"\nbest: {best_path}"
        return text

    def _tick(self) -> None:
        """Show the latest state: progress, status line, checkpoint path, plot (throttled itself)."""
        if self._checkpoint_path is not None:
            text = self._checkpoint_message(self._checkpoint_path)
            if text != self.checkpoint_label.text():  # a QLabel's new text relayouts (and repaints) the window
                self.checkpoint_label.setText(text)
            self._checkpoint_path = None
        ev = self._last_step
        if ev is not None:
            if ev.iteration != self.progress_bar.value():
                # QProgressBar.setValue repaints at once (a window repaint of its own); this way it joins the
                # tick's other changes in one repaint
                self.progress_bar.setUpdatesEnabled(False)
                self.progress_bar.setValue(ev.iteration)
                self.progress_bar.setUpdatesEnabled(True)
            eta = time.strftime("%H:%M:%S", time.gmtime(ev.eta_s)) if np.isfinite(ev.eta_s) else "?"
            total = ev.parts.get("total", float("nan"))
            self.live_line.setText(f"iteration {ev.iteration}/{ev.total} · loss {total:.4f} · "
                                   f"{ev.samples_per_s:.1f} samples/s · ETA {eta}")
        self.plot.refresh()

    def _fail(self, exc: BaseException) -> None:
        self.last_error = notify_error(exc, "Distill")
        self.status_label.setText(self.last_error)

    def _on_finished(self) -> None:
        run = self.run
        try:
            self._tick()
            self._timer.stop()
        except RuntimeError:  # the widget is being deleted with the viewer
            return
        self.worker = None
        LIVE.running = False
        LIVE.changed.emit()
        self._update_buttons()
        if run is not None and run.events and run.events[-1].kind in ("done", "stopped"):
            ev = run.events[-1]
            best = f" · best validation Dice {ev.mean_dice:.3f}" if ev.mean_dice is not None else ""
            self.status_label.setText(f"{ev.message}{best}{self._data_note}")  # before registering: said at once
        if run is not None:
            run.timeline["shown"] = time.monotonic()
        if run is not None and run.distiller is not None:
            self._register(run)  # loads last.pt and best.pt (~0.1 s each): the other widgets get them
            run.timeline["registered"] = time.monotonic()
            self._update_buttons()
        if run is None or not run.aborted:  # aborted: the viewer is closing, start no more threads
            self.plot.flush()
        self.run_finished.emit(run)

    def _register(self, run: RunHandle) -> None:
        """Offer the run's checkpoints to the other widgets (Features, Compare, Segment)."""
        from ..registry import REGISTRY, entry_from_checkpoint

        d = run.distiller
        names = []
        for path in (d.last_path, d.best_path):
            if not path.is_file():
                continue
            try:
                entry = entry_from_checkpoint(path, role="student", device=run.config.device)
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)
                continue
            REGISTRY.add(entry)
            names.append(entry.name)
        self.registered = names
        if names:
            notify_info(f"Distill: student ready for Features / Compare / Segment: {', '.join(names)}")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self._guard.stop()
        super().closeEvent(event)

