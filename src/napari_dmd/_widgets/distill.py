"""Distill widget: train a student from a teacher on layers or an MSD folder, live, in the background.

A thin view of :class:`napari_dmd.distill.engine.Distiller`: the widget collects settings, builds the run in a
napari thread worker (cases are loaded and normalized there, never on the Qt thread) and forwards the engine's
events (one per step) to the main thread, where they are only recorded; a timer (``STATUS_HZ``) then updates the
progress bar, the status line, the live plot (:mod:`.loss_plot`) and the checkpoint path together, in one window
repaint. Stop asks the engine to stop before its next step; closing the
viewer quits the worker, which closes the engine's generator so that it writes ``last.pt``. When a run ends its
checkpoints are added to :data:`napari_dmd.registry.REGISTRY` as students, and :data:`LIVE` shares snapshots of
the student being trained with the Features widget. Export… writes the finished student with
:func:`napari_dmd.export.export_student` (TorchScript, ONNX, model card) in a worker.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal as PSignal
from qtpy.QtCore import Qt, QThreadPool, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..config import ConfigError, TrainConfig
from ..data.io import DataError
from ._common import (
    Failure,
    ModelChooser,
    PairTable,
    cases_from_layers,
    dmd_metadata,
    notify_error,
    notify_info,
    start_worker,
)
from .loss_plot import LossPlot, StatusLine

if TYPE_CHECKING:
    import napari

    from ..data.cases import Case
    from ..distill.engine import Distiller, Event
    from ..features import StudentSnapshot
    from ..registry import ModelEntry

METHODS = ("dmd", "kd", "dkd", "mfd", "none")
METHOD_TIPS = {
    "dmd": "DMD: task + TCKD on the logits + NCKD on every decoder scale (the paper's method)",
    "kd": "KD: task + KL divergence to the teacher's softened probabilities",
    "dkd": "DKD: task + target (TCKD) and non-target (NCKD) parts on the final logits",
    "mfd": "MFD: task + KD of every decoder scale's head toward the teacher",
    "none": "none: the student alone (teacher's prediction only as target where there is no label)",
}
STUDENT_PRESETS = ("student", "student-tiny")
# Status line, progress bar, plot and checkpoint path refresh together at this rate. Each refresh repaints the
# window, which costs the GUI thread 10-15 ms *with the GIL held* under software OpenGL (Xvfb, VMs, remote
# desktops: the window is composited with OpenGL because of napari's canvas), time the training thread waits.
# For the same reason the widget shows its own progress bar instead of napari's activity dock: while a napari
# ``progress`` is open, its animated "in progress" indicator repaints the window ~33 times a second, which cut
# training throughput in the viewer by half or more (napari-dmd bench gui); its progress bar also runs
# QApplication.processEvents() on every update (re-entrant event handling).
STATUS_HZ = 1.0
MIN_POOL_THREADS = 4


def _ensure_thread_pool() -> None:
    """A run holds a pool thread for its whole length: leave room for plots and feature workers."""
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < MIN_POOL_THREADS:
        pool.setMaxThreadCount(MIN_POOL_THREADS)


def available_devices() -> list[str]:
    """Device choices: auto, cpu, and cuda / mps where present."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def default_output_dir(method: str) -> Path:
    return Path.home() / "napari-dmd-runs" / f"{method}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _free_folder(path: Path) -> Path:
    """``path`` if it holds no run (no last.pt), else the first free ``path-2``, ``path-3``, ..."""
    if not (path / "last.pt").exists():
        return path
    i = 2
    while (path.with_name(f"{path.name}-{i}") / "last.pt").exists():
        i += 1
    return path.with_name(f"{path.name}-{i}")


def export_formats() -> tuple[tuple[str, ...], str]:
    """Export formats this installation supports, and a note on what is skipped or unchecked ("" if nothing)."""
    if importlib.util.find_spec("onnx") is None:
        return ("torchscript",), "ONNX skipped: the onnx package is not installed (pip install 'napari-dmd[onnx]')"
    if importlib.util.find_spec("onnxruntime") is None:
        return ("torchscript", "onnx"), "ONNX not checked against PyTorch: onnxruntime is not installed"
    return ("torchscript", "onnx"), ""


# ------------------------------------------------------------------------------------------ live student


