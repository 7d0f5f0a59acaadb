"""B1: one DMD training step vs the sum of its parts, measured in one process.

The bound is: teacher forward without gradients + student forward/backward/optimizer step on the same
batch (task loss only). The ratio bound / DMD step says how close the engine's step comes to that bound
(target >= 0.90). Uses the engine's own `Distiller._step` on synthetic phantom data.

    python benchmarks/bench_step.py --dims 3 --repeats 10
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import Distiller
from napari_dmd.distill.losses import task_loss
from napari_dmd.models.presets import build_model
from napari_dmd.teachers import ModelTeacher


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(dims: int = 3, repeats: int = 10, batch: int = 2, patch: list[int] | None = None) -> dict[str, float]:
    patch = patch or ([32, 48, 32] if dims == 3 else [128, 128])
    cases = phantom_cases(4, dims)
    torch.manual_seed(0)
    teacher_net = build_model("teacher", dims, 6)
    teacher = ModelTeacher(teacher_net, 6, dims)
    cfg = TrainConfig(method="dmd", model="student", iterations=10_000, batch_size=batch, patch_size=patch,
                      augment=False, val_interval=10_000)
    d = Distiller(cfg, cases, val_cases=[], teacher=teacher, output_dir="/tmp/napari-dmd-bench-step")
    images, labels, _ = d.sampler.sample()
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    student = build_model("student", dims, 6)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)

    def teacher_fwd():
        with torch.no_grad():
            teacher_net(x)

    def student_fb():
        loss = task_loss(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_teacher = _time(teacher_fwd, repeats)
    t_student = _time(student_fb, repeats)
    t_step = _time(d._step, repeats)
    bound = t_teacher + t_student
    out = {"teacher_forward_s": t_teacher, "student_fwd_bwd_s": t_student, "dmd_step_s": t_step,
           "bound_over_step": bound / t_step}
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {dims}D patch {patch} x {batch}")
    for k, v in out.items():
        print(f"  {k:<20} {v:.4f}")
    print(f"  ratio (teacher fwd + student fwd/bwd) / DMD step = {bound / t_step:.3f}  (target >= 0.90)")
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dims", type=int, default=3, choices=[2, 3])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--batch", type=int, default=2)
    a = p.parse_args()
    run(a.dims, a.repeats, a.batch)
