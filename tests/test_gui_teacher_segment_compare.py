"""Teacher, Segment and Compare widgets in a real napari viewer (pytest-qt, Xvfb), and the demo-model cache.

Tiny 2-3 iteration models are trained in-process on small phantoms; nothing here trains the real demo pair.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_dmd import pretrained
from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.config import TrainConfig
from napari_dmd.distill.engine import Distiller
from napari_dmd.metrics import dice_per_class
from napari_dmd.phantom import PHANTOM_CLASS_NAMES
from napari_dmd.registry import REGISTRY, entry_from_checkpoint
from napari_dmd.teachers import load_teacher

TINY = "4,8,16"
TEACHER = "teacher: tiny"
STUDENT = "student: tiny"
TINY_RECIPE = pretrained.DemoRecipe(teacher_model=TINY, student_model="2,4,8", teacher_iterations=2,
                                    student_iterations=2, teacher_patch=32, student_patch=48, teacher_batch=2,
                                    student_batch=3, n_2d=1, sizes_2d=(48,), n_3d=1, shape_3d=(4, 48, 48),
                                    slice_step=2, num_threads=1)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """A 3-iteration teacher and a 2-iteration DMD student (2D, 6 phantom classes)."""
    cases, val = pretrained.phantom_cases_2d(TINY_RECIPE)
    common = dict(model=TINY, spatial_dims=2, patch_size=[32, 32], batch_size=2, num_threads=1, device="cpu",
                  class_names=list(PHANTOM_CLASS_NAMES), num_classes=6)
    out = tmp_path_factory.mktemp("tiny")
    t = Distiller(TrainConfig(method="none", iterations=3, **common), cases, val_cases=val, output_dir=out / "t",
                  role="teacher")
    t.run_to_end()
    s = Distiller(TrainConfig(method="dmd", iterations=2, **common), cases, val_cases=val,
                  teacher=load_teacher(t.last_path), output_dir=out / "s")
    s.run_to_end()
    return {"teacher": str(t.last_path), "student": str(s.last_path)}


@pytest.fixture
def registry(tiny_models):
    REGISTRY.clear()
    REGISTRY.add(entry_from_checkpoint(tiny_models["teacher"], role="teacher", device="cpu", name=TEACHER))
    REGISTRY.add(entry_from_checkpoint(tiny_models["student"], role="student", device="cpu", name=STUDENT))
    yield REGISTRY
    REGISTRY.clear()


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """Messages the widgets show as napari error notifications."""
    from napari_dmd._widgets import _notify

    shown: list[str] = []
    monkeypatch.setattr(_notify, "show_error", shown.append)
    return shown


def _wait_idle(qtbot, widget, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


# ------------------------------------------------------------------------------------------- demo cache
def test_demo_models_cached_and_reused(tmp_path):
    calls: list[tuple[int, int]] = []
    t, s = pretrained.phantom_models(lambda d, n: calls.append((d, n)), tmp_path, recipe=TINY_RECIPE,
                                     device="cpu")
    assert t.exists() and s.exists() and t.parent == s.parent == tmp_path / TINY_RECIPE.key()
    assert calls[-1] == (4, 4) and len(calls) == 4  # one report per training step
    assert [p.name for p in tmp_path.iterdir()] == [TINY_RECIPE.key()]  # no temporary folder left
    assert load_teacher(t).normalization == load_teacher(s).normalization
    tc, sc = load_checkpoint(t), load_checkpoint(s)  # each role gets its own method, patch, batch and weights
    r = TINY_RECIPE
    assert (tc["config"]["method"], tc["patch_size"], tc["config"]["batch_size"]) == (r.teacher_method, [32, 32], 2)
    assert (sc["config"]["method"], sc["patch_size"], sc["config"]["batch_size"]) == ("dmd", [48, 48], 3)
    assert sc["config"]["lambda_logit"] == r.lambda_logit and tc["kind"] == "teacher"
    mtime = t.stat().st_mtime_ns
    calls.clear()
    assert pretrained.phantom_models(lambda d, n: calls.append((d, n)), tmp_path, recipe=TINY_RECIPE) == (t, s)
    assert calls == [(4, 4)] and t.stat().st_mtime_ns == mtime  # reused, not retrained


def test_demo_models_stop_leaves_no_cache(tmp_path):
    with pytest.raises(pretrained.DemoCancelled):
        pretrained.phantom_models(None, tmp_path, recipe=TINY_RECIPE, should_stop=lambda: True, device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_demo_cache_location_and_override(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_DMD_CACHE", str(tmp_path))
    assert pretrained.cache_root() == tmp_path
    monkeypatch.setenv("NAPARI_DMD_DEMO_ITERATIONS", "3,2")
    r = pretrained.current_recipe()
    assert (r.teacher_iterations, r.student_iterations, r.total) == (3, 2, 5) and r.key() != pretrained.RECIPE.key()
    monkeypatch.setenv("NAPARI_DMD_DEMO_ITERATIONS", "3")
    with pytest.raises(ValueError, match="NAPARI_DMD_DEMO_ITERATIONS"):
        pretrained.current_recipe()


def test_demo_recipe_key_tracks_training_settings():
    """Every training setting (but the thread count) names its own cache folder, so a new recipe never
    reuses a pair trained with the old one."""
    from dataclasses import replace

    r = pretrained.RECIPE
    keys = {replace(r, **{k: v}).key() for k, v in (("teacher_method", "none"), ("lambda_logit", 1.0),
                                                     ("teacher_patch", 64), ("student_batch", 4))}
    assert len(keys) == 4 and r.key() not in keys
    assert replace(r, num_threads=1).key() == r.key()
    assert r.key().startswith(f"phantom2d-v5-t{r.teacher_iterations}-s{r.student_iterations}-")


def test_demo_pair_benchmark_smoke(tmp_path, capsys):
    """benchmarks/demo_pair.py runs end to end on a tiny recipe and reports times and per-class Dice."""
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_pair.py"
    spec = importlib.util.spec_from_file_location("demo_pair_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = TINY_RECIPE
    out = tmp_path / "r.json"
    args = ["--threads", "1", "--no-samples", "--json", str(out), "--set", f"teacher_model={r.teacher_model}",
            f"student_model={r.student_model}", "teacher_iterations=2", "student_iterations=1", "teacher_patch=32",
            "student_patch=32", "teacher_batch=2", "student_batch=2", "n_2d=1", "sizes_2d=48", "n_3d=1",
            "shape_3d=4,48,48", "slice_step=2"]
    assert bench.main(args) == 0
    text = capsys.readouterr().out
    assert "machine:" in text and "CPU/2" in text and "| student | val_phantom2d |" in text
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["times"]["cpu_s"] > 0 and result["recipe"]["sizes_2d"] == [48]
    assert set(result["dice"]) == {"teacher", "student"} and len(result["means"]["teacher"]["val_per_class"]) == 5


def test_entry_from_teacher_file_is_qt_free_core(tiny_models):
    """Loading any teacher file as a registry entry lives in napari_dmd.registry, which imports no Qt / napari."""
    code = ("import sys; from napari_dmd.registry import entry_from_teacher_file; "
            f"e = entry_from_teacher_file({tiny_models['teacher']!r}, device='cpu'); "
            "assert e.role == 'teacher' and e.model is not None and e.name.startswith('teacher: '), e.name; "
            "gui = ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'superqt', 'napari'); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in gui); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


# --------------------------------------------------------------------------------------------- widgets
@pytest.mark.gui
def test_sample_data_and_dock_widgets(make_napari_viewer):
    from napari_dmd._widgets.compare import CompareWidget
    from napari_dmd._widgets.segment import SegmentWidget
    from napari_dmd._widgets.teacher import TeacherWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-dmd", "phantom-2d")
    assert [layer._type_string for layer in viewer.layers] == ["image", "labels"]
    assert viewer.layers[0].data.shape == (192, 192)
    for name, cls in (("Teacher", TeacherWidget), ("Segment", SegmentWidget), ("Compare", CompareWidget)):
        _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", name)
        assert isinstance(widget, cls)


@pytest.mark.gui
def test_segment_2d_keeps_geometry(make_napari_viewer, qtbot, registry):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dmd", "phantom-2d")
    image = viewer.layers["phantom 2D"]
    image.scale = (0.5, 0.75)
    image.translate = (10.0, -4.0)
    image.metadata = {"napari_dmd": {"affine": np.diag([0.75, 0.5, 1.0, 1.0]).tolist()}}
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    assert w.model_box.currentText() == STUDENT  # students first
    viewer.layers.selection.active = image
    assert w.image_box.layer() is image
    n = len(viewer.layers)
    assert w.segment() is not None
    _wait_idle(qtbot, w)
    assert len(viewer.layers) == n + 1
    out = viewer.layers[-1]
    assert out._type_string == "labels" and out.name == f"phantom 2D segmentation ({STUDENT})"
    assert out.data.shape == image.data.shape and out.data.dtype == np.uint8
    np.testing.assert_array_equal(out.scale, image.scale)
    np.testing.assert_array_equal(out.translate, image.translate)
    # the image was moved off its metadata affine: the labels carry where it sits now (world y 10, x -4 mm)
    np.testing.assert_array_equal(out.metadata["napari_dmd"]["affine"],
                                  [[0.75, 0, 0, -4.0], [0, 0.5, 0, 10.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert out.metadata["napari_dmd"]["class_names"] == list(PHANTOM_CLASS_NAMES)
    expected = REGISTRY.get(STUDENT).segmenter(image.data)
    np.testing.assert_array_equal(out.data, expected)


@pytest.mark.gui
def test_segment_again_updates_its_layer_unless_painted_or_moved(make_napari_viewer, qtbot, registry):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dmd", "phantom-2d")
    image = viewer.layers["phantom 2D"]
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    viewer.layers.selection.active = image
    name = f"phantom 2D segmentation ({STUDENT})"
    assert w.segment() is not None
    _wait_idle(qtbot, w)
    n = len(viewer.layers)
    first = viewer.layers[name]
    first.data = np.zeros_like(first.data)  # a stale result (as from other weights): a repeat must replace it
    w._outputs[(image.name, id(REGISTRY.get(STUDENT)))] = (w._outputs[(image.name, id(REGISTRY.get(STUDENT)))][0],
                                                           REGISTRY.get(STUDENT), _digest(first.data))
    assert w.segment() is not None
    _wait_idle(qtbot, w)
    assert len(viewer.layers) == n and "(updated)" in w.status.text()  # the same layer, no "[1]" copy
    expected = REGISTRY.get(STUDENT).segmenter(image.data)
    np.testing.assert_array_equal(viewer.layers[name].data, expected)
    viewer.layers[name].data[0, 0] = 5  # the user paints on it: their edit is kept, the result gets a new layer
    assert w.segment() is not None
    _wait_idle(qtbot, w)
    assert len(viewer.layers) == n + 1 and "(added)" in w.status.text()
    assert viewer.layers[name].data[0, 0] == 5
    np.testing.assert_array_equal(viewer.layers[-1].data, expected)
    image.translate = (3.0, 0.0)  # the image moved: a new layer placed over it, the old one left where it was
    assert w.segment() is not None
    _wait_idle(qtbot, w)
    assert len(viewer.layers) == n + 2 and tuple(viewer.layers[-1].translate) == (3.0, 0.0)
    del viewer.layers[name]  # a layer the user deleted is forgotten at the next run (its data can be freed)
    assert w.segment() is not None
    _wait_idle(qtbot, w)
    assert all(lay in viewer.layers for lay, _, _ in w._outputs.values())


def _digest(a: np.ndarray) -> bytes:
    from napari_dmd._widgets.segment import label_digest

    return label_digest(a)


@pytest.mark.gui
def test_segment_3d_volume_slice_by_slice_and_cancel(make_napari_viewer, qtbot, registry):
    from napari_dmd.phantom import make_phantom

    viewer = make_napari_viewer()
    vol, _ = make_phantom((6, 40, 40), seed=3)
    layer = viewer.add_image(vol, name="vol", scale=(3.0, 0.8, 0.8))
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    w.model_box.setCurrentText(TEACHER)
    seen: list[tuple[int, int]] = []
    w.progressed.connect(lambda d, t: seen.append((d, t)))
    assert w.segment() is not None
    _wait_idle(qtbot, w)
    out = viewer.layers[-1]
    assert out.data.shape == vol.shape and tuple(out.scale) == (3.0, 0.8, 0.8)
    assert seen and seen[-1][0] == seen[-1][1] >= 6  # windows over all six slices
    # the result stays in the status line, even if a window count arrives late
    done_text = w.status.text()
    assert done_text.startswith("vol segmentation") and " s, classes present" in done_text
    w.progressed.emit(3, 6)
    qtbot.wait(20)
    assert w.status.text() == done_text
    # Cancel: the worker stops before its next window and adds nothing
    n = len(viewer.layers)
    assert w.segment() is not None
    w.cancel()
    _wait_idle(qtbot, w)
    assert len(viewer.layers) == n and "cancelled" in w.status.text()
    assert layer in viewer.layers


@pytest.mark.gui
def test_closing_the_viewer_cancels_a_segmentation(make_napari_viewer, qtbot, registry):
    """Closing the viewer mid-run stops the prediction at its next window and nothing signals the deleted widget
    (emitting its progress signal from the worker after the close crashed the process)."""
    from napari_dmd.phantom import make_phantom

    viewer = make_napari_viewer()
    vol, _ = make_phantom((400, 64, 64), seed=3)
    viewer.add_image(vol, name="vol")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    w.model_box.setCurrentText(TEACHER)
    seen: list[tuple[int, int]] = []
    w.progressed.connect(lambda d, t: seen.append((d, t)))
    worker = w.segment()
    assert worker is not None
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=30_000)
    finished: list[bool] = []
    worker.finished.connect(lambda: finished.append(True))
    viewer.close()
    qtbot.waitUntil(lambda: bool(finished), timeout=30_000)
    assert worker.abort_requested and seen[-1][0] < seen[-1][1]  # quit, and stopped well before the last window


@pytest.mark.gui
def test_segment_reports_errors(make_napari_viewer, qtbot, errors):
    REGISTRY.clear()
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    assert w.segment() is None
    assert errors and "no model is loaded" in errors[-1]


@pytest.mark.gui
def test_compare_grid_dice_and_times(make_napari_viewer, qtbot, registry):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dmd", "phantom-2d")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Compare")
    assert (w.teacher_box.currentText(), w.student_box.currentText()) == (TEACHER, STUDENT)
    w.image_box.set_layer("phantom 2D")
    w.truth_box.set_layer("phantom 2D labels")
    assert w.compare() is not None
    _wait_idle(qtbot, w)
    names = [layer.name for layer in viewer.layers]
    assert names[2:] == [f"phantom 2D teacher ({TEACHER})", f"phantom 2D student ({STUDENT})",
                         "phantom 2D teacher ≠ student"]
    assert viewer.canvas.grid.enabled
    t, s, dis = (viewer.layers[i].data for i in (2, 3, 4))
    np.testing.assert_array_equal(dis, (t != s).astype(np.uint8))
    truth = viewer.layers["phantom 2D labels"].data
    assert w.table.rowCount() == 6 and w.table.columnCount() == 3  # 5 classes + mean
    for col, (a, b) in enumerate(((s, t), (t, truth), (s, truth))):
        ref = dice_per_class(a, b, 6)
        for row in range(5):
            text = w.table.item(row, col).text()
            assert text == ("–" if np.isnan(ref[row]) else f"{ref[row]:.3f}")
    assert "teacher" in w.times.text() and " s " in w.times.text()
    # a second run updates the same three layers
    assert w.compare() is not None
    _wait_idle(qtbot, w)
    assert len(viewer.layers) == 5


@pytest.mark.gui
def test_compare_two_students_as_reference_and_student(make_napari_viewer, qtbot, registry, tiny_models):
    """A student in the teacher's place (e.g. a corrections round against its parent) is named a reference."""
    registry.add(entry_from_checkpoint(tiny_models["student"], role="student", device="cpu", name="student: round 1"))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dmd", "phantom-2d")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Compare")
    offered = [w.teacher_box.itemText(i) for i in range(w.teacher_box.count())]
    assert offered[0] == TEACHER and {STUDENT, "student: round 1"} <= set(offered[1:])  # teachers first
    w.teacher_box.setCurrentText(STUDENT)
    w.student_box.setCurrentText("student: round 1")
    w.image_box.set_layer("phantom 2D")
    assert w.compare() is not None
    _wait_idle(qtbot, w)
    assert [layer.name for layer in viewer.layers][2:] == [
        f"phantom 2D reference ({STUDENT})", "phantom 2D student (student: round 1)",
        "phantom 2D reference ≠ student"]
    assert w.table.horizontalHeaderItem(0).text() == "reference\nvs student"
    assert w.times.text().startswith("reference ") and w.status.text().startswith("reference and student agree")
    assert "agree on 100.0 %" in w.status.text()  # the same weights twice


