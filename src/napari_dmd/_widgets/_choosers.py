"""Choosers kept in sync with napari and the model registry: a layer combo box (magicgui) and a model combo box.

Everything here runs on the Qt main thread. Layers the plugin adds (predictions, comparisons, feature maps) carry
``metadata["napari_dmd_output"]`` (:func:`mark_output`); the layer choosers list them but never choose one by
themselves: only the user's pick makes a plugin output an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox
from napari.layers import Layer
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QWidget

from ..registry import REGISTRY, ModelEntry
from ._geometry import is_feature_layer

if TYPE_CHECKING:
    import napari

NONE_TEXT = "(none)"
OUTPUT_KEY = "napari_dmd_output"  # layer metadata key: which napari-dmd widget made the layer

__all__ = ["NONE_TEXT", "OUTPUT_KEY", "LayerChooser", "ModelChooser", "is_output", "mark_output"]


def mark_output(metadata: dict[str, Any], kind: str) -> dict[str, Any]:
    """``metadata`` (a new layer's) with the mark of a plugin output of ``kind`` ("segmentation", "compare", ...)."""
    return {**metadata, OUTPUT_KEY: kind}


def is_output(layer: Any) -> bool:
    """Whether napari-dmd made ``layer`` (a marked prediction or comparison, or a Features map)."""
    meta = getattr(layer, "metadata", None)
    return (isinstance(meta, dict) and bool(meta.get(OUTPUT_KEY))) or is_feature_layer(layer)


class LayerChooser(QWidget):
    """A combo box of the viewer's layers of one type, kept in sync with the layer list.

    A thin Qt facade over a :class:`magicgui.widgets.ComboBox` (``self.combo``) whose choices are
    ``(name, layer)`` pairs from :meth:`_layers`, re-read when layers are inserted, removed, moved or
    renamed; the chosen layer stays chosen while it exists (also across a rename). ``optional=True``
    adds a first "(none)" entry. :meth:`layer` returns the chosen layer or None.

    When nothing is chosen yet (or the chosen layer was removed) the first layer that is not a plugin output
    (:func:`is_output`) is chosen; an optional chooser stays on "(none)"; with only outputs listed nothing is
    chosen (the box is blank) until the user picks one.
    """

    def __init__(self, viewer: napari.Viewer, layer_type: type[Layer] | tuple[type[Layer], ...],
                 *, optional: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._optional = optional
        self.combo = ComboBox(choices=lambda _: [(lay.name, lay) for lay in self._layers()], nullable=optional)
        self.combo.null_string = NONE_TEXT
        native = self.combo.native
        native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        native.setMinimumContentsLength(12)
        native.setPlaceholderText("choose a layer")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(native)
        self.setFocusProxy(native)
        for ev in self._events():
            ev.connect(self.refresh)
        self.refresh()

    def _events(self) -> list[Any]:
        events = self._viewer.layers.events
        return [events.inserted, events.removed, events.moved, events.reordered, events.renamed, events.changed]

    def _layers(self) -> list[Layer]:
        return [layer for layer in self._viewer.layers if isinstance(layer, self._type)]

    def refresh(self, *_: Any) -> None:
        """Re-list the layers in layer-list order, keeping the chosen layer when it still exists."""
        try:
            chosen = self.combo.value
        except RuntimeError:  # the Qt object is gone: stop listening
            for ev in self._events():
                ev.disconnect(self.refresh)
            return
        with self.combo.changed.blocked():  # one `combo.changed`, below, and only when the choice changed
            self.combo.native.clear()  # re-filled in layer-list order (magicgui alone keeps old positions)
            self.combo.reset_choices()
            if chosen is not None and chosen in self.combo.choices:
                self.combo.value = chosen
            else:
                self._auto_choose()
        if self.combo.value is not chosen:
            self.combo.changed.emit(self.combo.value)

    def _auto_choose(self) -> None:
        """Choose the first listed layer that is not a plugin output; "(none)" or nothing when there is none."""
        pick = next((lay for lay in self._layers() if not is_output(lay)), None)
        if pick is not None and not self._optional:
            self.combo.value = pick
        elif self._optional:
            self.combo.value = None
        else:
            self.combo.native.setCurrentIndex(-1)  # listed, but not chosen: the user picks

    def currentText(self) -> str:  # noqa: N802 - the QComboBox name this class had
        """The text shown: the chosen layer's name, "(none)" or ""."""
        return self.combo.current_choice

    def layer(self) -> Layer | None:
        """The chosen layer, or None ("(none)" or an empty list)."""
        return self.combo.value

    def set_layer(self, layer: Layer | str) -> None:
        """Choose ``layer`` (a layer or its name); a layer not listed is ignored."""
        name = layer if isinstance(layer, str) else layer.name
        match = next((lay for lay in self._layers() if lay.name == name), None)
        if match is not None:
            self.combo.value = match


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
