"""``napari-dmd bench gui --inference``: one click in the viewer vs the same inference headless.

In a real napari viewer (the ``phantom 3D`` sample), the Segment, Compare and Features widgets are timed from
the button click (Segment's Segment, Compare's Compare, Features' Show features) to their result layers being
in the viewer (the widget's worker has finished: its result handler has added the layers), against the core
function each widget calls (:class:`~napari_dmd.segment.Segmenter`, :func:`~napari_dmd.compare.compare_models`,
:func:`~napari_dmd.features.compute_features`) run headless in the main thread of the same process with the same
inputs. Features computes a small job (one slice through a student) in the main thread: its click is timed until
it returns, with its layers in place; the headless run then gathers the widget's inputs and computes the same
way. Segment, Compare and Features update the layers of their previous click in place (Segment: the same image
and model, the layer untouched since), so each round also times a first click (their layers removed before it: napari
creates the layers, a fixed ~0.3-0.4 s per layer on the development VM). In-viewer and headless runs alternate
(the order turns every round) after one uncounted warm-up round; medians of the counted rounds are reported, with
their ratio (target <= 1.2), and the in-viewer results are checked against the headless ones (labels equal,
feature maps equal). napari and Qt are imported only when
the benchmark runs.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .machine import QUICK_STUDENT, QUICK_TEACHER, _table

TARGET = 1.2
MODEL_CHOICES = ("auto", "demo", "2d", "3d")
QUICK_SHAPE = (8, 64, 64)  # the --quick volume (a small phantom beside the sample)
PRESET_PATCH = {2: [64, 64], 3: [32, 48, 32]}
NAMES = ("napari-dmd bench teacher", "napari-dmd bench student")
#: Idle event loop after each click before anything else is timed: the new layers drawn (under software OpenGL
#: a headless run started 0.3 s after a click took up to 2-3x its time; after 1 s, as long as any other)
SETTLE_MS = 1000


@dataclass
class Widget:
    """How to click one widget, read its result in the viewer, and compute the same thing headless."""

    name: str
    click: Callable[[], None]  # press the button (synchronous: the worker is started when it returns)
    worker: Callable[[], Any]  # the worker the click started (None: the click was refused)
    error: Callable[[], str]  # the widget's status text, for a refused click
    clear: Callable[[], None]  # remove the widget's result layers (the next click adds them anew)
    viewer_result: Callable[[], list[np.ndarray]]
    headless: Callable[[], list[np.ndarray]]
    updates_in_place: bool = False  # a repeated click updates the previous click's layers (else: new layers)
    #: the click computed in the main thread (no worker) and its result layers are in place when it returns
    done_inline: Callable[[], bool] = lambda: False


def build_models(kind: str, quick: bool, device: str = "cpu") -> tuple[Any, Any, str]:
    """(teacher, student) registry entries for the benchmark, and a line describing them.

    ``quick``: freshly built tiny 2D U-Nets (channels 8,16,32 and 4,8,16, patch 32x32, seed 0; untrained);
    ``demo``: the cached demo pair (2D, :func:`napari_dmd.pretrained.cached_models`; never trained here);
    ``2d`` / ``3d``: freshly built ``teacher`` and ``student`` presets (seed 0, untrained: the timing does not
    depend on the weights); ``auto``: ``demo`` when it is cached, else ``2d``.
    """
    import torch

    from ..models.presets import build_model
    from ..phantom import PHANTOM_CLASS_NAMES
    from ..pretrained import cached_models
    from ..registry import ModelEntry, entry_from_checkpoint
    from ..segment import Segmenter

    if kind not in MODEL_CHOICES:
        raise ValueError(f"--inference-models {kind!r}: choose one of {', '.join(MODEL_CHOICES)}")
    cached = None if quick else cached_models()
    if kind == "demo" and cached is None:
        raise ValueError("--inference-models demo: the demo pair is not cached; click 'Use demo models' in the "
                         "Teacher widget once, or choose --inference-models 2d")
    if not quick and kind in ("auto", "demo") and cached is not None:
        entries = tuple(entry_from_checkpoint(p, role=r, device=device, name=n)
                        for p, r, n in zip(cached, ("teacher", "student"), NAMES))
        return entries[0], entries[1], f"the cached demo pair ({cached[0].parent})"
    dims = 3 if kind == "3d" else 2
    specs = ((QUICK_TEACHER, QUICK_STUDENT) if quick else ("teacher", "student"))
    patch = [32, 32] if quick else PRESET_PATCH[dims]
    n = len(PHANTOM_CLASS_NAMES)
    entries = []
    for spec, role, name in zip(specs, ("teacher", "student"), NAMES):
        torch.manual_seed(0)
        preset = spec if spec in ("teacher", "student") else tuple(int(c) for c in spec.split(","))
        model = build_model(preset, dims, n).to(device).eval()
        seg = Segmenter(model, n, dims, list(patch), "zscore", list(PHANTOM_CLASS_NAMES), device, name=name)
        entries.append(ModelEntry(name, role, seg, model))
    what = "tiny" if quick else "preset"
    return entries[0], entries[1], (f"freshly built {what} {dims}D U-Nets {specs[0]} / {specs[1]} (untrained, "
                                    f"patch {patch})")


def _run_loop(loop: Any, ms: int) -> None:
    """Let the event loop run for ``ms`` milliseconds."""
    from qtpy.QtCore import QTimer

    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _close_toasts() -> None:
    with contextlib.suppress(Exception):
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in list(NapariQtNotification._instances):
            toast.close()


def time_click(w: Widget, loop: Any, timeout_s: float) -> float:
    """Seconds from ``w.click()`` to the end of the widget's worker (its result handler has run), or to the
    click's return where the widget computed in the main thread (its result layers are then in place)."""
    from qtpy.QtCore import QTimer

    done: list[float] = []
    t0 = time.perf_counter()
    w.click()
    returned = time.perf_counter()
    worker = w.worker()
    if worker is None and w.done_inline():
        return returned - t0
    if worker is None:
        raise ValueError(f"bench gui --inference: {w.name} did not start: {w.error() or 'unknown reason'}")

    def finished() -> None:
        done.append(time.perf_counter())
        loop.quit()

    worker.finished.connect(finished)  # after the widget's own handlers: the layers are there
    guard = QTimer()
    guard.setSingleShot(True)
    guard.timeout.connect(loop.quit)
    guard.start(int(timeout_s * 1000))
    while not done and guard.isActive():
        loop.exec()
    guard.stop()
    if not done:
        raise ValueError(f"bench gui --inference: {w.name} did not finish within {timeout_s:.0f} s")
    return done[0] - t0


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Equal lists of arrays (labels exactly; float maps to float32 rounding)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            return False
        if np.issubdtype(x.dtype, np.floating) or np.issubdtype(y.dtype, np.floating):
            if not np.allclose(x, y, rtol=1e-5, atol=1e-6):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def make_widgets(viewer: Any, image: Any, teacher: Any, student: Any) -> list[Widget]:
    """Dock Segment, Compare and Features on ``viewer``, chosen for ``image`` and the models; their specs."""
    from ..compare import compare_models
    from ..features import compute_features

    _, sw = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    _, cw = viewer.window.add_plugin_dock_widget("napari-dmd", "Compare")
    _, fw = viewer.window.add_plugin_dock_widget("napari-dmd", "Features")
    sw.model_box.setCurrentText(student.name)
    sw.image_box.set_layer(image)
    cw.teacher_box.setCurrentText(teacher.name)
    cw.student_box.setCurrentText(student.name)
    cw.image_box.set_layer(image)
    fw.set_model(student.name)
    fw.image_chooser.set_layer(image)
    for box, want in ((sw.model_box, student), (cw.teacher_box, teacher), (cw.student_box, student)):
        if box.entry() is not want:
            raise ValueError(f"bench gui --inference: could not choose {want.name!r} in a model chooser")

    seg_name = f"{image.name} segmentation ({student.name})"

    def clear(names: list[str]) -> None:
        for name in names:
            if name in viewer.layers:
                viewer.layers.remove(name)

    def clear_compare() -> None:
        clear([lay.name for lay in cw.layers.values()])
        cw.layers.clear()
        viewer.canvas.grid.enabled = False  # shows the layers the grid hid

    def feature_layers() -> list[Any]:
        from .._widgets._geometry import is_feature_layer

        return [lay for lay in viewer.layers if is_feature_layer(lay)]

    def compare_headless() -> list[np.ndarray]:
        res = compare_models(teacher, student, np.asarray(image.data))
        return [res.teacher, res.student, res.disagreement]

    clicks = {"computations": 0}

    def features_click() -> None:
        clicks["computations"] = fw.computations
        fw.show_button.click()

    def features_inline() -> bool:  # this click computed in the main thread and added its layers
        return fw.ran_inline and fw.computations > clicks["computations"]

    def features_headless() -> list[np.ndarray]:
        job = fw._job()  # the widget's own inputs (gathered on the main thread), computed as its worker does
        res = compute_features(job.model, job.data, heads=job.heads, head_stages=job.head_stages,
                               feature_scales=job.stages, normalization=job.normalization, spacing=job.spacing,
                               origin=job.origin, slice_index=job.slice_index)
        return [sf.pca_rgb for sf in res]

    return [
        Widget("Segment", sw.segment_button.click, lambda: sw.worker, sw.status.text, lambda: clear([seg_name]),
               lambda: [np.array(viewer.layers[seg_name].data)], lambda: [student.segmenter(np.asarray(image.data))],
               True),
        Widget("Compare", cw.compare_button.click, lambda: cw.worker, cw.status.text, clear_compare,
               lambda: [cw.layers[k].data for k in ("teacher", "student", "disagreement")], compare_headless, True),
        Widget("Features", features_click, lambda: fw.worker, fw.status_label.text,
               lambda: clear([lay.name for lay in feature_layers()]),
               lambda: [np.array(lay.data) for lay in feature_layers()],  # copies: a later click writes in place
               features_headless, True, features_inline),
    ]


