"""Teacher: load a teacher, train one from image + labels layers, or fetch the demo pair for the phantom.

* **Load**: a napari-dmd checkpoint, or any format :func:`napari_dmd.teachers.load_teacher` reads (TorchScript,
  nnU-Net v2 folder, MONAI bundle, ONNX; formats that carry code only with "trust"). Loading runs in a worker.
* **Train**: one or more (image, labels) layer pairs -> the one run path (:func:`napari_dmd.runner.prepare_run`)
  with method "none", in a child process (:func:`napari_dmd.child.distill_target`, as Distill) whose engine
  events a napari generator worker relays; Stop makes the child stop within the step in progress (it writes
  ``last.pt`` of the last completed step), and the teacher trained so far (best, else last) is registered.
* **Use demo models**: :func:`napari_dmd.pretrained.phantom_models` (trained at first use, cached); the training
  runs in a child process (:func:`napari_dmd.child.run_in_child`), which a worker thread waits on; registers
  the demo teacher and student.

The chosen teacher's classes, parameter count, device and source are shown below. Every model lands in
:data:`napari_dmd.registry.REGISTRY`, where the Distill, Features, Compare and Segment widgets find it.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import runner
from ..config import HELP
from ._choosers import LayerChooser, ModelChooser
from ._geometry import cases_from_layers, dmd_metadata
from ._notify import notify_error, notify_info, notify_warning
from ._scroll import make_scrollable
from ._workers import StopFlag, start_worker, training_threads
from .segment import Throttled

if TYPE_CHECKING:
    import napari

    from ..distill.engine import Distiller, Event
    from ..registry import ModelEntry

__all__ = ["TeacherWidget", "cases_from_layers", "default_teacher_dir"]

PRESET_NAMES = ("teacher", "student", "student-tiny")
DIMS = {"auto": None, "2D (slices of 3D volumes)": 2, "3D": 3}


def default_teacher_dir() -> Path:
    """Where a teacher trained in the GUI is written unless the user names a folder:
    ``<runs root>/teacher-<time>`` (:func:`napari_dmd.runner.default_output_dir`)."""
    return runner.default_output_dir("teacher")


def duration_text(seconds: float) -> str:
    """A rough duration: "40 s", "3 min 20 s", "1 h 5 min"."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def describe(entry: ModelEntry | None) -> str:
    """Classes, parameters, device and origin of a registry entry, as rich text for a QLabel."""
    if entry is None:
        return "<i>no teacher loaded</i>"
    seg = entry.segmenter
    names = seg.class_names or [f"class {k}" for k in range(seg.num_classes)]
    rows = [
        ("classes", f"{seg.num_classes}: " + ", ".join(map(str, names))),
        ("parameters", f"{seg.parameters:,}" if seg.parameters else "unknown"),
        ("device", seg.device),
        ("model", f"{seg.spatial_dims}D, patch {' × '.join(map(str, seg.patch_size))}, "
                  f"normalization {seg.normalization}"),
    ]
    best = entry.info.get("best_dice")
    if best is not None and best >= 0:
        rows.append(("validation Dice", f"{best:.3f}"))
    if entry.checkpoint:
        rows.append(("file", entry.checkpoint))
    return "<br>".join(f"<b>{k}</b>: {v}" for k, v in rows)


