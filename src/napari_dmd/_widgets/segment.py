"""Segment: one click turns an image layer into a labels layer predicted by a loaded model.

The image follows the active layer (never to a layer the plugin made). Prediction
(:class:`napari_dmd.segment.Segmenter`, tiled with Gaussian blending; a 2D model runs slice by slice on a 3D
volume) runs in a napari thread worker; its window count, sent at most twice a second (:class:`Throttled`),
drives the widget's own progress bar and status line, and Cancel stops it before the next window. (napari's
activity-dock progress bar processed events and repainted the window at every update, 10-15 ms each under
software OpenGL: on 2 cores Segment ran 1.68x and Compare 1.55x slower in the viewer than headless; ``napari-dmd
bench gui --inference``.) The labels layer is added on the main thread with the image's scale, translate,
rotation, shear and affine, and the image's napari-dmd metadata (file affine), so saving it to NIfTI writes the
scan's affine. Segmenting the same image with the same model again updates that layer in place (no "[1]" copy,
no new layer for napari to build), unless the user painted on it or the image moved: then the result gets a layer
of its own and theirs is kept. "Segment all open images…" / "Segment a folder…" write label files into a folder
(:mod:`._batch`).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..data.io import DataError
from ._batch import BatchBox
from ._choosers import LayerChooser, ModelChooser, is_output, mark_output
from ._geometry import differs, labels_metadata, placement_kwargs
from ._notify import guard_layer, notify_error, report_inference_error
from ._scroll import make_scrollable
from ._tables import class_features, class_list, label_axes
from ._workers import StopFlag, start_worker

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

    from ..registry import ModelEntry

__all__ = ["PROGRESS_INTERVAL_S", "SegmentWidget", "Throttled", "image_array", "placement_kwargs", "set_progress"]

PROGRESS_INTERVAL_S = 0.5  # window counts reach the main thread at most this often (and the last one always)


class Throttled:
    """``fn(done, total)`` called at most every ``interval_s`` seconds, and always for ``done >= total``.

    Wraps a worker's progress callback (in the worker thread), so the main thread is woken and repaints at
    most ~2 times a second instead of once per window batch.
    """

    def __init__(self, fn: Callable[[int, int], Any], interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self.fn = fn
        self.interval_s = interval_s
        self._last = -float("inf")

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < self.interval_s:
            return
        self._last = now
        self.fn(done, total)


def set_progress(bar: QProgressBar, done: int, total: int) -> None:
    """Show ``done`` of ``total`` on ``bar`` with one deferred repaint (``setValue`` alone repaints at once)."""
    bar.setUpdatesEnabled(False)
    if bar.maximum() != max(1, total):
        bar.setRange(0, max(1, total))
    bar.setValue(min(done, max(1, total)))
    bar.setUpdatesEnabled(True)


def image_array(layer: Image) -> np.ndarray:
    """The full-resolution data of an image layer as a NumPy array (reads dask/zarr data into memory)."""
    if layer.rgb:
        raise DataError(f"layer {layer.name!r} is an RGB image; convert it to one channel to segment it")
    data = layer.data[0] if layer.multiscale else layer.data
    return np.asarray(data)


class SegmentWidget(QWidget):
    """Model chooser (students first), image chooser following the active layer, Segment and Cancel."""

    progressed = Signal(int, int)  # (done, total) windows, emitted from the worker thread

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: FunctionWorker | None = None
        self._finished_run = True  # no run in flight: window counts are ignored
        self._stop = StopFlag()  # Cancel, the viewer closing (napari quits the worker) or the widget's deletion
        self._warning: str | None = None  # the model-data guard's warning for the run in flight
        # (image name, model entry's id) -> (labels layer, entry, digest of what was written): reused on a repeat
        self._outputs: dict[tuple[str, int], tuple[Labels, Any, bytes]] = {}
        self.destroyed.connect(self._stop.set)

        self.model_box = ModelChooser("student", fallback_roles=("teacher",))
        self.image_box = LayerChooser(napari_viewer, Image)
        self.segment_button = QPushButton("Segment")
        self.segment_button.setToolTip("Predict a labels layer for the chosen image with the chosen model")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m windows")
        self.progress_bar.hide()  # shown while a segmentation runs
        self.status = QLabel("Load a model in the Teacher widget (or Use demo models), then click Segment.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Model", self.model_box)
        form.addRow("Image", self.image_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        self.batch = BatchBox(napari_viewer, self.model_box.entry)  # all open images / a folder -> label files
        layout.addWidget(self.batch)
        layout.addStretch(1)

        self.segment_button.clicked.connect(self.segment)
        self.cancel_button.clicked.connect(self.cancel)
        self.progressed.connect(self._on_progress)
        napari_viewer.layers.selection.events.active.connect(self._follow_active)
        self._follow_active()
        make_scrollable(self)  # the dock scrolls instead of growing past a small screen

    # ---------------------------------------------------------------------------------------- actions
    def _follow_active(self, *_: Any) -> None:
        """Choose the active layer when it is an image the plugin did not make (not a Features map)."""
        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and not is_output(active):
            try:
                self.image_box.set_layer(active)
            except RuntimeError:  # widget already deleted
                pass

    def segment(self) -> FunctionWorker | None:
        """Start segmenting the chosen image with the chosen model; returns the worker (None on error)."""
        if self.worker is not None:
            notify_error("a segmentation is already running; cancel it first", "Segment")
            return None
        entry = self.model_box.entry()
        layer = self.image_box.layer()
        try:
            if entry is None:
                raise DataError("no model is loaded; load or train one in the Teacher or Distill widget, "
                                "or click 'Use demo models' in the Teacher widget")
            if layer is None:
                raise DataError("no image layer to segment; open an image first")
            if layer.rgb:
                raise DataError(f"layer {layer.name!r} is an RGB image; segment a single-channel image")
            if layer.ndim not in (2, 3):
                raise DataError(f"layer {layer.name!r} has {layer.ndim} dimensions; segment a 2D image or "
                                "3D volume")
            if layer.ndim < entry.segmenter.spatial_dims:
                raise DataError(f"{entry.name} is a {entry.segmenter.spatial_dims}D model and cannot segment "
                                f"the {layer.ndim}D layer {layer.name!r}")
        except ValueError as exc:
            self.status.setText(notify_error(exc, "Segment"))
            return None
        self._warning = guard_layer(entry, layer, "Segment")
        return self._start(entry, layer)

    def cancel(self) -> None:
        """Ask the running prediction to stop before its next window."""
        self._stop.set()
        self.status.setText("cancelling …")

    # ----------------------------------------------------------------------------------------- worker
    def _start(self, entry: ModelEntry, layer: Image) -> FunctionWorker:
        stop = self._stop
        stop.reset()
        seg = entry.segmenter
        source = f"layer {layer.name!r}"
        data = layer.data[0] if layer.multiscale else layer.data
        progress = Throttled(stop.unless_stopped(self.progressed.emit))

        def predict() -> tuple[np.ndarray, float, np.ndarray, bytes]:
            image = np.asarray(data)
            t0 = time.perf_counter()
            labels = seg(image, progress=progress, should_stop=stop, source=source)
            # the classes present and the digest, off the Qt thread
            return labels, time.perf_counter() - t0, np.unique(labels), label_digest(labels)

        set_progress(self.progress_bar, 0, 1)
        self.progress_bar.show()
        self._finished_run = False
        self.segment_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"segmenting {layer.name!r} with {entry.name} on {seg.device} …" + self._warned())
        self.worker = start_worker(predict, on_returned=lambda result: self._add_layer(result, entry, layer),
                                   on_failed=self._on_error, on_finished=self._on_finished,
                                   stop=stop)
        return self.worker

    def _on_progress(self, done: int, total: int) -> None:
        if self._finished_run:  # a late window count never overwrites the result
            return
        self.status.setText(f"segmenting: {done}/{total} windows" + self._warned())
        set_progress(self.progress_bar, done, total)

    def _add_layer(self, result: tuple[np.ndarray, float, np.ndarray, bytes], entry: ModelEntry,
                   layer: Image) -> None:
        labels, seconds, present, digest = result
        self._finished_run = True
        names = entry.segmenter.class_names
        meta = mark_output(labels_metadata(layer, model=entry.name, class_names=list(names) if names else None,
                                           inference_s=seconds), "segmentation")
        name = f"{layer.name} segmentation ({entry.name})"
        # forget layers the user deleted (their data is freed); what is left is in the viewer
        self._outputs = {k: v for k, v in self._outputs.items() if v[0] in self.viewer.layers}
        key = (layer.name, id(entry))
        old = self._reusable(key, entry, layer, labels.shape)
        if old is not None:  # the same image and model again: the layer it wrote, untouched since, is updated
            old.data = labels
            old.metadata = meta
            out, verb = old, "updated"
        else:
            out = self.viewer.add_labels(labels, name=name, metadata=meta, features=class_features(names),
                                         **placement_kwargs(layer))
            verb = "added"
        self._outputs[key] = (out, entry, digest)
        if labels.ndim == 3:
            label_axes(self.viewer)
        self.status.setText(f"{out.name} ({verb}): {seconds:.2f} s, classes present: {class_list(present, names)}"
                            + self._warned())

    def _reusable(self, key: tuple[str, int], entry: ModelEntry, image: Image, shape: tuple[int, ...]) \
            -> Labels | None:
        """The labels layer an earlier run of the same model on the same image added (still in the viewer: the
        table is pruned first), if of the same shape and placement and holding exactly what was written (a layer
        the user painted on is kept: the new result gets a layer of its own)."""
        found = self._outputs.get(key)
        if found is None:
            return None
        old, owner, digest = found
        if owner is not entry or old.data.shape != shape:
            return None
        if any(differs(getattr(old, k), v) for k, v in placement_kwargs(image).items()):
            return None
        return old if label_digest(np.asarray(old.data)) == digest else None

    def _warned(self) -> str:
        return f"\nWarning: {self._warning}" if self._warning else ""

    def _on_error(self, exc: BaseException) -> None:
        self._finished_run = True
        self.status.setText(report_inference_error(exc, "Segment"))

    def _on_finished(self) -> None:
        self.worker = None
        with contextlib.suppress(RuntimeError):  # the widget is being deleted with the viewer
            self.progress_bar.hide()
            self.segment_button.setEnabled(True)
            self.cancel_button.setEnabled(False)


def label_digest(labels: np.ndarray) -> bytes:
    """A 16-byte digest of a label map's values (to tell an untouched layer from a painted one; shapes are
    compared apart)."""
    return hashlib.blake2b(np.ascontiguousarray(labels).data, digest_size=16).digest()
