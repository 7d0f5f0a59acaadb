"""Screenshots for docs/guide_part_a.md (Open/Save, sample data, Teacher, Compare, Segment) from real viewers.

Data: one MSD Task04 hippocampus case (MRI, read-only from ../shared/data or $NAPARI_DMD_DATA; nothing is
copied into the project) and the plugin's synthetic phantom. The demo teacher + student come from
``napari_dmd.pretrained.phantom_models`` (trained at first use and cached, like the "Use demo models" button;
the script prints how long that took). Runs go to a temporary folder.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots_a.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as the plugin's widgets do
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_DMD_DATA", REPO.parent / "shared" / "data")) / "msd_hippocampus"
OUT = Path(os.environ.get("NAPARI_DMD_SHOTS", REPO / "docs" / "images"))  # override for trial runs
CASE = "hippocampus_004.nii.gz"
SIZE = (1560, 980)


def pump(app, seconds: float = 1.0) -> None:
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)


def wait(app, predicate, timeout: float) -> None:
    t0 = time.time()
    while not predicate():
        app.processEvents()
        time.sleep(0.02)
        if time.time() - t0 > timeout:
            raise TimeoutError("timed out")


def shot(viewer, app, name: str) -> None:
    pump(app, 1.5)
    viewer.screenshot(str(OUT / name), canvas_only=False)
    print("wrote", OUT / name)


def new_viewer(title: str):
    import napari

    viewer = napari.Viewer(title=f"napari-dmd: {title}")
    viewer.window.resize(*SIZE)
    return viewer


def open_case(viewer):
    """The hippocampus image and its label map through the plugin's reader (File > Open does the same)."""
    [image] = viewer.open(str(DATA / "imagesTr" / CASE), plugin="napari-dmd")
    [labels] = viewer.open(str(DATA / "labelsTr" / CASE), plugin="napari-dmd")
    return image, labels


def main() -> int:
    from qtpy.QtWidgets import QApplication

    from napari_dmd import pretrained
    from napari_dmd.registry import REGISTRY, entry_from_checkpoint

    if not (DATA / "imagesTr" / CASE).is_file():
        print(f"hippocampus data not found at {DATA}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="napari-dmd-shots-a-"))

    # demo pair: cached after the first use
    fresh = pretrained.cached_models() is None
    t0, c0 = time.time(), time.process_time()
    teacher_path, student_path = pretrained.phantom_models()
    print(f"demo models {'trained' if fresh else 'from cache'} in {time.time() - t0:.1f} s wall, "
          f"{time.process_time() - c0:.1f} s CPU ({pretrained.usable_cores()} threads): {teacher_path.parent}")
    REGISTRY.add(entry_from_checkpoint(teacher_path, role="teacher", name="demo teacher (phantom)"))
    REGISTRY.add(entry_from_checkpoint(student_path, role="student", name="demo student (phantom)"))

    # 1. Open / Save: a hippocampus MRI + labels in 3D, spacing as scale, affine in the metadata
    viewer = new_viewer("Open / Save")
    app = QApplication.instance()
    image, labels = open_case(viewer)
    image.rendering = "mip"
    image.opacity = 0.45
    labels.rendering = "iso_categorical"
    viewer.dims.ndisplay = 3
    viewer.reset_view()  # (resets the camera angles too: set them afterwards)
    viewer.camera.angles = (-25.0, 40.0, 120.0)
    viewer.camera.zoom *= 0.95
    viewer.layers.selection.active = labels
    shot(viewer, app, "open_save.png")
    saved = labels.save(str(work / "hippocampus_004_labels.nii.gz"), plugin="napari-dmd")
    print("saved", saved)
    viewer.close()

    # 2. Sample data: the 3D phantom with its labels, middle slice
    viewer = new_viewer("sample data")
    viewer.open_sample("napari-dmd", "phantom-3d")
    viewer.dims.set_point(0, 24)
    viewer.reset_view()
    shot(viewer, app, "sample_data.png")
    viewer.close()

    # 3. Teacher: train a small 2D teacher on the hippocampus pair (slices of the volume)
    viewer = new_viewer("Teacher")
    image, labels = open_case(viewer)
    labels.opacity = 0.45
    # the class names of MSD Task04 (its dataset.json is not in the shared copy): what a user would set
    labels.metadata["napari_dmd"]["class_names"] = ["background", "anterior", "posterior"]
    viewer.dims.set_point(0, image.data.shape[0] // 2)
    viewer.reset_view()
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Teacher")
    w.setMinimumWidth(400)
    w.image_box.set_layer(image)
    w.labels_box.set_layer(labels)
    w.add_pair()
    w.preset_box.setCurrentText("student")
    w.dims_box.setCurrentText("2D (slices of 3D volumes)")
    w.iterations_spin.setValue(int(os.environ.get("TEACHER_ITERS", 150)))
    w.output_edit.setText(str(work / "teacher-hippocampus"))
    w.train()
    wait(app, lambda: w.worker is None, timeout=1800)
    print("teacher:", w.status.text())
    shot(viewer, app, "teacher.png")
    viewer.close()

    # 4. Compare: demo teacher vs demo student on the 2D phantom, ground truth = its labels
    viewer = new_viewer("Compare")
    viewer.open_sample("napari-dmd", "phantom-2d")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Compare")
    w.setMinimumWidth(440)
    w.teacher_box.setCurrentText("demo teacher (phantom)")
    w.student_box.setCurrentText("demo student (phantom)")
    w.image_box.set_layer("phantom 2D")
    w.truth_box.set_layer("phantom 2D labels")
    viewer.layers["phantom 2D labels"].opacity = 1.0
    w.compare()
    wait(app, lambda: w.worker is None, timeout=600)
    print("compare:", w.times.text(), "|", w.status.text())
    viewer.reset_view()
    shot(viewer, app, "compare.png")
    viewer.close()

    # 5. Segment: the demo student (a 2D model) on the 3D phantom, slice by slice, shown in 3D
    viewer = new_viewer("Segment")
    viewer.open_sample("napari-dmd", "phantom-3d")
    viewer.layers["phantom 3D labels"].visible = False
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    w.setMinimumWidth(380)
    viewer.layers.selection.active = viewer.layers["phantom 3D"]
    w.model_box.setCurrentText("demo student (phantom)")
    w.segment()
    wait(app, lambda: w.worker is None, timeout=600)
    print("segment:", w.status.text())
    seg = viewer.layers[-1]
    seg.rendering = "iso_categorical"
    # body (1) transparent in this picture, so the organs found inside it show in 3D
    seg.colormap = {None: "transparent", 0: "transparent", 1: "transparent", 2: "royalblue", 3: "gold",
                    4: "orchid", 5: "red"}
    image = viewer.layers["phantom 3D"]
    image.rendering = "attenuated_mip"
    image.opacity = 0.5
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    viewer.camera.angles = (-20.0, 35.0, 125.0)
    viewer.camera.zoom *= 1.1
    viewer.layers.selection.active = seg
    shot(viewer, app, "segment.png")
    viewer.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
