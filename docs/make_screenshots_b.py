"""Screenshots for docs/guide_part_b.md (Distill, Features) from a real viewer on real MRI.

Data: MSD Task04 hippocampus (read-only, beside the clone in ../shared/data or $NAPARI_DMD_DATA); nothing is
copied into the project, runs go to a temporary folder. A small 3D teacher is trained in-process first (a
couple of minutes on CPU), then the Distill widget distils a tiny student on a few cases and the Features
widget shows its decoder features over one case.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots_b.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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

    iterations = int(os.environ.get("TEACHER_ITERS", 300))
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


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dmd.registry import REGISTRY, entry_from_checkpoint

    if not DATA.is_dir():
        print(f"hippocampus data not found at {DATA}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="napari-dmd-shots-"))
    teacher = train_teacher(work)
    REGISTRY.add(entry_from_checkpoint(teacher, role="teacher", device="cpu", name="teacher: hippocampus 3D"))

    viewer = napari.Viewer(title="napari-dmd: Distill")
    app = QApplication.instance()
    viewer.window.resize(1560, 980)
    cases = load_cases(6)
    for i, case in enumerate(cases):
        meta = {"napari_dmd": {"class_names": CLASS_NAMES, "spacing": list(case.spacing)}}
        viewer.add_image(case.image, name=case.name, scale=case.spacing, colormap="gray", metadata=meta,
                         visible=i == 0)
        viewer.add_labels(case.label, name=f"{case.name} labels", scale=case.spacing, opacity=0.35,
                          metadata=meta, visible=i == 0)
    dock, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Distill")
    w.teacher_chooser.setCurrentText("teacher: hippocampus 3D")
    w.set_method("dmd")
    w.student_combo.setCurrentText("student-tiny")
    w.iterations_spin.setValue(int(os.environ.get("STUDENT_ITERS", 300)))
    w.batch_spin.setValue(4)
    w.device_combo.setCurrentText("cpu")
    w.output_edit.setText(str(work / "dmd-hippocampus"))
    viewer.dims.set_point(0, cases[0].image.shape[0] // 2)
    w.start()
    wait(app, lambda: not w.running, timeout=1800)
    if w.last_error:
        print("Distill error:", w.last_error, file=sys.stderr)
        return 1
    for _ in range(40):  # let the last plot render and the activity dock settle
        app.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(OUT / "distill.png"), canvas_only=False)
    print("wrote", OUT / "distill.png", "-", w.status_label.text())

    # Features: the distilled student over case 0, current (middle) slice
    viewer.window.remove_dock_widget(dock)
    fdock, fw = viewer.window.add_plugin_dock_widget("napari-dmd", "Features")
    best = [n for n in REGISTRY.names("student") if n.endswith("best.pt")]
    fw.set_model((best or REGISTRY.names("student"))[-1])
    fw.image_chooser.set_layer(cases[0].name)
    fw.set_scales([4, 2])
    fw.channel_spin.setValue(5)
    done: list = []
    fw.layers_updated.connect(done.append)
    fw.show_features()
    wait(app, lambda: bool(done), timeout=300)
    names = done[-1]
    image = viewer.layers[cases[0].name]
    for layer in viewer.layers:
        layer.visible = layer is image or layer.name in names
    viewer.layers[f"{cases[0].name} labels"].visible = False
    # grid: image | PCA s2 | PCA s4 | energy s2 | channel s2 | head s4 over the image
    order = [f"{image.name} features s{s} {k}" for s, k in ((2, "PCA"), (4, "PCA"), (2, "energy"),
                                                            (2, "channel 5"))]
    order.append(f"{image.name} features head s4")
    for layer in [viewer.layers[n] for n in names if n not in order]:
        layer.visible = False
    viewer.layers.selection.active = image
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.shape = (2, 3)
    viewer.canvas.grid.stride = 1
    # napari fills grid cells from the top of the layer list: move the chosen layers to the top, in order
    for name in reversed(order):
        idx = viewer.layers.index(name)
        viewer.layers.move(idx, len(viewer.layers))
    viewer.reset_view()
    for _ in range(40):
        app.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(OUT / "features.png"), canvas_only=False)
    print("wrote", OUT / "features.png", "-", fw.status_label.text(), "|", np.round(image.scale, 3))
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
