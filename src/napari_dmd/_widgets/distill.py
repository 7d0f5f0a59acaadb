"""Distill widget: train a student from a teacher on layers or an MSD folder, live, in the background.

A thin view of :class:`napari_dmd.distill.engine.Distiller`: the widget collects settings, builds the run in a
napari thread worker (cases are loaded and normalized there, never on the Qt thread) and forwards the engine's
events (one per step) to the main thread, where it updates the progress bar, the status line, the live plot
and the checkpoint path. Stop asks the engine to stop before its next step; closing the viewer quits the
worker, which closes the engine's generator so that it writes ``last.pt``. When a run ends its checkpoints
are added to :data:`napari_dmd.registry.REGISTRY` as students, and :data:`LIVE` shares snapshots of the
student being trained with the Features widget.

The live plot is drawn with Matplotlib's Agg renderer in a worker thread (at most 2 redraws a second) and
shown as an image: a Qt-canvas redraw costs 25-60 ms of the GUI thread here, enough to stall the event loop.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal as PSignal
from qtpy.QtCore import QSize, Qt, QThreadPool, QTimer, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..config import ConfigError, TrainConfig
from ..data.cases import Case
from ..data.io import DataError
from ._common import (
    Failure,
    ModelChooser,
    dmd_metadata,
    image_layers,
    labels_layers,
    layer_affine,
    layer_spacing,
    notify_error,
    notify_info,
)

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

    from ..distill.engine import Distiller, Event
    from ..features import StudentSnapshot
    from ..registry import ModelEntry

METHODS = ("dmd", "kd", "dkd", "mfd", "none")
METHOD_TIPS = {
    "dmd": "DMD: task + TCKD on the logits + NCKD on every decoder scale (the paper's method)",
    "kd": "KD: task + KL divergence to the teacher's softened probabilities",
    "dkd": "DKD: task + target (TCKD) and non-target (NCKD) parts on the final logits",
    "mfd": "MFD: task + KD of every decoder scale's head toward the teacher",
    "none": "none: the student alone (teacher's prediction only as target where there is no label)",
}
STUDENT_PRESETS = ("student", "student-tiny")
NO_LABELS = "(none: teacher's prediction)"
PART_NAMES = {"task": "task (CE + Dice)", "tckd": "TCKD", "nckd": "NCKD", "kd": "KD", "mfd": "MFD",
              "ds": "deep supervision", "total": "total"}
STATUS_HZ = 4.0  # status line and progress bar refresh
PLOT_MIN_INTERVAL_S = 0.5  # live plot: at most 2 redraws a second
MIN_POOL_THREADS = 4


def _ensure_thread_pool() -> None:
    """A run holds a pool thread for its whole length: leave room for plots and feature workers."""
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < MIN_POOL_THREADS:
        pool.setMaxThreadCount(MIN_POOL_THREADS)


def available_devices() -> list[str]:
    """Device choices: auto, cpu, and cuda / mps where present."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def default_output_dir(method: str) -> Path:
    return Path.home() / "napari-dmd-runs" / f"{method}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _free_folder(path: Path) -> Path:
    """``path`` if it holds no run (no last.pt), else the first free ``path-2``, ``path-3``, ..."""
    if not (path / "last.pt").exists():
        return path
    i = 2
    while (path.with_name(f"{path.name}-{i}") / "last.pt").exists():
        i += 1
    return path.with_name(f"{path.name}-{i}")


# ------------------------------------------------------------------------------------------ live student


class LiveStudent:
    """The student a Distill widget trains, shared with the Features widget's live mode.

    Features widgets :meth:`subscribe` with a step interval; the training worker then copies the student's
    weights (between steps) every that many steps, and the Distill widget emits :attr:`snapshot` with the
    :class:`~napari_dmd.features.StudentSnapshot` on the main thread. :attr:`changed` fires when a run starts
    or ends.
    """

    snapshot = PSignal(object)
    changed = PSignal()

    def __init__(self) -> None:
        self.running = False
        self.name = ""
        self.latest: StudentSnapshot | None = None
        self._every: dict[int, int] = {}
        self._requested = False

    def subscribe(self, key: int, every: int) -> None:
        self._every[key] = max(1, int(every))

    def unsubscribe(self, key: int) -> None:
        self._every.pop(key, None)

    @property
    def every(self) -> int:
        """Smallest requested interval in steps (0: nobody watches)."""
        return min(self._every.values()) if self._every else 0

    def request(self) -> None:
        """Ask for a snapshot after the next step."""
        self._requested = True

    def due(self, iteration: int) -> bool:
        """Called by the training worker after each step."""
        if self._requested:
            self._requested = False
            return True
        n = self.every
        return n > 0 and iteration % n == 0