@pytest.mark.gui
def test_compare_refuses_mismatched_ground_truth(make_napari_viewer, qtbot, registry, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 40), dtype=np.float32), name="img")
    viewer.add_labels(np.zeros((30, 30), np.uint8), name="wrong gt")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Compare")
    w.truth_box.set_layer("wrong gt")
    assert w.compare() is not None
    _wait_idle(qtbot, w)
    assert errors and "does not match" in errors[-1] and len(viewer.layers) == 2


@pytest.mark.gui
def test_teacher_load_and_info(make_napari_viewer, qtbot, tiny_models, errors):
    REGISTRY.clear()
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Teacher")
    w.path_edit.setText(tiny_models["teacher"])
    assert w.load() is not None
    _wait_idle(qtbot, w)
    assert REGISTRY.names("teacher") == [w.teacher_box.currentText()]
    info = w.info.text()
    assert "6: background, body, liver" in info and "parameters" in info and "cpu" in info
    w.path_edit.setText(tiny_models["teacher"] + ".missing")
    assert w.load() is not None
    _wait_idle(qtbot, w)
    assert errors and ".missing" in errors[-1]
    REGISTRY.clear()


@pytest.mark.gui
def test_teacher_trains_from_layers_and_stops(make_napari_viewer, qtbot, tmp_path):
    from napari_dmd.phantom import make_phantom_dataset

    REGISTRY.clear()
    viewer = make_napari_viewer()
    for i, (img, lab) in enumerate(make_phantom_dataset(2, (48, 48), seed=5)):
        viewer.add_image(img, name=f"img {i}")
        viewer.add_labels(lab, name=f"lab {i}")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Teacher")
    for i in range(2):
        w.image_box.set_layer(f"img {i}")
        w.labels_box.set_layer(f"lab {i}")
        w.add_pair()
    assert w.pairs_list.count() == 2
    w.preset_box.setCurrentText("student-tiny")
    w.iterations_spin.setValue(10_000)
    w.spatial_check.setChecked(True)  # zoom and rotate patches: reaches the run's config
    w.output_edit.setText(str(tmp_path / "run"))
    assert w.train() is not None
    qtbot.waitUntil(lambda: w.last_event is not None and w.last_event.iteration >= 2, timeout=60_000)
    at_stop = w.last_event.iteration  # the child may be a step ahead of the events relayed so far
    w.stop_button.click()
    _wait_idle(qtbot, w)
    assert w.last_event.kind == "stopped" and w.last_event.iteration <= at_stop + 2  # within the step in progress
    assert w.distiller is None  # trained in a child process, not in napari's
    assert (tmp_path / "run" / "last.pt").exists()
    assert "spatial_augment: true" in (tmp_path / "run" / "config.yaml").read_text()
    [name] = REGISTRY.names("teacher")
    assert name == "teacher: run" and w.teacher_box.currentText() == name
    assert w.train_button.isEnabled() and not w.stop_button.isEnabled()
    assert w.notices == []  # the phantom's classes differ by look: no flip warning
    REGISTRY.clear()


