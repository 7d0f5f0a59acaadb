"""Small helpers shared by the plugin's widgets: layer geometry, errors, layer / model / layer-pair choosers.

Everything here runs on the Qt main thread. Layer metadata written by napari-dmd lives under
``layer.metadata["napari_dmd"]`` (keys ``affine``, ``spacing``, ``path``, ``class_names``).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from ..data.io import affine_from_spacing
from ..registry import REGISTRY, ModelEntry

if TYPE_CHECKING:
    import napari

    from ..data.cases import Case

META_KEY = "napari_dmd"
NONE_TEXT = "(none)"
NO_LABELS = "(none: teacher's prediction)"

__all__ = [
    "META_KEY",
    "Failure",
    "LayerChooser",
    "ModelChooser",
    "PairTable",
    "cases_from_layers",
    "dmd_metadata",
    "error_message",
    "image_layers",
    "labels_layers",
    "layer_affine",
    "layer_spacing",
    "labels_metadata",
    "notify_error",
    "notify_info",
    "start_worker",
]


# ------------------------------------------------------------------------------------------- messages


def error_message(exc: BaseException, context: str | None = None) -> str:
    """One-line user message for an exception, prefixed by ``context`` (e.g. ``"Segment"``).

    Our own errors (DataError, ConfigError, CheckpointError, ExportError, TrainingError...) already name the
    file or setting and are shown as they are; other exceptions get their type name in front.
    """
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..data.io import DataError
    from ..export import ExportError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    ours = (DataError, ConfigError, CheckpointError, ExportError, KeyError) + _training_error()
    if isinstance(exc, KeyError):
        text = str(exc.args[0]) if exc.args else text
    if not isinstance(exc, ours) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{context}: {text}" if context else text


def _training_error() -> tuple[type, ...]:
    try:
        from ..distill.engine import TrainingError
    except ImportError:  # pragma: no cover - engine always importable in a full install
        return ()
    return (TrainingError,)


def notify_error(exc: BaseException | str, context: str | None = None) -> str:
    """Show ``exc`` as a napari error notification (never a traceback); return the message shown."""
    message = exc if isinstance(exc, str) else error_message(exc, context)
    if isinstance(exc, str) and context:
        message = f"{context}: {exc}"
    show_error(message)
    return message


def notify_info(message: str) -> None:
    """Show an information notification."""
    show_info(message)


# -------------------------------------------------------------------------------------------- workers


@dataclass
class Failure:
    """An exception raised in a worker, handed to the main thread as the worker's *result*.

    A napari worker that raises relays the exception to napari's notification manager (a second, traceback
    notification next to ours, and a test failure under pytest-qt); returning it as a value avoids both.
    """

    exc: Exception


def _guarded(fn: Callable) -> Callable:
    """``fn`` (a function or generator function) with its exceptions returned as :class:`Failure`."""
    if inspect.isgeneratorfunction(fn):
        def gen(*args: Any, **kwargs: Any):
            try:
                return (yield from fn(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a notification
                return Failure(exc)
        return gen

    def call(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            return Failure(exc)
    return call


def start_worker(fn: Callable, *args: Any, on_returned: Callable[[Any], Any],
                 on_failed: Callable[[Exception], Any], on_yielded: Callable[[Any], Any] | None = None,
                 on_finished: Callable[[], Any] | None = None, **kwargs: Any):
    """Run ``fn(*args, **kwargs)`` in a napari thread worker and return the (started) worker.

    A generator function gives a generator worker (``on_yielded`` gets every yielded value; quitting acts
    at a ``yield``). ``on_returned`` gets the return value, ``on_failed`` the exception; all handlers run
    on the main thread, the only place layers may be changed. ``on_finished`` runs last in every case.
    """
    from napari.qt.threading import create_worker

    def returned(result: Any) -> None:
        if isinstance(result, Failure):
            on_failed(result.exc)
        else:
            on_returned(result)

    worker = create_worker(_guarded(fn), *args, _start_thread=False, _connect={"errored": on_failed}, **kwargs)
    worker.returned.connect(returned)
    if on_yielded is not None:
        worker.yielded.connect(on_yielded)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker


# --------------------------------------------------------------------------------------------- layers


def image_layers(viewer: napari.Viewer) -> list[Image]:
    """The viewer's image layers (greyscale or not), in layer-list order."""
    return [layer for layer in viewer.layers if isinstance(layer, Image)]