LIVE = LiveStudent()


# ------------------------------------------------------------------------------------------ worker side


@dataclass
class RunHandle:
    """One training run: its inputs, then the live engine and its generator."""

    config: TrainConfig
    output_dir: Path
    cases: list[Case] | None = None
    folder: str | None = None
    teacher_entry: ModelEntry | None = None
    resume: Path | None = None
    patch_single: int | None = None
    distiller: Distiller | None = None
    gen: Generator | None = None
    stop: bool = False
    stop_requested_at: int | None = None
    aborted: bool = False
    events: list[Event] = field(default_factory=list)

    def request_stop(self) -> None:
        self.stop = True
        d = self.distiller
        if d is not None:
            if self.stop_requested_at is None:
                self.stop_requested_at = d.iteration
            d.request_stop()

    def close_generator(self) -> None:
        """Close the engine's generator (writes last.pt); called in the worker thread when it is quit."""
        self.aborted = True
        gen = self.gen
        if gen is not None:
            with contextlib.suppress(Exception):
                gen.close()


def _teacher_from_entry(entry: ModelEntry):
    """A private copy of a registry model as a Teacher (the engine moves it to its device)."""
    from ..teachers import ModelTeacher, load_teacher

    seg = entry.segmenter
    try:
        model = copy.deepcopy(seg.model)
    except Exception:  # noqa: BLE001 - not copyable in memory: reload from its file
        if entry.checkpoint is None:
            raise
        return load_teacher(entry.checkpoint, kind=entry.info.get("kind", "auto"),
                            trust=bool(entry.info.get("trusted", False)))
    return ModelTeacher(model, seg.num_classes, seg.spatial_dims, class_names=seg.class_names,
                        normalization=seg.normalization, patch_size=seg.patch_size, source=entry.name)


def train_worker(run: RunHandle, live: LiveStudent) -> Generator[Any, None, None]:
    """Thread-worker generator: build the Distiller, then yield ``(event, snapshot or None)`` per event.

    Exceptions are yielded as :class:`~napari_dmd._widgets._common.Failure` (superqt would swallow a
    RuntimeError raised by a generator worker as "worker deleted"). Closing this generator closes the
    engine's, which writes last.pt.
    """
    from ..data.cases import load_msd_folder
    from ..distill.engine import Distiller
    from ..features import StudentSnapshot

    gen = None
    try:
        cfg = run.config
        cases = run.cases
        if cases is None:
            cases, names = load_msd_folder(run.folder or "")
            if cfg.class_names is None and names:
                cfg.class_names = names
        teacher = _teacher_from_entry(run.teacher_entry) if run.teacher_entry is not None else None
        if run.patch_single is not None:
            dims = cfg.spatial_dims or (teacher.spatial_dims if teacher is not None else cases[0].ndim)
            cfg.patch_size = [run.patch_single] * dims
        if cfg.class_names is None and teacher is not None and teacher.class_names:
            cfg.class_names = list(teacher.class_names)
        d = Distiller(cfg, cases, teacher=teacher, output_dir=run.output_dir, resume=run.resume)
        run.distiller = d
        if run.stop:
            run.request_stop()
        gen = d.run()
        run.gen = gen
        for ev in gen:
            snap = None
            if (ev.kind == "step" and live.due(ev.iteration)) or ev.kind in ("done", "stopped"):
                snap = StudentSnapshot.take(d.model, heads=d.heads, feature_scales=d.feature_scales,
                                            normalization=d.normalization, iteration=d.iteration,
                                            name=f"live: {run.output_dir.name}")
            yield ev, snap
    except GeneratorExit:
        if gen is not None:
            gen.close()
        raise
    except Exception as exc:  # noqa: BLE001 - shown to the user on the main thread
        yield Failure(exc)


