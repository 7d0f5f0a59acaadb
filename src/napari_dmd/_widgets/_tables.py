"""The Distill widget's training-data table: image layers (checkable), each paired with a labels layer."""

from __future__ import annotations

import contextlib
import re
from functools import partial
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtWidgets import QComboBox, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from ._geometry import dmd_metadata, image_layers, is_feature_layer, labels_layers

if TYPE_CHECKING:
    import napari

NO_LABELS = "(none: teacher's prediction)"

__all__ = ["NO_LABELS", "PairTable", "class_features", "class_list", "fit_rows", "label_axes"]


def class_features(names: list[str] | tuple[str, ...] | None) -> dict[str, list[Any]] | None:
    """A labels layer's ``features`` naming each label value (napari shows "class: liver" on hover)."""
    if not names:
        return None
    return {"index": list(range(len(names))), "class": [str(n) for n in names]}


def class_list(values: Any, names: list[str] | tuple[str, ...] | None) -> str:
    """The label values present (background left out), by name where the model has names: "liver, kidney"."""
    found = [int(v) for v in values if int(v)]
    if not found:
        return "none"
    return ", ".join(str(names[v]) if names and 0 <= v < len(names) else str(v) for v in found)


def label_axes(viewer: napari.Viewer) -> None:
    """Name the viewer's axes z, y, x when it shows a volume and its axes still carry napari's numbered labels."""
    dims = viewer.dims
    if dims.ndim == 3 and all(str(a).lstrip("-").isdigit() for a in dims.axis_labels):
        dims.axis_labels = ("z", "y", "x")


MIN_ROWS, MAX_ROWS = 2, 8  # a table shows at least / at most this many rows without scrolling


def fit_rows(table: QTableWidget, min_rows: int = MIN_ROWS, max_rows: int = MAX_ROWS) -> int:
    """Give ``table`` the fixed height that shows all its rows (at least ``min_rows``, at most ``max_rows``;
    more rows scroll) below an uncut header; its dock scrolls instead (see ``_scroll``). Returns the height."""
    rows = min(max(table.rowCount(), min_rows), max_rows)
    header = table.horizontalHeader()
    head = 0 if header.isHidden() else max(header.sizeHint().height(), header.minimumHeight())
    row_h = max([table.rowHeight(r) for r in range(table.rowCount())] + [table.verticalHeader().defaultSectionSize()])
    height = head + rows * row_h + 2 * table.frameWidth() + 2
    table.setFixedHeight(height)
    return height


_LABEL_SUFFIX = re.compile(r"^[ _.-]*(labels?|seg|segmentation|mask|gt|ground truth)?( \[\d+\])?$", re.IGNORECASE)


def _predicted(layer: Labels) -> bool:
    """Whether a labels layer holds a model's prediction (its napari-dmd metadata names the model)."""
    meta = dmd_metadata(layer)
    return bool(meta.get("model") or meta.get("models") or meta.get("features"))


def pairs_by_name(image: str, labels: str) -> bool:
    """Whether the labels layer ``labels`` is named after the image layer ``image``: ``x labels``, ``x_seg``,
    ``x_label``, ``x_labels``, ``x_mask``, ``x_gt``, or ``x [1]`` (napari's name for a second ``x``)."""
    return labels != image and labels.startswith(image) and bool(_LABEL_SUFFIX.match(labels[len(image):]))


class PairTable(QTableWidget):
    """Image layers (checkable) each paired with an optional labels layer of the same shape.

    A pairing follows the layers until the user picks one: an image opened before its labels pairs with them
    when they arrive. ``pairs_changed`` is emitted whenever the listing or a choice changes.
    """

    pairs_changed = Signal()

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(0, 2, parent)
        self._viewer = viewer
        self._checked: dict[str, bool] = {}
        self._labels: dict[str, str] = {}
        self._chosen: set[str] = set()  # images whose labels the user picked (kept); others follow the layers
        self.setHorizontalHeaderLabels(["Image", "Labels"])
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.verticalHeader().setVisible(False)
        row_h = max(self.verticalHeader().defaultSectionSize(), QComboBox().sizeHint().height() + 2)
        self.verticalHeader().setDefaultSectionSize(row_h)  # a labels combo box fits its row
        self.horizontalHeader().setMinimumHeight(self.fontMetrics().height() + 8)  # header text never cut
        fit_rows(self)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.changed):
            ev.connect(self.refresh)
        self.itemChanged.connect(self._remember)
        self.refresh()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        """The fixed height :func:`fit_rows` set (a tab page asks its table's hint, not its maximum)."""
        hint = super().sizeHint()
        return QSize(hint.width(), min(hint.height(), self.maximumHeight()))

    def _images(self) -> list[Image]:
        return [lay for lay in image_layers(self._viewer)
                if not lay.rgb and not lay.multiscale and lay.ndim in (2, 3) and not is_feature_layer(lay)]

    @staticmethod
    def _default_labels(image: Image, candidates: list[Labels]) -> str:
        """The labels layer named after ``image`` (``x labels``, ``x_seg``, ``x_label(s)``, ``x_mask``, ``x [1]``
        ...), else the only one whose name starts with the image's, else the only one of its shape. A model's
        prediction (Segment, Compare, Features layers) is never chosen by itself: it is no ground truth."""
        candidates = [lab for lab in candidates if not _predicted(lab)]
        for lab in candidates:
            if pairs_by_name(image.name, lab.name):
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
            choice = self._labels.get(image.name) if image.name in self._chosen else None
            if choice is None or (choice != NO_LABELS and choice not in [lab.name for lab in same]):
                choice = self._default_labels(image, same)
            combo.setCurrentText(choice)
            self._labels[image.name] = choice
            combo.currentTextChanged.connect(partial(self._set_label, image.name))
            self.setCellWidget(row, 1, combo)
        self.blockSignals(False)
        fit_rows(self)
        self.pairs_changed.emit()

    def _disconnect(self) -> None:
        events = self._viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.changed):
            with contextlib.suppress(Exception):
                ev.disconnect(self.refresh)

    def _remember(self, item: QTableWidgetItem) -> None:
        if item.column() == 0:
            self._checked[item.text()] = item.checkState() == Qt.CheckState.Checked
            self.pairs_changed.emit()

    def _set_label(self, image_name: str, text: str) -> None:
        self._labels[image_name] = text
        self._chosen.add(image_name)
        self.pairs_changed.emit()

    def set_pair(self, image: str, labels: str | None, checked: bool = True) -> None:
        """Choose (or un-check) an image and its labels layer by name."""
        self._checked[image] = checked
        self._labels[image] = labels or NO_LABELS
        self._chosen.add(image)
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

    def summary(self) -> str:
        """Which checked images have labels, in a line: what Start will train on."""
        pairs = self.pairs()
        if not pairs:
            return "no image is checked"
        labelled = [f"{im.name} ({lab.name})" for im, lab in pairs if lab is not None]
        bare = [im.name for im, lab in pairs if lab is None]
        parts = []
        if labelled:
            parts.append(f"with labels: {', '.join(labelled)}")
        if bare:
            parts.append(f"without labels (the teacher's prediction is the target): {', '.join(bare)}")
        return "; ".join(parts)