def labels_layers(viewer: napari.Viewer) -> list[Labels]:
    """The viewer's labels layers, in layer-list order."""
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def dmd_metadata(layer: Layer) -> dict[str, Any]:
    """The napari-dmd part of a layer's metadata (an empty dict if there is none)."""
    meta = layer.metadata.get(META_KEY) if isinstance(layer.metadata, dict) else None
    return meta if isinstance(meta, dict) else {}


def layer_spacing(layer: Layer) -> tuple[float, ...]:
    """Voxel spacing of a layer in array axis order (mm): the layer's ``scale`` (set from the file's spacing
    by the reader; the user may have changed it since, so ``scale`` wins over the metadata)."""
    return tuple(float(s) for s in np.asarray(layer.scale)[-layer.ndim:])


def layer_affine(layer: Layer) -> np.ndarray:
    """4x4 voxel-to-world affine (NIfTI x, y, z index order) of a layer.

    The affine the reader kept in the metadata when it is a 4x4 matrix, else a diagonal affine built from
    :func:`layer_spacing`.
    """
    affine = dmd_metadata(layer).get("affine")
    if affine is not None:
        arr = np.asarray(affine, dtype=np.float64)
        if arr.shape == (4, 4) and np.all(np.isfinite(arr)):
            return arr
    return affine_from_spacing(layer_spacing(layer))


def labels_metadata(source: Layer, **extra: Any) -> dict[str, Any]:
    """Metadata for a labels layer derived from ``source``: its napari-dmd part (affine, spacing, path)
    copied, plus ``extra`` keys, so saving the labels writes the source's affine."""
    meta = dict(dmd_metadata(source))
    meta["affine"] = layer_affine(source).tolist()
    meta["spacing"] = list(layer_spacing(source))
    meta.update(extra)
    return {META_KEY: meta}


# ------------------------------------------------------------------------------------------- choosers


class LayerChooser(QComboBox):
    """A combo box of the viewer's layers of one type, kept in sync with the layer list.

    ``optional=True`` adds a first "(none)" entry. :meth:`layer` returns the chosen layer or None.
    """

    def __init__(self, viewer: napari.Viewer, layer_type: type[Layer] | tuple[type[Layer], ...],
                 *, optional: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._optional = optional
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.changed):
            ev.connect(self.refresh)
        self.refresh()

    def _layers(self) -> list[Layer]:
        return [layer for layer in self._viewer.layers if isinstance(layer, self._type)]

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        try:
            current = self.currentText()
        except RuntimeError:  # the Qt object is gone: stop listening
            self._disconnect()
            return
        names = [layer.name for layer in self._layers()]
        for layer in self._layers():
            layer.events.name.connect(self.refresh)
        self.blockSignals(True)
        self.clear()
        if self._optional:
            self.addItem(NONE_TEXT)
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentIndexChanged.emit(self.currentIndex())

    def _disconnect(self) -> None:
        events = self._viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.changed):
            ev.disconnect(self.refresh)

    def layer(self) -> Layer | None:
        """The chosen layer, or None ("(none)" or an empty list)."""
        name = self.currentText()
        for layer in self._layers():
            if layer.name == name:
                return layer
        return None

    def set_layer(self, layer: Layer | str) -> None:
        """Choose ``layer`` (a layer or its name)."""
        self.setCurrentText(layer if isinstance(layer, str) else layer.name)


