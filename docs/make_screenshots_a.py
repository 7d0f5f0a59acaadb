"""Screenshots for docs/guide_part_a.md (Open/Save, sample data, Teacher, Compare, Segment) from real viewers.

Data: MSD Task04 hippocampus cases (MRI, read-only from ../shared/data or $NAPARI_DMD_DATA; nothing is
copied into the project) and the plugin's synthetic phantom. The demo teacher + student come from
``napari_dmd.pretrained.phantom_models`` (trained at first use and cached, like the "Use demo models" button;
the script prints how long that took). Runs go to a temporary folder.

The Segment shot needs a 3D student trained on the hippocampus data (``--hippocampus-model``; training one takes
too long for this script), e.g. ``napari-dmd distill --method dmd --data ../shared/data/msd_hippocampus ...``.
It segments a case the model did not train on (the first of the checkpoint's validation cases found in the data).

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots_a.py \
        --hippocampus-model runs/hippocampus-student/best.pt [--only segment]
"""

from __future__ import annotations

import argparse
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
SHOTS = ("open_save", "sample_data", "teacher", "compare", "segment")
HIPPOCAMPUS_CLASSES = ["background", "anterior", "posterior"]  # MSD Task04 (its dataset.json is not shared)
SEGMENT_ANGLES, SEGMENT_ZOOM = (-20.0, 35.0, 125.0), 0.8  # segment.png camera (after reset_view)


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


def open_case(viewer, case: str = CASE):
    """The hippocampus image and its label map through the plugin's reader (File > Open does the same)."""
    [image] = viewer.open(str(DATA / "imagesTr" / case), plugin="napari-dmd")
    [labels] = viewer.open(str(DATA / "labelsTr" / case), plugin="napari-dmd")
    return image, labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hippocampus-model", metavar="PATH",
                   help="checkpoint of a 3D student trained on MSD hippocampus (needed for segment.png)")
    p.add_argument("--only", nargs="+", choices=SHOTS, default=list(SHOTS), metavar="SHOT",
                   help=f"make only these screenshots ({', '.join(SHOTS)})")
    a = p.parse_args(argv)
    if "segment" in a.only and not a.hippocampus_model:
        p.error("segment.png needs --hippocampus-model PATH (a 3D student trained on MSD hippocampus); "
                "or leave it out with --only")
    if a.hippocampus_model and not Path(a.hippocampus_model).is_file():
        p.error(f"--hippocampus-model {a.hippocampus_model}: file not found")
    return a


def held_out_case(checkpoint: str) -> str:
    """The first of the checkpoint's validation cases present in the data (else CASE)."""
    from napari_dmd.checkpoint import load_checkpoint

    for name in load_checkpoint(checkpoint).get("val_cases") or []:
        if (DATA / "imagesTr" / f"{name}.nii.gz").is_file() and (DATA / "labelsTr" / f"{name}.nii.gz").is_file():
            return f"{name}.nii.gz"
    return CASE