class TeacherWidget(QWidget):
    """Load / train / demo teacher, and what the chosen teacher is."""

    demo_progressed = Signal(int, int)  # (done, total) demo training steps, from the worker thread

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.distiller: Distiller | None = None
        self.pairs: list[tuple[Image, Labels]] = []
        self.load_worker = None  # a Load in flight (also beside training or the demo)
        self._eta_start: tuple[float, int] | None = None  # (time, step) of the demo's first progress report
        self.last_event: Event | None = None
        self.notices: list[str] = []  # warnings from preparing the training runs
        self._stop = StopFlag()  # Stop, the viewer closing (napari quits the worker) or the widget's deletion
        self._pbar = None
        # napari's activity-dock bar and the status line repaint the window at each update (10-15 ms under
        # software OpenGL): training steps are shown at most twice a second, and the last step always
        self._show_step = Throttled(self._display_step)
        self.destroyed.connect(self._stop.set)

        # load
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("checkpoint (.pt), TorchScript, ONNX, nnU-Net / MONAI folder")
        self.browse_button = QPushButton("Browse…")
        self.trust_check = QCheckBox("trust the file (TorchScript / pickles may run code)")
        self.load_button = QPushButton("Load teacher")
        load_box = QGroupBox("Load")
        lb = QVBoxLayout(load_box)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.browse_button)
        lb.addLayout(row)
        lb.addWidget(self.trust_check)
        lb.addWidget(self.load_button)

        # train
        self.image_box = LayerChooser(napari_viewer, Image)
        self.labels_box = LayerChooser(napari_viewer, Labels)
        self.add_pair_button = QPushButton("Add pair")
        self.remove_pair_button = QPushButton("Remove")
        self.pairs_list = QListWidget()
        self.pairs_list.setMaximumHeight(70)
        self.pairs_list.setToolTip("Image + labels pairs to train on; when empty, the pair chosen above is used")
        self.preset_box = QComboBox()
        self.preset_box.addItems(PRESET_NAMES)
        self.dims_box = QComboBox()
        self.dims_box.addItems(list(DIMS))
        self.iterations_spin = QSpinBox()
        self.iterations_spin.setRange(1, 1_000_000)
        self.iterations_spin.setValue(1000)
        self.spatial_check = QCheckBox("zoom 0.8-1.25x, rotate up to 30°")
        self.spatial_check.setToolTip("Augmentation: " + HELP["spatial_augment"])
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText(str(runner.runs_root() / "teacher-<time>"))
        self.train_button = QPushButton("Train teacher")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        train_box = QGroupBox("Train from layers")
        tf = QFormLayout(train_box)
        tf.addRow("Image", self.image_box)
        tf.addRow("Labels", self.labels_box)
        row = QHBoxLayout()
        row.addWidget(self.add_pair_button)
        row.addWidget(self.remove_pair_button)
        tf.addRow("", row)
        tf.addRow("Pairs", self.pairs_list)
        tf.addRow("Model", self.preset_box)
        tf.addRow("Dims", self.dims_box)
        tf.addRow("Iterations", self.iterations_spin)
        tf.addRow("Augment", self.spatial_check)
        tf.addRow("Output", self.output_edit)
        row = QHBoxLayout()
        row.addWidget(self.train_button)
        row.addWidget(self.stop_button)
        tf.addRow(row)

        # demo + info
        self.demo_button = QPushButton("Use demo models (phantom)")
        self.demo_button.setToolTip("A small teacher + DMD student for the synthetic phantom sample data, "
                                    "trained at first use (about a minute on a free multi-core CPU, longer on a busy "
                                    "one: the status line shows the time left) and cached")
        self.teacher_box = ModelChooser("teacher")
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        info_box = QGroupBox("Chosen teacher")
        ib = QVBoxLayout(info_box)
        ib.addWidget(self.teacher_box)
        ib.addWidget(self.info)

        layout = QVBoxLayout(self)
        layout.addWidget(load_box)
        layout.addWidget(train_box)
        layout.addWidget(self.demo_button)
        layout.addWidget(info_box)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.browse_button.clicked.connect(self._browse)
        self.load_button.clicked.connect(self.load)
        self.path_edit.returnPressed.connect(self.load)
        self.add_pair_button.clicked.connect(self.add_pair)
        self.remove_pair_button.clicked.connect(self._remove_pair)
        self.train_button.clicked.connect(self.train)
        self.stop_button.clicked.connect(self.stop)
        self.demo_button.clicked.connect(self.use_demo_models)
        self.teacher_box.currentIndexChanged.connect(self._show_info)
        self.demo_progressed.connect(self._on_demo_progress)
        self._show_info()
        make_scrollable(self)  # the dock scrolls instead of growing past a small screen

    # ------------------------------------------------------------------------------------------ helpers
    def _busy(self, busy: bool, stoppable: bool = False) -> None:
        for button in (self.train_button, self.demo_button):
            button.setEnabled(not busy)
        self.load_button.setEnabled(self.load_worker is None)  # Load stays usable while training / the demo runs
        self.stop_button.setEnabled(busy and stoppable)

    def _show_info(self, *_: Any) -> None:
        try:
            self.info.setText(describe(self.teacher_box.entry()))
        except RuntimeError:  # widget deleted
            pass

    def _check_idle(self) -> bool:
        if self.worker is not None:
            notify_error("the Teacher widget is busy; wait or press Stop", "Teacher")
            return False
        return True

    def _finish(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self.distiller = None
        self._eta_start = None
        with contextlib.suppress(RuntimeError):  # the widget is being deleted with the viewer
            self._busy(False)

    def _load_finished(self, shared: bool) -> None:
        self.load_worker = None
        if shared:  # the widget was idle and waited for this load
            self._finish()
            return
        with contextlib.suppress(RuntimeError):
            self.load_button.setEnabled(True)

    def _register(self, entries: list[ModelEntry], message: str) -> None:
        from ..registry import REGISTRY

        for entry in entries:
            REGISTRY.add(entry)
        teacher = next((e for e in entries if e.role == "teacher"), None)
        with contextlib.suppress(RuntimeError):  # the widget was deleted while the work ran
            if teacher is not None:
                self.teacher_box.setCurrentText(teacher.name)
            self._show_info()
            self.status.setText(message)
        notify_info(message)

    def _on_error(self, exc: BaseException, context: str) -> None:
        from ..pretrained import DemoCancelled

        if isinstance(exc, DemoCancelled):
            self.status.setText(str(exc))
            notify_info(str(exc))
            return
        self.status.setText(notify_error(exc, context))

    # ------------------------------------------------------------------------------------------- load
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a teacher", str(Path.home()),
                                              "Teachers (*.pt *.pth *.ts *.onnx *.safetensors);;All files (*)")
        if path:
            self.path_edit.setText(path)
            self.load()

    def load(self, path: str | None = None):
        """Load the teacher at ``path`` (default: the path field) in a worker; returns the worker.

        Also while a teacher trains or the demo models are prepared: the load then runs beside them."""
        if self.load_worker is not None:
            notify_error("a teacher is being loaded; wait for it", "Load teacher")
            return None
        text = (path or self.path_edit.text()).strip()
        if not text:
            self.status.setText(notify_error("give the path of a teacher checkpoint or folder (Browse…)",
                                             "Load teacher"))
            return None
        trust = self.trust_check.isChecked()
        shared = self.worker is None  # idle: the widget waits for the load; else it runs beside the work
        self.status.setText(f"loading {text} …")
        from ..registry import entry_from_teacher_file

        worker = start_worker(entry_from_teacher_file, text, trust=trust,
                              on_returned=lambda e: self._register([e], f"loaded {e.name}"),
                              on_failed=lambda exc: self._on_error(exc, "Load teacher"),
                              on_finished=lambda: self._load_finished(shared))
        self.load_worker = worker
        if shared:
            self.worker = worker
            self._busy(True)
        else:
            self.load_button.setEnabled(False)
        return worker

    # ------------------------------------------------------------------------------------------ train
    def add_pair(self) -> None:
        """Add the chosen image + labels layers to the training pairs."""
        image, labels = self.image_box.layer(), self.labels_box.layer()
        if image is None or labels is None:
            self.status.setText(notify_error("choose an image layer and a labels layer first", "Teacher"))
            return
        if any(i is image and lab is labels for i, lab in self.pairs):
            return
        self.pairs.append((image, labels))
        self.pairs_list.addItem(f"{image.name}  ↔  {labels.name}")

    def _remove_pair(self) -> None:
        row = self.pairs_list.currentRow()
        if 0 <= row < len(self.pairs):
            self.pairs.pop(row)
            self.pairs_list.takeItem(row)

    def _training_pairs(self) -> list[tuple[Image, Labels]]:
        pairs = [(i, lab) for i, lab in self.pairs if i in self.viewer.layers and lab in self.viewer.layers]
        if pairs:
            return pairs
        image, labels = self.image_box.layer(), self.labels_box.layer()
        if image is None or labels is None:
            raise ValueError("choose an image layer and its labels layer (or add pairs) to train a teacher")
        return [(image, labels)]

    def train(self):
        """Train a teacher on the chosen layer pairs in a worker; returns the worker (None on bad input)."""
        from napari.utils import progress

        from ..config import TrainConfig

        if not self._check_idle():
            return None
        try:
            pairs = self._training_pairs()
            cases = cases_from_layers(pairs)
            names = dmd_metadata(pairs[0][1]).get("class_names") or dmd_metadata(pairs[0][0]).get("class_names")
            iterations = self.iterations_spin.value()
            cfg = TrainConfig(method="none", model=self.preset_box.currentText(), iterations=iterations,
                              spatial_dims=DIMS[self.dims_box.currentText()],
                              class_names=list(names) if names else None,
                              val_interval=max(1, min(200, iterations // 5)),
                              checkpoint_interval=max(1, min(200, iterations // 5)), log_interval=10,
                              spatial_augment=self.spatial_check.isChecked(),
                              num_threads=training_threads())  # a core left for napari
            cfg.validate()
        except ValueError as exc:  # DataError and ConfigError are ValueErrors
            self.status.setText(notify_error(exc, "Train teacher"))
            return None
        text = self.output_edit.text().strip()
        out = Path(text).expanduser() if text else default_teacher_dir()
        stop = self._stop
        stop.reset()

        def run():
            from ..child import RunSpec, distill_target, stream_child
            from ..registry import entry_from_checkpoint

            # trained in a child process, as Distill is: it cannot hold napari's event loop; a stop (the Stop
            # button, or the viewer closing this generator) makes it write last.pt of its last completed step.
            # Every message is yielded; _on_event keeps the engine's events.
            result = yield from stream_child(
                distill_target, RunSpec(config=cfg, output_dir=str(out), cases=cases, role="teacher"),
                should_stop=stop, name="napari-dmd-teacher",
                stopped_message="the teacher's training process was stopped before it finished; its run folder "
                                "keeps the last checkpoint")
            path = result["best"] or result["last"]
            return entry_from_checkpoint(path, role="teacher", name=f"teacher: {out.name}")

        self._pbar = progress(total=iterations, desc=f"Train teacher ({out.name})")
        self._busy(True, stoppable=True)
        self.status.setText(f"training a {cfg.model} teacher on {len(cases)} pair(s) into {out} …")
        self.worker = start_worker(run, on_yielded=self._on_event, on_returned=self._on_trained,
                                   on_failed=lambda exc: self._on_error(exc, "Train teacher"),
                                   on_finished=self._finish, stop=stop)
        return self.worker

    def _on_event(self, message: tuple[str, Any]) -> None:
        kind, event = message  # a message of the training child: its engine events are shown
        if kind == "notice":  # a warning from preparing the run (e.g. flips on classes told apart by position)
            text, warning = event
            (notify_warning if warning else notify_info)(f"Train teacher: {text}")
            self.notices.append(text)
            return
        if kind != "event":
            return
        self.last_event = event
        if event.kind == "step":
            self._show_step(event.iteration, event.total)
        elif event.message:
            self.status.setText(event.message)

    def _display_step(self, done: int, total: int) -> None:
        event = self.last_event
        if self._pbar is not None:
            self._pbar.update(done - self._pbar.n)
        loss = event.parts.get("total", float("nan"))
        self.status.setText(f"iteration {done}/{total}  loss {loss:.4f}  ETA {event.eta_s:.0f} s")

    def _on_trained(self, entry: ModelEntry) -> None:
        ev = self.last_event
        how = f"stopped at iteration {ev.iteration}" if ev is not None and ev.kind == "stopped" else "trained"
        self._register([entry], f"{entry.name} {how}; checkpoint {entry.checkpoint}")

    def stop(self) -> None:
        """Ask the training or demo run to stop before its next step."""
        self._stop.set()
        if self.distiller is not None:
            self.distiller.request_stop()
        self.status.setText("stopping after this step …")

    # ------------------------------------------------------------------------------------------- demo
    def use_demo_models(self):
        """Get the phantom demo teacher + student (training them at first use) in a worker; registers both."""
        from napari.utils import progress

        if not self._check_idle():
            return None
        stop = self._stop
        stop.reset()

        def run() -> list[ModelEntry]:
            from ..child import ChildDied, demo_target, run_in_child
            from ..pretrained import DemoCancelled, cached_models, current_recipe
            from ..registry import entry_from_checkpoint

            recipe = current_recipe()
            progress_fn = stop.unless_stopped(self.demo_progressed.emit)
            paths = cached_models(recipe)
            if paths is not None:
                progress_fn(recipe.total, recipe.total)
            else:  # trained in a child process: it cannot hold napari's event loop, and closing the viewer
                try:  # stops it (1.5 s, then terminated) instead of tearing down a training thread
                    paths = run_in_child(demo_target, {"recipe": recipe}, on_progress=progress_fn,
                                         should_stop=stop, name="napari-dmd-demo")
                except ChildDied as exc:
                    if stop():
                        raise DemoCancelled("demo model training was stopped; nothing was cached") from exc
                    raise
            teacher, student = paths
            return [entry_from_checkpoint(teacher, role="teacher", name="demo teacher (phantom)"),
                    entry_from_checkpoint(student, role="student", name="demo student (phantom)")]

        self._pbar = progress(total=0, desc="Demo models (first use: training on the phantom)")
        self._busy(True, stoppable=True)
        self.status.setText("preparing the demo models (cached after the first use) …")
        self.worker = start_worker(run, on_returned=lambda entries: self._register(entries, "demo models loaded"),
                                   on_failed=lambda exc: self._on_error(exc, "Demo models"),
                                   on_finished=self._finish, stop=stop)
        return self.worker

    def _on_demo_progress(self, done: int, total: int) -> None:
        if self._pbar is not None:
            if self._pbar.total != total:
                self._pbar.total = total
            self._pbar.update(done - self._pbar.n)
        now = time.perf_counter()
        if self._eta_start is None or done < self._eta_start[1]:
            self._eta_start = (now, done)
        t0, d0 = self._eta_start
        eta = ""
        if done > d0 and now - t0 >= 1.0:
            eta = f", about {duration_text((total - done) * (now - t0) / (done - d0))} left"
        self.status.setText(f"training the demo models (first use, cached after): step {done}/{total}{eta}; "
                            "Load stays usable meanwhile")