@pytest.mark.gui
def test_teacher_training_warns_when_flips_would_swap_side_by_side_classes(make_napari_viewer, qtbot, tmp_path):
    REGISTRY.clear()
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Teacher")
    for i in range(3):
        img = np.zeros((48, 96), np.float32)
        lab = np.zeros(img.shape, np.uint8)
        lab[12:36, 4 + i:24 + i], lab[12:36, 70 - i:90 - i] = 1, 2  # alike, left and right
        img[lab > 0] = 1.0
        viewer.add_image(img + np.random.default_rng(i).normal(0, 0.1, img.shape).astype(np.float32), name=f"i{i}")
        viewer.add_labels(lab, name=f"l{i}")
        w.image_box.set_layer(f"i{i}")
        w.labels_box.set_layer(f"l{i}")
        w.add_pair()
    w.preset_box.setCurrentText("student-tiny")
    w.iterations_spin.setValue(2)
    w.output_edit.setText(str(tmp_path / "run"))
    assert w.train() is not None
    _wait_idle(qtbot, w)
    assert len(w.notices) == 1 and "differ by position" in w.notices[0] and "x axis" in w.notices[0]
    REGISTRY.clear()


@pytest.mark.gui
def test_closing_the_viewer_stops_teacher_training_and_keeps_last_pt(make_napari_viewer, qtbot, tmp_path):
    """Closing the viewer quits the training worker: it ends, and the engine writes last.pt with the steps done."""
    from napari_dmd.phantom import make_phantom_dataset

    REGISTRY.clear()
    viewer = make_napari_viewer()
    [(img, lab)] = make_phantom_dataset(1, (48, 48), seed=5)
    viewer.add_image(img, name="img")
    viewer.add_labels(lab, name="lab")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Teacher")
    w.image_box.set_layer("img")
    w.labels_box.set_layer("lab")
    w.preset_box.setCurrentText("student-tiny")
    w.iterations_spin.setValue(10_000)  # a checkpoint every 200 steps: none is due before the close
    out = tmp_path / "closed"
    w.output_edit.setText(str(out))
    worker = w.train()
    assert worker is not None
    qtbot.waitUntil(lambda: w.last_event is not None and w.last_event.iteration >= 2, timeout=60_000)
    finished: list[bool] = []
    worker.finished.connect(lambda: finished.append(True))
    assert not (out / "last.pt").exists()
    viewer.close()
    qtbot.waitUntil(lambda: bool(finished), timeout=30_000)  # the worker returns: quit by the closing window
    assert (out / "last.pt").is_file()
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["iteration"] >= w.last_event.iteration >= 2  # the child's steps done, kept
    REGISTRY.clear()


@pytest.mark.gui
def test_teacher_demo_button_registers_pair(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    REGISTRY.clear()
    monkeypatch.setenv("NAPARI_DMD_CACHE", str(tmp_path))
    monkeypatch.setattr(pretrained, "RECIPE", TINY_RECIPE)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Teacher")
    assert w.use_demo_models() is not None
    _wait_idle(qtbot, w)
    assert REGISTRY.names("teacher") == ["demo teacher (phantom)"]
    assert REGISTRY.names("student") == ["demo student (phantom)"]
    assert (tmp_path / TINY_RECIPE.key() / "student.pt").exists()
    REGISTRY.clear()
