"""Choosers kept in sync with napari and the model registry: a layer combo box and a model combo box.

Everything here runs on the Qt main thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from napari.layers import Layer
from qtpy.QtWidgets import QComboBox, QWidget

from ..registry import REGISTRY, ModelEntry

if TYPE_CHECKING:
    import napari

NONE_TEXT = "(none)"

__all__ = ["NONE_TEXT", "LayerChooser", "ModelChooser"]


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