# ------------------------------------------------------------------------------------------ live plot


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


class LivePlot(QLabel):
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

    def clear(self) -> None:
        self._parts: dict[str, tuple[list[int], list[float]]] = {}
        self._dice: tuple[list[int], list[float]] = ([], [])
        self._dirty = True

    def add_parts(self, iteration: int, parts: dict[str, float]) -> None:
        for k, v in parts.items():
            xs, ys = self._parts.setdefault(k, ([], []))
            xs.append(iteration)
            ys.append(float(v))
        self._dirty = True

    def add_dice(self, iteration: int, dice: float | None) -> None:
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


# ------------------------------------------------------------------------------------------ layer pairs


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


def cases_from_layers(pairs: list[tuple[Image, Labels | None]]) -> list[Case]:
    """Cases (copies of the layer data) from image/labels layer pairs; DataError names the layer."""
    cases = []
    for image, labels in pairs:
        data = np.asarray(image.data)
        if data.ndim not in (2, 3):
            raise DataError(f"layer {image.name!r}: {data.ndim}D data (shape {data.shape}); expected a 2D "
                            "image or a 3D volume with one channel")
        lab = None
        if labels is not None:
            lab = np.asarray(labels.data)
            if lab.shape != data.shape:
                raise DataError(f"labels layer {labels.name!r}: shape {lab.shape} does not match image layer "
                                f"{image.name!r} shape {data.shape}")
            lab = lab.copy()
        cases.append(Case(image=np.array(data, dtype=np.float32), label=lab, spacing=layer_spacing(image),
                          affine=layer_affine(image), name=image.name, image_path=f"layer {image.name!r}",
                          label_path=f"labels layer {labels.name!r}" if labels is not None else None))
    return cases


# ------------------------------------------------------------------------------------------ the widget


class _Guard:
    """Holds the current run outside the Qt object, so it can be stopped when the widget is destroyed."""

    def __init__(self) -> None:
        self.run: RunHandle | None = None

    def stop(self, *_: Any) -> None:
        if self.run is not None:
            self.run.request_stop()


