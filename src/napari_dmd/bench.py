"""Benchmarks B1-B6 (issue 5 part B) behind ``napari-dmd bench VERB``; ``benchmarks/*.py`` wrap them.

Every benchmark first prints the machine and the exact command (every option spelled out), then Markdown
tables; ``--json PATH`` writes ``{benchmark, machine, command, date, results}``. Ratios are measured within
one process, so they hold across machines better than the absolute times, which are context only.
``--quick`` runs a seconds-long version with tiny models (a smoke test: its numbers mean nothing).

Qt-free: ``bench gui`` imports napari and Qt only when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

VERBS = ("step", "inference", "sliding-window", "memory", "gui", "time-to-dice", "all")
NUM_CLASSES = 6  # the phantom's classes (background + 5 organs)
DEFAULT_PATCH = {2: [128, 128], 3: [32, 48, 32]}  # 3D: the engine's auto patch on hippocampus
QUICK_PATCH = {2: [64, 64], 3: [16, 32, 32]}
QUICK_TEACHER, QUICK_STUDENT = "8,16,32", "4,8,16"
MEM_PATCHES = {2: [[64, 64], [128, 128], [256, 256]], 3: [[16, 32, 32], [32, 48, 32], [48, 64, 64]]}
MEM_QUICK_PATCHES = {2: [[32, 32], [64, 64]], 3: [[16, 16, 16], [16, 32, 32]]}


# ---------------------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``), or None when unlimited or unknown."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, load, torch version and threads, GPU: what every figure must name."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = None
    if torch.cuda.is_available():
        gpu = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return {
        "host": platform.node(), "cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
        "cpu_quota": _cpu_quota(), "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "os": platform.platform(terse=True), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "gpu": gpu,
    }


def format_machine(m: dict[str, Any]) -> str:
    quota = f", cgroup quota {m['cpu_quota']:g} CPUs" if m.get("cpu_quota") else ""
    load = f", load {m['load_avg_1min']:.2f}" if m.get("load_avg_1min") is not None else ""
    return (f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable{quota}){load}; {m['os']}, "
            f"python {m['python']}, torch {m['torch']}, {m['torch_threads']} torch threads, "
            f"OMP_NUM_THREADS={m['OMP_NUM_THREADS']}, OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}; "
            f"GPU: {m['gpu'] or 'none'}; host {m['host']}")


# ---------------------------------------------------------------------------------------------- helpers
def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (right-aligned), readable in a terminal and pasteable into docs/benchmarks.md."""
    cells = [[str(v) for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|", *map(line, cells)])


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def _channels(model: str) -> str | tuple[int, ...]:
    """A preset name, or channels like "8,16,32" as a tuple (as TrainConfig.model accepts)."""
    from .config import TrainConfig

    return TrainConfig(model=model).model_channels()


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int, device: Any) -> dict[str, list[float]]:
    """Seconds per call of each function: one warm-up each, then ``repeats`` interleaved rounds."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):  # interleaved, so a drift of the machine hits all alike
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return times


def _finite(x: float) -> float | None:
    return x if isinstance(x, float | int) and math.isfinite(x) else None


def _stop_loader(distiller: Any) -> None:
    """Shut down the engine's data-loading workers, if it started any (CUDA runs)."""
    stop = getattr(distiller, "_stop_workers", None)
    if stop is not None:
        stop()


def _mean_dice(pred: Any, label: Any, num_classes: int) -> float:
    import numpy as np

    from .metrics import dice_per_class

    d = dice_per_class(pred, label, num_classes)
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")


# ---------------------------------------------------------------------------------------------- B1
def bench_step(dims: int = 3, repeats: int | None = None, batch: int = 2, patch: Sequence[int] | None = None,
               teacher_model: str | None = None, student_model: str | None = None, device: str = "auto",
               quick: bool = False) -> dict[str, Any]:
    """B1: one DMD step vs its bound, teacher forward (no grad) + student forward/backward on the same batch."""
    import torch

    from .config import TrainConfig
    from .demo import phantom_cases
    from .distill.engine import Distiller
    from .distill.losses import task_loss
    from .models.presets import build_model
    from .teachers import ModelTeacher

    repeats = repeats or (2 if quick else 10)
    patch = list(patch or (QUICK_PATCH if quick else DEFAULT_PATCH)[dims])
    teacher_model = teacher_model or (QUICK_TEACHER if quick else "teacher")
    student_model = student_model or (QUICK_STUDENT if quick else "student")
    torch.manual_seed(0)
    teacher_net = build_model(_channels(teacher_model), dims, NUM_CLASSES)
    teacher = ModelTeacher(teacher_net, NUM_CLASSES, dims)
    cfg = TrainConfig(method="dmd", model=student_model, iterations=10_000, batch_size=batch, patch_size=patch,
                      augment=False, val_interval=10_000, device=device)
    with tempfile.TemporaryDirectory(prefix="napari-dmd-bench-") as tmp:
        d = Distiller(cfg, phantom_cases(2 if quick else 4, dims), val_cases=[], teacher=teacher, output_dir=tmp)
        dev = d.device
        images, labels, _ = d.sampler.sample()
        x, y = torch.from_numpy(images).to(dev), torch.from_numpy(labels).to(dev)
        student = build_model(_channels(student_model), dims, NUM_CLASSES).to(dev)
        if dev.type == "cuda" and cfg.channels_last:  # as the engine does
            fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
            student.to(memory_format=fmt)
            x = x.contiguous(memory_format=fmt)
        opt = torch.optim.AdamW(student.parameters(), lr=1e-3)

        def teacher_forward() -> None:
            with torch.no_grad(), d._autocast():
                teacher(x)

        def student_fwd_bwd() -> None:
            with d._autocast():
                loss = task_loss(student(x).float(), y)
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
                        "loader_workers": getattr(d, "num_workers", 0)},
           **{f"{k}_s": v for k, v in med.items()}, "bound_s": bound, "ratio": bound / med["dmd_step"],
           "runs_s": times}
    print(f"B1 distillation step: {dims}D patch {patch} x {batch}, teacher {teacher_model}, student "
          f"{student_model}, {dev}; median of {repeats} interleaved runs")
    rows = [["teacher forward (no grad)", _ms(med["teacher_forward"])],
            ["student forward/backward/step (task loss)", _ms(med["student_fwd_bwd"])],
            ["bound = sum of the two", _ms(bound)], ["DMD step (engine)", _ms(med["dmd_step"])],
            ["  of which patch sampling (context)", _ms(med["sampling"])]]
    print(_table(["part", "ms"], rows))
    print(f"ratio bound / DMD step = {res['ratio']:.3f}  (target >= 0.90)")
    return res


