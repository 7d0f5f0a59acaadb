"""B5 (``napari-dmd bench memory``): peak memory and step time of DMD over three patch sizes, 2D and 3D.

Each configuration runs in a fresh process (``python -m napari_dmd.bench --memory-child SPEC``, handled by
``_memory_child``) so peak RSS (VmHWM) and CUDA max allocated belong to that configuration alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .machine import DEFAULT_PATCH, NUM_CLASSES, QUICK_STUDENT, QUICK_TEACHER, _channels, _stop_loader, _sync, _table

MEM_PATCHES = {2: [[64, 64], [128, 128], [256, 256]], 3: [[16, 32, 32], [32, 48, 32], [48, 64, 64]]}
MEM_QUICK_PATCHES = {2: [[32, 32], [64, 64]], 3: [[16, 16, 16], [16, 32, 32]]}


def _peak_rss_mib() -> float:
    """Peak resident set size of this process: VmHWM on Linux (not inherited across exec), else ru_maxrss."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One B5 configuration (run in a fresh process): peak memory and median step time."""
    import numpy as np
    import psutil
    import torch

    from ..config import TrainConfig
    from ..data.cases import Case
    from ..distill.engine import Distiller
    from ..models.presets import build_model
    from ..phantom import make_phantom_dataset
    from ..teachers import ModelTeacher

    dims, patch = spec["dims"], list(spec["patch"])
    shape = tuple(2 * p for p in patch)
    cases = [Case(i, lab, (1.0,) * dims, np.eye(4), f"p{k}") for k, (i, lab) in
             enumerate(make_phantom_dataset(2, shape))]
    base = psutil.Process().memory_info().rss / 2**20  # torch imported, data made, no model yet
    teacher = ModelTeacher(build_model(_channels(spec["teacher"]), dims, NUM_CLASSES), NUM_CLASSES, dims)
    cfg = TrainConfig(method="dmd", model=spec["student"], iterations=10_000, batch_size=spec["batch"],
                      patch_size=patch, val_interval=10_000, device=spec["device"])
    with tempfile.TemporaryDirectory(prefix="napari-dmd-bench-") as tmp:
        d = Distiller(cfg, cases, val_cases=[], teacher=teacher, output_dir=tmp)
        try:
            d._step()  # warm-up
            times = []
            for _ in range(spec["steps"]):
                _sync(d.device)
                t0 = time.perf_counter()
                d._step()
                _sync(d.device)
                times.append(time.perf_counter() - t0)
        finally:
            _stop_loader(d)
    cuda = torch.cuda.max_memory_allocated() / 2**20 if d.device.type == "cuda" else None
    return {"dims": dims, "patch": patch, "step_s": statistics.median(times), "rss_peak_mib": _peak_rss_mib(),
            "rss_base_mib": base, "cuda_max_allocated_mib": cuda, "device": str(d.device),
            "loader_workers": getattr(d, "num_workers", 0)}


def bench_memory(steps: int | None = None, batch: int = 2, dims: Sequence[int] = (2, 3),
                 teacher_model: str | None = None, student_model: str | None = None, device: str = "auto",
                 quick: bool = False) -> dict[str, Any]:
    """B5: peak RSS (and CUDA max allocated) and step time of DMD over 3 patch sizes, each in a fresh process."""
    steps = steps or (1 if quick else 5)
    teacher_model = teacher_model or (QUICK_TEACHER if quick else "teacher")
    student_model = student_model or (QUICK_STUDENT if quick else "student")
    rows, out = [], []
    for nd in dims:
        base = None
        for patch in (MEM_QUICK_PATCHES if quick else MEM_PATCHES)[nd]:
            spec = {"dims": nd, "patch": patch, "batch": batch, "steps": steps, "teacher": teacher_model,
                    "student": student_model, "device": device}
            r = subprocess.run([sys.executable, "-m", "napari_dmd.bench", "--memory-child", json.dumps(spec)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                why = (r.stderr.strip().splitlines() or ["no output"])[-1]
                out.append({**spec, "error": why})
                rows.append([nd, "x".join(map(str, patch)), "failed: " + why[:60], "", "", "", "", "", "", ""])
                continue
            res = json.loads(r.stdout.strip().splitlines()[-1])
            res["rss_delta_mib"] = res["rss_peak_mib"] - res["rss_base_mib"]
            base = base or res
            res["time_x"] = res["step_s"] / base["step_s"]
            res["delta_x"] = res["rss_delta_mib"] / max(base["rss_delta_mib"], 1e-9)
            res["voxels_x"] = math.prod(patch) / math.prod(base["patch"])
            res["default"] = patch == DEFAULT_PATCH[nd]
            out.append(res)
            cuda = res["cuda_max_allocated_mib"]
            rows.append([nd, "x".join(map(str, patch)) + (" (default)" if res["default"] else ""),
                         f"{res['voxels_x']:.2f}", f"{res['step_s']:.3f}", f"{res['time_x']:.2f}",
                         f"{res['rss_peak_mib']:.0f}", f"{res['rss_base_mib']:.0f}", f"{res['rss_delta_mib']:.0f}",
                         f"{res['delta_x']:.2f}", f"{cuda:.0f}" if cuda is not None else "-"])
    used = ", ".join(sorted({c["device"] for c in out if "device" in c})) or device
    print(f"B5 memory: DMD, teacher {teacher_model}, student {student_model}, batch {batch}, median of {steps} "
          f"step(s) after one warm-up, each configuration in a fresh process; device {used}")
    print(_table(["dims", "patch", "voxels x", "step s", "time x", "peak RSS MiB", "base RSS MiB",
                  "peak - base MiB", "(peak - base) x", "CUDA max alloc MiB"], rows))
    print("base RSS = after importing torch and making the data, before building models; x = vs the smallest "
          "patch; RSS is the training process only (data-loading workers, used on CUDA, are not counted)")
    return {"settings": {"batch": batch, "steps": steps, "teacher": teacher_model, "student": student_model,
                         "device": device}, "configs": out}