def demo_models() -> None:
    """The demo teacher + student pair (cached after the first use), in the session's model list."""
    from napari_dmd import pretrained
    from napari_dmd.registry import REGISTRY, entry_from_checkpoint

    fresh = pretrained.cached_models() is None
    t0, c0 = time.time(), time.process_time()
    teacher_path, student_path = pretrained.phantom_models()
    print(f"demo models {'trained' if fresh else 'from cache'} in {time.time() - t0:.1f} s wall, "
          f"{time.process_time() - c0:.1f} s CPU ({pretrained.usable_cores()} threads): {teacher_path.parent}")
    REGISTRY.add(entry_from_checkpoint(teacher_path, role="teacher", name="demo teacher (phantom)"))
    REGISTRY.add(entry_from_checkpoint(student_path, role="student", name="demo student (phantom)"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (DATA / "imagesTr" / CASE).is_file():
        print(f"hippocampus data not found at {DATA}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="napari-dmd-shots-a-"))
    makers = {"open_save": open_save_shot, "sample_data": sample_data_shot, "teacher": teacher_shot,
              "compare": compare_shot, "segment": lambda _: segment_shot(args.hippocampus_model)}
    try:
        if "compare" in args.only:
            demo_models()
        for name in SHOTS:
            if name in args.only:
                makers[name](work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def open_save_shot(work: Path) -> None:
    """A hippocampus MRI + labels in 3D, spacing as scale, affine in the metadata."""
    from qtpy.QtWidgets import QApplication

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


def sample_data_shot(work: Path) -> None:
    """The 3D phantom with its labels, middle slice."""
    from qtpy.QtWidgets import QApplication

    viewer = new_viewer("sample data")
    app = QApplication.instance()
    viewer.open_sample("napari-dmd", "phantom-3d")
    viewer.dims.set_point(0, 24)
    viewer.reset_view()
    shot(viewer, app, "sample_data.png")
    viewer.close()


def teacher_shot(work: Path) -> None:
    """Train a small 2D teacher on the hippocampus pair (slices of the volume)."""
    from qtpy.QtWidgets import QApplication

    viewer = new_viewer("Teacher")
    app = QApplication.instance()
    image, labels = open_case(viewer)
    labels.opacity = 0.45
    # the class names of MSD Task04 (its dataset.json is not in the shared copy): what a user would set
    labels.metadata["napari_dmd"]["class_names"] = list(HIPPOCAMPUS_CLASSES)
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


def compare_shot(work: Path) -> None:
    """Demo teacher vs demo student on the 2D phantom, ground truth = its labels."""
    from qtpy.QtWidgets import QApplication

    viewer = new_viewer("Compare")
    app = QApplication.instance()
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


def segment_shot(model: str) -> None:
    """One click: a 3D student trained on hippocampus segments a held-out hippocampus MRI, shown in 3D."""
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_dmd.metrics import dice_per_class
    from napari_dmd.registry import REGISTRY, entry_from_checkpoint

    name = "DMD student (hippocampus)"
    entry = REGISTRY.add(entry_from_checkpoint(model, role="student", name=name))
    print(f"hippocampus model: {model} ({entry.segmenter.spatial_dims}D)")
    case = held_out_case(model)
    viewer = new_viewer("Segment")
    app = QApplication.instance()
    image, truth = open_case(viewer, case)
    viewer.layers.remove(truth)  # kept aside for the Dice printed below
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    w.setMinimumWidth(380)
    viewer.layers.selection.active = image
    w.model_box.setCurrentText(name)
    w.segment()
    wait(app, lambda: w.worker is None, timeout=600)
    print("segment:", case, "|", w.status.text())
    seg = viewer.layers[-1]
    dice = dice_per_class(np.asarray(seg.data), np.asarray(truth.data), entry.segmenter.num_classes)
    seconds = seg.metadata.get("napari_dmd", {}).get("inference_s", float("nan"))
    print(f"{seg.data.shape} voxels in {seconds:.2f} s; Dice vs the manual labels (anterior, posterior):",
          ", ".join(f"{d:.3f}" for d in dice))
    # the prediction as surfaces (head gold, body + tail blue) over an attenuated maximum-intensity projection of
    # the MRI crop, which keeps the folds of the brain around it visible
    seg.rendering = "iso_categorical"
    seg.colormap = {None: "transparent", 0: "transparent", 1: "gold", 2: "deepskyblue"}
    seg.opacity = 0.9
    image.rendering = "attenuated_mip"
    image.attenuation = 0.3
    image.opacity = 0.8
    viewer.dims.ndisplay = 3
    viewer.reset_view()  # (resets the camera angles too: set them afterwards)
    viewer.scene.camera.angles = SEGMENT_ANGLES
    viewer.scene.camera.zoom *= SEGMENT_ZOOM
    viewer.layers.selection.active = seg
    shot(viewer, app, "segment.png")
    viewer.close()


if __name__ == "__main__":
    raise SystemExit(main())
