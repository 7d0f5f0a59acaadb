"""In a real viewer: the model–data guard's warning, class names on labels layers and in messages, status
lines that never show a stale result, z/y/x axis labels, and labels layers pairing with their images."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dmd import pretrained
from napari_dmd.config import TrainConfig
from napari_dmd.distill.engine import Distiller
from napari_dmd.phantom import PHANTOM_CLASS_NAMES, make_phantom
from napari_dmd.registry import REGISTRY, entry_from_checkpoint

pytestmark = pytest.mark.gui

MODEL = "phantom demo-like"
RECIPE = pretrained.DemoRecipe(teacher_model="4,8,16", student_model="2,4,8", n_2d=1, sizes_2d=(48,), n_3d=1,
                               shape_3d=(4, 48, 48), slice_step=2, num_threads=1)


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory) -> str:
    """A 3-iteration 2D phantom model fed raw intensities, as the demo pair is."""
    cases, val = pretrained.phantom_cases_2d(RECIPE)
    cfg = TrainConfig(method="none", iterations=3, model="4,8,16", spatial_dims=2, patch_size=[32, 32],
                      batch_size=2, num_threads=1, device="cpu", normalization="none",
                      class_names=list(PHANTOM_CLASS_NAMES), num_classes=len(PHANTOM_CLASS_NAMES))
    d = Distiller(cfg, cases, val_cases=val, output_dir=tmp_path_factory.mktemp("gg"), role="teacher")
    d.run_to_end()
    return str(d.last_path)


@pytest.fixture
def registry(demo_like):
    REGISTRY.clear()
    REGISTRY.add(entry_from_checkpoint(demo_like, role="teacher", device="cpu", name=MODEL))
    REGISTRY.add(entry_from_checkpoint(demo_like, role="student", device="cpu", name=MODEL + " student"))
    yield REGISTRY
    REGISTRY.clear()


@pytest.fixture
def shown(monkeypatch) -> dict[str, list[str]]:
    """Messages shown as napari notifications, by kind."""
    from napari_dmd._widgets import _notify

    out: dict[str, list[str]] = {"warning": [], "error": []}
    monkeypatch.setattr(_notify, "show_warning", out["warning"].append)
    monkeypatch.setattr(_notify, "show_error", out["error"].append)
    return out


def _mri_like(shape=(8, 40, 40)) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.gamma(2.0, 150.0, size=shape) + 20).astype(np.float32)


def test_segment_warns_on_mri_and_names_classes(make_napari_viewer, qtbot, registry, shown):
    viewer = make_napari_viewer()
    image, _ = make_phantom((64, 64), seed=4)
    phantom = viewer.add_image(image, name="phantom")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    viewer.layers.selection.active = phantom
    assert w.segment() is not None
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert shown["warning"] == [] and "Warning" not in w.status.text()  # phantom data: no warning
    out = viewer.layers[-1]
    found = [int(v) for v in np.unique(out.data) if v]
    names = [PHANTOM_CLASS_NAMES[v] for v in found]
    assert w.status.text().endswith(f"classes present: {', '.join(names) or 'none'}")
    assert list(out.features["class"]) == list(PHANTOM_CLASS_NAMES)
    for pos in [(0, 0), *(tuple(np.argwhere(out.data == v)[0]) for v in found)]:  # hovering names the class
        assert f"class: {PHANTOM_CLASS_NAMES[out.data[pos]]}" in out.get_status(pos)["value"]

    mri = viewer.add_image(_mri_like(), name="hippocampus_001", scale=(1.0, 1.0, 1.0))
    viewer.layers.selection.active = mri
    assert w.segment() is not None  # a warning, not a refusal
    assert len(shown["warning"]) == 1
    warning = shown["warning"][0]
    assert warning.startswith(f"Segment: {MODEL} student was trained on 2D images with spacing 1 x 1")
    assert "'hippocampus_001' is a 3D image" in warning and "very different range" in warning
    assert "its labels may be meaningless" in w.status.text()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert viewer.layers[-1].name == f"hippocampus_001 segmentation ({MODEL} student)"
    assert "classes present" in w.status.text() and "Warning:" in w.status.text()
    assert tuple(viewer.dims.axis_labels) == ("z", "y", "x")

    # a failure replaces the previous result in the status line
    viewer.layers.remove(mri)
    viewer.layers.remove(phantom)
    assert w.segment() is None
    assert w.status.text() == shown["error"][-1] and "classes present" not in w.status.text()


def test_compare_warns_and_clears_on_failure(make_napari_viewer, qtbot, registry, shown):
    viewer = make_napari_viewer()
    mri = viewer.add_image(_mri_like((40, 40)), name="mri slice")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Compare")
    w.teacher_box.setCurrentText(MODEL)
    w.student_box.setCurrentText(MODEL + " student")
    w.image_box.set_layer(mri)
    assert w.compare() is not None
    assert len(shown["warning"]) == 2 and all("very different range" in m for m in shown["warning"])
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert "agree on" in w.status.text() and "its labels may be meaningless" in w.status.text()
    assert w.table.rowCount() > 0 and w.times.text()
    assert "class" in viewer.layers[f"mri slice teacher ({MODEL})"].features
    viewer.layers.remove(mri)
    assert w.compare() is None
    assert w.status.text() == shown["error"][-1]
    assert w.table.rowCount() == 0 and w.times.text() == ""


def test_labels_pair_with_their_image_on_insertion(make_napari_viewer, registry, shown):
    from napari_dmd._widgets._tables import NO_LABELS

    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Distill")
    img, lab = make_phantom((48, 48), seed=2)
    viewer.add_image(img, name="case")  # the image first, its labels later
    viewer.add_image(img, name="other")
    viewer.add_image(img, name="third")
    assert "without labels" in w.pairs_label.text()
    viewer.add_labels(lab, name="case labels")
    viewer.add_labels(lab, name="other_seg")
    pairs = {i.name: (la.name if la is not None else None) for i, la in w.pair_table.pairs()}
    assert pairs == {"case": "case labels", "other": "other_seg", "third": None}
    assert w.pairs_label.text() == ("Training images: with labels: case (case labels), other (other_seg); "
                                    "without labels (the teacher's prediction is the target): third")
    # the user's choice is kept when more layers arrive
    w.pair_table.set_pair("case", None)
    viewer.add_labels(lab, name="third_mask")
    pairs = {i.name: (la.name if la is not None else None) for i, la in w.pair_table.pairs()}
    assert pairs == {"case": None, "other": "other_seg", "third": "third_mask"}
    combo = w.pair_table.cellWidget(0, 1)
    assert combo.currentText() == NO_LABELS
    # a model's prediction is offered but never paired by itself: it is no ground truth
    viewer.add_image(img, name="fresh")
    viewer.add_labels(lab, name="fresh segmentation (student)", metadata={"napari_dmd": {"model": "student"}})
    assert dict((i.name, la) for i, la in w.pair_table.pairs())["fresh"] is None
    combo = w.pair_table.cellWidget(3, 1)
    assert "fresh segmentation (student)" in [combo.itemText(k) for k in range(combo.count())]


def test_distill_warns_for_teacher_unlike_the_images(make_napari_viewer, qtbot, registry, shown, tmp_path):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Distill")
    viewer.add_image(_mri_like((48, 48)), name="mri slice")
    w.teacher_chooser.setCurrentText(MODEL)
    w.set_method("dmd")
    w.student_combo.setCurrentText("2,4,8")
    w.iterations_spin.setValue(2)
    w.patch_edit.setText("32,32")
    w.batch_spin.setValue(2)
    w.device_combo.setCurrentText("cpu")
    w.output_edit.setText(str(tmp_path / "run"))
    assert w.pairs_label.text() == ("Training images: without labels (the teacher's prediction is the target): "
                                    "mri slice")
    w.start()  # a warning, not a refusal: the run starts
    assert len(shown["warning"]) == 1 and shown["warning"][0].startswith(f"Distill: {MODEL} was trained on")
    assert "'mri slice'" in shown["warning"][0] and "very different range" in shown["warning"][0]
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    assert shown["error"] == [] and w.events[-1].kind == "done"
    assert "its labels may be meaningless" in w.status_label.text()  # kept beside the result
    img, _ = make_phantom((48, 48), seed=3)
    viewer.layers.clear()
    viewer.add_image(img, name="phantom")
    assert w._guard_teacher(w.teacher_chooser.entry()) == []


def test_teacher_status_shows_the_failure(make_napari_viewer, shown):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Teacher")
    w.status.setText("loaded teacher: earlier")
    w.path_edit.setText("")
    assert w.load() is None
    assert w.status.text() == shown["error"][-1] and "give the path" in w.status.text()
    w.status.setText("loaded teacher: earlier")
    w.add_pair()  # no layers chosen
    assert w.status.text() == shown["error"][-1] == "Teacher: choose an image layer and a labels layer first"


def test_folder_cases_guarded_against_the_teacher(registry):
    from napari_dmd._widgets._distill_run import folder_warning
    from napari_dmd.data.cases import Case

    def case(image, name):
        return Case(image, None, (1.0,) * image.ndim, np.eye(4), name, image_path=f"/d/imagesTr/{name}.nii.gz")

    teacher = registry.get(MODEL)
    phantom = [case(make_phantom((48, 48), seed=s)[0], f"p{s}") for s in range(2)]
    assert folder_warning(teacher, phantom) is None
    mri = [case(_mri_like((40, 40)), f"m{s}") for s in range(3)]
    note = folder_warning(teacher, phantom + mri)
    assert note is not None and "'/d/imagesTr/m0.nii.gz' is a 2D image" in note
    assert note.endswith("(2 more of the 5 cases are unlike it too)")
