"""The Distill widget's live plot: loss parts (log scale) over validation Dice, redrawn off the Qt thread.

Drawn with Matplotlib's Agg renderer in a worker thread and shown as an image in a QLabel: a Qt-canvas redraw
costs 25-60 ms of the GUI thread here, enough to stall the event loop. A draw still holds the GIL for most of its
40-150 ms, which the training thread (same process) then waits for, so redraws are rare: at most one a second,
and at most ``PLOT_MAX_SHARE`` of the time (a slow machine redraws less often, up to every ``PLOT_MAX_INTERVAL_S``).
A finished image is shown at the next :meth:`~LossPlot.refresh` (the widget's status tick), so it shares that
tick's window repaint instead of adding one (each repaint costs 10-15 ms of the GUI thread under software
OpenGL, also with the GIL held). For the same reason the plot (and :class:`StatusLine`) paint themselves instead
of being a ``QLabel``: ``QLabel.setText`` / ``setPixmap`` ask the whole window to lay out again, which repaints it
two more times.
API of :class:`LossPlot`: :meth:`~LossPlot.clear`, :meth:`~LossPlot.set_run`, :meth:`~LossPlot.add_parts`,
:meth:`~LossPlot.add_dice` (or :meth:`~LossPlot.load_history`: a resumed run's whole curve from its events.jsonl), then
:meth:`~LossPlot.refresh` (throttled) or :meth:`~LossPlot.flush` (now).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QSize, Qt
from qtpy.QtGui import QImage, QPainter, QPixmap
from qtpy.QtWidgets import QSizePolicy, QWidget

from ._notify import notify_error

__all__ = ["PART_NAMES", "LossPlot", "PlotRenderer", "StatusLine", "read_events"]

PART_NAMES = {"task": "task (CE + Dice)", "tckd": "TCKD", "nckd": "NCKD", "kd": "KD", "mfd": "MFD",
              "ds": "deep supervision", "total": "total"}
PLOT_MIN_INTERVAL_S = 1.0  # at most one redraw a second
PLOT_MAX_SHARE = 0.1  # ... and drawing at most 10 % of the time (the last draw's duration sets the interval)
PLOT_MAX_INTERVAL_S = 2.0  # ... but at least every 2 s while data change


def read_events(path: str | Path, up_to: int | None = None) -> list[dict[str, Any]]:
    """The records of a run's ``events.jsonl`` (up to iteration ``up_to``); a line cut by a kill and a missing or
    unreadable file are skipped (the plot then shows less, never an error)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            it = int(rec.get("iteration", 0))
        except (ValueError, TypeError, AttributeError):
            continue
        if up_to is None or it <= up_to:
            out.append(rec)
    return out