def measure(w: Widget, loop: Any, repeats: int, timeout_s: float) -> dict[str, Any]:
    """One warm-up round, then ``repeats`` rounds of a repeated click, a headless run and, for a widget that
    updates its layers in place, a first click (its layers removed first); the order turns every round."""
    times: dict[str, list[float]] = {"gui": [], "headless": [], "first": []}
    same = True
    inline: list[bool] = []  # each click: computed in the main thread (else in the widget's worker)
    sides = ["gui", "headless", *(["first"] if w.updates_in_place else [])]
    for r in range(repeats + 1):
        results = []
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            if side == "headless":
                t0 = time.perf_counter()
                ref = w.headless()
                dt = time.perf_counter() - t0
            else:
                if side == "first" or not w.updates_in_place:
                    w.clear()
                _run_loop(loop, 200)  # the removal drawn, nothing pending
                dt = time_click(w, loop, timeout_s)
                inline.append(w.done_inline())
                results.append(w.viewer_result())
                _close_toasts()  # a toast animates the window while it is shown
                _run_loop(loop, SETTLE_MS)
            if r:
                times[side].append(dt)
        same = same and all(_same(got, ref) for got in results)
    med = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
    h = med["headless"]
    return {"widget": w.name, "layers": "updated in place" if w.updates_in_place else "added",
            "viewer_s": times["gui"], "headless_s": times["headless"], "first_click_s": times["first"],
            "viewer_median_s": med["gui"], "headless_median_s": h, "first_click_median_s": med["first"],
            "ratio": med["gui"] / h if h > 0 else float("nan"),
            "first_click_ratio": med["first"] / h if h > 0 and times["first"] else float("nan"),
            "same_result": same, "computed_in": ("main thread" if all(inline) else "worker" if not any(inline)
                                                 else f"main thread {sum(inline)} of {len(inline)} clicks")}