# ---------------------------------------------------------------------------------------------- B2
def _inference_cases(data: str, student_ckpt: dict[str, Any], n: int, dims: int) -> tuple[list[Any], str]:
    """Labelled cases: the synthetic phantom, or an MSD folder (the student's validation split first)."""
    if data == "phantom":
        from .demo import phantom_cases

        return phantom_cases(n, dims, seed=1), f"synthetic {dims}D phantom (seed 1)"
    from .data.cases import load_folder_pairs, load_msd_folder

    root = Path(data)
    if not root.is_dir():
        raise ValueError(f"{data}: not a folder (give an MSD folder with imagesTr/ + labelsTr/, or 'phantom')")
    cases = load_msd_folder(root)[0] if (root / "imagesTr").is_dir() else \
        load_folder_pairs(root / "images", root / "labels")
    cases = sorted((c for c in cases if c.has_label), key=lambda c: c.name)
    if not cases:
        raise ValueError(f"{data}: no labelled cases")
    val = set(student_ckpt.get("val_cases") or [])
    chosen = [c for c in cases if c.name in val]
    src = f"{root} ({'the student validation split' if chosen else 'first cases by name'})"
    return (chosen or cases)[:n], src


def bench_inference(teacher: str, student: str, data: str = "phantom", cases: int | None = None,
                    repeats: int = 1, device: str = "auto", quick: bool = False) -> dict[str, Any]:
    """B2: teacher vs student on the same cases, one process, alternating order: speed-up and Dice retention."""
    from .checkpoint import load_checkpoint
    from .segment import Segmenter

    n = cases or (2 if quick else 20)
    segs = {tag: Segmenter.from_checkpoint(path, device) for tag, path in (("teacher", teacher), ("student", student))}
    if segs["teacher"].num_classes != segs["student"].num_classes:
        raise ValueError(f"teacher ({segs['teacher'].num_classes} classes) and student "
                         f"({segs['student'].num_classes}) segment different classes")
    chosen, source = _inference_cases(data, load_checkpoint(student), n, segs["student"].spatial_dims)
    for seg in segs.values():  # warm-up
        seg(chosen[0].image)
    per_case = []
    for i, c in enumerate(chosen):
        rec: dict[str, Any] = {"case": c.name, "shape": list(c.image.shape)}
        for tag in ("teacher", "student") if i % 2 == 0 else ("student", "teacher"):
            times = []
            for _ in range(repeats):
                pred, dt = segs[tag].timed(c.image)
                times.append(dt)
            rec[f"{tag}_s"] = statistics.median(times)
            rec[f"{tag}_dice"] = _mean_dice(pred, c.label, segs[tag].num_classes)
        per_case.append(rec)

    def total(k: str) -> float:
        return sum(r[k] for r in per_case)

    def mean_dice(tag: str) -> float:
        vals = [r[f"{tag}_dice"] for r in per_case if math.isfinite(r[f"{tag}_dice"])]
        return statistics.fmean(vals) if vals else float("nan")

    t_dice, s_dice = mean_dice("teacher"), mean_dice("student")
    res = {"settings": {"teacher": teacher, "student": student, "data": source, "cases": len(chosen),
                        "repeats": repeats, "device": segs["student"].device,
                        "patch": {k: s.patch_size for k, s in segs.items()}, "overlap": segs["student"].overlap},
           "teacher_params": segs["teacher"].parameters, "student_params": segs["student"].parameters,
           "teacher_median_s": statistics.median(r["teacher_s"] for r in per_case),
           "student_median_s": statistics.median(r["student_s"] for r in per_case),
           "speedup": total("teacher_s") / total("student_s"),
           "teacher_dice": t_dice, "student_dice": s_dice,
           "retention": s_dice / t_dice if t_dice > 0 else float("nan"), "per_case": per_case}
    print(f"B2 inference: {len(chosen)} cases of {source}; {segs['student'].device}, warm-up first, order "
          f"alternating per case, median of {repeats} run(s) per case")
    rows = [[r["case"], "x".join(map(str, r["shape"])), _ms(r["teacher_s"]), _ms(r["student_s"]),
             f"{r['teacher_s'] / r['student_s']:.2f}", f"{r['teacher_dice']:.4f}", f"{r['student_dice']:.4f}"]
            for r in per_case]
    print(_table(["case", "shape", "teacher ms", "student ms", "speed-up", "teacher Dice", "student Dice"], rows))
    print(_table(["model", "parameters", "median ms/case", "mean Dice"],
                 [[k, f"{res[f'{k}_params']:,}", _ms(res[f"{k}_median_s"]), f"{res[f'{k}_dice']:.4f}"]
                  for k in ("teacher", "student")]))
    print(f"speed-up {res['speedup']:.2f}x (total teacher time / total student time; target >= 8x), "
          f"Dice retention {100 * res['retention']:.1f} % (target >= 98 %)")
    return res


