"""The Distill widget trains in a child process (pytest-qt, Xvfb): live features update the same layers, one
visible by default; closing the viewer mid-run ends the child and keeps last.pt; a killed child is one line;
a warning event shows at once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
from qtpy.QtCore import Qt

from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import Distiller
from napari_dmd.distill.events import Event
from napari_dmd.registry import REGISTRY, entry_from_checkpoint

pytestmark = pytest.mark.gui

TINY = "4,8,16"
TEACHER = "teacher: tiny live"


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory) -> str:
    t = Distiller(TrainConfig(method="none", model=TINY, iterations=2, patch_size=[32, 32], batch_size=1,
                              num_threads=1), phantom_cases(2, 2), output_dir=tmp_path_factory.mktemp("t") / "t",
                  role="teacher")
    t.run_to_end()
    return str(t.last_path)


@pytest.fixture
def registry(teacher_path):
    from napari_dmd._widgets._live import LIVE

    REGISTRY.clear()
    REGISTRY.add(entry_from_checkpoint(teacher_path, role="teacher", device="cpu", name=TEACHER))
    yield REGISTRY
    REGISTRY.clear()
    LIVE.latest, LIVE.running, LIVE.name = None, False, ""


def _distill(viewer, out, iterations: int):
    viewer.open_sample("napari-dmd", "phantom-2d")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Distill")
    w.teacher_chooser.setCurrentText(TEACHER)
    w.set_method("dmd")
    w.student_combo.setCurrentText(TINY)
    w.iterations_spin.setValue(iterations)
    w.patch_edit.setText("32,32")
    w.batch_spin.setValue(1)
    w.device_combo.setCurrentText("cpu")
    w.output_edit.setText(str(out))
    return w


def _steps(w) -> int:
    return sum(1 for e in w.events if e.kind == "step")


def test_live_features_update_the_same_layers_one_visible_by_default(make_napari_viewer, qtbot, registry,
                                                                    tmp_path):
    viewer = make_napari_viewer()
    w = _distill(viewer, tmp_path / "live", iterations=12)
    _, fw = viewer.window.add_plugin_dock_widget("napari-dmd", "Features")
    fw.live_steps.setValue(3)
    fw.live_check.setChecked(True)
    seen: list[tuple[int, int]] = []  # (id of the layer, iteration) at each update

    def updated(names):
        [name] = names  # one view by default: one layer
        layer = viewer.layers[name]
        seen.append((id(layer), layer.metadata["napari_dmd"]["iteration"]))

    fw.layers_updated.connect(updated)
    with qtbot.waitSignal(w.run_finished, timeout=120_000):
        qtbot.mouseClick(w.start_button, Qt.MouseButton.LeftButton)
    # a snapshot within the live time budget waits; the last one is always shown (deferred, the newest)
    qtbot.waitUntil(lambda: not fw._busy and not fw._deferred and seen and seen[-1][1] == 12, timeout=30_000)
    assert w.events[-1].kind == "done", w.last_error
    assert w.run.child is not None
    qtbot.waitUntil(lambda: not w.run.child.alive, timeout=30_000)  # the engine ran in the child, now gone
    assert len(seen) >= 2 and len({i for i, _ in seen}) == 1, "live updates must reuse the layer object"
    assert [it for _, it in seen] == sorted(it for _, it in seen) and seen[-1][1] == 12
    features = [lay for lay in viewer.layers if " features " in lay.name]
    assert [lay.name for lay in features] == ["phantom 2D features s2 PCA"] and features[0].visible
    # the budget: a snapshot before _live_next computes nothing now, once later; a second one joins it
    import time

    from napari_dmd._widgets._live import LIVE

    n, deferred = fw.computations, fw.live_deferred
    fw._live_next = time.monotonic() + 0.5
    fw._on_snapshot(LIVE.latest)
    fw._on_snapshot(LIVE.latest)
    qtbot.wait(100)
    assert fw.computations == n and fw.live_deferred == deferred + 2 and fw._deferred
    qtbot.waitUntil(lambda: fw.computations == n + 1 and not fw._busy, timeout=10_000)
    qtbot.wait(300)
    assert fw.computations == n + 1
    # each live update is charged the process CPU it took, its redraw included (LIVE_SETTLE_S after it ended)
    assert fw.live_cpu_s and all(c > 0 for c in fw.live_cpu_s)
    from napari_dmd._widgets import features as fmod

    fw._live_next = 0.0
    fw._charge_live(100.0, time.process_time() - 0.1)  # 0.1 s of CPU: wait 0.1 * (1 / LIVE_SHARE - 1)
    assert 100.0 + 0.1 * (1 / fmod.LIVE_SHARE - 1) <= fw._live_next < 100.0 + 0.11 * (1 / fmod.LIVE_SHARE - 1)
    fw._charge_live(100.0, time.process_time() - 10.0)  # a very slow one: capped
    assert fw._live_next == 100.0 + fmod.LIVE_MAX_WAIT_S


def test_closing_the_viewer_mid_run_ends_the_child_and_keeps_last_pt(make_napari_viewer, qtbot, registry,
                                                                     tmp_path):
    viewer = make_napari_viewer()
    out = tmp_path / "closed"
    w = _distill(viewer, out, iterations=100_000)
    w.start()
    qtbot.waitUntil(lambda: _steps(w) >= 3, timeout=120_000)
    run, worker = w.run, w.worker
    finished: list[bool] = []
    worker.finished.connect(lambda: finished.append(True))
    viewer.close()
    qtbot.waitUntil(lambda: bool(finished), timeout=30_000)
    assert run.aborted and not run.child.alive
    assert load_checkpoint(out / "last.pt")["iteration"] >= 3


def test_a_killed_child_is_one_line_and_warning_events_show_at_once(make_napari_viewer, qtbot, registry,
                                                                     tmp_path):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    w = _distill(viewer, tmp_path / "killed", iterations=100_000)
    w.start()
    qtbot.waitUntil(lambda: _steps(w) >= 1, timeout=120_000)
    seen = len(notification_manager.records)
    w._on_yield((Event("warning", 5, 10, message="class 'kidney' lost: Dice 0.0 for 3 validations"), None))
    assert "Warning: class 'kidney' lost" in w.status_label.text()
    assert any("class 'kidney' lost" in str(n.message) for n in notification_manager.records[seen:])
    with qtbot.waitSignal(w.run_finished, timeout=30_000):
        os.kill(w.run.child.process.pid, signal.SIGKILL)
    assert "ended unexpectedly (killed by SIGKILL)" in w.last_error and "\n" not in w.last_error
    assert w.start_button.isEnabled() and not w.running


def test_closing_the_viewer_during_demo_training_stops_its_child(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The demo pair trains in a child process: closing the viewer mid-training ends it, caches nothing."""
    from dataclasses import replace

    from napari_dmd import pretrained

    monkeypatch.setenv("NAPARI_DMD_CACHE", str(tmp_path))
    tiny = replace(pretrained.RECIPE, teacher_model=TINY, student_model="2,4,8", teacher_iterations=100_000,
                   student_iterations=2, teacher_patch=32, student_patch=32, teacher_batch=1, student_batch=1,
                   n_2d=1, sizes_2d=(48,), n_3d=1, shape_3d=(4, 48, 48), slice_step=2, num_threads=1)
    monkeypatch.setattr(pretrained, "RECIPE", tiny)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Teacher")
    done: list[int] = []
    w.demo_progressed.connect(lambda d, total: done.append(d))
    worker = w.use_demo_models()
    finished: list[bool] = []
    worker.finished.connect(lambda: finished.append(True))
    qtbot.waitUntil(lambda: len(done) >= 2, timeout=120_000)  # steps arrive from the child
    assert [p for p in multiprocessing.active_children() if p.name == "napari-dmd-demo"]  # trained there
    viewer.close()
    qtbot.waitUntil(lambda: bool(finished), timeout=30_000)
    assert pretrained.cached_models(tiny) is None
    assert not [p for p in multiprocessing.active_children() if p.name == "napari-dmd-demo"]
