"""Screenshots for docs/guide_part_b.md (Distill, Features) from a real viewer on real MRI.

Data: MSD Task04 hippocampus (read-only, beside the clone in ../shared/data or $NAPARI_DMD_DATA); nothing is
copied into the project, runs go to a temporary folder. A small 3D teacher is trained in-process first (about
7 minutes on 2 busy CPU cores), then the Distill widget distils a tiny student on a few cases and the Features
widget shows its decoder features over one case. ``TEACHER=path/to/best.pt`` reuses a teacher trained before;
``STUDENT=path/to/best.pt`` takes only the Features screenshot, with that student. The window is 1560x1290 so
that the Distill dock shows its form and the live plot at once (the screen must be at least that tall). The images
in docs/ were made with the committed teacher::

    TEACHER=benchmarks/teachers/hippocampus3d/teacher.pt QT_QPA_PLATFORM=xcb \
        xvfb-run -a -s "-screen 0 1600x1340x24" .venv/bin/python docs/make_screenshots_b.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_DMD_DATA", REPO.parent / "shared" / "data")) / "msd_hippocampus"
OUT = REPO / "docs" / "images"
CLASS_NAMES = ["background", "anterior", "posterior"]


def load_cases(n: int, offset: int = 0):
    from napari_dmd.data.cases import load_case

    images = sorted((DATA / "imagesTr").glob("hippocampus_*.nii.gz"))[offset:offset + n]
    return [load_case(p, DATA / "labelsTr" / p.name) for p in images]


def train_teacher(work: Path) -> Path:
    """A 3D teacher on 40 cases (method none), small enough for a CPU."""
    from napari_dmd.config import TrainConfig
    from napari_dmd.distill.engine import Distiller

    iterations = int(os.environ.get("TEACHER_ITERS", 1000))
    cfg = TrainConfig(method="none", model="8,16,32,64", iterations=iterations, batch_size=2, lr=3e-3,
                      val_interval=iterations // 2, checkpoint_interval=iterations, max_val_cases=6,
                      class_names=CLASS_NAMES, num_threads=1)  # 1 thread: OpenMP spin-waits on a busy CPU
    d = Distiller(cfg, load_cases(40, offset=20), output_dir=work / "teacher", role="teacher")
    t0 = time.time()
    summary = d.run_to_end()
    print(f"teacher: {summary['iteration']} iterations in {time.time() - t0:.0f} s, "
          f"best validation Dice {summary['best_dice']:.3f}")
    return d.best_path if d.best_path.exists() else d.last_path


def wait(app, predicate, timeout: float) -> None:
    t0 = time.time()
    while not predicate():
        app.processEvents()
        time.sleep(0.02)
        if time.time() - t0 > timeout:
            raise TimeoutError("timed out")


def close_toasts(app) -> None:
    """Close notification pop-ups so they do not cover the canvas."""
    for widget in app.allWidgets():
        if type(widget).__name__ == "NapariQtNotification":
            widget.close()


def settle(app, seconds: float = 1.0) -> None:
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)


def distill_shot(viewer, app, work: Path, cases) -> bool:
    """Distil a tiny 3D student with the Distill widget; screenshot three quarters through the run."""
    dock, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Distill")
    w.teacher_chooser.setCurrentText("teacher: hippocampus 3D")
    w.set_method("dmd")
    w.student_combo.setCurrentText("student-tiny")
    total = int(os.environ.get("STUDENT_ITERS", 400))
    w.iterations_spin.setValue(total)
    w.batch_spin.setValue(4)
    w.device_combo.setCurrentText("cpu")
    w.output_edit.setText(str(work / "dmd-hippocampus"))
    w.start()
    # mid-run: live plot, status with ETA, Stop enabled, checkpoints written
    wait(app, lambda: w.distiller is not None and w.distiller.iteration >= int(0.75 * total), timeout=1800)
    wait(app, lambda: w.plot.renders > 0 and not w.plot._busy, timeout=60)
    settle(app)
    close_toasts(app)
    viewer.screenshot(str(OUT / "distill.png"), canvas_only=False)
    print("wrote", OUT / "distill.png", "-", w.status_label.text())
    wait(app, lambda: not w.running, timeout=1800)
    if w.last_error:
        print("Distill error:", w.last_error, file=sys.stderr)
        return False
    print("distill:", w.status_label.text())
    viewer.window.remove_dock_widget(dock)
    return True


def features_shot(viewer, app, case) -> None:
    """Features of the distilled student over one case: PCA of the stride-2 features over the MRI, with
    the manual segmentation's outline on top to show that the feature maps sit on the anatomy."""
    from napari_dmd.registry import REGISTRY

    _, fw = viewer.window.add_plugin_dock_widget("napari-dmd", "Features")
    best = [n for n in REGISTRY.names("student") if n.endswith("best.pt")]
    fw.set_model((best or REGISTRY.names("student"))[-1])
    fw.image_chooser.set_layer(case.name)
    fw.set_scales([4, 2])
    fw.channel_spin.setValue(5)
    done: list = []
    fw.layers_updated.connect(done.append)
    fw.show_features()
    wait(app, lambda: bool(done), timeout=300)
    names = done[-1]
    image = viewer.layers[case.name]
    labels = viewer.layers[f"{case.name} labels"]
    pca = viewer.layers[f"{case.name} features s2 PCA"]
    for layer in viewer.layers:
        layer.visible = layer.name in (image.name, pca.name, labels.name)
    pca.opacity = 0.55
    labels.contour = 1
    labels.opacity = 1.0
    viewer.layers.move(viewer.layers.index(labels), len(viewer.layers))  # outline on top
    viewer.layers.selection.active = pca
    viewer.reset_view()
    settle(app, 2.0)
    close_toasts(app)
    settle(app, 0.5)
    viewer.screenshot(str(OUT / "features.png"), canvas_only=False)
    print("wrote", OUT / "features.png", "-", fw.status_label.text(), "|", names)


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dmd.registry import REGISTRY, entry_from_checkpoint

    if not DATA.is_dir():
        print(f"hippocampus data not found at {DATA}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="napari-dmd-shots-b-"))
    student = os.environ.get("STUDENT")  # a student checkpoint: only the Features screenshot
    if not student:
        teacher = Path(os.environ["TEACHER"]) if os.environ.get("TEACHER") else train_teacher(work)
        REGISTRY.add(entry_from_checkpoint(teacher, role="teacher", device="cpu",
                                           name="teacher: hippocampus 3D"))

    viewer = napari.Viewer(title="napari-dmd")
    app = QApplication.instance()
    viewer.window.resize(1560, 1290)
    cases = load_cases(6)
    for i, case in enumerate(cases):
        meta = {"napari_dmd": {"class_names": CLASS_NAMES, "spacing": list(case.spacing)}}
        viewer.add_image(case.image, name=case.name, scale=case.spacing, colormap="gray", metadata=meta,
                         visible=i == 0)
        viewer.add_labels(case.label, name=f"{case.name} labels", scale=case.spacing, opacity=0.35,
                          metadata=meta, visible=i == 0)
    viewer.layers.selection.active = viewer.layers[cases[0].name]
    viewer.dims.set_point(0, cases[0].image.shape[0] // 2)
    if student:
        REGISTRY.add(entry_from_checkpoint(student, role="student", device="cpu",
                                           name="student: dmd-hippocampus/best.pt"))
    elif not distill_shot(viewer, app, work, cases):
        return 1
    features_shot(viewer, app, cases[0])
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
