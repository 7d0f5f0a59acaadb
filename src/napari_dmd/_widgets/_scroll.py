"""Scrolling dock bodies: a widget's contents in a QScrollArea, so a dock fits a small screen (1366 x 768).

napari stacks dock widgets in its main window without scrolling; a dock taller than the screen makes the main
window taller than the screen. :func:`make_scrollable` moves a widget's layout (and so its child widgets) into a
body widget inside a :class:`QScrollArea` that fills the widget: the dock can then be as short as a few rows and
scrolls vertically; the contents keep their natural height (tables show their rows, nothing overlaps).
"""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QStyle, QVBoxLayout, QWidget

__all__ = ["MIN_DOCK_HEIGHT", "BodyScrollArea", "make_scrollable", "scroll_area"]

MIN_DOCK_HEIGHT = 80  # the least height a scrolling dock body asks for (px): five docks fit 768 px


class BodyScrollArea(QScrollArea):
    """A scroll area as wide as its body needs (no horizontal scrolling) and as short as :data:`MIN_DOCK_HEIGHT`;
    its preferred size is the body's (a dock starts at its natural height where there is room)."""

    def _bar(self) -> int:
        return self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent) + 2 * self.frameWidth() + 2

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt override
        body = self.widget()
        width = body.minimumSizeHint().width() if body is not None else 0
        return QSize(width + self._bar(), MIN_DOCK_HEIGHT)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        body = self.widget()
        if body is None:
            return super().sizeHint()
        hint = body.sizeHint().expandedTo(body.minimumSizeHint())
        return QSize(hint.width() + self._bar(), hint.height() + 2 * self.frameWidth())


def scroll_area(body: QWidget, parent: QWidget | None = None) -> QScrollArea:
    """A frameless, vertically scrolling area showing ``body`` at the area's width and its own height."""
    area = BodyScrollArea(parent)
    area.setObjectName("napari_dmd_scroll")
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
    area.setWidget(body)
    return area


def make_scrollable(widget: QWidget) -> QScrollArea:
    """Move ``widget``'s layout into a body inside a scroll area filling ``widget``; returns the area.

    Call it at the end of the widget's ``__init__``. The widget's attributes (its child widgets) are unchanged;
    ``widget.scroll_area`` and ``widget.body`` name the new parts. Calling it twice does nothing more.
    """
    existing = getattr(widget, "scroll_area", None)
    if isinstance(existing, QScrollArea):
        return existing
    body = QWidget()
    body.setObjectName("napari_dmd_body")
    layout = widget.layout()
    if layout is not None:
        body.setLayout(layout)  # moves the layout and reparents its widgets to the body
    area = scroll_area(body, widget)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    widget.scroll_area = area  # type: ignore[attr-defined]
    widget.body = body  # type: ignore[attr-defined]
    return area
