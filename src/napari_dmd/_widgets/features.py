"""Features widget: look inside a student — decoder feature maps and per-scale predictions as layers.

A thin view of :func:`napari_dmd.features.compute_features`: it gathers the image, the model and the chosen
decoder scales on the main thread, computes them (a small job, e.g. one slice through a student, right there:
a worker's hand-off would cost more than the computation; anything bigger in a napari thread worker, see
:func:`._features_job.runs_inline`), and adds (or updates in place) these layers over the image, placed with
the scale and translate the core computes:

* ``<image> features s<stride> PCA`` — RGB of the first three principal components,
* ``<image> features s<stride> energy`` — mean squared activation,
* ``<image> features s<stride> channel <k>`` — one channel,
* ``<image> features head s<stride>`` — the scale head's argmax (labels; students trained with heads).

By default one view is shown: the PCA of one decoder scale (the finest with a class head, else the one at
stride 2); other scales and kinds are computed and added only when ticked. Every later computation updates
the same layer objects in place (:mod:`._features_layers`: the new values written into the layer's array where
the shape is unchanged; a layer is never removed and added again), so live mode costs one texture upload per
layer, not a new layer.

"live" re-computes every N training steps of the Distill widget's run (on a copy of the student's weights that
the training child process sends every N steps, shared through :data:`._live.LIVE`; at most :data:`LIVE_SHARE`
of this process's CPU goes to them, drawing included, so on a busy machine or under software OpenGL updates come
less often, showing the newest snapshot) and
when the slice changes. Closing the viewer quits the worker: its result is dropped and no pending computation starts.
"""

from __future__ import annotations

import contextlib
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._choosers import LayerChooser
from ._features_job import INLINE_MAX_WORK, _Job, _LiveCache, compute_job, job_work, runs_inline
from ._features_layers import put_layer
from ._geometry import META_KEY, is_feature_layer, layer_spacing, world_kwargs
from ._live import LIVE
from ._notify import notify_error
from ._scroll import make_scrollable
from ._tables import class_features
from ._workers import ensure_thread_pool, start_worker

if TYPE_CHECKING:
    import napari

    from ..features import ScaleFeatures, StudentSnapshot

LIVE_ITEM = "live"
# live mode spends at most this share of the time on updates, counted as this process's CPU time from the start of
# an update until LIVE_SETTLE_S after its layers changed (the computation, the layer update and napari's redraw: under
# software OpenGL the redraw is most of it, ~170 ms of CPU here): a snapshot that arrives sooner waits, and the
# waiting ones collapse into one later update (the newest). Each update takes CPU the training child needs
# (bench gui --live-features 10 --load 2)
LIVE_SHARE = 0.05
LIVE_MAX_WAIT_S = 3.0  # ... but a snapshot never waits longer than this (one slow update must not mute live mode)
LIVE_SETTLE_S = 0.25  # how long after an update its redraw is counted as its cost
KINDS = ("PCA", "energy", "channel", "head")
DEFAULT_KIND = "PCA"  # the one kind ticked by default (an RGB summary of all channels)


def default_stage(n_stages: int, heads: list[int]) -> int:
    """The one decoder stage ticked by default: the finest with a class head, else the one at stride 2 (the
    stage before full resolution), else the only one."""
    if heads:
        return max(heads)
    return max(0, n_stages - 2)


class _ImageChooser(LayerChooser):
    """Greyscale image layers, without the layers this widget adds."""

    def _layers(self) -> list:
        return [lay for lay in super()._layers() if not lay.rgb and not is_feature_layer(lay)]


def layer_name(image: str, kind: str, stride: int, channel: int = 0) -> str:
    """Name of a features layer (see the module docstring)."""
    if kind == "head":
        return f"{image} features head s{stride}"
    if kind == "channel":
        return f"{image} features s{stride} channel {channel}"
    return f"{image} features s{stride} {kind}"


