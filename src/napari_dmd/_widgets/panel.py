"""One tabbed "napari DMD" dock: Teacher, Distill, Features, Compare, Segment (and Review when present).

The way to use the plugin on a laptop screen (1366 x 768): one dock instead of five stacked ones, each tab
scrolling on its own, so the main window stays within the screen and every part keeps its natural height
(tables show their rows). The five single docks stay available (Plugins menu) and behave the same; they are
the same widget classes, held here as :attr:`DMDPanel.widgets`.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING

from qtpy.QtWidgets import QScrollArea, QTabWidget, QVBoxLayout, QWidget

from ._scroll import scroll_area

if TYPE_CHECKING:
    import napari

__all__ = ["TABS", "DMDPanel"]

# (tab title, module, class): Review is shown when its module exists
TABS = (("Teacher", "teacher", "TeacherWidget"), ("Distill", "distill", "DistillWidget"),
        ("Features", "features", "FeaturesWidget"), ("Compare", "compare", "CompareWidget"),
        ("Segment", "segment", "SegmentWidget"), ("Review", "review", "ReviewWidget"))
OPTIONAL_TABS = ("Review",)


def _widget_class(module: str, name: str) -> type[QWidget] | None:
    try:
        mod = importlib.import_module(f"{__package__}.{module}")
    except ModuleNotFoundError as exc:  # only the optional module itself may be missing
        if exc.name != f"{__package__}.{module}":
            raise
        return None
    return getattr(mod, name, None)


class DMDPanel(QWidget):
    """The napari-dmd widgets as tabs of one dock, each in a vertical scroll area."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.widgets: dict[str, QWidget] = {}
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.setUsesScrollButtons(True)
        for title, module, name in TABS:
            cls = _widget_class(module, name)
            if cls is None:
                if title not in OPTIONAL_TABS:
                    raise ImportError(f"napari_dmd._widgets.{module}.{name} is missing")
                continue
            widget = cls(napari_viewer)
            self.widgets[title] = widget
            area = getattr(widget, "scroll_area", None)
            page = widget if isinstance(area, QScrollArea) else scroll_area(widget)
            self.tabs.addTab(page, title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)

    def show_tab(self, title: str) -> QWidget:
        """Bring the tab ``title`` ("Teacher", "Distill", ...) to the front; returns its widget."""
        widget = self.widgets[title]
        for i in range(self.tabs.count()):
            if self.tabs.tabText(i) == title:
                self.tabs.setCurrentIndex(i)
        return widget

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        for widget in self.widgets.values():  # each tab's own clean-up (Distill stops its run guard, ...)
            with contextlib.suppress(RuntimeError):
                widget.close()
        super().closeEvent(event)