class LiveStudent:
    """The student a Distill widget trains, shared with the Features widget's live mode.

    Features widgets :meth:`subscribe` with a step interval; the training worker then copies the student's
    weights (between steps) every that many steps, and the Distill widget emits :attr:`snapshot` with the
    :class:`~napari_dmd.features.StudentSnapshot` on the main thread. :attr:`changed` fires when a run starts
    or ends.
    """

    snapshot = PSignal(object)
    changed = PSignal()

    def __init__(self) -> None:
        self.running = False
        self.name = ""
        self.latest: StudentSnapshot | None = None
        self._every: dict[int, int] = {}
        self._requested = False

    def subscribe(self, key: int, every: int) -> None:
        self._every[key] = max(1, int(every))

    def unsubscribe(self, key: int) -> None:
        self._every.pop(key, None)

    @property
    def every(self) -> int:
        """Smallest requested interval in steps (0: nobody watches)."""
        return min(self._every.values()) if self._every else 0

    def request(self) -> None:
        """Ask for a snapshot after the next step."""
        self._requested = True

    def due(self, iteration: int) -> bool:
        """Called by the training worker after each step."""
        if self._requested:
            self._requested = False
            return True
        n = self.every
        return n > 0 and iteration % n == 0


LIVE = LiveStudent()


# ------------------------------------------------------------------------------------------ worker side


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
    """Thread-worker generator: build the Distiller, then yield ``(event, snapshot or None)`` per event.

    Exceptions are yielded as :class:`~napari_dmd._widgets._common.Failure` (superqt would swallow a
    RuntimeError raised by a generator worker as "worker deleted"). Closing this generator closes the
    engine's, which writes last.pt.
    """
    from ..data.cases import load_msd_folder
    from ..distill.engine import Distiller
    from ..features import StudentSnapshot
    from ..registry import teacher_from_entry

    gen = None
    try:
        cfg = run.config
        cases = run.cases
        if cases is None:
            cases, names = load_msd_folder(run.folder or "")
            if cfg.class_names is None and names:
                cfg.class_names = names
        teacher = teacher_from_entry(run.teacher_entry) if run.teacher_entry is not None else None
        if run.patch_single is not None:
            dims = cfg.spatial_dims or (teacher.spatial_dims if teacher is not None else cases[0].ndim)
            cfg.patch_size = [run.patch_single] * dims
        if cfg.class_names is None and teacher is not None and teacher.class_names:
            cfg.class_names = list(teacher.class_names)
        d = Distiller(cfg, cases, teacher=teacher, output_dir=run.output_dir, resume=run.resume)
        run.distiller = d
        if run.stop:
            run.request_stop()
        gen = d.run()
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


# ------------------------------------------------------------------------------------------ the widget


class _Guard:
    """Holds the current run outside the Qt object, so it can be stopped when the widget is destroyed."""

    def __init__(self) -> None:
        self.run: RunHandle | None = None

    def stop(self, *_: Any) -> None:
        if self.run is not None:
            self.run.request_stop()


