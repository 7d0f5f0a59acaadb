"""Compare: teacher and student on the same image, side by side, with their agreement in numbers.

Both models run in one napari thread worker (timed separately; the widget's own progress bar counts the windows of
all runs, updated at most twice a second; Cancel before the next window). On the main thread the widget then adds
(or updates) three labels layers placed over the image — the teacher's labels, the student's labels and a
disagreement map (1 where they differ) — and switches napari's grid view on (``viewer.canvas.grid``, one shared
camera, one layer per cell: the image, its ground truth and these three; the other layers are hidden until the grid
is left; the view is reset to fit and a volume shows its middle slice). A per-class Dice table shows teacher vs
student, and each vs a ground-truth labels layer when one is chosen. Both runs and the Dice scores are
:func:`napari_dmd.compare.compare_models` (Qt-free core, re-exported here).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..compare import CompareResult, compare_models
from ..data.io import DataError
from ._choosers import LayerChooser, ModelChooser, mark_output
from ._geometry import differs, labels_metadata, placement_kwargs
from ._notify import guard_layer, notify_error, report_inference_error
from ._scroll import make_scrollable
from ._tables import class_features, fit_rows, label_axes
from ._workers import StopFlag, start_worker
from .segment import Throttled, set_progress

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

    from ..registry import ModelEntry

__all__ = ["CompareResult", "CompareWidget", "compare_models"]

DISAGREE_COLORS = {None: "transparent", 0: "transparent", 1: "magenta"}
DICE_ROWS, MAX_DICE_ROWS = 4, 16  # the Dice table shows 4 rows when empty, up to 16 classes + mean unscrolled


def _fmt(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.0f} k" if n else "?"


class CompareWidget(QWidget):
    """Teacher and student choosers, image and optional ground truth, Compare, a Dice table and timings."""

    progressed = Signal(int, int)  # (done, total) windows over both models, from the worker thread

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: FunctionWorker | None = None
        self.result: CompareResult | None = None
        self.layers: dict[str, Labels] = {}
        self._stop = StopFlag()  # Cancel, the viewer closing (napari quits the worker) or the widget's deletion
        self._warning = ""  # the model-data guard's warnings for the run in flight
        self.destroyed.connect(self._stop.set)

        self.teacher_box = ModelChooser("teacher", fallback_roles=("student",))  # students: compare two rounds
        self.teacher_box.setToolTip("a teacher, or another student (listed after the teachers) to compare two "
                                    "students, e.g. a corrections round with its parent")
        self.student_box = ModelChooser("student")
        self.image_box = LayerChooser(napari_viewer, Image)
        self.truth_box = LayerChooser(napari_viewer, Labels, optional=True)
        self.grid_check = QCheckBox("grid view (one panel per layer)")
        self.grid_check.setChecked(True)
        self.compare_button = QPushButton("Compare")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["teacher\nvs student", "teacher\nvs GT", "student\nvs GT"])
        self.table.horizontalHeader().setMinimumHeight(2 * self.fontMetrics().lineSpacing() + 10)  # 2 lines, uncut
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setToolTip("Dice per class (– : class absent from both maps, or no ground truth chosen)")
        fit_rows(self.table, min_rows=DICE_ROWS, max_rows=MAX_DICE_ROWS)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m windows")
        self.progress_bar.setToolTip("windows of all runs: each model once for its labels, then 3 timed runs")
        self.progress_bar.hide()  # shown while a comparison runs
        self.times = QLabel("")
        self.times.setWordWrap(True)
        self.status = QLabel("Choose a teacher, a student and an image, then click Compare.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Teacher", self.teacher_box)
        form.addRow("Student", self.student_box)
        form.addRow("Image", self.image_box)
        form.addRow("Ground truth", self.truth_box)
        form.addRow("", self.grid_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.compare_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(QLabel("Dice per class"))
        layout.addWidget(self.table)
        layout.addWidget(self.times)
        layout.addWidget(self.status)

        self.compare_button.clicked.connect(self.compare)
        self.cancel_button.clicked.connect(self.cancel)
        self.progressed.connect(self._on_progress)
        self._hidden: list[Any] = []  # layers hidden while the grid shows the comparison
        self.grid_check.toggled.connect(self._grid_toggled)
        grid_events = napari_viewer.canvas.grid.events.enabled
        grid_events.connect(self._on_grid)
        self.destroyed.connect(lambda *_: grid_events.disconnect(self._on_grid))
        make_scrollable(self)  # the dock scrolls instead of growing past a small screen

    # ---------------------------------------------------------------------------------------- actions
    def compare(self) -> FunctionWorker | None:
        """Start the comparison; returns the worker (None when the choices are incomplete)."""
        if self.worker is not None:
            notify_error("a comparison is already running; cancel it first", "Compare")
            return None
        teacher, student = self.teacher_box.entry(), self.student_box.entry()
        layer, truth = self.image_box.layer(), self.truth_box.layer()
        try:
            if teacher is None or student is None:
                raise DataError("choose a teacher and a student (load them in the Teacher / Distill widgets, "
                                "or click 'Use demo models' in the Teacher widget)")
            if teacher.name == student.name:  # e.g. no teacher loaded: the Teacher list offers the students too
                raise DataError(f"choose a teacher and a student: both lists hold {student.name!r} (load a teacher "
                                "in the Teacher widget, or pick another student as the reference)")
            if layer is None:
                raise DataError("no image layer to compare on; open an image first")
            if layer.rgb or layer.ndim not in (2, 3):
                raise DataError(f"layer {layer.name!r} is not a single-channel 2D image or 3D volume")
            for entry in (teacher, student):
                if layer.ndim < entry.segmenter.spatial_dims:
                    raise DataError(f"{entry.name} is {entry.segmenter.spatial_dims}D and cannot segment the "
                                    f"{layer.ndim}D layer {layer.name!r}")
        except ValueError as exc:
            self._clear_result(notify_error(exc, "Compare"))
            return None
        warnings = [guard_layer(entry, layer, "Compare") for entry in (teacher, student)]
        self._warning = "".join(f"\nWarning: {w}" for w in warnings if w)
        return self._start(teacher, student, layer, truth)

    def _clear_result(self, message: str) -> None:
        """Show ``message`` in place of the previous result (no stale Dice table or timings)."""
        self.result = None
        self.table.setRowCount(0)
        fit_rows(self.table, min_rows=DICE_ROWS, max_rows=MAX_DICE_ROWS)
        self.times.setText("")
        self.status.setText(message)

    def cancel(self) -> None:
        """Stop the running comparison before its next window."""
        self._stop.set()
        self.status.setText("cancelling …")

    # ----------------------------------------------------------------------------------------- worker
    def _start(self, teacher: ModelEntry, student: ModelEntry, layer: Image, truth: Labels | None):
        stop = self._stop
        stop.reset()
        data = layer.data[0] if layer.multiscale else layer.data
        truth_data = None if truth is None else (truth.data[0] if truth.multiscale else truth.data)
        source = f"layer {layer.name!r}"
        progress = Throttled(stop.unless_stopped(self.progressed.emit))

        def run() -> CompareResult:
            return compare_models(teacher, student, np.asarray(data),
                                  None if truth_data is None else np.asarray(truth_data),
                                  progress=progress, should_stop=stop, source=source)

        set_progress(self.progress_bar, 0, 1)
        self.progress_bar.show()
        self.compare_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"running {teacher.name} and {student.name} on {layer.name!r} …" + self._warning)
        self.worker = start_worker(run, on_returned=lambda res: self._show(res, teacher, student, layer, truth),
                                   on_failed=self._on_error, on_finished=self._on_finished,
                                   stop=stop)
        return self.worker

    def _on_progress(self, done: int, total: int) -> None:
        if self.worker is not None:  # a late window count after the result is dropped
            set_progress(self.progress_bar, done, total)

    def _put_layer(self, key: str, data: np.ndarray, name: str, source: Image, **kwargs: Any) -> Labels:
        """Add a labels layer, or update the one this widget added before under ``key``."""
        old = self.layers.get(key)
        meta = mark_output(labels_metadata(source, **kwargs.pop("extra", {})), "compare")
        if old is not None and old in self.viewer.layers and old.data.shape == data.shape:
            old.data = data
            if old.name != name:
                old.name = name
            old.metadata = meta
            if "features" in kwargs:
                old.features = kwargs["features"] or {}
            for attr, value in placement_kwargs(source).items():
                if differs(getattr(old, attr), value):  # each change re-slices and redraws the grid's views
                    setattr(old, attr, value)
            return old
        layer = self.viewer.add_labels(data, name=name, metadata=meta, **placement_kwargs(source), **kwargs)
        self.layers[key] = layer
        return layer

    def _grid_on(self, own: list[Any]) -> None:
        """napari's grid with only ``own`` layers (the others hidden until the grid is left), the view reset to
        fit them, and a volume at its middle slice.

        Layers are matched by name (unique in a layer list): ``add_labels`` through the plugin's viewer returns a
        proxy of the layer, not the object the list holds, so an identity test hid this widget's own layers and
        showed them again, each change rebuilding the grid's views (0.3-0.4 s a time on the development VM)."""
        mine = {o.name for o in own}
        for other in self.viewer.layers:
            if other.visible and other.name not in mine:
                other.visible = False
                self._hidden.append(other)
        for layer in own:
            if not layer.visible:  # setting it anyway redraws the whole grid once per layer
                layer.visible = True
        grid = self.viewer.canvas.grid
        if grid.stride != 1:
            grid.stride = 1
        if not grid.enabled:
            grid.enabled = True
        self.viewer.reset_view()
        image = own[0]
        dims = self.viewer.dims
        if image.ndim == 3 and dims.ndim == 3 and dims.ndisplay == 2:
            low, high = image.extent.world[:, 0]
            dims.set_point(0, (low + high) / 2)  # the middle slice, not slice 0

    def _on_grid(self, *_: Any) -> None:
        """Grid view left (here or in napari): show the layers the grid hid again."""
        if self.viewer.canvas.grid.enabled:
            return
        hidden, self._hidden = self._hidden, []
        for layer in hidden:
            if layer in self.viewer.layers:
                layer.visible = True

    def _grid_toggled(self, on: bool) -> None:
        if not on:
            self.viewer.canvas.grid.enabled = False

    def _show(self, res: CompareResult, teacher: ModelEntry, student: ModelEntry, layer: Image,
              truth: Labels | None = None) -> None:
        self.result = res
        names = ["background", *res.class_names]
        ref = "teacher" if teacher.role == "teacher" else "reference"  # a student in the teacher's place
        self.table.setHorizontalHeaderLabels([f"{ref}\nvs student", f"{ref}\nvs GT", "student\nvs GT"])
        self._put_layer("teacher", res.teacher, f"{layer.name} {ref} ({teacher.name})", layer,
                        features=class_features(names), extra={"model": teacher.name, "inference_s": res.teacher_s})
        self._put_layer("student", res.student, f"{layer.name} student ({student.name})", layer,
                        features=class_features(names), extra={"model": student.name, "inference_s": res.student_s})
        disagreement = res.disagreement  # a property: computed once here
        self._put_layer("disagreement", disagreement, f"{layer.name} {ref} ≠ student", layer,
                        colormap=DISAGREE_COLORS, extra={"models": [teacher.name, student.name]})
        if self.grid_check.isChecked():
            self._grid_on([layer, *([truth] if truth is not None else []), *self.layers.values()])
        self._fill_table(res)
        speed = res.teacher_s / res.student_s if res.student_s > 0 else float("nan")
        self.times.setText(
            f"{ref} {res.teacher_s:.2f} s ({_fmt_params(teacher.segmenter.parameters)} parameters)  ·  "
            f"student {res.student_s:.2f} s ({_fmt_params(student.segmenter.parameters)})  ·  "
            f"{speed:.1f}× faster on {student.segmenter.device} (median of {res.timing_runs} runs after a warm-up)")
        agree = 100.0 * (1.0 - disagreement.mean()) if disagreement.size else 100.0
        if res.teacher.ndim == 3:
            label_axes(self.viewer)
        self.status.setText(f"{ref} and student agree on {agree:.1f} % of the pixels{self._worst(res)}"
                            + self._warning)

    @staticmethod
    def _worst(res: CompareResult) -> str:
        """The class teacher and student agree on least, by name (empty when none is scored)."""
        dice = np.asarray(res.dice_ts, dtype=float) if res.dice_ts is not None else np.zeros(0)
        if dice.size < 1 or not np.isfinite(dice).any():
            return ""
        worst = int(np.nanargmin(dice))
        return f"; least agreement on {res.class_names[worst]} (Dice {dice[worst]:.3f})"

    def _fill_table(self, res: CompareResult) -> None:
        cols = [res.dice_ts, res.dice_tg, res.dice_sg]
        self.table.setRowCount(len(res.class_names) + 1)
        self.table.setVerticalHeaderLabels([*res.class_names, "mean"])
        for c, values in enumerate(cols):
            for r in range(len(res.class_names)):
                text = "–" if values is None else _fmt(values[r])
                self.table.setItem(r, c, QTableWidgetItem(text))
            mean = None
            if values is not None and np.isfinite(values).any():
                mean = float(np.nanmean(values))
            self.table.setItem(len(res.class_names), c, QTableWidgetItem(_fmt(mean)))
        fit_rows(self.table, min_rows=DICE_ROWS, max_rows=MAX_DICE_ROWS)

    def _on_error(self, exc: BaseException) -> None:
        self._clear_result(report_inference_error(exc, "Compare"))

    def _on_finished(self) -> None:
        self.worker = None
        with contextlib.suppress(RuntimeError):  # the widget is being deleted with the viewer
            self.progress_bar.hide()
            self.compare_button.setEnabled(True)
            self.cancel_button.setEnabled(False)
