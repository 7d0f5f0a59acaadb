"""Review dock in a real napari viewer (pytest-qt, Xvfb): rank, step through, paint (with undo), fine-tune.

Tiny 2-3 iteration 2D models trained in-process run slice by slice on a small 3D phantom; the teacher and student
labels layers are made by hand so the ranking's order is known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_dmd.config import TrainConfig
from napari_dmd.distill.engine import Distiller
from napari_dmd.phantom import PHANTOM_CLASS_NAMES, make_phantom
from napari_dmd.registry import REGISTRY, entry_from_checkpoint
from napari_dmd.teachers import load_teacher

TEACHER, STUDENT = "teacher: tiny", "student: tiny"
SHAPE = (6, 40, 40)
SCALE = (2.0, 0.5, 0.5)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """A 3-iteration 2D teacher and a 2-iteration DMD student on slices of a 3D phantom."""
    from napari_dmd.data.cases import Case

    image, label = make_phantom((4, 40, 40), seed=3)
    cases = [Case(image=image, label=label, spacing=(1.0, 1.0, 1.0), affine=np.eye(4), name="p0")]
    common = dict(model="4,8,16", spatial_dims=2, patch_size=[32, 32], batch_size=2, num_threads=1, device="cpu",
                  class_names=list(PHANTOM_CLASS_NAMES), num_classes=6, val_interval=100, checkpoint_interval=100)
    out = tmp_path_factory.mktemp("tiny")
    t = Distiller(TrainConfig(method="none", iterations=3, **common), cases, output_dir=out / "t", role="teacher")
    t.run_to_end()
    s = Distiller(TrainConfig(method="dmd", iterations=2, **common), cases, teacher=load_teacher(t.last_path),
                  output_dir=out / "s")
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
    from napari_dmd._widgets import _notify

    shown: list[str] = []
    monkeypatch.setattr(_notify, "show_error", shown.append)
    return shown


@pytest.fixture
def review(make_napari_viewer, registry):
    """Viewer with the phantom (scaled), teacher labels, and student labels that differ most on slice 4, then
    on slice 1; the Review dock with those layers chosen."""
    viewer = make_napari_viewer()
    image, label = make_phantom(SHAPE, seed=5)
    student = label.copy()
    student[4, 5:35, 5:35] = 0  # most disagreement
    student[1, 10:20, 10:20] = 0
    viewer.add_image(image, name="phantom", scale=SCALE)
    viewer.add_labels(label, name="teacher labels", scale=SCALE)
    viewer.add_labels(student, name="student labels", scale=SCALE)
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Review")
    w.image_box.set_layer("phantom")
    w.teacher_labels_box.set_layer("teacher labels")
    w.student_labels_box.set_layer("student labels")
    w.weight_spin.setValue(0.0)  # rank by disagreement alone: the order is known
    return viewer, w


def _rank(qtbot, w) -> None:
    w.rank_button.click()
    qtbot.waitUntil(lambda: w.rank_worker is None, timeout=60_000)


def test_review_dock_is_registered(make_napari_viewer):
    from napari_dmd._widgets.review import ReviewWidget

    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Review")
    assert isinstance(w, ReviewWidget)
    assert w.count_label.text().startswith("no student labels layer")


def test_rank_fills_table_and_next_jumps_to_the_top_slice(qtbot, review, errors):
    viewer, w = review
    _rank(qtbot, w)
    assert not errors
    assert w.table.rowCount() == len(w.regions) == 2  # the slices where the labels differ
    assert [w.table.item(r, 0).text() for r in range(2)] == ["z 4", "z 1"]
    assert w.table.item(0, 2).text().endswith("%") and w.table.item(0, 3).text() != "–"  # student uncertainty
    assert "top: z 4" in w.status.text()
    w.next_button.click()
    assert viewer.dims.current_step[0] == 4
    top = w.regions[0]
    world = viewer.layers["phantom"].data_to_world(np.asarray(top.center))
    assert np.allclose(viewer.scene.camera.center[1:], world[1:])  # centred on the region, in world units (mm)
    assert w.where_label.text() == "z 4: 1 of 2"
    w.next_button.click()
    assert viewer.dims.current_step[0] == 1
    w.prev_button.click()
    assert viewer.dims.current_step[0] == 4 and w.table.currentRow() == 0


def test_every_class_alike_puts_the_slice_of_a_lost_small_class_first(qtbot, review, errors):
    viewer, w = review
    teacher = np.zeros(SHAPE, np.uint8)
    teacher[:, 5:35, 5:35] = 1  # a large organ in every slice
    teacher[1, 38:40, 0:3] = 2  # a small one, in slice 1 only
    student = teacher.copy()
    student[4, 5:35, 5:10] = 0  # 150 voxels of the large organ's border
    student[1, 38:40, 0:3] = 0  # the small organ (6 voxels) lost
    viewer.layers["teacher labels"].data = teacher
    viewer.layers["student labels"].data = student
    _rank(qtbot, w)
    assert [w.table.item(r, 0).text() for r in range(2)] == ["z 4", "z 1"]  # by the voxels that disagree
    w.balance_check.setChecked(True)
    _rank(qtbot, w)
    assert not errors
    assert [w.table.item(r, 0).text() for r in range(2)] == ["z 1", "z 4"]  # the lost class first
    assert "top: z 1" in w.status.text()


def test_rank_runs_the_models_when_no_labels_layers_are_chosen(qtbot, review, errors):
    viewer, w = review
    w.teacher_labels_box.combo.value = None
    w.student_labels_box.combo.value = None
    _rank(qtbot, w)
    assert not errors
    names = [layer.name for layer in viewer.layers]
    assert f"phantom teacher ({TEACHER})" in names and f"phantom student ({STUDENT})" in names
    assert w.student_labels_box.layer().name == f"phantom student ({STUDENT})"  # the layer to correct
    assert tuple(w.student_labels_box.layer().scale) == SCALE
    assert w.table.rowCount() == len(w.regions)


def test_painted_voxels_are_counted_exactly_through_undo_and_redo(review):
    viewer, w = review
    layer = viewer.layers["student labels"]
    layer.brush_size = 3
    before = layer.data.copy()
    layer.paint((4, 10, 10), 5)
    first = layer.data != before
    n1 = int(first.sum())
    assert n1 > 0 and w.count_label.text() == f"{n1} voxels corrected in 1 slice since the last round"
    layer.data_setitem((np.array([2, 2]), np.array([3, 4]), np.array([3, 3])), 4)
    changed = layer.data != before
    assert w.tracker().count == int(changed.sum()) == n1 + 2
    assert w.count_label.text() == f"{n1 + 2} voxels corrected in 2 slices since the last round"
    assert np.array_equal(w.tracker().mask(), changed)
    layer.undo()
    assert w.tracker().count == n1 and np.array_equal(w.tracker().mask(), first)
    assert w.count_label.text() == f"{n1} voxels corrected in 1 slice since the last round"
    layer.redo()
    assert w.tracker().count == n1 + 2
    layer.undo()
    layer.undo()
    assert w.tracker().count == 0 and w.count_label.text().startswith("0 voxels corrected in 0 slices")
    layer.undo()  # nothing left in napari's history: still nothing painted
    layer.redo()
    assert w.tracker().count == n1
    layer.paint((4, 10, 10), int(before[4, 10, 10]))  # painted back to the student's label: still corrected
    assert w.tracker().count == n1
    layer.redo()  # the new stroke dropped napari's redo item (the data_setitem)
    assert w.tracker().count == n1


def test_paint_toggle_selects_the_student_layer_in_paint_mode(review):
    viewer, w = review
    viewer.dims.ndisplay = 3
    w.paint_button.click()
    layer = viewer.layers["student labels"]
    assert viewer.layers.selection.active is layer and layer.mode == "paint" and viewer.dims.ndisplay == 2
    w.paint_button.click()
    assert layer.mode == "pan_zoom"


def test_fine_tune_writes_a_round_folder_and_resets_the_count(qtbot, review, errors, tiny_models):
    viewer, w = review
    layer = viewer.layers["student labels"]
    w.fine_tune()
    assert errors and "no voxels painted on 'student labels'" in errors[-1]  # nothing painted yet
    layer.brush_size = 5
    layer.paint((4, 20, 20), 3)
    painted = w.tracker().mask()
    w.steps_spin.setValue(3)
    assert w.fine_tune() is not None
    qtbot.waitUntil(lambda: w.tune_worker is None, timeout=120_000)
    assert errors == [errors[0]]
    folder = Path(w.round_folder)
    info = json.loads((folder / "round.json").read_text(encoding="utf-8"))
    assert info["parent"] == tiny_models["student"] and info["painted_voxels"] == int(painted.sum())
    assert (folder / "last.pt").is_file() and (folder / info["corrections"][0]).is_file()
    assert "round done at step 3" in w.status.text() and str(folder) in w.status.text()
    from napari_dmd.checkpoint import load_checkpoint

    cfg = load_checkpoint(folder / "last.pt")["config"]  # the box's default: the student's own augmentation
    assert not w.augment_check.isChecked() and cfg["spatial_augment"] is False and cfg["augment"] and cfg["flips"]
    new = REGISTRY.latest("student")
    assert new is not None and folder.name in new.name and w.student_box.currentText() == new.name
    assert w.student_labels_box.layer() is None  # the next Rank runs the new student
    w.student_labels_box.set_layer("student labels")
    assert w.tracker().count == 0 and w.count_label.text().startswith("0 voxels corrected")


def test_stop_keeps_the_painted_voxels(qtbot, review, errors):
    viewer, w = review
    layer = viewer.layers["student labels"]
    layer.paint((4, 20, 20), 3)
    n = w.tracker().count
    w.steps_spin.setValue(5000)
    w.augment_check.setChecked(True)  # the 2D round also zooms and rotates
    w.fine_tune()
    qtbot.waitUntil(lambda: w._tune.distiller is not None, timeout=60_000)
    assert not w.augment_check.isEnabled() and w._tune.distiller.config.spatial_augment is True
    w.stop_button.click()
    qtbot.waitUntil(lambda: w.tune_worker is None, timeout=60_000)
    assert not errors and "round stopped" in w.status.text()
    assert (Path(w.round_folder) / "last.pt").is_file()
    assert w.tracker().count == n and w.student_labels_box.layer() is layer


def test_quitting_the_worker_as_the_closing_viewer_does_saves_the_round(qtbot, review, errors):
    viewer, w = review
    viewer.layers["student labels"].paint((4, 20, 20), 3)
    w.steps_spin.setValue(5000)
    worker = w.fine_tune()
    qtbot.waitUntil(lambda: w.progress_bar.value() >= 1, timeout=60_000)  # training has begun
    worker.quit()  # what napari does to every worker when its window closes
    qtbot.waitUntil(lambda: w.tune_worker is None, timeout=60_000)
    assert not errors and (Path(w.round_folder) / "last.pt").is_file()


def test_2d_image_ranks_tiles_and_centres_the_camera_on_the_worst(qtbot, make_napari_viewer, registry, errors):
    viewer = make_napari_viewer()
    image, label = make_phantom((80, 80), seed=2)
    student = label.copy()
    student[66:76, 66:78] = (label[66:76, 66:78] + 1) % 6  # the bottom-right tile (64 x 64 tiles: 2 x 2)
    kw = dict(scale=(0.5, 0.5), translate=(10.0, 20.0))
    viewer.add_image(image, name="slice", **kw)
    viewer.add_labels(label, name="teacher labels", **kw)
    viewer.add_labels(student, name="student labels", **kw)
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Review")
    w.image_box.set_layer("slice")
    w.teacher_labels_box.set_layer("teacher labels")
    w.student_labels_box.set_layer("student labels")
    w.weight_spin.setValue(0.0)
    _rank(qtbot, w)
    assert not errors and w.table.item(0, 0).text() == "tile 3" and w.table.rowCount() == 1
    w.next()
    world = viewer.layers["slice"].data_to_world(np.asarray(w.regions[0].center))
    assert np.allclose(viewer.scene.camera.center[1:], world) and world[0] > 10 + 0.5 * 64
    layer = viewer.layers["student labels"]
    layer.paint((70, 70), 1)
    n = int(w.tracker().count)
    assert n > 0 and w.count_label.text() == f"{n} pixels corrected since the last round"


def test_bad_input_gets_one_line_each(qtbot, make_napari_viewer, errors):
    REGISTRY.clear()
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Review")
    assert w.rank() is None and errors[-1] == "Review: no image layer to review; open an image first"
    viewer.add_image(np.zeros((4, 20, 20), np.float32), name="empty")
    w.rank()
    qtbot.waitUntil(lambda: w.rank_worker is None, timeout=30_000)
    assert errors[-1].startswith("Review: choose a teacher labels layer, or load a teacher model")
    w.paint_button.click()
    assert "no student labels layer to paint on" in errors[-1] and not w.paint_button.isChecked()
    assert w.fine_tune() is None and errors[-1].startswith("Review: no student model is chosen")
    viewer.add_labels(np.zeros((4, 20, 21), np.uint8), name="wrong shape")
    w.teacher_labels_box.set_layer("wrong shape")
    assert w.rank() is None and errors[-1] == ("Review: teacher labels layer 'wrong shape' of shape (4, 20, 21) does "
                                               "not match image layer 'empty' of shape (4, 20, 20)")
    assert len(errors) == 5 and all("\n" not in e for e in errors) and w.table.rowCount() == 0
