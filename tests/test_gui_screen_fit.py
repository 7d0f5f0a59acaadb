"""The plugin on a 1366 x 768 screen: the tabbed "napari DMD" dock, and all five single docks at once.

The main window is resized to 1366 x 768 and must stay within it; in every tab, widgets laid out side by side or
one above the other do not overlap, none is squeezed below its minimum size (nothing clipped), and the tables show
their rows (at least 4, or all) under uncut headers.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication, QLayout, QTableWidget, QWidget, QWidgetItem

from napari_dmd.compare import CompareResult
from napari_dmd.phantom import PHANTOM_CLASS_NAMES

pytestmark = pytest.mark.gui

SCREEN = (1366, 768)
DOCKS = ("Teacher", "Distill", "Features", "Compare", "Segment")


def _settle(qtbot, window) -> None:
    window.resize(*SCREEN)
    for _ in range(5):
        QApplication.processEvents()
        qtbot.wait(20)


def _laid_out(layout: QLayout) -> list[QWidget]:
    """The widgets a layout places (nested layouts followed), visible ones only."""
    out = []
    for i in range(layout.count()):
        item = layout.itemAt(i)
        if item.widget() is not None:
            if item.widget().isVisible():
                out.append(item.widget())
        elif item.layout() is not None:
            out += _laid_out(item.layout())
    return out


def layout_defects(root: QWidget) -> list[str]:
    """Overlapping siblings and widgets squeezed below their minimum size, in every visible layout under root."""
    problems = []
    for parent in [root, *root.findChildren(QWidget)]:
        layout = parent.layout()
        if not parent.isVisible() or layout is None or parent.metaObject().className() in ("QComboBox",):
            continue
        kids = _laid_out(layout)
        for a, b in itertools.combinations(kids, 2):
            if a.geometry().intersects(b.geometry()):
                problems.append(f"{_name(a)} overlaps {_name(b)} in {_name(parent)}")
        for w in kids:
            need = QWidgetItem(w).minimumSize()  # what the layout must give it (Qt's qSmartMinSize)
            if w.width() < need.width() - 1 or w.height() < need.height() - 1:
                problems.append(f"{_name(w)} squeezed to {w.width()}x{w.height()} < {need.width()}x{need.height()}")
    return problems


def _name(w: QWidget) -> str:
    text = getattr(w, "text", None)
    label = text() if callable(text) else ""
    return f"{type(w).__name__}({label!r})" if isinstance(label, str) and label else type(w).__name__


def table_defects(table: QTableWidget, least: int = 4) -> list[str]:
    """Rows hidden without scrolling (fewer than min(rows, ``least``) shown whole) and cut header texts."""
    problems = []
    rows = table.rowCount()
    shown = sum(1 for r in range(rows)
                if table.rowViewportPosition(r) >= 0
                and table.rowViewportPosition(r) + table.rowHeight(r) <= table.viewport().height())
    if shown < min(rows, least):
        problems.append(f"{type(table).__name__} shows {shown} of {rows} rows")
    header = table.horizontalHeader()
    metrics = header.fontMetrics()
    for c in range(table.columnCount()):
        text = table.horizontalHeaderItem(c).text() if table.horizontalHeaderItem(c) else ""
        lines = text.split("\n")
        wide = max(metrics.horizontalAdvance(t) for t in lines)
        tall = metrics.lineSpacing() * len(lines)
        if wide > header.sectionSize(c) - 4 or tall > header.height():
            problems.append(f"header {text!r} cut: needs {wide}x{tall}, has {header.sectionSize(c)}x{header.height()}")
    return problems


def _fake_dice(widget) -> None:
    """Fill the Compare widget's Dice table as a 6-class comparison does (5 classes + mean)."""
    zeros = np.zeros((8, 8), np.uint8)
    dice = np.linspace(0.5, 0.9, 5)
    widget._fill_table(CompareResult(zeros, zeros, 0.1, 0.05, list(PHANTOM_CLASS_NAMES[1:]), dice, dice, dice))


def _check_tabs(qtbot, viewer, widgets: dict) -> None:
    window = viewer.window._qt_window
    frame = window.frameGeometry()
    assert frame.width() <= SCREEN[0] and frame.height() <= SCREEN[1], f"main window {frame.width()}x{frame.height()}"
    problems = []
    for title, widget in widgets.items():
        problems += [f"{title}: {p}" for p in layout_defects(getattr(widget, "body", widget))]
    pair_table = widgets["Distill"].pair_table
    problems += table_defects(pair_table) + table_defects(widgets["Compare"].table)
    assert problems == []


def test_tabbed_panel_fits_1366x768(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dmd", "phantom-2d")
    viewer.open_sample("napari-dmd", "phantom-3d")
    _, panel = viewer.window.add_plugin_dock_widget("napari-dmd", "napari DMD")
    assert list(panel.widgets)[:5] == list(DOCKS)
    _fake_dice(panel.widgets["Compare"])
    window = viewer.window._qt_window
    _settle(qtbot, window)
    for title in panel.widgets:
        panel.show_tab(title)
        _settle(qtbot, window)
        assert panel.widgets[title].isVisible()
        assert layout_defects(getattr(panel.widgets[title], "body", panel.widgets[title])) == [], title
    assert panel.widgets["Distill"].pair_table.rowCount() == 2  # the 2D and the 3D phantom
    panel.show_tab("Distill")
    _settle(qtbot, window)
    assert table_defects(panel.widgets["Distill"].pair_table) == []
    distill = panel.widgets["Distill"]
    assert distill.data_tabs.height() < distill.pair_table.height() + 70  # no empty space under the rows
    panel.show_tab("Compare")
    _settle(qtbot, window)
    assert panel.widgets["Compare"].table.rowCount() == 6 and table_defects(panel.widgets["Compare"].table) == []
    frame = window.frameGeometry()
    assert frame.width() <= SCREEN[0] and frame.height() <= SCREEN[1], f"main window {frame.width()}x{frame.height()}"
    dock = viewer.window.dock_widgets["napari DMD (napari-dmd)"]
    assert dock.height() > 500  # one dock: the tab gets the height of the window, not a sliver


def test_five_single_docks_fit_1366x768(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dmd", "phantom-2d")
    widgets = {name: viewer.window.add_plugin_dock_widget("napari-dmd", name)[1] for name in DOCKS}
    _fake_dice(widgets["Compare"])
    window = viewer.window._qt_window
    _settle(qtbot, window)
    frame = window.frameGeometry()
    assert frame.width() <= SCREEN[0] and frame.height() <= SCREEN[1], f"main window {frame.width()}x{frame.height()}"
    for widget in widgets.values():  # each dock scrolls its own body, which keeps its natural height
        body = widget.body
        assert body.height() >= body.minimumSizeHint().height()
        assert widget.scroll_area.horizontalScrollBar().maximum() == 0  # wide enough: no sideways scrolling
    _check_tabs(qtbot, viewer, widgets)