# ---------------------------------------------------------------------------------------------- B3
def _tiny_unet3d(num_classes: int, width: int = 8) -> Any:
    """Three-level 3D U-Net (instance norm): (B, 1, z, y, x) -> (B, C, z, y, x); sides divisible by 4."""
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout), nn.LeakyReLU(0.01, True),
                             nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout), nn.LeakyReLU(0.01, True))

    class TinyUNet3D(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.enc0, self.enc1, self.bottom = block(1, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.up1, self.dec1 = nn.ConvTranspose3d(4 * w, 2 * w, 2, stride=2), block(4 * w, 2 * w)
            self.up0, self.dec0 = nn.ConvTranspose3d(2 * w, w, 2, stride=2), block(2 * w, w)
            self.head, self.pool = nn.Conv3d(w, num_classes, 1), nn.MaxPool3d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e0 = self.enc0(x)
            e1 = self.enc1(self.pool(e0))
            b = self.bottom(self.pool(e1))
            d1 = self.dec1(torch.cat([self.up1(b), e1], dim=1))
            return self.head(self.dec0(torch.cat([self.up0(d1), e0], dim=1)))

    return TinyUNet3D()


def bench_sliding_window(size: int | None = None, repeats: int | None = None, patch: int | None = None,
                         overlap: float = 0.5, batch_size: int = 2, classes: int = 4, model: str = "tiny",
                         device: str = "auto", quick: bool = False) -> dict[str, Any]:
    """B3: napari_dmd.inference.sliding_window_predict vs MONAI's sliding_window_inference, same net and windows."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from .distill.engine import resolve_device
    from .inference import SIGMA_SCALE, count_windows, sliding_window_predict
    from .models.presets import build_model

    size, repeats, patch = size or (32 if quick else 96), repeats or (1 if quick else 3), patch or (16 if quick else 64)
    dev = resolve_device(device)
    torch.manual_seed(0)
    if model == "tiny":
        net = _tiny_unet3d(classes)
    else:
        net = build_model(_channels(model), 3, classes)
        if patch % net.total_stride:
            raise ValueError(f"--patch {patch} must be a multiple of the {model} U-Net's stride {net.total_stride}")
    net = net.to(dev).eval()
    image = np.random.default_rng(0).normal(size=(size,) * 3).astype(np.float32)
    win = (patch,) * 3
    n_win = count_windows(image.shape, win, overlap)

    def ours() -> np.ndarray:
        return sliding_window_predict(net, image, win, overlap=overlap, batch_size=batch_size, device=dev)

    def monai_raw() -> torch.Tensor:
        with torch.inference_mode():
            x = torch.from_numpy(image).to(dev)[None, None]
            return sliding_window_inference(x, win, batch_size, net, overlap=overlap, mode="gaussian",
                                            sigma_scale=SIGMA_SCALE)

    def monai_probs() -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(monai_raw()[0], dim=0).cpu().numpy()

    diff = float(np.abs(ours() - monai_probs()).max())  # both compute the same thing
    times = _interleaved({"ours": ours, "monai_probs": monai_probs, "monai_raw": monai_raw}, repeats, dev)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"settings": {"volume": list(image.shape), "patch": list(win), "overlap": overlap, "batch": batch_size,
                        "windows": n_win, "classes": classes, "model": model, "repeats": repeats, "device": str(dev)},
           **{f"{k}_s": v for k, v in med.items()}, "max_abs_diff": diff,
           "speed_vs_monai": med["monai_probs"] / med["ours"], "speed_vs_monai_raw": med["monai_raw"] / med["ours"],
           "runs_s": times}
    print(f"B3 sliding window: volume {size}^3, window {patch}^3, overlap {overlap}, {n_win} windows, batch "
          f"{batch_size}, model {model}, {dev}; median of {repeats} interleaved runs; max |ours - MONAI| {diff:.2e}")
    print(_table(["path", "ms", "MONAI time / this"],
                 [["napari-dmd sliding_window_predict (probabilities, NumPy)", _ms(med["ours"]), "1.000"],
                  ["MONAI sliding_window_inference + softmax + NumPy (same output)", _ms(med["monai_probs"]),
                   f"{res['speed_vs_monai']:.3f}"],
                  ["MONAI sliding_window_inference alone (logits tensor)", _ms(med["monai_raw"]),
                   f"{res['speed_vs_monai_raw']:.3f}"]]))
    print(f"speed vs MONAI (same output) = {res['speed_vs_monai']:.3f}x  (target >= 1.0x, or use MONAI's)")
    return res


# ---------------------------------------------------------------------------------------------- B5
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

    from .config import TrainConfig
    from .data.cases import Case
    from .distill.engine import Distiller
    from .models.presets import build_model
    from .phantom import make_phantom_dataset
    from .teachers import ModelTeacher

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


# ---------------------------------------------------------------------------------------------- B4
def _gaps_ms(stamps: Sequence[float]) -> dict[str, float]:
    import numpy as np

    gaps = np.diff(np.asarray(stamps)) * 1000
    if gaps.size == 0:
        return {"ticks": len(stamps), "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"ticks": len(stamps), "p50_ms": float(np.percentile(gaps, 50)), "p99_ms": float(np.percentile(gaps, 99)),
            "max_ms": float(gaps.max())}


def _rate(stamps: Sequence[float], batch: int) -> float:
    """Samples/s between the first and the last stamp (one stamp per step)."""
    return batch * (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")


def bench_gui(steps: int | None = None, warmup: int | None = None, dims: int = 2, batch: int = 2,
              patch: Sequence[int] | None = None, teacher_model: str | None = None, student_model: str | None = None,
              device: str = "cpu", rounds: int = 1, quick: bool = False, timeout_s: float = 1800) -> dict[str, Any]:
    """B4: event-loop stalls while the Distill widget trains in a real viewer, and GUI vs headless samples/s.

    Each round trains the same configuration (the widget's: threads, validation and checkpoint intervals) on the
    same cases and teacher once in the viewer (Start, the engine in a thread worker) and once headless in the main
    thread of this process, alternating which goes first, after one short uncounted GUI run (first-use costs).
    Samples/s count from the end of warm-up to the last step; after each GUI run the widget's last plot draw and
    notification are let finish before anything else is timed.
    """
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                                 or os.environ.get("QT_QPA_PLATFORM")):
        raise ValueError("bench gui needs a display: run it under xvfb-run -a")
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from .config import TrainConfig
    from .distill.engine import Distiller
    from .phantom import make_phantom_dataset
    from .registry import REGISTRY, entry_from_checkpoint, teacher_from_entry

    steps, warmup = steps or (12 if quick else 200), warmup or (2 if quick else 10)
    if steps < warmup + 3:
        raise ValueError(f"--steps {steps} must exceed --warmup {warmup} by at least 3")
    patch = list(patch or (QUICK_PATCH if quick else DEFAULT_PATCH)[dims])
    teacher_model = teacher_model or (QUICK_TEACHER if quick else "teacher")
    student_model = student_model or (QUICK_STUDENT if quick else "student")
    tmp = Path(tempfile.mkdtemp(prefix="napari-dmd-bench-gui-"))

    viewer = napari.Viewer(title="napari-dmd bench gui")
    viewer.open_sample("napari-dmd", f"phantom-{dims}d")
    for i, (img, lab) in enumerate(make_phantom_dataset(2, (128, 128) if dims == 2 else (32, 64, 64), seed=7)):
        viewer.add_image(img, name=f"extra {i}")
        viewer.add_labels(lab, name=f"extra {i} labels")
    layer_cases = None
    name = "teacher: napari-dmd bench"
    try:
        # a teacher checkpoint (one step: its weights do not change the timing), registered like a loaded one
        from .demo import phantom_cases

        tcfg = TrainConfig(method="none", model=teacher_model, iterations=1, patch_size=patch, batch_size=batch,
                           device=device)
        t = Distiller(tcfg, phantom_cases(2, dims), val_cases=[], output_dir=tmp / "teacher", role="teacher")
        t.run_to_end()
        entry = REGISTRY.add(entry_from_checkpoint(t.last_path, role="teacher", device=device, name=name))
        _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Distill")
        w.teacher_chooser.setCurrentText(name)
        w.set_method("dmd")
        w.student_combo.setCurrentText(student_model)
        w.iterations_spin.setValue(steps)
        w.patch_edit.setText(",".join(map(str, patch)))
        w.batch_spin.setValue(batch)
        idx = w.device_combo.findData(device)
        if idx < 0:
            raise ValueError(f"device {device!r} is not offered by the Distill widget on this machine")
        w.device_combo.setCurrentIndex(idx)

        app_loop = QEventLoop()
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start()
        for _ in range(2):  # let the new window settle for 1 s, then 1 s of the idle loop: the floor of the figures
            ticks.clear()
            QTimer.singleShot(1000, app_loop.quit)
            app_loop.exec()
        idle = _gaps_ms(ticks)

        step_at: list[float] = []  # when each step event reached the main thread

        def on_event(ev: Any) -> None:
            if ev.kind == "step":
                step_at.append(time.perf_counter())

        w.run_event.connect(on_event)
        w.run_finished.connect(app_loop.quit)
        guard = QTimer()
        guard.setSingleShot(True)
        guard.timeout.connect(app_loop.quit)
        gui_rounds, head_rounds = [], []
        cfg = None

        def settle() -> None:
            """After a GUI run: let its last plot draw finish and close its notification, so that neither runs
            during the next measurement (a toast animates the window for its 4 s on screen)."""
            deadline = time.perf_counter() + 10
            while True:
                QTimer.singleShot(100, app_loop.quit)
                app_loop.exec()
                if not getattr(w.plot, "busy", False) or time.perf_counter() > deadline:
                    break
            with contextlib.suppress(Exception):
                from napari._qt.dialogs.qt_notification import NapariQtNotification

                for toast in list(NapariQtNotification._instances):
                    toast.close()
            QTimer.singleShot(200, app_loop.quit)
            app_loop.exec()

        def gui_round(r: int | str) -> None:
            nonlocal cfg, layer_cases
            w.output_edit.setText(str(tmp / f"gui{r}"))
            step_at.clear()
            ticks.clear()
            renders = getattr(w.plot, "renders", 0)
            guard.start(int(timeout_s * 1000))
            w.start()
            if not w.running:
                raise ValueError(f"the Distill widget did not start: {w.last_error or 'unknown reason'}")
            app_loop.exec()
            t_end = time.perf_counter()
            guard.stop()
            if w.running or not w.events or w.events[-1].kind != "done":
                w.stop()
                raise ValueError(f"the GUI run did not finish within {timeout_s:.0f} s: {w.last_error}")
            if r == "warm-up":
                settle()
                return
            run = w.run
            cfg, layer_cases = copy.deepcopy(run.config), run.cases
            t0 = step_at[warmup - 1]
            gui_rounds.append({**_gaps_ms([t for t in ticks if t0 <= t <= t_end]),
                               "samples_per_s": _rate(step_at[warmup - 1:], batch),
                               "engine_samples_per_s": next(e.samples_per_s for e in reversed(w.events)
                                                            if e.kind == "step"),
                               "plot_renders": getattr(w.plot, "renders", 0) - renders})
            settle()

        def headless_round(r: int) -> None:
            # the same configuration, cases and teacher, headless in this process (main thread)
            d = Distiller(copy.deepcopy(cfg), layer_cases, teacher=teacher_from_entry(entry),
                          output_dir=tmp / f"headless{r}")
            head_at: list[float] = []
            last = None
            for ev in d.run():
                if ev.kind == "step":
                    head_at.append(time.perf_counter())
                    last = ev
            head_rounds.append({"samples_per_s": _rate(head_at[warmup - 1:], batch),
                                "engine_samples_per_s": last.samples_per_s if last else float("nan")})

        # a short GUI run first, not counted: the process's first-use costs (the plot's first draw loads fonts, the
        # first validation, thread start-up) would otherwise fall in round 1's GUI run only
        w.iterations_spin.setValue(min(steps, warmup + 10))
        gui_round("warm-up")
        w.iterations_spin.setValue(steps)
        for r in range(rounds):  # GUI, headless, headless, GUI, ...: a drifting machine load favours neither
            order = (gui_round, headless_round) if r % 2 == 0 else (headless_round, gui_round)
            for run_round in order:
                run_round(r)
        timer.stop()
    finally:
        with contextlib.suppress(Exception):
            REGISTRY.remove(name)
        viewer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [g["samples_per_s"] / h["samples_per_s"] for g, h in zip(gui_rounds, head_rounds)]
    stall = {k: statistics.median(g[k] for g in gui_rounds) for k in ("p50_ms", "p99_ms", "max_ms")}
    stall["max_ms"] = max(g["max_ms"] for g in gui_rounds)
    res = {"settings": {"dims": dims, "patch": patch, "batch": batch, "teacher": teacher_model,
                        "student": student_model, "steps": steps, "warmup": warmup, "rounds": rounds,
                        "device": device, "num_threads": cfg.num_threads if cfg else None,
                        "val_interval": cfg.val_interval if cfg else None,
                        "checkpoint_interval": cfg.checkpoint_interval if cfg else None,
                        "train_cases": len(layer_cases or []), "napari": napari.__version__,
                        "display": os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM")},
           "idle": idle, "gui": gui_rounds, "headless": head_rounds, "stall": stall,
           "gui_samples_per_s": statistics.median(g["samples_per_s"] for g in gui_rounds),
           "headless_samples_per_s": statistics.median(h["samples_per_s"] for h in head_rounds),
           "ratio": statistics.median(ratios)}
    print(f"B4 GUI: napari {napari.__version__}, Distill widget, DMD {dims}D patch {patch} x {batch}, teacher "
          f"{teacher_model}, student {student_model}, {steps} steps ({warmup} warm-up steps not counted), "
          f"{res['settings']['num_threads']} torch thread(s), validation every {res['settings']['val_interval']} "
          f"and checkpoint every {res['settings']['checkpoint_interval']} steps (the widget's choices), "
          f"{rounds} round(s) (GUI and headless in turn going first, after one uncounted GUI run), device {device}")
    print(_table(["event loop (10 ms QTimer)", "ticks", "gap p50 ms", "gap p99 ms", "gap max ms"],
                 [["idle viewer", idle["ticks"], f"{idle['p50_ms']:.1f}", f"{idle['p99_ms']:.1f}",
                   f"{idle['max_ms']:.1f}"]] +
                 [[f"distilling, round {i + 1}", g["ticks"], f"{g['p50_ms']:.1f}", f"{g['p99_ms']:.1f}",
                   f"{g['max_ms']:.1f}"] for i, g in enumerate(gui_rounds)]))
    print(_table(["round", "GUI samples/s", "headless samples/s", "GUI / headless"],
                 [[i + 1, f"{g['samples_per_s']:.2f}", f"{h['samples_per_s']:.2f}", f"{q:.3f}"]
                  for i, (g, h, q) in enumerate(zip(gui_rounds, head_rounds, ratios))]))
    print(f"ratio GUI / headless samples/s = {res['ratio']:.3f}  (target >= 0.9)")
    return res


# ---------------------------------------------------------------------------------------------- B6
def time_to_dice(events: str | Path, threshold: float = 0.80) -> dict[str, Any]:
    """B6: wall time from a run's first "start" event until validation mean Dice first reaches ``threshold``.

    ``active_s`` leaves out the time between a stop and a resume (events.jsonl is appended to on resume).
    """
    path = Path(events)
    try:
        evs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON-lines event log ({e})") from e
    starts = [e for e in evs if e.get("kind") == "start"]
    if not starts:
        raise ValueError(f"{path}: no 'start' event; is this a napari-dmd events.jsonl?")
    t_start = starts[0]["time"]
    vals = [e for e in evs if e.get("kind") == "validation" and e.get("mean_dice") is not None]
    hit = next((e for e in vals if e["mean_dice"] >= threshold), None)
    active, seg_start, last_t = 0.0, None, t_start
    for e in evs:  # sum of the segments start -> last event before the next start
        if e.get("kind") == "start":
            if seg_start is not None:
                active += last_t - seg_start
            seg_start = e["time"]
        last_t = e.get("time", last_t)
        if hit is not None and e is hit:
            break
    active += last_t - (seg_start or t_start)
    best = max(vals, key=lambda e: e["mean_dice"]) if vals else None
    cfg_path = path.with_name("config.yaml")
    res = {"events": str(path), "threshold": threshold, "reached": hit is not None,
           "iteration": hit["iteration"] if hit else None, "mean_dice": hit["mean_dice"] if hit else None,
           "wall_s": hit["time"] - t_start if hit else None, "active_s": active if hit else None,
           "validations": len(vals), "best_mean_dice": best["mean_dice"] if best else None,
           "best_iteration": best["iteration"] if best else None, "resumes": len(starts) - 1,
           "run": starts[0].get("message", ""), "config": str(cfg_path) if cfg_path.is_file() else None}
    print(f"B6 time to Dice {threshold:.2f}: {path} ({res['run']}; {len(vals)} validations, "
          f"{res['resumes']} resume(s))")
    if hit:
        print(_table(["threshold", "iteration", "mean Dice", "wall s", "wall min", "active s"],
                     [[f"{threshold:.2f}", hit["iteration"], f"{hit['mean_dice']:.4f}", f"{res['wall_s']:.0f}",
                       f"{res['wall_s'] / 60:.1f}", f"{active:.0f}"]]))
    else:
        print(f"mean Dice never reached {threshold:.2f} (best {res['best_mean_dice']} at iteration "
              f"{res['best_iteration']})")
    print("wall time counts from the run's start event to the validation event that first reaches the threshold "
          "(validation time included; the teacher's training is not); target <= 10 min on 2 CPU cores")
    return res


def run_time_to_dice(teacher: str, data: str, out: str | Path, threshold: float = 0.80, iterations: int | None = None,
                     val_interval: int | None = None, config: str | None = None, student_model: str = "student",
                     num_threads: int | None = None, device: str = "auto", keep_going: bool = False,
                     quick: bool = False) -> dict[str, Any]:
    """Distil a DMD student on this machine, stop once validation mean Dice reaches ``threshold``, then B6."""
    from .config import TrainConfig
    from .data.cases import load_msd_folder
    from .distill.engine import Distiller
    from .teachers import load_teacher

    cfg = TrainConfig.load_yaml(config) if config else TrainConfig(
        method="dmd", model=student_model, lr=3e-3, val_fraction=0.1, max_val_cases=20)
    cfg.method, cfg.device = "dmd", device
    cfg.iterations = iterations or (20 if quick else cfg.iterations if config else 1500)
    cfg.val_interval = val_interval or (5 if quick else 100)
    cfg.checkpoint_interval = max(cfg.checkpoint_interval, cfg.val_interval)
    cfg.num_threads = num_threads or cfg.num_threads
    if quick:
        cfg.max_val_cases = 2
    cases, names = load_msd_folder(data)
    cases = cases[:12] if quick else cases
    cfg.class_names = cfg.class_names or names
    d = Distiller(cfg, cases, teacher=load_teacher(teacher), output_dir=out)
    print(f"distilling {cfg.model} with DMD on {len(d.train_cases)} train / {len(d.val_cases)} val cases of {data}, "
          f"{cfg.iterations} iterations max, validation every {cfg.val_interval}, {d.device}")
    for ev in d.run():
        if ev.kind == "validation":
            print(f"  iteration {ev.iteration}: validation mean Dice {ev.mean_dice:.4f}", flush=True)
            if ev.mean_dice is not None and ev.mean_dice >= threshold and not keep_going:
                d.request_stop()
    return time_to_dice(Path(out) / "events.jsonl", threshold)


# ---------------------------------------------------------------------------------------------- command line
def _common(p: argparse.ArgumentParser, device: str = "auto") -> None:
    g = p.add_argument_group("output and machine")
    g.add_argument("--quick", action="store_true",
                   help="a seconds-long smoke version (tiny models; its numbers mean nothing)")
    g.add_argument("--json", metavar="PATH", help="write {benchmark, machine, command, date, results} to this file")
    g.add_argument("--device", default=device, help=f"auto | cpu | cuda | cuda:N | mps (default {device})")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, i.e. OMP_NUM_THREADS or cores)")


def _patch_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patch", type=int, nargs="+", help="training patch, one value per axis (default 2D "
                   f"{DEFAULT_PATCH[2]}, 3D {DEFAULT_PATCH[3]}; --quick: {QUICK_PATCH[2]}, {QUICK_PATCH[3]})")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher-model", help=f"teacher preset or channels (default teacher; --quick {QUICK_TEACHER})")
    p.add_argument("--student-model", help=f"student preset or channels (default student; --quick {QUICK_STUDENT})")


def add_verbs(sub: Any) -> None:
    """The bench verbs, on an argparse sub-parsers object."""
    s = sub.add_parser("step", help="B1: one DMD step vs teacher forward + student forward/backward")
    s.add_argument("--dims", type=int, choices=[2, 3], default=3)
    s.add_argument("--repeats", type=int, help="timed runs of each part, interleaved (default 10; --quick 2)")
    s.add_argument("--batch", type=int, default=2)
    _patch_arg(s)
    _model_args(s)
    _common(s)

    i = sub.add_parser("inference", help="B2: student vs teacher on the same cases: speed-up and Dice retention")
    i.add_argument("--teacher", required=True, help="teacher checkpoint (.pt)")
    i.add_argument("--student", required=True, help="student checkpoint (.pt)")
    i.add_argument("--data", default="phantom", help="MSD folder (imagesTr/ + labelsTr/), or 'phantom' (default)")
    i.add_argument("--cases", type=int, help="number of labelled cases (default 20; --quick 2)")
    i.add_argument("--repeats", type=int, default=1, help="runs per case and model (median)")
    _common(i)

    w = sub.add_parser("sliding-window", help="B3: the project's sliding window vs MONAI's, same net and windows")
    w.add_argument("--size", type=int, help="cubic volume edge in voxels (default 96; --quick 32)")
    w.add_argument("--patch", type=int, help="cubic window edge (default 64; --quick 16)")
    w.add_argument("--overlap", type=float, default=0.5)
    w.add_argument("--batch-size", type=int, default=2, help="windows per network call")
    w.add_argument("--classes", type=int, default=4)
    w.add_argument("--model", default="tiny", help="tiny (3-level 3D U-Net) or a U-Net preset / channels")
    w.add_argument("--repeats", type=int, help="timed runs of each path, interleaved (default 3; --quick 1)")
    _common(w)

    m = sub.add_parser("memory", help="B5: peak RSS / CUDA memory and step time over 3 patch sizes, 2D and 3D")
    m.add_argument("--steps", type=int, help="timed steps per configuration after one warm-up (default 5; --quick 1)")
    m.add_argument("--batch", type=int, default=2)
    m.add_argument("--dims", type=int, nargs="+", choices=[2, 3], default=[2, 3])
    _model_args(m)
    _common(m)

    g = sub.add_parser("gui", help="B4: event-loop stalls while distilling in the viewer; GUI vs headless samples/s")
    g.add_argument("--steps", type=int, help="training steps per run (default 200; --quick 12)")
    g.add_argument("--warmup", type=int, help="first steps not counted (default 10; --quick 2)")
    g.add_argument("--dims", type=int, choices=[2, 3], default=2)
    g.add_argument("--batch", type=int, default=2)
    g.add_argument("--rounds", type=int, default=1, help="GUI + headless pairs (median reported)")
    _patch_arg(g)
    _model_args(g)
    _common(g, device="cpu")

    t = sub.add_parser("time-to-dice", help="B6: wall time until the DMD student's validation mean Dice >= 0.80")
    t.add_argument("--events", help="analyse this run's events.jsonl (no training)")
    t.add_argument("--threshold", type=float, default=0.80)
    r = t.add_argument_group("or distil now on this machine (stops at the threshold)")
    r.add_argument("--teacher", help="teacher checkpoint or file")
    r.add_argument("--data", help="MSD folder, e.g. ../shared/data/msd_hippocampus")
    r.add_argument("--out", help="output folder of the run (must not hold a run)")
    r.add_argument("--config", help="YAML settings of the run (e.g. a run's config.yaml); default: DMD, "
                                    "student, lr 3e-3, 10 %% validation (at most 20 cases)")
    r.add_argument("--student-model", default="student")
    r.add_argument("--iterations", type=int, help="at most this many steps (default 1500; --quick 20)")
    r.add_argument("--val-interval", type=int, help="validate every N steps (default 100; --quick 5)")
    r.add_argument("--num-threads", type=int, help="torch threads of the run (default: the config's)")
    r.add_argument("--keep-going", action="store_true", help="train all iterations instead of stopping")
    _common(t)

    a = sub.add_parser("all", help="B1, B3, B5, then B2 / B4 / B6 when their inputs (or a display) are given")
    a.add_argument("--teacher", help="teacher checkpoint for B2")
    a.add_argument("--student", help="student checkpoint for B2")
    a.add_argument("--data", default="phantom", help="B2 data: MSD folder or 'phantom'")
    a.add_argument("--events", help="B6: a run's events.jsonl")
    _common(a)
    for verb, parser in sub.choices.items():
        if verb in VERBS:
            parser.set_defaults(func=cmd_bench, bench_verb=verb, bench_parser=parser)


def add_bench_parser(sub: Any) -> None:
    """Register ``napari-dmd bench VERB`` on the CLI's sub-parsers."""
    b = sub.add_parser("bench", help="performance benchmarks B1-B6 (docs/benchmarks.md)",
                       description="Performance benchmarks (issue 5 part B); see docs/benchmarks.md.")
    add_verbs(b.add_subparsers(dest="bench_verb", required=True, metavar="BENCHMARK"))


def command_line(args: argparse.Namespace) -> str:
    """The exact command, every option spelled out (so later changes of defaults do not change it)."""
    parser = args.bench_parser
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ]
    words = env + parser.prog.split()
    for a in parser._actions:
        if not a.option_strings or a.help == argparse.SUPPRESS or a.dest == "help":
            continue
        v = getattr(args, a.dest, None)
        flag = max(a.option_strings, key=len)
        if v is None or v is False:
            continue
        if v is True:
            words.append(flag)
        elif isinstance(v, list):
            words += [flag, *map(str, v)]
        else:
            words += [flag, str(v)]
    return shlex.join(words)


def _run_verb(verb: str, a: argparse.Namespace) -> dict[str, Any]:
    if verb == "step":
        return bench_step(a.dims, a.repeats, a.batch, a.patch, a.teacher_model, a.student_model, a.device, a.quick)
    if verb == "inference":
        return bench_inference(a.teacher, a.student, a.data, a.cases, a.repeats, a.device, a.quick)
    if verb == "sliding-window":
        return bench_sliding_window(a.size, a.repeats, a.patch, a.overlap, a.batch_size, a.classes, a.model,
                                    a.device, a.quick)
    if verb == "memory":
        return bench_memory(a.steps, a.batch, a.dims, a.teacher_model, a.student_model, a.device, a.quick)
    if verb == "gui":
        return bench_gui(a.steps, a.warmup, a.dims, a.batch, a.patch, a.teacher_model, a.student_model, a.device,
                         a.rounds, a.quick)
    if verb == "time-to-dice":
        if a.events:
            return time_to_dice(a.events, a.threshold)
        if not (a.teacher and a.data and a.out):
            raise ValueError("give --events EVENTS.jsonl, or --teacher, --data and --out to distil now")
        return run_time_to_dice(a.teacher, a.data, a.out, a.threshold, a.iterations, a.val_interval, a.config,
                                a.student_model, a.num_threads, a.device, a.keep_going, a.quick)
    raise ValueError(f"unknown benchmark {verb!r}")


def _run_all(a: argparse.Namespace) -> dict[str, Any]:
    ns = argparse.Namespace
    q, dev = a.quick, a.device
    out: dict[str, Any] = {}
    plan: list[tuple[str, argparse.Namespace | None, str]] = [
        ("step", ns(dims=3, repeats=None, batch=2, patch=None, teacher_model=None, student_model=None), ""),
        ("sliding-window", ns(size=None, repeats=None, patch=None, overlap=0.5, batch_size=2, classes=4,
                              model="tiny"), ""),
        ("memory", ns(steps=None, batch=2, dims=[2, 3], teacher_model=None, student_model=None), ""),
        ("inference", ns(teacher=a.teacher, student=a.student, data=a.data, cases=None, repeats=1)
         if a.teacher and a.student else None, "give --teacher and --student"),
        ("gui", ns(steps=None, warmup=None, dims=2, batch=2, patch=None, teacher_model=None, student_model=None,
                   rounds=1) if os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM") else None,
         "no display; run under xvfb-run -a"),
        ("time-to-dice", ns(events=a.events, threshold=0.80) if a.events else None, "give --events"),
    ]
    for verb, sub_args, why in plan:
        print(f"\n## {verb}")
        if sub_args is None:
            print(f"skipped: {why}")
            out[verb] = {"skipped": why}
            continue
        sub_args.quick, sub_args.device = q, ("cpu" if verb == "gui" and dev == "auto" else dev)
        out[verb] = _run_verb(verb, sub_args)
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    """Print the machine and the command, run the benchmark, print its tables, optionally write JSON."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    machine, cmd = machine_info(), command_line(args)
    print(format_machine(machine))
    print(f"command: {cmd}", flush=True)
    verb = args.bench_verb
    results = _run_all(args) if verb == "all" else _run_verb(verb, args)
    if args.json:
        doc = {"benchmark": verb, "machine": machine, "command": cmd,
               "date": datetime.now(UTC).isoformat(timespec="seconds"), "results": results}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
        print(f"results written to {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_dmd.bench VERB ...``: the same as ``napari-dmd bench VERB ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--memory-child"]:
        print(json.dumps(_memory_child(json.loads(argv[1]))))
        return 0
    from .cli import main as cli_main

    return cli_main(["bench", *argv])


if __name__ == "__main__":
    sys.exit(main())
