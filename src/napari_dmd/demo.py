"""Headless demo: teacher -> DMD student on the built-in synthetic phantom, with a compression report."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig
from .data.cases import Case
from .phantom import PHANTOM_CLASS_NAMES, make_phantom_dataset


def phantom_cases(n_cases: int, spatial_dims: int, seed: int = 0) -> list[Case]:
    """Synthetic phantom cases (2D 128x128 or 3D 32x64x64)."""
    shape = (128, 128) if spatial_dims == 2 else (32, 64, 64)
    cases = []
    for i, (image, label) in enumerate(make_phantom_dataset(n_cases, shape, seed=seed)):
        cases.append(Case(image=image, label=label, spacing=(1.0,) * spatial_dims, affine=np.eye(4),
                          name=f"phantom_{i:03d}"))
    return cases


def compression_report(teacher, student, cases: list[Case]) -> dict[str, float]:
    """Parameters, speed and Dice of two Segmenters on labelled cases."""
    from .evaluation import compression, evaluate_cases

    out: dict[str, float] = {}
    evals = {}
    for tag, seg in (("teacher", teacher), ("student", student)):
        ev = evals[tag] = evaluate_cases(seg, cases, hd95=False)
        out[f"{tag}_params"] = ev["parameters"]
        out[f"{tag}_seconds"] = ev["seconds_per_case"]
        out[f"{tag}_dice"] = ev["mean_dice"]
    out.update(compression(evals["teacher"], evals["student"]))
    return out


def _drive_plain(run: Any, quiet: bool) -> dict[str, Any]:
    """Run to the end; every event's message but the steps on stderr (unless ``quiet``)."""
    from .runner import drive

    def show(ev: Any) -> None:
        if not quiet and ev.kind != "step":
            print(ev.message, file=sys.stderr, flush=True)

    return drive(run, on_event=show)


def run_demo(out: Path = Path("runs/demo"), iterations: int = 300, spatial_dims: int = 2,
             quiet: bool = False, n_cases: int = 16,
             drive: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, float]:
    """Train a teacher, distil a student with DMD, print and return the compression report.

    Both runs go through :mod:`napari_dmd.runner`; ``drive(run)`` runs one to the end (default:
    :func:`napari_dmd.runner.drive`, printing each event's message but the steps unless ``quiet``).
    """
    from .runner import final_checkpoint, prepare_run
    from .segment import Segmenter
    from .teachers import load_teacher

    drive = drive or (lambda run: _drive_plain(run, quiet))
    cases = phantom_cases(n_cases, spatial_dims)
    common = dict(iterations=iterations, val_interval=max(1, iterations // 3),
                  checkpoint_interval=iterations, class_names=list(PHANTOM_CLASS_NAMES),
                  batch_size=4 if spatial_dims == 2 else 2)
    print(f"[1/3] training a teacher on {n_cases} synthetic {spatial_dims}D phantom cases")
    tcfg = TrainConfig(method="none", model="teacher", lr=3e-3, **common)
    teacher_run, _ = prepare_run(tcfg, cases, output_dir=out / "teacher", role="teacher")
    drive(teacher_run)
    teacher_path = final_checkpoint(teacher_run)
    print("[2/3] distilling a student with DMD")
    scfg = TrainConfig(method="dmd", model="student", lr=3e-3, **common)
    student_run, warnings = prepare_run(scfg, cases, teacher=load_teacher(teacher_path), output_dir=out / "student")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    drive(student_run)
    student_path = final_checkpoint(student_run)
    print("[3/3] comparing on the validation cases")
    report = compression_report(Segmenter.from_checkpoint(teacher_path), Segmenter.from_checkpoint(student_path),
                                student_run.val_cases)
    print("\nCompression report (synthetic phantom, validation cases)")
    print(f"  teacher  {report['teacher_params']:>10,} parameters  mean Dice {report['teacher_dice']:.3f}  "
          f"{1000 * report['teacher_seconds']:.0f} ms/case")
    print(f"  student  {report['student_params']:>10,} parameters  mean Dice {report['student_dice']:.3f}  "
          f"{1000 * report['student_seconds']:.0f} ms/case")
    print(f"  {report['compression']:.1f}x fewer parameters, {report['speedup']:.1f}x faster, "
          f"Dice retention {100 * report['retention']:.1f} %")
    print(f"  checkpoints: {teacher_path}  {student_path}")
    return report