class DistillWidget(QWidget):
    """Distil a student from a teacher: data, method, size, schedule; Start / Stop / Resume; live plot."""

    run_event = Signal(object)  # every engine Event, on the main thread
    run_finished = Signal(object)  # the RunHandle, when the worker has finished (any reason)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        _ensure_thread_pool()
        self.viewer = napari_viewer
        self.worker = None
        self.run: RunHandle | None = None
        self.registered: list[str] = []
        self.export_worker = None
        self.last_export: dict[str, Any] | None = None  # the model card of the last export
        self.last_error = ""
        self._last_step: Event | None = None
        self._checkpoint_path: str | None = None  # shown at the next status tick
        self._guard = _Guard()
        self.destroyed.connect(self._guard.stop)

        layout = QVBoxLayout(self)
        # --- data
        data_box = QGroupBox("Training data")
        data_layout = QVBoxLayout(data_box)
        self.data_tabs = QTabWidget()
        self.pair_table = PairTable(napari_viewer)
        self.data_tabs.addTab(self.pair_table, "Layers")
        folder_page = QWidget()
        fl = QHBoxLayout(folder_page)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder with imagesTr/ (+ labelsTr/)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_folder)
        fl.addWidget(self.folder_edit)
        fl.addWidget(browse)
        self.data_tabs.addTab(folder_page, "MSD folder")
        data_layout.addWidget(self.data_tabs)
        layout.addWidget(data_box)

        # --- method
        form_box = QGroupBox("Distillation")
        form = QFormLayout(form_box)
        self.teacher_chooser = ModelChooser("teacher")
        form.addRow("Teacher", self.teacher_chooser)
        self.method_combo = QComboBox()
        for m in METHODS:
            self.method_combo.addItem(m.upper() if m != "none" else "none (student alone)", m)
        self.method_combo.setToolTip("\n".join(METHOD_TIPS.values()))
        form.addRow("Method", self.method_combo)
        self.student_combo = QComboBox()
        self.student_combo.setEditable(True)
        self.student_combo.addItems(list(STUDENT_PRESETS))
        self.student_combo.setToolTip("a preset, or channels per level such as 8,16,32,64")
        form.addRow("Student", self.student_combo)
        self.iterations_spin = QSpinBox()
        self.iterations_spin.setRange(1, 10_000_000)
        self.iterations_spin.setValue(2000)
        form.addRow("Iterations", self.iterations_spin)
        self.patch_edit = QLineEdit()
        self.patch_edit.setPlaceholderText("auto (e.g. 128,128 or 64,64,64)")
        form.addRow("Patch size", self.patch_edit)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 512)
        self.batch_spin.setValue(2)
        form.addRow("Batch size", self.batch_spin)
        self.flips_check = QCheckBox("flip and rotate patches")
        self.flips_check.setChecked(True)
        self.flips_check.setToolTip("Augmentation: random flips and 90° rotations (intensity changes stay on). "
                                    "Turn off when classes are left/right, e.g. right and left kidney.")
        form.addRow("Augment", self.flips_check)
        self.device_combo = QComboBox()
        for dev in available_devices():
            if dev == "auto":
                from ..distill.engine import resolve_device

                self.device_combo.addItem(f"auto ({resolve_device('auto').type})", "auto")
            else:
                self.device_combo.addItem(dev, dev)
        form.addRow("Device", self.device_combo)
        from ..distill.engine import cpu_bf16_supported

        self.bf16_check = QCheckBox("bfloat16 on the CPU (faster, 2D)")
        self.bf16_check.setToolTip("Teacher and student under bfloat16 autocast when training on this CPU, which "
                                   "does bfloat16 natively (about 1.4x faster jobs measured); weights and losses "
                                   "stay float32. 2D models only (3D stays float32); no effect on a GPU. Can change "
                                   "which seeds lose a small class: see docs/results.md.")
        has_bf16 = cpu_bf16_supported()
        self.bf16_check.setVisible(has_bf16)
        if has_bf16:
            form.addRow("Precision", self.bf16_check)
        out_row = QHBoxLayout()
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText(str(Path.home() / "napari-dmd-runs" / "<method>-<time>"))
        self.output_edit.textChanged.connect(self._update_buttons)
        out_browse = QPushButton("…")
        out_browse.setMaximumWidth(30)
        out_browse.clicked.connect(self._browse_output)
        out_row.addWidget(self.output_edit)
        out_row.addWidget(out_browse)
        form.addRow("Output", out_row)
        layout.addWidget(form_box)

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

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self.worker is not None

    @property
    def distiller(self) -> Distiller | None:
        """The live engine of the current (or last) run."""
        return self.run.distiller if self.run is not None else None

    @property
    def events(self) -> list[Event]:
        """Engine events of the current (or last) run."""
        return self.run.events if self.run is not None else []

    @property
    def stop_requested_at(self) -> int | None:
        """The engine's iteration when Stop was pressed."""
        return self.run.stop_requested_at if self.run is not None else None

    def method(self) -> str:
        return str(self.method_combo.currentData())

    def set_method(self, method: str) -> None:
        idx = self.method_combo.findData(method)
        if idx < 0:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.method_combo.setCurrentIndex(idx)

    def export_checkpoint(self) -> Path | None:
        """The finished or stopped run's student to export: its best.pt if it exists, else last.pt."""
        run = self.run
        if run is None or run.distiller is None or not run.events or run.events[-1].kind not in ("done", "stopped"):
            return None
        return next((p for p in (run.distiller.best_path, run.distiller.last_path) if p.is_file()), None)

    def _update_buttons(self, *_: Any) -> None:
        idle = not self.running and self.export_worker is None
        self.start_button.setEnabled(idle)
        self.stop_button.setEnabled(self.running)
        text = self.output_edit.text().strip()
        self.resume_button.setEnabled(idle and bool(text) and (Path(text) / "last.pt").is_file())
        self.export_button.setEnabled(idle and self.export_checkpoint() is not None)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "MSD / nnU-Net raw folder")
        if path:
            self.folder_edit.setText(path)

    def _browse_output(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder")
        if path:
            self.output_edit.setText(path)

    # ------------------------------------------------------------------ settings -> run
    def _patch(self) -> tuple[list[int] | None, int | None]:
        text = self.patch_edit.text().strip().lower()
        if text in ("", "auto"):
            return None, None
        try:
            values = [int(v) for v in text.replace("x", ",").replace(" ", ",").split(",") if v]
        except ValueError:
            raise ConfigError(f"patch size {text!r}: give 'auto', one number, or one per axis like 64,64") \
                from None
        if not values or any(v < 4 for v in values):
            raise ConfigError(f"patch size {text!r}: every entry must be a number >= 4")
        if len(values) == 1:
            return None, values[0]
        if len(values) not in (2, 3):
            raise ConfigError(f"patch size {text!r}: give 2 (2D) or 3 (3D) numbers")
        return values, None

    def _teacher(self) -> ModelEntry | None:
        entry = self.teacher_chooser.entry()
        if entry is None and self.method() != "none":
            raise ConfigError(f"method {self.method()!r} needs a teacher: load or train one in the Teacher "
                              "widget, or choose method 'none'")
        return entry

    def _cases(self) -> tuple[list[Case] | None, str | None, list[str] | None]:
        if self.data_tabs.currentIndex() == 1:
            folder = self.folder_edit.text().strip()
            if not folder:
                raise DataError("choose an MSD folder (with imagesTr/), or train on layers")
            if not Path(folder).is_dir():
                raise DataError(f"{folder}: folder not found")
            return None, folder, None
        pairs = self.pair_table.pairs()
        if not pairs:
            raise DataError("no image layer is checked: open images (File > Open) and tick them under "
                            "Training data, or use an MSD folder")
        names = None
        for image, labels in pairs:
            names = names or dmd_metadata(labels or image).get("class_names")
        return cases_from_layers(pairs), None, names

    @staticmethod
    def _intervals(iterations: int) -> dict[str, int]:
        """Validate ~10 times a run (at least every 500 steps); write last.pt at least every 200 steps."""
        every = max(1, min(iterations // 10, 500))
        return {"val_interval": every, "checkpoint_interval": min(every, 200)}

    def _config(self) -> tuple[TrainConfig, int | None]:
        patch, single = self._patch()
        iterations = self.iterations_spin.value()
        cfg = TrainConfig(method=self.method(), model=self.student_combo.currentText().strip() or "student",
                          iterations=iterations, patch_size=patch, batch_size=self.batch_spin.value(),
                          flips=self.flips_check.isChecked(), device=str(self.device_combo.currentData()),
                          cpu_bf16=self.bf16_check.isChecked(),
                          num_threads=max(1, (os.cpu_count() or 2) - 1), **self._intervals(iterations))
        cfg.model_channels()  # raises a clear message on a malformed channel list
        return cfg.validate(), single

    def start(self) -> None:
        """Start a new run with the widget's settings."""
        if self.running or self.export_worker is not None:
            return
        try:
            cfg, single = self._config()
            teacher = self._teacher()
            cases, folder, names = self._cases()
            if names and cfg.class_names is None:
                cfg.class_names = list(names)
            text = self.output_edit.text().strip()
            out = Path(text).expanduser() if text else default_output_dir(cfg.method)
            free = _free_folder(out)
            if free != out:
                notify_info(f"Distill: {out} already holds a run; writing to {free} (use Resume to continue "
                            "a run)")
            run = RunHandle(cfg, free, cases=cases, folder=folder, teacher_entry=teacher, patch_single=single)
        except Exception as exc:  # noqa: BLE001 - every problem becomes a message
            self._fail(exc)
            return
        self.output_edit.setText(str(free))
        self.plot.clear()
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
            cfg.num_threads = max(1, (os.cpu_count() or 2) - 1)
            self.set_method(cfg.method)
            self.student_combo.setCurrentText(cfg.model)
            teacher = self._teacher() if cfg.method != "none" else self.teacher_chooser.entry()
            cases, folder, _ = self._cases()
            run = RunHandle(cfg.validate(), out, cases=cases, folder=folder, teacher_entry=teacher, resume=last)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return
        history = ckpt.get("history") or []
        self.plot.clear()
        for h in history:
            self.plot.add_dice(int(h.get("iteration", 0)), h.get("mean_dice"))
        self._launch(run, start_iteration=done)

    def stop(self) -> None:
        """Ask the engine to stop before its next step (it then writes last.pt)."""
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
        # quit (e.g. the viewer closes): close the engine's generator in the worker thread -> last.pt
        worker.aborted.connect(run.close_generator, Qt.ConnectionType.DirectConnection)
        self.worker = worker
        LIVE.running = True
        LIVE.name = f"live: {run.output_dir.name}"
        LIVE.latest = None
        LIVE.changed.emit()
        self.status_label.setText(f"preparing {run.config.method} run in {run.output_dir} …")
        self._update_buttons()
        self._timer.start()
        worker.start()

    # ------------------------------------------------------------------ main-thread handlers
    def _on_yield(self, item: Any) -> None:
        """Record one engine event; widgets change at the next :meth:`_tick` (one repaint for many events)."""
        run = self.run
        if run is None:
            return
        if isinstance(item, Failure):
            self._fail(item.exc)
            return
        ev, snap = item
        run.events.append(ev)
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
            self.status_label.setText(ev.message)
        if snap is not None:
            LIVE.latest = snap
            LIVE.snapshot.emit(snap)
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
        if run is not None and run.distiller is not None:
            self._register(run)
        self._update_buttons()
        if run is not None and run.events and run.events[-1].kind in ("done", "stopped"):
            ev = run.events[-1]
            best = f" · best validation Dice {ev.mean_dice:.3f}" if ev.mean_dice is not None else ""
            self.status_label.setText(f"{ev.message}{best}")
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

    # ------------------------------------------------------------------ export
    def export(self, folder: str | Path | None = None):
        """Export the finished run's student into ``folder`` (asked for if None) in a worker; returns the worker."""
        ckpt = self.export_checkpoint()
        if self.running or self.export_worker is not None or ckpt is None:
            return None
        folder = folder or QFileDialog.getExistingDirectory(self, "Export the student into", str(ckpt.parent))
        if not folder:
            return None
        from ..export import CARD_JSON, CARD_MD, ONNX_NAME, TORCHSCRIPT_NAME, export_student

        out = Path(folder).expanduser()
        formats, note = export_formats()
        names = [TORCHSCRIPT_NAME] + ([ONNX_NAME] if "onnx" in formats else []) + [CARD_JSON, CARD_MD]
        existing = [n for n in names if (out / n).exists()]
        if existing and QMessageBox.question(self, "Export", f"{out} already holds {', '.join(existing)}. "
                                             "Replace?") != QMessageBox.StandardButton.Yes:
            return None
        d = self.run.distiller
        self.status_label.setText(f"exporting {ckpt} to {out} …")
        self.export_worker = start_worker(
            export_student, ckpt, out, formats=formats, cases=d.val_cases, teacher=d.teacher,
            device=str(self.device_combo.currentData()), overwrite=bool(existing),
            on_returned=lambda card: self._on_exported(card, ckpt, out, note), on_failed=self._on_export_failed,
            on_finished=self._on_export_finished)
        self._update_buttons()
        return self.export_worker

    def _on_exported(self, card: dict[str, Any], ckpt: Path, out: Path, note: str) -> None:
        self.last_export = card
        files = ", ".join(Path(f).name for f in card["files"].values())
        retention = (card.get("evaluation") or {}).get("dice_retention")
        text = f"Distill: exported {ckpt.parent.name}/{ckpt.name} to {out}: {files}"
        text += f" (Dice retention {100 * retention:.1f} %)" if retention is not None else ""
        text += f". {note}" if note else ""
        self.status_label.setText(text)
        notify_info(text)

    def _on_export_failed(self, exc: BaseException) -> None:
        self.last_error = notify_error(exc, "Distill export")
        self.status_label.setText(self.last_error)

    def _on_export_finished(self) -> None:
        self.export_worker = None
        with contextlib.suppress(RuntimeError):  # the widget is being deleted with the viewer
            self._update_buttons()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self._guard.stop()
        super().closeEvent(event)