def bench_gui_inference(repeats: int = 3, quick: bool = False, models: str = "auto", device: str = "cpu",
                        timeout_s: float = 900, viewer: Any = None) -> dict[str, Any]:
    """Time Segment, Compare and Features from the click to their result layers, vs headless; print the table.

    ``viewer``: use this viewer (left open, its result layers kept) instead of a new one closed at the end.
    """
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                                 or os.environ.get("QT_QPA_PLATFORM")):
        raise ValueError("bench gui --inference needs a display: run it under xvfb-run -a")
    if repeats < 1:
        raise ValueError(f"--inference-repeats {repeats}: give at least 1 (3 or more for a median)")
    import napari
    import torch
    from qtpy.QtCore import QEventLoop

    from ..phantom import make_phantom
    from ..registry import REGISTRY

    teacher, student, described = build_models(models, quick, device)
    own = viewer is None
    if own:
        viewer = napari.Viewer(title="napari-dmd bench gui --inference")
    try:
        if quick:
            vol, _ = make_phantom(QUICK_SHAPE, seed=0)
            image = viewer.add_image(vol, name="phantom quick", colormap="gray")
        else:
            viewer.open_sample("napari-dmd", "phantom-3d")
            image = viewer.layers["phantom 3D"]
        viewer.layers.selection.active = image
        viewer.dims.set_point(0, (image.extent.world[0, 0] + image.extent.world[1, 0]) / 2)  # as Compare does
        for entry in (teacher, student):
            REGISTRY.add(entry)
        widgets = make_widgets(viewer, image, teacher, student)
        loop = QEventLoop()
        _run_loop(loop, 1000)  # the new window settles
        rows = []
        for w in widgets:  # each from the same view: Compare's grid (which redraws every panel) left first
            viewer.canvas.grid.enabled = False
            rows.append(measure(w, loop, repeats, timeout_s))
    finally:
        for name in NAMES:
            with contextlib.suppress(Exception):
                REGISTRY.remove(name)
        if own:
            with contextlib.suppress(Exception):
                viewer.close()
    res = {"kind": "inference", "settings": {"models": described, "image": list(image.data.shape),
                                             "repeats": repeats, "device": device,
                                             "torch_threads": torch.get_num_threads(), "napari": napari.__version__,
                                             "display": os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM"),
                                             "target": TARGET},
           "rows": rows}
    print(f"GUI inference: napari {napari.__version__}, image {image.name!r} {tuple(image.data.shape)}, "
          f"{described}, device {device}, {torch.get_num_threads()} torch thread(s); click to result layers vs the "
          f"same call headless, median of {repeats} round(s) after a warm-up, the order turning every round")
    print(_table(["widget", "in-viewer s", "headless s", "ratio", f"target <= {TARGET}", "layers",
                  "first click s", "first / headless", "computed in", "same result"],
                 [[r["widget"], f"{r['viewer_median_s']:.3f}", f"{r['headless_median_s']:.3f}", f"{r['ratio']:.2f}",
                   "ok" if r["ratio"] <= TARGET else "MISSED", r["layers"],
                   f"{r['first_click_median_s']:.3f}" if r["first_click_s"] else "(same)",
                   f"{r['first_click_ratio']:.2f}" if r["first_click_s"] else "", r["computed_in"],
                   "yes" if r["same_result"] else "NO"]
                  for r in rows]))
    print("in-viewer: from the click to the result layers (a repeated click, updating the "
          "layers of the previous one; first click: the layers added anew); the machine's load shifts all figures")
    return res
