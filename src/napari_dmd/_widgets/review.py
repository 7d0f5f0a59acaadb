"""Review: where teacher and student disagree, corrected by hand, fed into the next round of distillation.

1. **Rank** (in a worker, progress in the activity dock, Cancel): the teacher's and the student's labels of the
   chosen image (labels layers, or the loaded models run on the image, as in Compare) and the student's class
   probabilities give :func:`napari_dmd.review.rank_slices`: the slices of a volume (tiles of a 2D image) by
   disagreement and by the student's uncertainty (normalized entropy). The table lists them; Next / Previous
   (or a click on a row) move the viewer's slider to the slice and centre the camera on the region, in world
   coordinates (the layer's scale, translate and affine).
2. **Paint corrections** selects the student's labels layer in napari's paint mode; napari's brush, eraser,
   fill and undo / redo work as usual. :class:`._review_paint.PaintTracker` follows exactly which voxels were
   painted since the last round (through the layer's paint events and its undo / redo).
3. **Fine-tune** continues the student for a few hundred steps (in a worker, with a progress bar and Stop) with
   the painted voxels as ground truth, overriding the teacher there, and the teacher's target elsewhere: a new
   round folder (:func:`napari_dmd.corrections.start_round`) holding the corrections and the parent checkpoint.
   The new student is then loaded for Compare / Segment (and here) and the painted set starts afresh.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..data.io import DataError
from ._choosers import LayerChooser, ModelChooser
from ._geometry import labels_metadata, placement_kwargs
from ._notify import notify_error, report_inference_error
from ._review_paint import PaintTracker
from ._review_rank import AXIS_NAMES, RankResult, jump_to, rank_image, region_label
from ._review_tune import ReviewTuning, TuneHandle
from ._scroll import make_scrollable
from ._tables import class_features, label_axes
from ._workers import StopFlag, WindowProgress, start_worker

if TYPE_CHECKING:
    import napari

    from ..registry import ModelEntry
    from ..review import Region

__all__ = ["ReviewWidget"]

COLUMNS = ("region", "score", "disagreement", "uncertainty")


def _level0(layer: Any) -> Any:
    """A layer's full-resolution data (the first level of a multiscale layer)."""
    return layer.data[0] if layer.multiscale else layer.data


def _detach_all(trackers: dict[int, PaintTracker], *_: Any) -> None:
    for tracker in trackers.values():
        with contextlib.suppress(Exception):  # a layer already deleted
            tracker.detach()
    trackers.clear()