def _downsample(x: np.ndarray, y: np.ndarray, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Bin-averaged series of at most ``n`` points (also smooths noisy per-step losses)."""
    if len(x) <= n:
        return x, y
    edges = np.linspace(0, len(x), n + 1).astype(int)
    xs = np.add.reduceat(x, edges[:-1]) / np.diff(edges)
    ys = np.add.reduceat(y, edges[:-1]) / np.diff(edges)
    return xs, ys


def _nice_ceil(v: float) -> float:
    """The smallest of 1, 2, 3, 5 times a power of ten that is >= ``v`` (> 0): the data fill >= 60 % of the axis."""
    e = 10.0 ** math.floor(math.log10(v))
    return next(m * e for m in (1, 2, 3, 5, 10) if m * e >= v * (1 - 1e-12))


class PlotRenderer:
    """Loss parts (log scale) over validation Dice, drawn with Matplotlib's Agg renderer.

    Keeps its figure, axes and lines between draws. The axes, ticks, labels and title are drawn only when the
    size, title, series or axis limits change; limits move in steps (x to 1, 2, 3 or 5 times a power of ten, y to
    whole decades), so most redraws only paste that background and draw the curves and the Dice text on it
    (blitting: a few ms instead of 40-150 ms). The legend is part of the background (the y range leaves room
    for it above the curves). Used from a worker thread: one thread at a time.
    """

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        self.fig = Figure(dpi=80)
        FigureCanvasAgg(self.fig)
        self.ax_loss, self.ax_dice = self.fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        self.lines: dict[str, Any] = {}
        (self.dice_line,) = self.ax_dice.plot([], [], "o-", color="tab:green", ms=3, lw=1.2, animated=True)
        self.dice_text = self.ax_dice.text(0.98, 0.08, "no validation yet", ha="right", va="bottom",
                                           fontsize=7, color="0.3", transform=self.ax_dice.transAxes,
                                           animated=True)
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
        self._background: Any = None
        self._key: tuple | None = None
        self.full_draws = 0  # draws of the whole figure (the others only blit the data)

    def render(self, parts: dict[str, tuple[np.ndarray, np.ndarray]], dice: tuple[np.ndarray, np.ndarray],
               size: tuple[int, int], note: str = "") -> np.ndarray:
        """Draw and return the image as RGBA ``(h, w, 4)`` uint8."""
        w, h = max(size[0], 120), max(size[1], 120)
        if self.size != (w, h):
            self.fig.set_size_inches(w / self.fig.dpi, h / self.fig.dpi)
            self.fig.subplots_adjust(left=min(0.2, 60 / w), right=0.97, top=1 - min(0.12, 24 / h),
                                     bottom=min(0.2, 36 / h), hspace=0.12)
            self.size = (w, h)
        title = note or "loss parts and validation Dice"
        if set(parts) != set(self.lines):
            for line in self.lines.values():
                line.remove()
            self.lines = {}
            for name in parts:
                style = {"color": "0.4", "ls": "--", "lw": 1.0} if name == "total" else {"lw": 1.3}
                (self.lines[name],) = self.ax_loss.plot([], [], label=PART_NAMES.get(name, name), animated=True,
                                                        **style)
            if self.ax_loss.get_legend() is not None:
                self.ax_loss.get_legend().remove()
            if parts:
                self.ax_loss.legend(fontsize=7, loc="upper right", ncol=2, frameon=False)
        positive = []
        for name, (x, y) in parts.items():
            self.lines[name].set_data(x, y)
            positive.append(y[y > 0])
        values = np.concatenate(positive) if positive else np.array([])
        ylim = None
        if values.size:  # whole decades, with head room for the legend
            lo, hi = float(values.min()), float(values.max())
            ylim = (10.0 ** math.floor(math.log10(lo / 1.5)), 10.0 ** math.ceil(math.log10(hi * 3.0)))
            if self.ax_loss.get_yscale() != "log":
                self.ax_loss.set_yscale("log")
            self.ax_loss.set_ylim(*ylim)
        xmax = max([float(x[-1]) for x, _ in parts.values() if len(x)] + [float(d) for d in dice[0][-1:]] + [1.0])
        xmin = min([float(x[0]) for x, _ in parts.values() if len(x)] + [0.0])
        xlim = (xmin, _nice_ceil(xmax * 1.02 + 1))
        self.ax_loss.set_xlim(*xlim)
        dx, dy = dice
        self.dice_line.set_data(dx, dy)
        self.dice_text.set_text(f"last {dy[-1]:.3f} · best {dy.max():.3f}" if len(dx) else "no validation yet")

        canvas = self.fig.canvas
        key = (w, h, self.fig.dpi, title, tuple(parts), ylim, xlim)
        if key != self._key or self._background is None:
            self.title.set_text(title)
            canvas.draw()  # all but the animated artists (the curves and the Dice text)
            self._background = canvas.copy_from_bbox(self.fig.bbox)
            self._key = key
            self.full_draws += 1
        else:
            canvas.restore_region(self._background)
        for artist in [*self.lines.values(), self.dice_line, self.dice_text]:
            artist.axes.draw_artist(artist)
        return np.asarray(canvas.buffer_rgba()).copy()

    def render_timed(self, *args: Any, **kwargs: Any) -> tuple[np.ndarray, float]:
        """:meth:`render`, and how long it took (s)."""
        t = time.perf_counter()
        rgba = self.render(*args, **kwargs)
        return rgba, time.perf_counter() - t


class StatusLine(QWidget):
    """A text of at most ``lines`` lines (word-wrapped, then cut) that changes often, e.g. every status tick.

    Painted by itself with a fixed height: setting a new text repaints only this widget, where a ``QLabel``
    would also make the window lay out (and repaint) again.
    """

    def __init__(self, text: str = "", lines: int = 2, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._text = text
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self.fontMetrics().lineSpacing() * lines + 4)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:  # noqa: N802 - QLabel's name
        if text != self._text:
            self._text = text
            self.setToolTip(text)
            self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        flags = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextWordWrap
        painter.drawText(self.rect(), flags, self._text)
        painter.end()


class LossPlot(QWidget):
    """Loss parts and validation Dice, redrawn off the GUI thread at most every :attr:`interval` seconds."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._renderer = PlotRenderer()
        self._pixmap: QPixmap | None = None
        self.setMinimumSize(QSize(240, 220))
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(300)
        self.clear()
        self._busy = False
        self._flush = False  # draw once more as soon as possible, and show it when done
        self._showing_now = False
        self._last_start = 0.0
        self._pending: np.ndarray | None = None
        self.render_s = 0.0  # duration of the last draw
        self._draws = 0
        self.renders = 0
        self.note = ""

    @property
    def busy(self) -> bool:
        """A redraw is in progress."""
        return self._busy

    @property
    def interval(self) -> float:
        """Least seconds between the starts of two redraws (from the last draw's duration)."""
        return min(max(PLOT_MIN_INTERVAL_S, self.render_s / PLOT_MAX_SHARE), PLOT_MAX_INTERVAL_S)

    def flush(self) -> None:
        """Draw the latest data now, or right after the redraw in progress, and show it when drawn.

        One flush draws once more (not until the data stop changing): a new run may already be adding points.
        """
        self._dirty = True
        self._flush = True
        if not self._busy:
            self._start()

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

    def load_history(self, events: str | Path, up_to: int | None = None,
                     history: list[dict[str, Any]] | None = None) -> int:
        """Replace the points with a run's whole history: the loss parts and validation Dice of its
        ``events.jsonl`` up to iteration ``up_to`` (what a resumed run keeps); without a readable events file,
        the Dice of ``history`` (the checkpoint's validations). Returns the number of events read."""
        self.clear()
        records = read_events(events, up_to)
        for rec in records:
            it = int(rec.get("iteration", 0))
            if rec.get("kind") == "step" and isinstance(rec.get("parts"), dict):
                self.add_parts(it, {k: v for k, v in rec["parts"].items() if isinstance(v, (int, float))})
            elif rec.get("kind") == "validation":
                self.add_dice(it, rec.get("mean_dice"))
        if not records:
            for h in history or []:
                if up_to is None or int(h.get("iteration", 0)) <= up_to:
                    self.add_dice(int(h.get("iteration", 0)), h.get("mean_dice"))
        return len(records)

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
        """Show a finished redraw; start a new one in a worker thread if something changed, none is running and
        :attr:`interval` has passed."""
        self._show_pending()
        # (0.05 s early is on time: refresh is called by a timer with the same period)
        if not self._dirty or self._busy or time.perf_counter() - self._last_start < self.interval - 0.05:
            return
        self._start()

    def _start(self) -> None:
        from superqt.utils import create_worker

        self._showing_now, self._flush = self._flush, False  # a flush's draw is shown as soon as it is done
        self._dirty = False
        self._busy = True
        self._last_start = time.perf_counter()
        parts = {k: _downsample(np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in self._parts.items()}
        dice = (np.asarray(self._dice[0], float), np.asarray(self._dice[1], float))
        dpr = self.devicePixelRatioF()
        size = (int(self.width() * dpr), int(self.height() * dpr))
        self._renderer.fig.set_dpi(80 * dpr)
        worker = create_worker(self._renderer.render_timed, parts, dice, size, self.note,
                               _connect={"returned": self._returned, "finished": self._done,
                                         "errored": self._failed})
        self._worker = worker

    def _returned(self, result: tuple[np.ndarray, float]) -> None:
        self._pending, seconds = result
        if self._draws:  # the first draw (fonts load) says little about the next ones
            self.render_s = seconds
        self._draws += 1
        if self._showing_now:  # after a flush no more ticks may come
            self._show_pending()

    def _show_pending(self) -> None:
        if self._pending is not None:
            rgba, self._pending = self._pending, None
            self._show(rgba)

    def _show(self, rgba: np.ndarray) -> None:
        h, w = rgba.shape[:2]
        img = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        pix = QPixmap.fromImage(img)
        pix.setDevicePixelRatio(self.devicePixelRatioF())
        self._pixmap = pix
        self.update()
        self.renders += 1

    def pixmap(self) -> QPixmap | None:
        """The image shown (None before the first draw)."""
        return self._pixmap

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        pix = self._pixmap
        if pix is None:
            return
        dpr = pix.devicePixelRatio() or 1.0
        w, h = pix.width() / dpr, pix.height() / dpr
        painter = QPainter(self)
        painter.drawPixmap(QPointF((self.width() - w) / 2, (self.height() - h) / 2), pix)  # centred, logical size
        painter.end()

    def _done(self) -> None:
        self._busy = False
        if self._flush:  # flushed during this draw
            self._start()

    def _failed(self, exc: BaseException) -> None:
        self._busy = False
        notify_error(exc, "Distill plot")
