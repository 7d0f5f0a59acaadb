"""B1 (``napari-dmd bench step``): one DMD step of the engine against its bound.

The bound is a teacher forward pass (no grad) plus a student forward/backward/optimizer step on the same batch;
the four parts (and patch sampling, for context) are timed interleaved in one process and their medians reported.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence
from typing import Any

from .machine import (
    DEFAULT_PATCH,
    NUM_CLASSES,
    QUICK_PATCH,
    QUICK_STUDENT,
    QUICK_TEACHER,
    _channels,
    _interleaved,
    _ms,
    _stop_loader,
    _table,
)


def bench_step(dims: int = 3, repeats: int | None = None, batch: int = 2, patch: Sequence[int] | None = None,
               teacher_model: str | None = None, student_model: str | None = None, device: str = "auto",
               quick: bool = False, scale_resample: str = "up") -> dict[str, Any]:
    """B1: one DMD step vs its bound, teacher forward (no grad) + student forward/backward on the same batch."""
    import torch

    from ..config import TrainConfig
    from ..demo import phantom_cases
    from ..distill.engine import Distiller
    from ..distill.losses import task_loss
    from ..distill.resolve import autocast, layout_batch
    from ..models.presets import build_model
    from ..teachers import ModelTeacher

    repeats = repeats or (2 if quick else 10)
    patch = list(patch or (QUICK_PATCH if quick else DEFAULT_PATCH)[dims])
    teacher_model = teacher_model or (QUICK_TEACHER if quick else "teacher")
    student_model = student_model or (QUICK_STUDENT if quick else "student")
    torch.manual_seed(0)
    teacher_net = build_model(_channels(teacher_model), dims, NUM_CLASSES)
    teacher = ModelTeacher(teacher_net, NUM_CLASSES, dims)
    cfg = TrainConfig(method="dmd", model=student_model, iterations=10_000, batch_size=batch, patch_size=patch,
                      augment=False, val_interval=10_000, device=device, scale_resample=scale_resample)
    with tempfile.TemporaryDirectory(prefix="napari-dmd-bench-") as tmp:
        d = Distiller(cfg, phantom_cases(2 if quick else 4, dims), val_cases=[], teacher=teacher, output_dir=tmp)
        dev = d.device
        images, labels, _ = d.sampler.sample()
        x, y = torch.from_numpy(images).to(dev), torch.from_numpy(labels).to(dev)
        student = build_model(_channels(student_model), dims, NUM_CLASSES).to(dev)
        if d.student_format is not None:  # the engine's layouts
            student.to(memory_format=d.student_format)
        x, x_student = layout_batch(x, d.student_format, dev)
        opt = torch.optim.AdamW(student.parameters(), lr=1e-3)

        def teacher_forward() -> None:
            with torch.no_grad(), autocast(dev, d.teacher_dtype):  # as the engine's step
                teacher(x)

        def student_fwd_bwd() -> None:
            with d._autocast():
                loss = task_loss(student(x_student).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        try:
            times = _interleaved({"teacher_forward": teacher_forward, "student_fwd_bwd": student_fwd_bwd,
                                  "dmd_step": d._step, "sampling": d.sampler.sample}, repeats, dev)
        finally:
            _stop_loader(d)
    med = {k: statistics.median(v) for k, v in times.items()}
    bound = med["teacher_forward"] + med["student_fwd_bwd"]
    res = {"settings": {"dims": dims, "patch": patch, "batch": batch, "teacher": teacher_model,
                        "student": student_model, "repeats": repeats, "device": str(dev),
                        "scale_resample": scale_resample,
                        "loader_workers": getattr(d, "num_workers", 0)},
           **{f"{k}_s": v for k, v in med.items()}, "bound_s": bound, "ratio": bound / med["dmd_step"],
           "runs_s": times}
    print(f"B1 distillation step: {dims}D patch {patch} x {batch}, teacher {teacher_model}, student "
          f"{student_model}, {dev}, scale_resample {scale_resample}; median of {repeats} interleaved runs")
    rows = [["teacher forward (no grad)", _ms(med["teacher_forward"])],
            ["student forward/backward/step (task loss)", _ms(med["student_fwd_bwd"])],
            ["bound = sum of the two", _ms(bound)], ["DMD step (engine)", _ms(med["dmd_step"])],
            ["  of which patch sampling (context)", _ms(med["sampling"])]]
    print(_table(["part", "ms"], rows))
    print(f"ratio bound / DMD step = {res['ratio']:.3f}  (target >= 0.90)")
    return res