class ReviewWidget(ReviewTuning, QWidget):
    """Rank where teacher and student disagree, step through it, paint corrections, fine-tune the student."""

    progressed = Signal(int, int)  # (done, total) windows of the ranking's model runs, from the worker thread

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.regions: list[Region] = []
        self.position = -1  # index in regions of the region shown (-1: none yet)
        self.rank_worker: Any = None
        self.tune_worker: Any = None
        self.round_folder = None  # the last round's folder
        self.trackers: dict[int, PaintTracker] = {}  # id(labels layer) -> what was painted on it
        self._ranked_on: Image | None = None
        self._rank_stop = StopFlag()
        self._tune = TuneHandle()
        self._pbar: WindowProgress | None = None
        self._shown_at = 0.0
        self.destroyed.connect(self._rank_stop.set)
        self.destroyed.connect(self._tune.request_stop)
        self.destroyed.connect(partial(_detach_all, self.trackers))  # the layers get their own undo / redo back

        self.image_box = LayerChooser(napari_viewer, Image)
        self.teacher_box = ModelChooser("teacher")
        self.student_box = ModelChooser("student")
        self.teacher_labels_box = LayerChooser(napari_viewer, Labels, optional=True)
        self.student_labels_box = LayerChooser(napari_viewer, Labels, optional=True)
        for box, role in ((self.teacher_labels_box, "teacher"), (self.student_labels_box, "student")):
            box.combo.value = None
            box.setToolTip(f"(none): run the {role} model on the image")
        self.axis_combo = QComboBox()
        self.axis_combo.addItems([f"{name} (axis {i})" for i, name in enumerate(AXIS_NAMES)])
        self.axis_combo.setToolTip("3D images: rank the slices along this axis (2D images: tiles)")
        self.weight_spin = QDoubleSpinBox()
        self.weight_spin.setRange(0.0, 1.0)
        self.weight_spin.setSingleStep(0.1)
        self.weight_spin.setValue(0.5)
        self.weight_spin.setToolTip("score = (1 - w) x disagreement + w x student uncertainty (entropy)")
        self.balance_check = QCheckBox("every class alike")
        self.balance_check.setToolTip("Weigh each class's disagreement by the class's size, so the slices where a "
                                      "small class (a kidney, the spleen) is missed come before a large organ's "
                                      "border")
        self.rank_button = QPushButton("Rank")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(160)
        self.prev_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.where_label = QLabel("")
        self.paint_button = QPushButton("Paint corrections")
        self.paint_button.setCheckable(True)
        self.paint_button.setToolTip("Select the student's labels layer in paint mode (napari's brush, eraser, "
                                     "fill; Ctrl+Z undoes)")
        self.count_label = QLabel("")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setValue(300)
        self.tune_button = QPushButton("Fine-tune")
        self.tune_button.setToolTip("Continue the student with the painted voxels as ground truth (the teacher "
                                    "elsewhere), as a new round folder")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.augment_check = QCheckBox("augment 2D rounds: intensity, zoom, rotation")
        self.augment_check.setChecked(False)
        self.augment_check.setToolTip("A 2D student's round also changes intensities and zooms and rotates its "
                                      "patches (flips only if the student's own run flipped). Helped a student "
                                      "distilled without augmentation on CHAOS from a new scanner (75-78 Dice after 3 "
                                      "rounds instead of 73, a lost kidney back); hurt the phantom demo's student, "
                                      "which was distilled with augmentation. 3D rounds keep the student's own.")
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m steps")
        self.progress_bar.hide()
        self.status = QLabel("Choose an image and a teacher and student (models or labels layers), then Rank.")
        self.status.setWordWrap(True)
        self._build_layout()

        self.rank_button.clicked.connect(self.rank)
        self.cancel_button.clicked.connect(self.cancel)
        self.next_button.clicked.connect(self.next)
        self.prev_button.clicked.connect(self.previous)
        self.table.cellClicked.connect(lambda row, _col: self.go(row))
        self.paint_button.toggled.connect(self.set_painting)
        self.tune_button.clicked.connect(self.fine_tune)
        self.stop_button.clicked.connect(self.stop)
        self.progressed.connect(self._on_progress)
        self.student_labels_box.combo.changed.connect(self._follow_student)
        self.axis_combo.currentIndexChanged.connect(self._show_count)
        napari_viewer.layers.events.removed.connect(self._on_removed)
        self._follow_student()
        self._update_buttons()
        make_scrollable(self)  # the dock scrolls instead of growing past a small screen

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("Image", self.image_box)
        form.addRow("Teacher", self.teacher_box)
        form.addRow("Student", self.student_box)
        form.addRow("Teacher labels", self.teacher_labels_box)
        form.addRow("Student labels", self.student_labels_box)
        form.addRow("Slices along", self.axis_combo)
        form.addRow("Uncertainty weight", self.weight_spin)
        form.addRow("Classes", self.balance_check)
        rank_row, nav_row, tune_row = QHBoxLayout(), QHBoxLayout(), QHBoxLayout()
        for row, widgets in ((rank_row, (self.rank_button, self.cancel_button)),
                             (nav_row, (self.prev_button, self.next_button)),
                             (tune_row, (QLabel("Steps"), self.steps_spin, self.tune_button, self.stop_button))):
            for w in widgets:
                row.addWidget(w)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(rank_row)
        layout.addWidget(self.table, 1)
        layout.addLayout(nav_row)
        layout.addWidget(self.where_label)
        layout.addWidget(self.paint_button)
        layout.addWidget(self.count_label)
        layout.addWidget(self.augment_check)
        layout.addLayout(tune_row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)

    def _update_buttons(self) -> None:
        ranking, tuning = self.rank_worker is not None, self.tune_worker is not None
        self.rank_button.setEnabled(not ranking and not tuning)
        self.cancel_button.setEnabled(ranking)
        self.tune_button.setEnabled(not ranking and not tuning)
        self.stop_button.setEnabled(tuning)
        self.augment_check.setEnabled(not tuning)
        self.next_button.setEnabled(bool(self.regions))
        self.prev_button.setEnabled(bool(self.regions))

    # -------------------------------------------------------------------------------------------- rank
    def rank(self) -> Any:
        """Rank the chosen image's regions in a worker; returns the worker (None on bad input)."""
        if self.rank_worker is not None or self.tune_worker is not None:
            return None
        layer = self.image_box.layer()
        teacher, student = self.teacher_box.entry(), self.student_box.entry()
        t_layer, s_layer = self.teacher_labels_box.layer(), self.student_labels_box.layer()
        try:
            if layer is None:
                raise DataError("no image layer to review; open an image first")
            if layer.rgb or layer.ndim not in (2, 3):
                raise DataError(f"layer {layer.name!r} is not a single-channel 2D image or 3D volume")
            for entry, given in ((teacher, t_layer), (student, None)):
                if entry is not None and given is None and layer.ndim < entry.segmenter.spatial_dims:
                    raise DataError(f"{entry.name} is {entry.segmenter.spatial_dims}D and cannot segment the "
                                    f"{layer.ndim}D layer {layer.name!r}")
            shape = tuple((layer.data[0] if layer.multiscale else layer.data).shape)
            for role, lab in (("teacher", t_layer), ("student", s_layer)):
                if lab is not None and tuple(_level0(lab).shape) != shape:
                    raise DataError(f"{role} labels layer {lab.name!r} of shape {tuple(_level0(lab).shape)} does "
                                    f"not match image layer {layer.name!r} of shape {shape}")
        except DataError as exc:
            self.status.setText(notify_error(exc, "Review"))
            return None
        stop = self._rank_stop
        stop.reset()
        image = np.asarray(_level0(layer))
        t_lab = None if t_layer is None else np.asarray(_level0(t_layer))
        s_lab = None if s_layer is None else np.asarray(_level0(s_layer))
        kwargs = dict(teacher=teacher if t_layer is None else None, student=student, teacher_labels=t_lab,
                      student_labels=s_lab, axis=self.axis_combo.currentIndex(),
                      uncertainty_weight=self.weight_spin.value(), balance_classes=self.balance_check.isChecked(),
                      should_stop=stop,
                      progress=stop.unless_stopped(self.progressed.emit), source=f"layer {layer.name!r}")
        self._pbar = WindowProgress(f"Review: rank {layer.name}")
        self.status.setText(f"ranking {layer.name!r} …")
        self.rank_worker = start_worker(rank_image, image, **kwargs,
                                        on_returned=lambda res: self._show_rank(res, layer, teacher, student),
                                        on_failed=self._rank_failed, on_finished=self._rank_finished, stop=stop)
        self._update_buttons()
        return self.rank_worker

    def cancel(self) -> None:
        """Stop the ranking before its next window."""
        self._rank_stop.set()
        self.status.setText("cancelling …")

    def _on_progress(self, done: int, total: int) -> None:
        bar = self._pbar
        if bar is not None and bar.due(done, total):
            bar.update(done, total)

    def _rank_failed(self, exc: BaseException) -> None:
        self.status.setText(report_inference_error(exc, "Review"))

    def _rank_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.rank_worker = None
        with contextlib.suppress(RuntimeError):  # the widget is being deleted with the viewer
            self._update_buttons()

    def _add_labels(self, data: np.ndarray, role: str, entry: ModelEntry, image: Image) -> Labels:
        names = entry.segmenter.class_names
        layer = self.viewer.add_labels(data, name=f"{image.name} {role} ({entry.name})",
                                       metadata=labels_metadata(image, model=entry.name,
                                                                class_names=list(names) if names else None),
                                       features=class_features(names), **placement_kwargs(image))
        if role == "teacher":
            layer.contour = 1  # the teacher's outlines over the student's filled labels
        return layer

    def _show_rank(self, res: RankResult, image: Image, teacher: ModelEntry | None,
                   student: ModelEntry | None) -> None:
        if res.teacher is not None and teacher is not None:
            self.teacher_labels_box.set_layer(self._add_labels(res.teacher, "teacher", teacher, image))
        if res.student is not None and student is not None:
            self.student_labels_box.set_layer(self._add_labels(res.student, "student", student, image))
        if image.ndim == 3:
            label_axes(self.viewer)
        self._ranked_on = image
        self.regions = [r for r in res.regions if r.score > 0]
        self.position = -1
        self._fill_table(res.uncertainty)
        self._update_buttons()
        kind = "slices" if image.ndim == 3 else "tiles"
        if not self.regions:
            self.status.setText(f"teacher and student agree everywhere on {image.name!r}"
                                + ("" if res.uncertainty else " (no student model: uncertainty not scored)"))
            return
        top = self.regions[0]
        self.status.setText(f"{len(self.regions)} of {len(res.regions)} {kind} of {image.name!r} to review; top: "
                            f"{region_label(top)} ({100 * top.disagreement:.1f} % disagreement"
                            + (f", uncertainty {top.uncertainty:.2f})" if res.uncertainty else ")")
                            + ". Next ▶ goes there.")

    def _fill_table(self, uncertainty: bool) -> None:
        self.table.setRowCount(len(self.regions))
        for row, r in enumerate(self.regions):
            cells = (region_label(r), f"{r.score:.3f}", f"{100 * r.disagreement:.1f} %",
                     f"{r.uncertainty:.3f}" if uncertainty else "–")
            for col, text in enumerate(cells):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.where_label.setText("")

    # -------------------------------------------------------------------------------------- navigation
    def next(self) -> Region | None:
        """Show the next region of the ranking (the top one first)."""
        return self.go(self.position + 1)

    def previous(self) -> Region | None:
        """Show the previous region of the ranking."""
        return self.go(self.position - 1)

    def go(self, index: int) -> Region | None:
        """Show the region at ``index`` of the ranking (clamped): slider on its slice, camera on its centre."""
        if not self.regions:
            return None
        layer = self._ranked_on
        if layer is None or layer not in self.viewer.layers:
            self.status.setText(notify_error("the ranked image layer is gone; Rank again", "Review"))
            return None
        self.position = min(max(index, 0), len(self.regions) - 1)
        region = self.regions[self.position]
        self.viewer.canvas.grid.enabled = False  # one panel: the student's labels over the image
        jump_to(self.viewer, layer, region)
        with contextlib.suppress(RuntimeError):
            self.table.blockSignals(True)
            self.table.selectRow(self.position)
            self.table.blockSignals(False)
        self.where_label.setText(f"{region_label(region)}: {self.position + 1} of {len(self.regions)}")
        return region

    # ---------------------------------------------------------------------------------------- painting
    def tracker(self) -> PaintTracker | None:
        """What was painted on the chosen student labels layer since the last round (None: no layer)."""
        layer = self.student_labels_box.layer()
        return None if layer is None else self.trackers.get(id(layer))

    def _follow_student(self, *_: Any) -> None:
        layer = self.student_labels_box.layer()
        if layer is not None and id(layer) not in self.trackers:
            self.trackers[id(layer)] = PaintTracker(layer, on_change=self._show_count)
        self._show_count()

    def _on_removed(self, event: Any) -> None:
        tracker = self.trackers.pop(id(event.value), None)
        if tracker is not None:
            tracker.detach()

    def _show_count(self, *_: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the widget is being deleted with the viewer
            tracker = self.tracker()
            if tracker is None:
                self.count_label.setText("no student labels layer to correct yet: Rank, or choose one")
                return
            n = tracker.count
            if tracker.layer.ndim == 3:
                m = tracker.slices(self.axis_combo.currentIndex())
                self.count_label.setText(f"{n} voxels corrected in {m} slice{'s' * (m != 1)} since the last round")
            else:
                self.count_label.setText(f"{n} pixels corrected since the last round")

    def set_painting(self, on: bool) -> None:
        """Paint mode on the student's labels layer (selected, shown, 2D view), or back to pan/zoom."""
        layer = self.student_labels_box.layer()
        if layer is None:
            if on:
                self.status.setText(notify_error("no student labels layer to paint on: Rank first, or choose "
                                                 "one under Student labels", "Review"))
                self.paint_button.setChecked(False)
            return
        if on:
            if self.viewer.dims.ndisplay != 2:
                self.viewer.dims.ndisplay = 2
            layer.visible = True
            self.viewer.layers.selection.active = layer
            layer.mode = "paint"
        elif layer.mode in ("paint", "erase", "fill", "polygon"):
            layer.mode = "pan_zoom"

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self._tune.request_stop()
        self._rank_stop.set()
        super().closeEvent(event)