class FeaturesWidget(QWidget):
    """Show a student's multi-scale decoder features and per-scale predictions over an image."""

    layers_updated = Signal(list)  # names of the layers added or updated, after each computation

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        ensure_thread_pool()
        self.viewer = napari_viewer
        self._cache = _LiveCache()
        self._busy = False
        self._pending: bool = False
        self.last_error = ""
        self.computations = 0
        self.worker = None
        self.ran_inline = False  # the last computation ran in the main thread (a small job), not a worker
        self.live_deferred = 0  # live snapshots that waited for the time budget (LIVE_SHARE)
        self.live_cpu_s: list[float] = []  # process CPU seconds each live update was charged (_charge_live)
        self._live_next = 0.0  # monotonic time before which a live snapshot waits
        self._deferred = False  # a deferred live update is scheduled
        self._started = (0.0, False, 0.0)  # (monotonic start, live, process CPU time) of the computation in flight
        self._scale_boxes: list[tuple[int, QCheckBox]] = []

        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(16)
        form.addRow("Model", self.model_combo)
        self.image_chooser = _ImageChooser(napari_viewer, Image)
        form.addRow("Image", self.image_chooser)
        layout.addLayout(form)

        self.scales_box = QGroupBox("Decoder scales")
        self.scales_layout = QGridLayout(self.scales_box)  # 3 a row: no clipping in a narrow dock
        layout.addWidget(self.scales_box)

        show_box = QGroupBox("Layers")
        show = QGridLayout(show_box)  # 2 a row: no clipping in a narrow dock
        self.kind_boxes: dict[str, QCheckBox] = {}
        for i, (kind, text) in enumerate(zip(KINDS, ("PCA (RGB)", "energy", "channel", "head labels"))):
            box = QCheckBox(text)
            box.setChecked(kind == DEFAULT_KIND)  # one view by default; the others on demand
            self.kind_boxes[kind] = box
            show.addWidget(box, i // 2, i % 2)
        layout.addWidget(show_box)
        row = QHBoxLayout()
        row.addWidget(QLabel("Channel"))
        self.channel_spin = QSpinBox()
        self.channel_spin.setRange(0, 4095)
        row.addWidget(self.channel_spin)
        row.addStretch(1)
        layout.addLayout(row)

        self.show_button = QPushButton("Show features")
        self.show_button.clicked.connect(self.show_features)
        layout.addWidget(self.show_button)
        live = QHBoxLayout()
        self.live_check = QCheckBox("live, every")
        self.live_steps = QSpinBox()
        self.live_steps.setRange(1, 1_000_000)
        self.live_steps.setValue(50)
        self.live_steps.setSuffix(" steps")
        live.addWidget(self.live_check)
        live.addWidget(self.live_steps)
        live.addStretch(1)
        layout.addLayout(live)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.live_check.toggled.connect(self._live_toggled)
        self.live_steps.valueChanged.connect(self._live_toggled)
        self.model_combo.currentIndexChanged.connect(self._rebuild_scales)
        from ..registry import REGISTRY

        REGISTRY.changed.connect(self._refresh_models)
        LIVE.changed.connect(self._refresh_models)
        LIVE.snapshot.connect(self._on_snapshot)
        napari_viewer.dims.events.current_step.connect(self._on_slice)
        key = id(self)
        self.destroyed.connect(lambda *_: _forget(key, self._refresh_models, self._on_snapshot))
        self._refresh_models()
        make_scrollable(self)  # the dock scrolls instead of growing past a small screen

    # ------------------------------------------------------------------ models
    def _refresh_models(self, *_: Any) -> None:
        from ..registry import REGISTRY

        try:
            current = self.model_combo.currentData()
        except RuntimeError:  # Qt object gone
            return
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        if LIVE.running or LIVE.latest is not None:
            self.model_combo.addItem(f"{LIVE.name or 'live'} (training)" if LIVE.running else LIVE.name,
                                     LIVE_ITEM)
        for role in ("student", "teacher"):
            for name in REGISTRY.names(role):
                self.model_combo.addItem(name, name)
        idx = self.model_combo.findData(current) if current is not None else -1
        if self.live_check.isChecked() and self.model_combo.findData(LIVE_ITEM) >= 0:
            idx = self.model_combo.findData(LIVE_ITEM)  # live mode follows the run
        if idx < 0 and self.model_combo.count():
            students = REGISTRY.names("student")
            idx = self.model_combo.findData(students[-1]) if students else 0
        self.model_combo.setCurrentIndex(max(idx, 0))
        self.model_combo.blockSignals(False)
        self._rebuild_scales()

    def set_model(self, name: str) -> None:
        """Choose a registry model by name, or ``"live"`` for the Distill widget's run."""
        idx = self.model_combo.findData(name)
        if idx < 0:
            raise KeyError(f"no model named {name!r} is offered")
        self.model_combo.setCurrentIndex(idx)

    def _model_layout(self) -> tuple[list[int], list[int], list[int]]:
        """(strides per decoder stage, stages with a head, channels per stage) of the chosen model."""
        from ..registry import REGISTRY

        choice = self.model_combo.currentData()
        if choice is None:
            return [], [], []
        if choice == LIVE_ITEM:
            snap = LIVE.latest
            if snap is None:
                return [], [], []
            channels = list(snap.model_config["channels"])
            heads = snap.feature_scales or []
        else:
            try:
                entry = REGISTRY.get(choice)
            except KeyError:
                return [], [], []
            if entry.model is None:
                return [], [], []
            channels = list(entry.model.channels)
            heads = list(entry.feature_scales or []) if entry.heads is not None else []
        n = len(channels) - 1
        strides = [2 ** i for i in range(n - 1, -1, -1)]
        return strides, heads, [channels[i] for i in range(n - 1, -1, -1)]

    def _rebuild_scales(self, *_: Any) -> None:
        previous = {stride: box.isChecked() for stride, box in self._scale_boxes}
        for _, box in self._scale_boxes:
            self.scales_layout.removeWidget(box)
            box.hide()  # not drawn under the new boxes until the deferred delete
            box.setParent(None)
            box.deleteLater()
        self._scale_boxes = []
        strides, heads, channels = self._model_layout()
        for stage, stride in enumerate(strides):
            text = f"s{stride}" + (" (head)" if stage in heads else "")
            box = QCheckBox(text)
            box.setToolTip(f"decoder stage {stage}: 1/{stride} of the input, {channels[stage]} channels")
            box.setChecked(previous.get(stride, stage == default_stage(len(strides), heads)))
            self.scales_layout.addWidget(box, stage // 3, stage % 3)
            self._scale_boxes.append((stride, box))
        if channels:
            self.channel_spin.setMaximum(max(channels) - 1)

    def set_scales(self, strides: list[int]) -> None:
        """Tick exactly the decoder scales with these strides."""
        for stride, box in self._scale_boxes:
            box.setChecked(stride in strides)

    def scale_strides(self) -> list[int]:
        """Strides of the decoder scales on offer."""
        return [stride for stride, _ in self._scale_boxes]

    # ------------------------------------------------------------------ compute
    def _job(self) -> _Job | None:
        from ..registry import REGISTRY

        image = self.image_chooser.layer()
        if image is None:
            raise ValueError("no image layer chosen: open an image first")
        stages = [i for i, (_, box) in enumerate(self._scale_boxes) if box.isChecked()]
        kinds = {k for k, box in self.kind_boxes.items() if box.isChecked()}
        choice = self.model_combo.currentData()
        if choice is None:
            raise ValueError("no model: train one with Distill or load one in the Teacher widget")
        if not stages:
            raise ValueError("tick at least one decoder scale")
        if not kinds:
            raise ValueError("tick at least one kind of layer (PCA, energy, channel, head labels)")
        data = np.asarray(image.data)
        slice_index = None
        if data.ndim == 3:
            pos = image.world_to_data(self.viewer.dims.point)
            slice_index = int(np.clip(round(float(pos[0])), 0, data.shape[0] - 1))
        origin = tuple(float(t) for t in np.asarray(image.translate)[-image.ndim:])
        job = _Job(image.name, data, layer_spacing(image), origin, slice_index, stages,
                   self.channel_spin.value(), kinds, str(choice))
        if choice == LIVE_ITEM:
            if LIVE.latest is None:
                if LIVE.running:
                    LIVE.request()
                    self._pending = True
                    self.status_label.setText("waiting for the next training step…")
                    return None
                raise ValueError("no live run: start one in the Distill widget")
            job.snapshot = LIVE.latest
            job.normalization = LIVE.latest.normalization
            job.model_name = LIVE.latest.name
            job.extra_meta["iteration"] = LIVE.latest.iteration
        else:
            entry = REGISTRY.get(choice)
            if entry.model is None:
                raise ValueError(f"{entry.name}: has no U-Net decoder to inspect (only napari-dmd models do)")
            job.model, job.heads = entry.model, entry.heads
            names = entry.segmenter.class_names
            job.class_names = list(names) if names else None
            job.head_stages = list(entry.feature_scales) if entry.feature_scales is not None else None
            job.normalization = entry.segmenter.normalization
        return job

    def show_features(self) -> None:
        """Compute and add or update the feature layers of the chosen image: in the main thread for a small
        job (:func:`runs_inline`; ``ran_inline`` says so, ``worker`` is None), else in a worker."""
        try:
            job = self._job()
        except Exception as exc:  # noqa: BLE001 - every problem becomes a message
            self._fail(exc)
            return
        if job is None:
            return
        if self._busy:
            self._pending = True
            return
        self._start(job)

    def _start(self, job: _Job) -> None:
        self._busy = True
        self._pending = False
        self._started = (time.monotonic(), job.snapshot is not None, time.process_time())
        self.ran_inline = runs_inline(job)
        if self.ran_inline:  # small: a worker's hand-off would cost more than the computation
            self.worker = None
            try:
                self._apply(job, compute_job(job, self._cache))
            except Exception as exc:  # noqa: BLE001 - every problem becomes a message
                self._fail(exc)
            finally:
                self._finished()  # never left busy
            return
        where = f" (slice {job.slice_index})" if job.slice_index is not None else ""
        self.status_label.setText(f"computing features of {job.image_name}{where} …")
        self.worker = start_worker(compute_job, job, self._cache, on_returned=lambda res: self._apply(job, res),
                                   on_failed=self._fail, on_finished=self._finished)

    def _finished(self) -> None:
        worker, self.worker = self.worker, None
        self._busy = False
        t0, live, cpu0 = self._started
        if live:  # the next live update waits so that updates take at most LIVE_SHARE of the time
            now = time.monotonic()
            self._live_next = now + min((now - t0) * (1 / LIVE_SHARE - 1), LIVE_MAX_WAIT_S)
            QTimer.singleShot(int(LIVE_SETTLE_S * 1000), partial(self._charge_live, now, cpu0))
        if worker is not None and worker.abort_requested:  # quit: the viewer is closing, start nothing more
            self._pending = False
            return
        if self._pending:
            self._pending = False
            with contextlib.suppress(RuntimeError):
                self.show_features()

    def _charge_live(self, ended: float, cpu0: float) -> None:
        """Once the update's redraw is done: wait in proportion to the CPU it took (``_live_next``)."""
        cost = time.process_time() - cpu0
        self.live_cpu_s.append(cost)
        wait = min(cost * (1 / LIVE_SHARE - 1), LIVE_MAX_WAIT_S)
        self._live_next = max(self._live_next, ended + wait)

    def _fail(self, exc: BaseException) -> None:
        self.last_error = notify_error(exc, "Features")
        with contextlib.suppress(RuntimeError):
            self.status_label.setText(self.last_error)

    # ------------------------------------------------------------------ layers (main thread)
    def _apply(self, job: _Job, results: list[ScaleFeatures]) -> None:
        if job.image_name not in self.viewer.layers:
            return
        names = []
        put, image = partial(put_layer, self.viewer), job.image_name
        for sf in results:
            meta = {META_KEY: {"features": True, "source": image, "stride": sf.stride, "stage": sf.stage,
                               "model": job.model_name, "slice": job.slice_index, **job.extra_meta}}
            common = {"scale": sf.scale, "translate": sf.translate, "metadata": meta,
                      **world_kwargs(self.viewer.layers[image])}  # the image's flips, origin, units
            if "PCA" in job.kinds:
                names.append(put("image", layer_name(image, "PCA", sf.stride), sf.pca_rgb,
                                 dict(rgb=True, opacity=0.8, **common)))
            if "energy" in job.kinds:
                names.append(put("image", layer_name(image, "energy", sf.stride), sf.energy,
                                 dict(colormap="magma", opacity=0.8, **common)))
            if "channel" in job.kinds and job.channel < sf.num_channels:
                names.append(put("image", layer_name(image, "channel", sf.stride, job.channel),
                                 sf.channel(job.channel), dict(colormap="viridis", opacity=0.8, **common)))
            if "head" in job.kinds and sf.head_labels is not None:
                names.append(put("labels", layer_name(image, "head", sf.stride), sf.head_labels,
                                 dict(opacity=0.5, features=class_features(job.class_names), **common)))
        self.computations += 1
        it = job.extra_meta.get("iteration")
        self.status_label.setText(f"{len(names)} layer{'s' if len(names) != 1 else ''} from {job.model_name}"
                                  + (f" at iteration {it}" if it is not None else ""))
        self.layers_updated.emit(names)

    # ------------------------------------------------------------------ live
    def _live_toggled(self, *_: Any) -> None:
        if self.live_check.isChecked():
            LIVE.subscribe(id(self), self.live_steps.value())
            if self.model_combo.findData(LIVE_ITEM) >= 0:
                self.set_model(LIVE_ITEM)
        else:
            LIVE.unsubscribe(id(self))

    def _on_snapshot(self, snap: StudentSnapshot) -> None:
        wait = self._live_next - time.monotonic()
        if wait > 0:  # within the live time budget: one deferred update shows the newest snapshot
            self.live_deferred += 1
            if not self._deferred:
                self._deferred = True
                QTimer.singleShot(int(wait * 1000) + 1, self._deferred_update)
            return
        try:
            live = self.live_check.isChecked() or self._pending
            if self.image_chooser.layer() is None:  # nothing to show (e.g. the viewer was closed)
                return
        except RuntimeError:  # Qt object gone
            return
        if self.model_combo.findData(LIVE_ITEM) < 0:
            self._refresh_models()
        elif self.model_combo.currentData() == LIVE_ITEM and self._model_layout()[0] != self.scale_strides():
            self._rebuild_scales()  # the first snapshot of a run tells its architecture
        if live and self.model_combo.currentData() == LIVE_ITEM:
            self.show_features()

    def _deferred_update(self) -> None:
        self._deferred = False
        with contextlib.suppress(RuntimeError):  # the widget is gone
            if LIVE.latest is not None:
                self._on_snapshot(LIVE.latest)

    def _on_slice(self, *_: Any) -> None:
        try:
            live = self.live_check.isChecked() and self.image_chooser.layer() is not None
            if self.model_combo.currentData() == LIVE_ITEM and LIVE.latest is None:
                return  # nothing to show yet (or any more: the run's snapshot was dropped)
        except RuntimeError:
            return
        if live and self.computations:
            self.show_features()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        LIVE.unsubscribe(id(self))
        super().closeEvent(event)


def _forget(key: int, *slots: Any) -> None:
    """Drop a destroyed widget's live subscription and signal connections."""
    from ..registry import REGISTRY

    LIVE.unsubscribe(key)
    for sig in (REGISTRY.changed, LIVE.changed, LIVE.snapshot):
        for slot in slots:
            with contextlib.suppress(Exception):
                sig.disconnect(slot)


__all__ = ["INLINE_MAX_WORK", "FeaturesWidget", "compute_job", "job_work", "layer_name", "runs_inline"]

