"""The Segment widget's batch box: segment all open images, or a folder of files, into a folder of label files.

A thin view of :func:`napari_dmd.batch.segment_batch`, run in a napari thread worker: a progress bar over the
images (and the current image's sliding windows), Cancel (before the next window; the image in progress writes
nothing), one line per input that failed while the batch goes on, and a summary at the end. Label files take the
input's name (``<layer name>.nii.gz`` for an open image) and its spacing and affine, so NIfTI keeps the scan's
world geometry; an existing file is replaced only with "overwrite" ticked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Image
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..batch import BatchArray, BatchProgress, BatchResult, folder_inputs, segment_batch
from ..data.io import DataError
from ._choosers import is_output
from ._geometry import layer_affine, layer_spacing
from ._notify import notify_error, notify_info
from ._workers import StopFlag, start_worker

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

    from ..registry import ModelEntry

__all__ = ["BatchBox", "open_image_inputs"]

STEPS = 1000  # progress bar resolution


def open_image_inputs(viewer: napari.Viewer) -> tuple[list[BatchArray], list[str]]:
    """The viewer's image layers as batch inputs (the plugin's own outputs left out), and one line per image
    layer that cannot be segmented (RGB, not 2D/3D)."""
    inputs, skipped = [], []
    for layer in viewer.layers:
        if not isinstance(layer, Image) or is_output(layer):
            continue
        if layer.rgb or layer.ndim not in (2, 3):
            what = "an RGB image" if layer.rgb else f"{layer.ndim}D"
            skipped.append(f"layer {layer.name!r}: {what}; skipped (segment single-channel 2D or 3D images)")
            continue
        data = layer.data[0] if layer.multiscale else layer.data
        inputs.append(BatchArray(layer.name, data, layer_spacing(layer), layer_affine(layer)))
    return inputs, skipped


class BatchBox(QGroupBox):
    """Output folder, overwrite, "Segment all open images", "Segment a folder…", progress bar, Cancel, summary."""

    progressed = Signal(object)  # BatchProgress, from the worker thread

    def __init__(self, viewer: napari.Viewer, model: Callable[[], ModelEntry | None],
                 parent: QWidget | None = None) -> None:
        super().__init__("Batch: label files into a folder", parent)
        self.viewer = viewer
        self._model = model
        self.worker: FunctionWorker | None = None
        self.result: BatchResult | None = None
        self._skipped: list[str] = []
        self._stop = StopFlag()
        self.destroyed.connect(self._stop.set)

        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("output folder for the label files")
        self.out_button = QPushButton("Browse…")
        self.overwrite_check = QCheckBox("overwrite existing label files")
        self.open_button = QPushButton("Segment all open images")
        self.open_button.setToolTip("Every image layer (not the plugin's own layers) -> <layer name>.nii.gz")
        self.folder_button = QPushButton("Segment a folder…")
        self.folder_button.setToolTip("Every image file, DICOM series and OME-Zarr image in a folder")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setRange(0, STEPS)
        self.bar.setValue(0)
        self.bar.setTextVisible(False)
        self.bar.hide()
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.out_edit, 1)
        row.addWidget(self.out_button)
        layout.addLayout(row)
        layout.addWidget(self.overwrite_check)
        row = QHBoxLayout()
        row.addWidget(self.open_button)
        row.addWidget(self.folder_button)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        layout.addWidget(self.status)

        self.out_button.clicked.connect(self._browse_out)
        self.open_button.clicked.connect(lambda: self.segment_open())
        self.folder_button.clicked.connect(lambda: self.segment_folder())
        self.cancel_button.clicked.connect(self.cancel)
        self.progressed.connect(self._on_progress)

    # ------------------------------------------------------------------------------------------ actions
    def _browse_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the label files", self.out_edit.text() or "")
        if path:
            self.out_edit.setText(path)

    def _output(self) -> Path:
        text = self.out_edit.text().strip()
        if not text:
            raise DataError("choose an output folder for the label files (Browse…)")
        return Path(text).expanduser()

    def _entry(self) -> ModelEntry:
        entry = self._model()
        if entry is None:
            raise DataError("no model is loaded; load or train one in the Teacher or Distill widget, or click "
                            "'Use demo models' in the Teacher widget")
        return entry

    def segment_open(self) -> FunctionWorker | None:
        """Segment every open image layer into the output folder; returns the worker (None on bad input)."""
        try:
            entry, out = self._entry(), self._output()
            inputs, skipped = open_image_inputs(self.viewer)
            if not inputs:
                raise DataError("no image layer to segment; open images first" + (f" ({skipped[0]})" if skipped
                                                                                   else ""))
        except ValueError as exc:
            self.status.setText(notify_error(exc, "Batch segment"))
            return None
        return self._start(entry, inputs, out, skipped)

    def segment_folder(self, folder: str | Path | None = None) -> FunctionWorker | None:
        """Segment the images in ``folder`` (asked for when None) into the output folder; returns the worker."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder of images to segment", "")
            if not folder:
                return None
        try:
            entry = self._entry()
            inputs = folder_inputs(folder)
            if not inputs:
                raise DataError(f"{folder}: no images found (NIfTI, TIFF, NRRD, MHA, PNG, DICOM series, OME-Zarr)")
            if not self.out_edit.text().strip():
                self.out_edit.setText(str(Path(folder) / "labels"))  # a new folder beside the images
            out = self._output()
        except ValueError as exc:
            self.status.setText(notify_error(exc, "Batch segment"))
            return None
        return self._start(entry, inputs, out, [])

    def cancel(self) -> None:
        """Stop the batch before its next sliding window; the image in progress is not written."""
        self._stop.set()
        self.status.setText("cancelling …")

    # ------------------------------------------------------------------------------------------- worker
    def _start(self, entry: ModelEntry, inputs: list[Any], out: Path, skipped: list[str]) -> FunctionWorker | None:
        if self.worker is not None:
            notify_error("a batch is already running; cancel it first", "Batch segment")
            return None
        stop = self._stop
        stop.reset()
        self._skipped = skipped
        self.result = None
        self.open_button.setEnabled(False)
        self.folder_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.bar.setValue(0)
        self.bar.show()
        self.status.setText(f"segmenting {len(inputs)} image(s) with {entry.name} into {out} …")
        self.worker = start_worker(segment_batch, entry.segmenter, inputs, out,
                                   overwrite=self.overwrite_check.isChecked(),
                                   progress=stop.unless_stopped(self.progressed.emit), should_stop=stop,
                                   on_returned=self._on_done, on_failed=self._on_error,
                                   on_finished=self._on_finished, stop=stop)
        return self.worker

    def _on_progress(self, p: BatchProgress) -> None:
        if self.worker is None:
            return
        self.bar.setValue(int(STEPS * p.fraction))
        if p.name:
            windows = f", window {p.windows_done}/{p.windows}" if p.windows else ""
            self.status.setText(f"segmenting {p.index + 1}/{p.files}: {p.name}{windows}")

    def _on_done(self, result: BatchResult) -> None:
        self.result = result
        lines = result.summary().splitlines()
        if self._skipped:
            lines += [f"  {line}" for line in self._skipped]
        self.status.setText("\n".join(lines))
        notify_info(f"Segment: {lines[0]}")

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(notify_error(exc, "Batch segment"))

    def _on_finished(self) -> None:
        self.worker = None
        with contextlib.suppress(RuntimeError):  # the widget is being deleted with the viewer
            self.bar.setValue(STEPS if self.result is not None and not self.result.cancelled else self.bar.value())
            self.open_button.setEnabled(True)
            self.folder_button.setEnabled(True)
            self.cancel_button.setEnabled(False)
