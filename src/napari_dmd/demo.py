"""Headless demo: teacher -> DMD student on the built-in synthetic phantom, with a compression report."""

from __future__ import annotations

from pathlib import Path

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


def run_demo(out: Path = Path("runs/demo"), iterations: int = 300, spatial_dims: int = 2,
             quiet: bool = False, n_cases: int = 16) -> dict[str, float]:
    """Train a teacher, distil a student with DMD, print and return the compression report."""
    from .cli import _drive
    from .distill.engine import Distiller
    from .segment import Segmenter
    from .teachers import load_teacher

    cases = phantom_cases(n_cases, spatial_dims)
    common = dict(iterations=iterations, val_interval=max(1, iterations // 3),
                  checkpoint_interval=iterations, class_names=list(PHANTOM_CLASS_NAMES),
                  batch_size=4 if spatial_dims == 2 else 2)
    print(f"[1/3] training a teacher on {n_cases} synthetic {spatial_dims}D phantom cases")
    tcfg = TrainConfig(method="none", model="teacher", lr=3e-3, **common)
    teacher_run = Distiller(tcfg, cases, output_dir=out / "teacher", role="teacher")
    _drive(teacher_run, quiet)
    teacher_path = teacher_run.best_path if teacher_run.best_path.exists() else teacher_run.last_path
    print("[2/3] distilling a student with DMD")
    scfg = TrainConfig(method="dmd", model="student", lr=3e-3, **common)
    student_run = Distiller(scfg, cases, teacher=load_teacher(teacher_path), output_dir=out / "student")
    _drive(student_run, quiet)
    student_path = student_run.best_path if student_run.best_path.exists() else student_run.last_path
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
