"""Screenshots for docs/guide_review.md (the Review dock: rank, paint corrections, fine-tune, rank again) from a
real viewer on the 3D phantom sample with the demo models (trained at first use and cached, about a minute of
CPU; see :mod:`napari_dmd.pretrained`). The round folder goes to a temporary runs folder ($NAPARI_DMD_RUNS).

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots_review.py

The corrections are painted by the script through the labels layer's own brush (``layer.paint``, one undoable
stroke per slice, as a person painting would make): on the top two slices of the ranking, the phantom's true
label is painted where teacher and student disagree and the student is wrong. The script prints the
teacher-student disagreement and the student's Dice against the truth before and after the round. ``STEPS``
(default 150) sets the fine-tuning round's length.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("NAPARI_DMD_SHOTS", REPO / "docs" / "images"))  # override for trial runs
SIZE = (1560, 980)
TEACHER, STUDENT = "demo teacher (phantom)", "demo student (phantom)"


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


def close_toasts(app) -> None:
    """Close notification pop-ups so they do not cover the canvas."""
    for widget in app.allWidgets():
        if type(widget).__name__ == "NapariQtNotification":
            widget.close()


def shot(viewer, app, name: str) -> None:
    pump(app, 1.0)
    close_toasts(app)
    pump(app, 0.5)
    viewer.screenshot(str(OUT / name), canvas_only=False)
    print("wrote", OUT / name)


def demo_models() -> None:
    """The demo teacher + student pair (cached after the first use), in the session's model list."""
    from napari_dmd import pretrained
    from napari_dmd.registry import REGISTRY, entry_from_checkpoint

    t0 = time.time()
    teacher_path, student_path = pretrained.phantom_models()
    print(f"demo models ready in {time.time() - t0:.1f} s: {teacher_path.parent}")
    REGISTRY.add(entry_from_checkpoint(teacher_path, role="teacher", name=TEACHER))
    REGISTRY.add(entry_from_checkpoint(student_path, role="student", name=STUDENT))


def paint_corrections(w, truth: np.ndarray, regions: int = 2, brush: int = 3) -> None:
    """On the top ``regions`` slices, where teacher and student disagree and the student is wrong, paint the true
    label (the phantom's), as a person who knows the anatomy would: one brush stroke (one undo step) per slice,
    through napari's own paint API."""
    teacher = np.asarray(w.teacher_labels_box.layer().data)
    layer = w.student_labels_box.layer()
    layer.brush_size = brush
    for region in w.regions[:regions]:
        z = region.index
        student = np.asarray(layer.data[z])
        ys, xs = np.nonzero((teacher[z] != student) & (truth[z] != student))
        with layer.block_history():  # one stroke
            for y, x in list(zip(ys, xs))[::2]:
                layer.paint((z, y, x), int(truth[z, y, x]), refresh=False)
        layer.refresh()


def scores(w, truth: np.ndarray, slices: list[int]) -> str:
    """Teacher-student disagreement and the student's mean Dice against the truth, on the volume and on
    ``slices``."""
    from napari_dmd.metrics import dice_per_class

    t, s = (np.asarray(b.layer().data) for b in (w.teacher_labels_box, w.student_labels_box))
    on = np.asarray(slices)
    return (f"disagreement {100 * (t != s).mean():.2f} % (corrected slices {100 * (t[on] != s[on]).mean():.2f} %), "
            f"student mean Dice vs truth {np.nanmean(dice_per_class(s, truth, 6)):.4f} (corrected slices "
            f"{np.nanmean(dice_per_class(s[on], truth[on], 6)):.4f})")


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    OUT.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="napari-dmd-shots-review-"))
    os.environ["NAPARI_DMD_RUNS"] = str(runs)
    try:
        demo_models()
        viewer = napari.Viewer(title="napari-dmd: Review")
        viewer.window.resize(*SIZE)
        app = QApplication.instance()
        viewer.open_sample("napari-dmd", "phantom-3d")
        truth = np.asarray(viewer.layers["phantom 3D labels"].data)
        viewer.layers["phantom 3D labels"].visible = False  # hidden: the reviewer knows the anatomy instead
        _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Review")
        w.setMinimumWidth(470)
        w.image_box.set_layer("phantom 3D")
        w.teacher_box.setCurrentText(TEACHER)
        w.student_box.setCurrentText(STUDENT)

        # 1. rank, then Next: the slice where teacher and student disagree most
        w.rank()
        wait(app, lambda: w.rank_worker is None, timeout=600)
        print("rank:", w.status.text())
        slices = [r.index for r in w.regions[:2]]
        print("before:", scores(w, truth, slices))
        viewer.layers[f"phantom 3D teacher ({TEACHER})"].opacity = 1.0
        w.student_labels_box.layer().opacity = 0.5
        w.next()
        shot(viewer, app, "review_rank.png")

        # 2. paint corrections on the top two slices (napari's brush, one undoable stroke each)
        w.paint_button.setChecked(True)
        paint_corrections(w, truth)
        print("painted:", w.count_label.text())
        shot(viewer, app, "review_paint.png")

        # 3. fine-tune: a new round from the demo student, the painted voxels as ground truth
        steps = int(os.environ.get("STEPS", 150))
        w.steps_spin.setValue(steps)
        w.fine_tune()
        wait(app, lambda: w.progress_bar.value() >= steps // 2 or w.tune_worker is None, timeout=1200)
        shot(viewer, app, "review_finetune.png")
        wait(app, lambda: w.tune_worker is None, timeout=1200)
        print("round:", w.status.text())
        round_folder = Path(w.round_folder)
        print("round folder:", sorted(p.name for p in round_folder.iterdir()))

        # 4. rank again with the new student: the next round starts from here
        w.rank()
        wait(app, lambda: w.rank_worker is None, timeout=600)
        print("after:", scores(w, truth, slices))
        print("rank again:", w.status.text())
        for layer in viewer.layers:  # the old student's (painted) labels hidden: the new student's shown
            if layer.name == f"phantom 3D student ({STUDENT})":
                layer.visible = False
        w.student_labels_box.layer().opacity = 0.5
        w.next()
        shot(viewer, app, "review_round2.png")

        # 5. Compare the round's student with its parent (a student in Compare's Teacher list: the reference)
        new_student = w.student_box.currentText()
        _, cw = viewer.window.add_plugin_dock_widget("napari-dmd", "Compare")
        cw.teacher_box.setCurrentText(STUDENT)
        cw.student_box.setCurrentText(new_student)
        cw.image_box.set_layer("phantom 3D")
        cw.truth_box.set_layer("phantom 3D labels")
        cw.compare()
        wait(app, lambda: cw.worker is None, timeout=1200)
        print("compare rounds:", cw.status.text())
        shot(viewer, app, "review_compare_rounds.png")
        viewer.close()
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
