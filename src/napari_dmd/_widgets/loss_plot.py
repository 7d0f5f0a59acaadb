"""The Distill widget's live plot: loss parts (log scale) over validation Dice, redrawn off the Qt thread.

Drawn with Matplotlib's Agg renderer in a worker thread (at most 2 redraws a second) and shown as an image in a
QLabel: a Qt-canvas redraw costs 25-60 ms of the GUI thread here, enough to stall the event loop.
API of :class:`LossPlot`: :meth:`~LossPlot.clear`, :meth:`~LossPlot.set_run`, :meth:`~LossPlot.add_parts`,
:meth:`~LossPlot.add_dice`, then :meth:`~LossPlot.refresh` (throttled) or :meth:`~LossPlot.flush` (now).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy, QWidget

from ._common import notify_error

__all__ = ["PART_NAMES", "LossPlot", "PlotRenderer"]

PART_NAMES = {"task": "task (CE + Dice)", "tckd": "TCKD", "nckd": "NCKD", "kd": "KD", "mfd": "MFD",
              "ds": "deep supervision", "total": "total"}
PLOT_MIN_INTERVAL_S = 0.5  # at most 2 redraws a second


def _downsample(x: np.ndarray, y: np.ndarray, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Bin-averaged series of at most ``n`` points (also smooths noisy per-step losses)."""
    if len(x) <= n:
        return x, y
    edges = np.linspace(0, len(x), n + 1).astype(int)
    xs = np.add.reduceat(x, edges[:-1]) / np.diff(edges)
    ys = np.add.reduceat(y, edges[:-1]) / np.diff(edges)
    return xs, ys


class PlotRenderer:
    """Loss parts (log scale) over validation Dice, drawn with Matplotlib's Agg renderer.

    Keeps its figure, axes and lines between draws (only data, limits and legend change), so a redraw costs
    little. Used from a worker thread: one thread at a time.
    """

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        self.fig = Figure(dpi=80)
        FigureCanvasAgg(self.fig)
        self.ax_loss, self.ax_dice = self.fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        self.lines: dict[str, Any] = {}
        (self.dice_line,) = self.ax_dice.plot([], [], "o-", color="tab:green", ms=3, lw=1.2)
        self.dice_text = self.ax_dice.text(0.98, 0.08, "no validation yet", ha="right", va="bottom",
                                           fontsize=7, color="0.3", transform=self.ax_dice.transAxes)
        self.ax_loss.set_ylabel("loss", fontsize=8)
        self.ax_dice.set_ylabel("val. Dice", fontsize=8)
        self.ax_dice.set_xlabel("iteration", fontsize=8)
        self.ax_dice.set_ylim(0, 1)
        self.ax_dice.xaxis.set_major_locator(MaxNLocator(5, integer=True))
        for ax in (self.ax_loss, self.ax_dice):
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3, lw=0.5)
        self.title = self.ax_loss.set_title("loss parts and validation Dice", fontsize=8)
        self.size: tuple[int, int] | None = None

    def render(self, parts: dict[str, tuple[np.ndarray, np.ndarray]], dice: tuple[np.ndarray, np.ndarray],
               size: tuple[int, int], note: str = "") -> np.ndarray:
        """Draw and return the image as RGBA ``(h, w, 4)`` uint8."""
        w, h = max(size[0], 120), max(size[1], 120)
        if self.size != (w, h):
            self.fig.set_size_inches(w / self.fig.dpi, h / self.fig.dpi)
            self.fig.subplots_adjust(left=min(0.2, 60 / w), right=0.97, top=1 - min(0.12, 24 / h),
                                     bottom=min(0.2, 36 / h), hspace=0.12)
            self.size = (w, h)
        self.title.set_text(note or "loss parts and validation Dice")
        if set(parts) != set(self.lines):
            for line in self.lines.values():
                line.remove()
            self.lines = {}
            for name in parts:
                style = {"color": "0.4", "ls": "--", "lw": 1.0} if name == "total" else {"lw": 1.3}
                (self.lines[name],) = self.ax_loss.plot([], [], label=PART_NAMES.get(name, name), **style)
            if self.ax_loss.get_legend() is not None:
                self.ax_loss.get_legend().remove()
            if parts:
                self.ax_loss.legend(fontsize=7, loc="upper right", ncol=2, frameon=False)
        positive = []
        for name, (x, y) in parts.items():
            self.lines[name].set_data(x, y)
            positive.append(y[y > 0])
        values = np.concatenate(positive) if positive else np.array([])
        if values.size:
            self.ax_loss.set_yscale("log")
            lo, hi = float(values.min()), float(values.max())
            self.ax_loss.set_ylim(lo / 1.5, hi * 3.0)  # head room for the legend
        xmax = max([float(x[-1]) for x, _ in parts.values() if len(x)] + [float(d) for d in dice[0][-1:]] + [1.0])
        xmin = min([float(x[0]) for x, _ in parts.values() if len(x)] + [0.0])
        self.ax_loss.set_xlim(xmin, xmax * 1.02 + 1)
        dx, dy = dice
        self.dice_line.set_data(dx, dy)
        self.dice_text.set_text(f"last {dy[-1]:.3f} · best {dy.max():.3f}" if len(dx) else "no validation yet")
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba()).copy()