class ModelChooser(QComboBox):
    """A combo box of the models in :data:`napari_dmd.registry.REGISTRY`, filtered by role.

    ``role`` is "teacher", "student" or None (all). ``fallback_roles`` lists more roles offered after the
    main one (e.g. the Segment widget offers students first, then teachers). Refreshed on
    ``REGISTRY.changed``; a newly added model of the main role becomes the current choice.
    """

    def __init__(self, role: str | None = None, *, fallback_roles: Sequence[str] = (),
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self.fallback_roles = tuple(fallback_roles)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(16)
        self._known: list[str] = []
        REGISTRY.changed.connect(self.refresh)
        self.destroyed.connect(lambda *_: _safe_disconnect(self.refresh))
        self.refresh()

    def _names(self) -> list[str]:
        if self.role is None:
            return REGISTRY.names()
        names = REGISTRY.names(self.role)
        for role in self.fallback_roles:
            names += [n for n in REGISTRY.names(role) if n not in names]
        return names

    def refresh(self) -> None:
        """Re-list the models, keeping the choice, or picking the newest model of the main role."""
        try:
            current = self.currentText()
        except RuntimeError:  # the Qt object is gone
            _safe_disconnect(self.refresh)
            return
        names = self._names()
        main = REGISTRY.names(self.role) if self.role else names
        new_main = [n for n in main if n not in self._known]
        self._known = list(names)
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if new_main:
            self.setCurrentText(new_main[-1])
        elif current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def entry(self) -> ModelEntry | None:
        """The chosen registry entry, or None when no model is loaded."""
        name = self.currentText()
        try:
            return REGISTRY.get(name) if name else None
        except KeyError:
            return None



def _safe_disconnect(slot: Any) -> None:
    try:
        REGISTRY.changed.disconnect(slot)
    except (ValueError, RuntimeError, TypeError):
        pass


class WindowProgress:
    """A napari progress bar for (done, total) window counts, redrawn at most ~10 times a second and at the end.

    Each redraw repaints the window (10-15 ms under software OpenGL) and napari's bar processes pending events
    while it updates, so callers set their own status text before :meth:`update`.
    """

    def __init__(self, desc: str, interval_s: float = 0.1) -> None:
        from napari.utils import progress

        self._bar = progress(total=0, desc=desc)
        self._interval_s = interval_s
        self._last = 0.0

    def due(self, done: int, total: int) -> bool:
        """Whether this count should be shown: the last one always, others after ``interval_s``."""
        now = time.perf_counter()
        if done < total and now - self._last < self._interval_s:
            return False
        self._last = now
        return True

    def update(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def report_inference_error(exc: BaseException, where: str) -> str:
    """Show a failed or cancelled inference run (info for a cancel, error otherwise); return the status text."""
    from ..inference import InferenceCancelled

    if isinstance(exc, InferenceCancelled):
        notify_info(f"{where}: {exc}")
        return str(exc)
    return notify_error(exc, where)


# ---------------------------------------------------------------------------------------- layer pairs


def _is_feature_layer(layer) -> bool:
    return bool(dmd_metadata(layer).get("features"))


class PairTable(QTableWidget):
    """Image layers (checkable) each paired with an optional labels layer of the same shape."""

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(0, 2, parent)
        self._viewer = viewer
        self._checked: dict[str, bool] = {}
        self._labels: dict[str, str] = {}
        self.setHorizontalHeaderLabels(["Image", "Labels"])
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.verticalHeader().setVisible(False)
        self.setMinimumHeight(90)
        self.setMaximumHeight(150)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.changed):
            ev.connect(self.refresh)
        self.itemChanged.connect(self._remember)
        self.refresh()

    def _images(self) -> list[Image]:
        return [lay for lay in image_layers(self._viewer)
                if not lay.rgb and not lay.multiscale and lay.ndim in (2, 3) and not _is_feature_layer(lay)]

    @staticmethod
    def _default_labels(image: Image, candidates: list[Labels]) -> str:
        for lab in candidates:
            if lab.name == f"{image.name} labels":
                return lab.name
        starts = [lab for lab in candidates if lab.name.startswith(image.name)]
        if len(starts) == 1:
            return starts[0].name
        if len(candidates) == 1:
            return candidates[0].name
        return NO_LABELS

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping choices by name."""
        try:
            self.blockSignals(True)
        except RuntimeError:  # the widget is gone
            self._disconnect()
            return
        for lay in self._viewer.layers:
            lay.events.name.disconnect(self.refresh)
            lay.events.name.connect(self.refresh)
        images = self._images()
        labels = labels_layers(self._viewer)
        self.setRowCount(len(images))
        for row, image in enumerate(images):
            item = QTableWidgetItem(image.name)
            item.setToolTip(image.name)
            item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            checked = self._checked.setdefault(image.name, True)
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.setItem(row, 0, item)
            same = [lab for lab in labels if tuple(lab.data.shape) == tuple(image.data.shape)]
            combo = QComboBox()
            combo.addItems([NO_LABELS] + [lab.name for lab in same])
            choice = self._labels.get(image.name)
            if choice is None or (choice != NO_LABELS and choice not in [lab.name for lab in same]):
                choice = self._default_labels(image, same)
            combo.setCurrentText(choice)
            self._labels[image.name] = choice
            combo.currentTextChanged.connect(partial(self._set_label, image.name))
            self.setCellWidget(row, 1, combo)
        self.blockSignals(False)

    def _disconnect(self) -> None:
        events = self._viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.changed):
            with contextlib.suppress(Exception):
                ev.disconnect(self.refresh)

    def _remember(self, item: QTableWidgetItem) -> None:
        if item.column() == 0:
            self._checked[item.text()] = item.checkState() == Qt.CheckState.Checked

    def _set_label(self, image_name: str, text: str) -> None:
        self._labels[image_name] = text

    def set_pair(self, image: str, labels: str | None, checked: bool = True) -> None:
        """Choose (or un-check) an image and its labels layer by name."""
        self._checked[image] = checked
        self._labels[image] = labels or NO_LABELS
        self.refresh()

    def pairs(self) -> list[tuple[Image, Labels | None]]:
        """The checked image layers with their chosen labels layers."""
        layers = {lay.name: lay for lay in self._viewer.layers}
        out = []
        for image in self._images():
            if not self._checked.get(image.name, True):
                continue
            lab = self._labels.get(image.name, NO_LABELS)
            out.append((image, layers.get(lab) if lab != NO_LABELS else None))
        return out


def cases_from_layers(pairs: Sequence[tuple[Image, Labels | None]]) -> list[Case]:
    """Training cases (copies of the layer data) from (image, labels or None) layer pairs.

    Spacing and affine come from the image layer; a multiscale layer gives its full-resolution level.
    DataError names the layer at fault.
    """
    from ..data.cases import Case
    from ..data.io import DataError

    cases = []
    for image, labels in pairs:
        if image.rgb:
            raise DataError(f"layer {image.name!r} is an RGB image; training needs single-channel images")
        data = np.asarray(image.data[0] if image.multiscale else image.data)
        if data.ndim not in (2, 3):
            raise DataError(f"layer {image.name!r}: {data.ndim}D data (shape {data.shape}); expected a 2D "
                            "image or a 3D volume with one channel")
        lab = None
        if labels is not None:
            lab = np.array(labels.data[0] if labels.multiscale else labels.data)
            if lab.shape != data.shape:
                raise DataError(f"labels layer {labels.name!r}: shape {lab.shape} does not match image layer "
                                f"{image.name!r} shape {data.shape}")
        cases.append(Case(image=np.array(data, dtype=np.float32), label=lab, spacing=layer_spacing(image),
                          affine=layer_affine(image), name=image.name, image_path=f"layer {image.name!r}",
                          label_path=f"labels layer {labels.name!r}" if labels is not None else None))
    return cases
