"""Bad input in the widgets of a real viewer: one clear notification, no exception, and the widget still works.

Each test provokes the problem, checks the error notification (its text names the layer, file or setting and
the problem; no traceback notification), and then does a valid action with the same widget to show it is
still usable. Models are untrained tiny checkpoints, so nothing here trains more than two steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_dmd.checkpoint import save_checkpoint
from napari_dmd.models.unet import UNet
from napari_dmd.registry import REGISTRY, entry_from_checkpoint

pytestmark = pytest.mark.gui

TEACHER = "teacher: bad-input"
STUDENT = "student: bad-input"
RNG = np.random.default_rng(0)
IMAGE = RNG.random((32, 32)).astype(np.float32)
LABEL = np.zeros((32, 32), np.uint8)
LABEL[4:12, 4:12] = 1
LABEL[18:28, 18:28] = 2


def _checkpoint(path: Path, classes: int = 3, dims: int = 2) -> str:
    torch.manual_seed(0)
    model = UNet(dims, 1, classes, (4, 8))
    save_checkpoint(path, {"kind": "teacher", "model": model.config(), "state_dict": model.state_dict(),
                           "normalization": "zscore", "patch_size": [16] * dims, "class_names": None})
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("gui-models")
    return {"t3": _checkpoint(root / "t3.pt"), "s4": _checkpoint(root / "s4.pt", classes=4)}


@pytest.fixture
def registry():
    REGISTRY.clear()
    yield REGISTRY
    REGISTRY.clear()


class Notes:
    """Error notifications shown since the fixture started (napari's own notification manager)."""

    def __init__(self) -> None:
        from napari.utils.notifications import notification_manager

        self._manager = notification_manager
        self._start = len(notification_manager.records)

    def errors(self) -> list[str]:
        from napari.utils.notifications import ErrorNotification, NotificationSeverity

        records = self._manager.records[self._start:]
        assert not any(isinstance(r, ErrorNotification) for r in records), "a traceback notification appeared"
        return [str(r.message) for r in records if r.severity == NotificationSeverity.ERROR]

    def last(self) -> str:
        errors = self.errors()
        assert errors, "no error notification was shown"
        assert len(errors[-1].splitlines()) == 1, errors[-1]
        return errors[-1]


@pytest.fixture
def notes() -> Notes:
    return Notes()


def _wait_idle(qtbot, widget, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def _add(registry, path: str, role: str, name: str) -> None:
    registry.add(entry_from_checkpoint(path, role=role, device="cpu", name=name))


# ------------------------------------------------------------------------------------------------ Segment
def test_segment_without_image_with_rgb_and_with_nan_then_works(make_napari_viewer, qtbot, registry, models,
                                                                 notes):
    _add(registry, models["t3"], "teacher", TEACHER)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    assert w.segment() is None
    assert "no image layer to segment" in notes.last()
    viewer.add_image(RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8), name="photo", rgb=True)
    w.image_box.set_layer("photo")
    assert w.segment() is None
    assert "'photo'" in notes.last() and "RGB" in notes.last()
    viewer.add_image(np.where(LABEL == 1, np.nan, IMAGE).astype(np.float32), name="holes")
    w.image_box.set_layer("holes")
    assert w.segment() is not None
    _wait_idle(qtbot, w)
    assert "'holes'" in notes.last() and "NaN or infinite" in notes.last()
    assert [lay.name for lay in viewer.layers] == ["photo", "holes"], "nothing was added or removed"
    assert w.segment_button.isEnabled()
    viewer.add_image(IMAGE, name="scan")
    w.image_box.set_layer("scan")
    assert w.segment() is not None
    _wait_idle(qtbot, w)
    assert viewer.layers[-1].name == f"scan segmentation ({TEACHER})"
    assert viewer.layers[-1].data.shape == IMAGE.shape


# ------------------------------------------------------------------------------------------------ Teacher
def test_teacher_refuses_corrupt_empty_and_non_model_files_then_loads(make_napari_viewer, qtbot, registry, models,
                                                                       notes, tmp_path):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Teacher")
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(Path(models["t3"]).read_bytes()[:500])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    folder = tmp_path / "some folder"
    folder.mkdir()
    for path, problem in ((text, "not a readable"), (cut, "not a readable"), (empty, "empty"),
                          (folder, "not a teacher folder")):
        before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
        assert w.load(str(path)) is not None
        _wait_idle(qtbot, w)
        message = notes.last()
        assert str(path) in message and problem in message, message
        assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
        assert w.load_button.isEnabled() and w.train_button.isEnabled()
        assert REGISTRY.names("teacher") == []
    assert w.load(models["t3"]) is not None
    _wait_idle(qtbot, w)
    assert len(REGISTRY.names("teacher")) == 1
    n = len(notes.errors())
    assert "3" in w.info.text() and len(notes.errors()) == n


# ------------------------------------------------------------------------------------------------ Compare
def test_compare_without_teacher_and_with_mismatched_models_then_works(make_napari_viewer, qtbot, registry,
                                                                        models, notes):
    viewer = make_napari_viewer()
    viewer.add_image(IMAGE, name="scan")
    _add(registry, models["s4"], "student", STUDENT)
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Compare")
    assert w.teacher_box.currentText() == STUDENT  # no teacher: the Teacher list offers the students
    assert w.compare() is None
    assert "choose a teacher and a student" in notes.last() and "both lists hold" in notes.last()
    _add(registry, models["t3"], "teacher", TEACHER)  # 3 classes against the student's 4
    w.teacher_box.setCurrentText(TEACHER)
    w.student_box.setCurrentText(STUDENT)
    w.image_box.set_layer("scan")
    assert w.compare() is not None
    _wait_idle(qtbot, w)
    message = notes.last()
    assert TEACHER in message and STUDENT in message and "classes" in message, message
    assert [lay.name for lay in viewer.layers] == ["scan"]
    assert w.compare_button.isEnabled()
    _add(registry, models["t3"], "student", "student: same size")
    w.student_box.setCurrentText("student: same size")
    assert w.compare() is not None
    _wait_idle(qtbot, w)
    assert len(viewer.layers) == 4 and w.table.rowCount() == 3  # teacher, student, disagreement; 2 classes + mean


# ------------------------------------------------------------------------------------------------ Distill
def _distill_widget(viewer, out: Path):
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Distill")
    w.teacher_chooser.setCurrentText(TEACHER)
    w.set_method("kd")
    w.student_combo.setCurrentText("4,8")
    w.iterations_spin.setValue(2)
    w.patch_edit.setText("32,32")
    w.batch_spin.setValue(2)
    w.device_combo.setCurrentText("cpu")
    w.output_edit.setText(str(out))
    return w


def test_distill_refuses_mismatched_layers_bad_labels_and_absurd_settings_then_trains(
        make_napari_viewer, qtbot, registry, models, notes, tmp_path):
    _add(registry, models["t3"], "teacher", TEACHER)
    viewer = make_napari_viewer()
    viewer.add_image(IMAGE, name="scan")
    labels = viewer.add_labels(LABEL.copy(), name="scan labels")
    out = tmp_path / "run"
    w = _distill_widget(viewer, out)
    w.pair_table.set_pair("scan", "scan labels")
    # the labels layer changes shape after it was paired
    labels.data = np.zeros((20, 20), np.uint8)
    w.start()
    assert not w.running and "'scan labels'" in notes.last() and "does not match" in notes.last()
    labels.data = LABEL.copy()
    w.pair_table.set_pair("scan", "scan labels")
    # an absurd patch size
    w.patch_edit.setText("2,2")
    w.start()
    assert not w.running and "patch size" in notes.last() and ">= 4" in notes.last()
    w.patch_edit.setText("32,32")
    # labels above the teacher's class count: found by the run's checks (runner.prepare_run) inside the worker
    labels.data = np.where(LABEL == 2, 7, LABEL).astype(np.uint8)
    with qtbot.waitSignal(w.run_finished, timeout=60_000):
        w.start()
    message = notes.last()
    assert "'scan labels'" in message and "predicts 3 classes" in message and "label 7" in message, message
    assert not (out / "last.pt").exists()
    assert w.start_button.isEnabled() and not w.running
    # and now a valid run
    labels.data = LABEL.copy()
    n = len(notes.errors())
    with qtbot.waitSignal(w.run_finished, timeout=120_000):
        w.start()
    assert len(notes.errors()) == n, notes.errors()[n:]
    assert list(Path(w.output_edit.text()).glob("last.pt"))
    assert w.start_button.isEnabled()


def test_distill_writes_beside_a_folder_holding_run_files_and_shows_teacher_warnings(
        make_napari_viewer, qtbot, registry, tmp_path):
    from napari.utils.notifications import NotificationSeverity, notification_manager

    path = Path(_checkpoint(tmp_path / "coarse.pt"))
    coarse = torch.load(path, weights_only=True)
    save_checkpoint(path, {**coarse, "spacing": [5.0, 5.0]})  # trained at 5 mm, the layers are at 1 mm
    _add(registry, str(path), "teacher", TEACHER)
    viewer = make_napari_viewer()
    viewer.add_image(IMAGE, name="scan")
    viewer.add_labels(LABEL.copy(), name="scan labels")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("mine: 1\n")  # the user's own file: no run of ours may replace it
    w = _distill_widget(viewer, out)
    w.pair_table.set_pair("scan", "scan labels")
    start = len(notification_manager.records)
    with qtbot.waitSignal(w.run_finished, timeout=120_000):
        w.start()
    infos = [str(r.message) for r in notification_manager.records[start:]
             if r.severity == NotificationSeverity.INFO]
    assert (out / "config.yaml").read_text(encoding="utf-8") == "mine: 1\n"
    assert w.output_edit.text() == str(tmp_path / "run-2") and (tmp_path / "run-2" / "last.pt").is_file()
    assert any("already holds a run (config.yaml)" in m and "run-2" in m for m in infos), infos
    warnings = [str(r.message) for r in notification_manager.records[start:]
                if r.severity == NotificationSeverity.WARNING]
    assert any(m.startswith("Distill: ") and "trained at spacing (5.0, 5.0)" in m for m in warnings), warnings
    assert "trained at spacing (5.0, 5.0)" in w.status_label.text()  # a warning: kept in the status line


# ------------------------------------------------------------------------------------------------ reader
def test_opening_a_corrupt_file_names_it_and_adds_nothing(make_napari_viewer, tmp_path):
    from napari_dmd.data.io import write_image

    viewer = make_napari_viewer()
    bad = tmp_path / "scan 1.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"junk" * 40)
    with pytest.raises(Exception) as info:  # noqa: PT011 - napari wraps the reader's DataError
        viewer.open(str(bad), plugin="napari-dmd")
    text = str(info.value) + str(info.value.__cause__ or "")
    assert str(bad) in text and "corrupt or truncated" in text
    assert len(viewer.layers) == 0
    good = write_image(tmp_path / "scan 2.nii.gz", IMAGE)
    viewer.open(str(good), plugin="napari-dmd")
    assert [lay.name for lay in viewer.layers] == ["scan 2"]