class DistillWidget(QWidget):
    """Distil a student from a teacher: data, method, size, schedule; Start / Stop / Resume; live plot."""

    run_event = Signal(object)  # every engine Event, on the main thread
    run_finished = Signal(object)  # the RunHandle, when the worker has finished (any reason)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        _ensure_thread_pool()
        self.viewer = napari_viewer
        self.worker = None
        self.run: RunHandle | None = None
        self.registered: list[str] = []
        self.last_error = ""
        self._pbar = None
        self._last_step: Event | None = None
        self._guard = _Guard()
        self.destroyed.connect(self._guard.stop)

        layout = QVBoxLayout(self)
        # --- data
        data_box = QGroupBox("Training data")
        data_layout = QVBoxLayout(data_box)
        self.data_tabs = QTabWidget()
        self.pair_table = PairTable(napari_viewer)
        self.data_tabs.addTab(self.pair_table, "Layers")
        folder_page = QWidget()
        fl = QHBoxLayout(folder_page)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder with imagesTr/ (+ labelsTr/)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_folder)
        fl.addWidget(self.folder_edit)
        fl.addWidget(browse)
        self.data_tabs.addTab(folder_page, "MSD folder")
        data_layout.addWidget(self.data_tabs)
        layout.addWidget(data_box)

        # --- method
        form_box = QGroupBox("Distillation")
        form = QFormLayout(form_box)
        self.teacher_chooser = ModelChooser("teacher")
        form.addRow("Teacher", self.teacher_chooser)
        self.method_combo = QComboBox()
        for m in METHODS:
            self.method_combo.addItem(m.upper() if m != "none" else "none (student alone)", m)
        self.method_combo.setToolTip("\n".join(METHOD_TIPS.values()))
        form.addRow("Method", self.method_combo)
        self.student_combo = QComboBox()
        self.student_combo.setEditable(True)
        self.student_combo.addItems(list(STUDENT_PRESETS))
        self.student_combo.setToolTip("a preset, or channels per level such as 8,16,32,64")
        form.addRow("Student", self.student_combo)
        self.iterations_spin = QSpinBox()
        self.iterations_spin.setRange(1, 10_000_000)
        self.iterations_spin.setValue(2000)
        form.addRow("Iterations", self.iterations_spin)
        self.patch_edit = QLineEdit()
        self.patch_edit.setPlaceholderText("auto (e.g. 128,128 or 64,64,64)")
        form.addRow("Patch size", self.patch_edit)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 512)
        self.batch_spin.setValue(2)
        form.addRow("Batch size", self.batch_spin)
        self.device_combo = QComboBox()
        for dev in available_devices():
            if dev == "auto":
                from ..distill.engine import resolve_device

                self.device_combo.addItem(f"auto ({resolve_device('auto').type})", "auto")
            else:
                self.device_combo.addItem(dev, dev)
        form.addRow("Device", self.device_combo)
        out_row = QHBoxLayout()
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText(str(Path.home() / "napari-dmd-runs" / "<method>-<time>"))
        self.output_edit.textChanged.connect(self._update_buttons)
        out_browse = QPushButton("…")
        out_browse.setMaximumWidth(30)
        out_browse.clicked.connect(self._browse_output)
        out_row.addWidget(self.output_edit)
        out_row.addWidget(out_browse)
        form.addRow("Output", out_row)
        layout.addWidget(form_box)

        # --- run
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(self.resume)
        for b in (self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.status_label = QLabel("idle")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.plot = LivePlot()
        layout.addWidget(self.plot)
        self.checkpoint_label = QLabel("checkpoint: –")
        self.checkpoint_label.setWordWrap(True)
        self.checkpoint_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.checkpoint_label)
        layout.addStretch(1)

        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / STATUS_HZ))
        self._timer.timeout.connect(self._tick)
        self._update_buttons()

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self.worker is not None

    @property
    def distiller(self) -> Distiller | None:
        """The live engine of the current (or last) run."""
        return self.run.distiller if self.run is not None else None

    @property
    def events(self) -> list[Event]:
        """Engine events of the current (or last) run."""
        return self.run.events if self.run is not None else []

    @property
    def stop_requested_at(self) -> int | None:
        """The engine's iteration when Stop was pressed."""
        return self.run.stop_requested_at if self.run is not None else None

    def method(self) -> str:
        return str(self.method_combo.currentData())

    def set_method(self, method: str) -> None:
        idx = self.method_combo.findData(method)
        if idx < 0:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.method_combo.setCurrentIndex(idx)

    def _update_buttons(self, *_: Any) -> None:
        running = self.running
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        text = self.output_edit.text().strip()
        self.resume_button.setEnabled(not running and bool(text) and (Path(text) / "last.pt").is_file())

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "MSD / nnU-Net raw folder")
        if path:
            self.folder_edit.setText(path)

    def _browse_output(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder")
        if path:
            self.output_edit.setText(path)

    # ------------------------------------------------------------------ settings -> run
    def _patch(self) -> tuple[list[int] | None, int | None]:
        text = self.patch_edit.text().strip().lower()
        if text in ("", "auto"):
            return None, None
        try:
            values = [int(v) for v in text.replace("x", ",").replace(" ", ",").split(",") if v]
        except ValueError:
            raise ConfigError(f"patch size {text!r}: give 'auto', one number, or one per axis like 64,64") \
                from None
        if not values or any(v < 4 for v in values):
            raise ConfigError(f"patch size {text!r}: every entry must be a number >= 4")
        if len(values) == 1:
            return None, values[0]
        if len(values) not in (2, 3):
            raise ConfigError(f"patch size {text!r}: give 2 (2D) or 3 (3D) numbers")
        return values, None

    def _teacher(self) -> ModelEntry | None:
        entry = self.teacher_chooser.entry()
        if entry is None and self.method() != "none":
            raise ConfigError(f"method {self.method()!r} needs a teacher: load or train one in the Teacher "
                              "widget, or choose method 'none'")
        return entry

    def _cases(self) -> tuple[list[Case] | None, str | None, list[str] | None]:
        if self.data_tabs.currentIndex() == 1:
            folder = self.folder_edit.text().strip()
            if not folder:
                raise DataError("choose an MSD folder (with imagesTr/), or train on layers")
            if not Path(folder).is_dir():
                raise DataError(f"{folder}: folder not found")
            return None, folder, None
        pairs = self.pair_table.pairs()
        if not pairs:
            raise DataError("no image layer is checked: open images (File > Open) and tick them under "
                            "Training data, or use an MSD folder")
        names = None
        for image, labels in pairs:
            names = names or dmd_metadata(labels or image).get("class_names")
        return cases_from_layers(pairs), None, names

    @staticmethod
    def _intervals(iterations: int) -> dict[str, int]:
        """Validate ~10 times a run (at least every 500 steps); write last.pt at least every 200 steps."""
        every = max(1, min(iterations // 10, 500))
        return {"val_interval": every, "checkpoint_interval": min(every, 200)}

    def _config(self) -> tuple[TrainConfig, int | None]:
        patch, single = self._patch()
        iterations = self.iterations_spin.value()
        cfg = TrainConfig(method=self.method(), model=self.student_combo.currentText().strip() or "student",
                          iterations=iterations, patch_size=patch, batch_size=self.batch_spin.value(),
                          device=str(self.device_combo.currentData()),
                          num_threads=max(1, (os.cpu_count() or 2) - 1), **self._intervals(iterations))
        cfg.model_channels()  # raises a clear message on a malformed channel list
        return cfg.validate(), single

    def start(self) -> None:
        """Start a new run with the widget's settings."""
        if self.running:
            return
        try:
            cfg, single = self._config()
            teacher = self._teacher()
            cases, folder, names = self._cases()
            if names and cfg.class_names is None:
                cfg.class_names = list(names)
            text = self.output_edit.text().strip()
            out = Path(text).expanduser() if text else default_output_dir(cfg.method)
            free = _free_folder(out)
            if free != out:
                notify_info(f"Distill: {out} already holds a run; writing to {free} (use Resume to continue "
                            "a run)")
            run = RunHandle(cfg, free, cases=cases, folder=folder, teacher_entry=teacher, patch_single=single)
        except Exception as exc:  # noqa: BLE001 - every problem becomes a message
            self._fail(exc)
            return
        self.output_edit.setText(str(free))
        self.plot.clear()
        self._launch(run, start_iteration=0)

    def resume(self) -> None:
        """Continue the run in the output folder (its last.pt) up to the Iterations setting."""
        if self.running:
            return
        from ..checkpoint import load_checkpoint

        try:
            out = Path(self.output_edit.text().strip()).expanduser()
            last = out / "last.pt"
            ckpt = load_checkpoint(last)
            done = int(ckpt.get("iteration", 0))
            cfg = TrainConfig.from_dict(ckpt["config"])
            total = self.iterations_spin.value()
            if total <= done:
                raise ConfigError(f"{last}: the run is already at iteration {done}; set Iterations above "
                                  f"{done} to continue it")
            cfg.iterations = total
            for key, value in self._intervals(total).items():
                setattr(cfg, key, value)
            cfg.device = str(self.device_combo.currentData())
            cfg.num_threads = max(1, (os.cpu_count() or 2) - 1)
            self.set_method(cfg.method)
            self.student_combo.setCurrentText(cfg.model)
            teacher = self._teacher() if cfg.method != "none" else self.teacher_chooser.entry()
            cases, folder, _ = self._cases()
            run = RunHandle(cfg.validate(), out, cases=cases, folder=folder, teacher_entry=teacher, resume=last)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return
        history = ckpt.get("history") or []
        self.plot.clear()
        for h in history:
            self.plot.add_dice(int(h.get("iteration", 0)), h.get("mean_dice"))
        self._launch(run, start_iteration=done)

    def stop(self) -> None:
        """Ask the engine to stop before its next step (it then writes last.pt)."""
        if self.run is not None and self.running:
            self.run.request_stop()
            self.status_label.setText(self.status_label.text() + " — stopping…")

    def _launch(self, run: RunHandle, start_iteration: int) -> None:
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self.run = run
        self._guard.run = run
        self._last_step = None
        self.last_error = ""
        self.plot.note = f"{run.config.method.upper()} – {run.output_dir.name}"
        self._pbar = progress(total=run.config.iterations, initial=start_iteration,
                              desc=f"Distill {run.config.method} ({run.output_dir.name})")
        self._pbar_n = start_iteration
        worker = create_worker(train_worker, run, LIVE, _start_thread=False)
        worker.yielded.connect(self._on_yield)
        worker.finished.connect(self._on_finished)
        # quit (e.g. the viewer closes): close the engine's generator in the worker thread -> last.pt
        worker.aborted.connect(run.close_generator, Qt.ConnectionType.DirectConnection)
        self.worker = worker
        LIVE.running = True
        LIVE.name = f"live: {run.output_dir.name}"
        LIVE.latest = None
        LIVE.changed.emit()
        self.status_label.setText(f"preparing {run.config.method} run in {run.output_dir} …")
        self._update_buttons()
        self._timer.start()
        worker.start()

    # ------------------------------------------------------------------ main-thread handlers
    def _on_yield(self, item: Any) -> None:
        run = self.run
        if run is None:
            return
        if isinstance(item, Failure):
            self._fail(item.exc)
            return
        ev, snap = item
        run.events.append(ev)
        if ev.kind == "step":
            self._last_step = ev
            self.plot.add_parts(ev.iteration, ev.parts)
        elif ev.kind == "validation":
            self.plot.add_dice(ev.iteration, ev.mean_dice)
            if ev.path:
                self._show_checkpoint(ev.path, best=True)
        elif ev.kind in ("checkpoint", "done", "stopped"):
            if ev.path:
                self._show_checkpoint(ev.path)
        if ev.kind in ("start", "done", "stopped"):
            self.status_label.setText(ev.message)
        if snap is not None:
            LIVE.latest = snap
            LIVE.snapshot.emit(snap)
        self.run_event.emit(ev)

    def _show_checkpoint(self, path: str, best: bool = False) -> None:
        run = self.run
        last = str(run.distiller.last_path) if run is not None and run.distiller is not None else path
        best_path = run.distiller.best_path if run is not None and run.distiller is not None else None
        text = f"checkpoint: {last}"
        if best_path is not None and Path(best_path).exists():
            text += f"\nbest: {best_path}"
        self.checkpoint_label.setText(text)

    def _tick(self) -> None:
        ev = self._last_step
        if ev is not None:
            if self._pbar is not None and ev.iteration > self._pbar_n:
                self._pbar.update(ev.iteration - self._pbar_n)
                self._pbar_n = ev.iteration
            eta = time.strftime("%H:%M:%S", time.gmtime(ev.eta_s)) if np.isfinite(ev.eta_s) else "?"
            total = ev.parts.get("total", float("nan"))
            text = (f"iteration {ev.iteration}/{ev.total} · loss {total:.4f} · {ev.samples_per_s:.1f} "
                    f"samples/s · ETA {eta}")
            if self.run is not None and self.run.stop:
                text += " — stopping…"
            self.status_label.setText(text)
        self.plot.refresh()

    def _fail(self, exc: BaseException) -> None:
        self.last_error = notify_error(exc, "Distill")
        self.status_label.setText(self.last_error)

    def _on_finished(self) -> None:
        run = self.run
        try:
            self._tick()
            self._timer.stop()
        except RuntimeError:  # the widget is being deleted with the viewer
            return
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        LIVE.running = False
        LIVE.changed.emit()
        if run is not None and run.distiller is not None:
            self._register(run)
        self._update_buttons()
        if run is not None and run.events and run.events[-1].kind in ("done", "stopped"):
            ev = run.events[-1]
            best = f" · best validation Dice {ev.mean_dice:.3f}" if ev.mean_dice is not None else ""
            self.status_label.setText(f"{ev.message}{best}")
        if run is None or not run.aborted:  # aborted: the viewer is closing, start no more threads
            self.plot.flush()
        self.run_finished.emit(run)

    def _register(self, run: RunHandle) -> None:
        """Offer the run's checkpoints to the other widgets (Features, Compare, Segment)."""
        from ..registry import REGISTRY, entry_from_checkpoint

        d = run.distiller
        names = []
        for path in (d.last_path, d.best_path):
            if not path.is_file():
                continue
            try:
                entry = entry_from_checkpoint(path, role="student", device=run.config.device)
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)
                continue
            REGISTRY.add(entry)
            names.append(entry.name)
        self.registered = names
        if names:
            notify_info(f"Distill: student ready for Features / Compare / Segment: {', '.join(names)}")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self._guard.stop()
        super().closeEvent(event)