class LossPlot(QLabel):
    """Loss parts and validation Dice, redrawn off the GUI thread at most every ``PLOT_MIN_INTERVAL_S``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._renderer = PlotRenderer()
        self.setMinimumSize(QSize(240, 220))
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(300)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.clear()
        self._busy = False
        self._flush = False
        self._last_start = 0.0
        self.renders = 0
        self.note = ""

    def flush(self) -> None:
        """Draw the latest data now (or right after the redraw in progress)."""
        self._dirty = True
        self._flush = True
        self._last_start = 0.0
        self.refresh()

    def set_run(self, method: str, name: str) -> None:
        """Title the plot with the run's method and name."""
        self.note = f"{method.upper()} – {name}"
        self._dirty = True

    def clear(self) -> None:
        """Forget every point (a new run)."""
        self._parts: dict[str, tuple[list[int], list[float]]] = {}
        self._dice: tuple[list[int], list[float]] = ([], [])
        self._dirty = True

    def add_parts(self, iteration: int, parts: dict[str, float]) -> None:
        """One step's loss parts (name -> value)."""
        for k, v in parts.items():
            xs, ys = self._parts.setdefault(k, ([], []))
            xs.append(iteration)
            ys.append(float(v))
        self._dirty = True

    def add_dice(self, iteration: int, dice: float | None) -> None:
        """One validation's mean Dice (None / NaN: ignored)."""
        if dice is not None and np.isfinite(dice):
            self._dice[0].append(iteration)
            self._dice[1].append(float(dice))
            self._dirty = True

    @property
    def series(self) -> dict[str, int]:
        """Number of points per plotted series (parts and "dice")."""
        out = {k: len(v[0]) for k, v in self._parts.items()}
        out["dice"] = len(self._dice[0])
        return out

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._dirty = True

    def refresh(self) -> None:
        """Start a redraw in a worker thread if something changed and none is running."""
        if not self._dirty or self._busy or time.perf_counter() - self._last_start < PLOT_MIN_INTERVAL_S:
            return
        from superqt.utils import create_worker

        self._dirty = False
        self._busy = True
        self._last_start = time.perf_counter()
        parts = {k: _downsample(np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in self._parts.items()}
        dice = (np.asarray(self._dice[0], float), np.asarray(self._dice[1], float))
        dpr = self.devicePixelRatioF()
        size = (int(self.width() * dpr), int(self.height() * dpr))
        self._renderer.fig.set_dpi(80 * dpr)
        worker = create_worker(self._renderer.render, parts, dice, size, self.note,
                               _connect={"returned": self._show, "finished": self._done,
                                         "errored": self._failed})
        self._worker = worker

    def _show(self, rgba: np.ndarray) -> None:
        h, w = rgba.shape[:2]
        img = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        pix = QPixmap.fromImage(img)
        pix.setDevicePixelRatio(self.devicePixelRatioF())
        self.setPixmap(pix)
        self.renders += 1

    def _done(self) -> None:
        self._busy = False
        if self._flush:
            self._flush = self._dirty
            if self._dirty:
                self._last_start = 0.0
                self.refresh()

    def _failed(self, exc: BaseException) -> None:
        self._busy = False
        notify_error(exc, "Distill plot")
