"""GUI polish in a real viewer: choosers leave the plugin's outputs alone, Compare's grid shows only its layers,
Features' scale boxes after a model switch, Resume's loss history, the demo's ETA with Load usable meanwhile."""

from __future__ import annotations

import itertools
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from napari.layers import Image, Labels
from qtpy.QtWidgets import QApplication, QCheckBox

from napari_dmd._widgets._choosers import OUTPUT_KEY, LayerChooser, is_output, mark_output
from napari_dmd.compare import CompareResult

pytestmark = pytest.mark.gui


def _items(chooser: LayerChooser) -> list[str]:
    native = chooser.combo.native
    return [native.itemText(i) for i in range(native.count())]


def test_choosers_never_choose_plugin_outputs_by_themselves(make_napari_viewer):
    viewer = make_napari_viewer()
    images, labels = LayerChooser(viewer, Image), LayerChooser(viewer, Labels)
    feat = viewer.add_image(np.zeros((8, 8)), name="x features energy", metadata={"napari_dmd": {"features": "e"}})
    seg = viewer.add_labels(np.zeros((8, 8), np.uint8), name="x segmentation",
                            metadata=mark_output({}, "segmentation"))
    assert is_output(feat) and is_output(seg) and seg.metadata[OUTPUT_KEY] == "segmentation"
    # only outputs: listed, nothing chosen
    assert _items(images) == ["x features energy"] and images.layer() is None
    assert _items(labels) == ["x segmentation"] and labels.layer() is None
    x = viewer.add_image(np.zeros((8, 8)), name="x")
    gt = viewer.add_labels(np.zeros((8, 8), np.uint8), name="x labels")
    assert images.layer() is x and labels.layer() is gt  # the user's layers, not the outputs listed first
    viewer.add_image(np.zeros((8, 8)), name="x features pca", metadata={"napari_dmd": {"features": "pca"}})
    assert images.layer() is x  # a new output never takes over
    labels.set_layer(seg)  # the user may pick an output
    assert labels.layer() is seg
    viewer.layers.remove(x)
    assert images.layer() is None  # the chosen image is gone: no output is chosen in its place


def test_segment_does_not_follow_the_active_layer_to_an_output(make_napari_viewer):
    from napari_dmd._widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    x = viewer.add_image(np.zeros((8, 8)), name="x")
    w = SegmentWidget(viewer)
    feat = viewer.add_image(np.zeros((8, 8)), name="x features energy", metadata={"napari_dmd": {"features": "e"}})
    viewer.layers.selection.active = feat
    assert w.image_box.layer() is x
    y = viewer.add_image(np.zeros((8, 8)), name="y")
    viewer.layers.selection.active = y
    assert w.image_box.layer() is y


def _entry(name: str, role: str = "teacher") -> SimpleNamespace:
    return SimpleNamespace(name=name, role=role, segmenter=SimpleNamespace(parameters=1000, device="cpu"))


def test_compare_grid_shows_only_its_layers_reset_and_mid_slice(make_napari_viewer):
    from napari_dmd._widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    flat = viewer.add_image(np.zeros((64, 64)), name="flat 2D")
    other = viewer.add_labels(np.zeros((64, 64), np.uint8), name="flat labels")
    vol = viewer.add_image(np.random.default_rng(0).random((20, 32, 32)), name="vol", scale=(2.0, 1.0, 1.0))
    w = CompareWidget(viewer)
    viewer.scene.camera.zoom, viewer.scene.camera.center = 40.0, (0.0, 60.0, 60.0)  # zoomed into a corner
    pred = np.zeros((20, 32, 32), np.uint8)
    pred[5:15, 8:20, 8:20] = 1
    res = CompareResult(pred, pred.copy(), 0.2, 0.1, ["organ"], np.array([1.0]))
    w._show(res, _entry("T"), _entry("S", "student"), vol)
    grid_layers = [vol, *w.layers.values()]
    assert viewer.canvas.grid.enabled
    assert [lay.name for lay in viewer.layers if lay.visible] == [lay.name for lay in viewer.layers
                                                                 if any(lay is g for g in grid_layers)]
    assert not flat.visible and not other.visible and len(w.layers) == 3
    assert viewer.dims.point[0] == pytest.approx(19.0, abs=1.01)  # world z of the middle slice (scale 2), not 0
    camera = viewer.scene.camera
    view = (*camera.center, camera.zoom)
    viewer.reset_view()
    assert (*camera.center, camera.zoom) == pytest.approx(view) and camera.zoom < 40  # the view was reset
    w.grid_check.setChecked(False)  # leaving the grid shows the hidden layers again
    assert not viewer.canvas.grid.enabled and flat.visible and other.visible
    assert all(is_output(lay) for lay in w.layers.values())


def test_features_scale_boxes_replaced_at_once_after_a_model_switch(make_napari_viewer, qtbot):
    from napari_dmd._widgets.features import FeaturesWidget

    viewer = make_napari_viewer()
    w = FeaturesWidget(viewer)
    qtbot.addWidget(w)
    w.resize(380, 500)
    w.show()
    for strides in ([4, 2, 1], [16, 8, 4, 2, 1]):
        w._model_layout = lambda s=strides: (s, [0], [8 * k for k in s])
        w._rebuild_scales()
        QApplication.processEvents()  # shows the new boxes (queued); deferred deletes are not processed here
        boxes = [b for b in w.scales_box.findChildren(QCheckBox) if b.isVisible()]
        assert len(boxes) == len(strides) == len(w.scale_strides())  # the old boxes are gone at once
        w.body.adjustSize()
        for a, b in itertools.combinations(boxes, 2):
            assert not a.geometry().intersects(b.geometry()), (a.text(), b.text())
        assert all(b.width() >= b.minimumSizeHint().width() for b in boxes)  # no cut label


def _events_file(path, iterations: int = 60) -> None:
    lines = [{"kind": "start", "iteration": 0, "total": iterations}]
    for it in range(10, iterations + 1, 10):
        parts = {"task": 1.0 / it, "total": 2.0 / it}
        lines.append({"kind": "step", "iteration": it, "total": iterations, "parts": parts})
        if it % 20 == 0:
            lines.append({"kind": "validation", "iteration": it, "total": iterations, "mean_dice": it / 100})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_loss_plot_history_from_events_file(qtbot, tmp_path):
    from napari_dmd._widgets.loss_plot import LossPlot

    events = tmp_path / "events.jsonl"
    _events_file(events)
    with events.open("a") as f:
        f.write('{"kind": "step", "iteration": 70, "parts": {"task": 0.1}}\n{"kind": "st')  # cut by a kill
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.add_parts(1, {"task": 9.0})
    n = plot.load_history(events, up_to=60)
    assert n == 10 and plot.series == {"task": 6, "total": 6, "dice": 3}
    assert plot.load_history(tmp_path / "missing.jsonl", up_to=5, history=[{"iteration": 5, "mean_dice": 0.5}]) == 0
    assert plot.series == {"dice": 1}  # no events file: the checkpoint's validation history


def test_demo_shows_time_left_and_load_stays_usable(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_dmd._widgets import _notify
    from napari_dmd._widgets.teacher import TeacherWidget, duration_text

    assert [duration_text(s) for s in (4.4, 200, 3900)] == ["4 s", "3 min 20 s", "1 h 5 min"]
    viewer = make_napari_viewer()
    w = TeacherWidget(viewer)
    w.worker = object()  # the demo pair is training (the state use_demo_models puts the widget in)
    w._busy(True, stoppable=True)
    assert w.load_button.isEnabled() and not w.demo_button.isEnabled() and not w.train_button.isEnabled()
    w.demo_progressed.emit(10, 100)
    qtbot.wait(1100)
    w.demo_progressed.emit(20, 100)
    assert re.search(r"step 20/100, about (8|9|1\d) s left", w.status.text()), w.status.text()
    shown: list[str] = []
    monkeypatch.setattr(_notify, "show_error", shown.append)
    assert w.load(str(tmp_path / "missing.pt")) is not None  # Load works beside the demo
    assert not w.load_button.isEnabled()
    qtbot.waitUntil(lambda: w.load_worker is None, timeout=20_000)
    assert shown and "missing.pt" in shown[-1]
    assert w.load_button.isEnabled() and not w.demo_button.isEnabled() and w.stop_button.isEnabled()
    w.worker = None
