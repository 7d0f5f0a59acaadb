"""B2 (``napari-dmd bench inference``): teacher vs student checkpoints on the same labelled cases.

Both models segment the same cases (the synthetic phantom, or an MSD folder, the student's validation split first)
in one process with a warm-up and alternating order; it reports the speed-up (total teacher time / total student
time) and the student's Dice retention.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from .machine import _mean_dice, _ms, _table


def _inference_cases(data: str, student_ckpt: dict[str, Any], n: int, dims: int) -> tuple[list[Any], str]:
    """Labelled cases: the synthetic phantom, or an MSD folder (the student's validation split first)."""
    if data == "phantom":
        from ..demo import phantom_cases

        return phantom_cases(n, dims, seed=1), f"synthetic {dims}D phantom (seed 1)"
    from ..data.cases import load_folder_pairs, load_msd_folder

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
    from ..checkpoint import load_checkpoint
    from ..segment import Segmenter

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


#: nnU-Net v2's 3d_fullres PlainConvUNet for MSD hippocampus, rebuilt from its plan: features (32, 64, 128, 256),
#: 4 stages, 2 convs per stage, instance norm, LeakyReLU, patch 40x56x40 (untrained: latency only).
NNUNET = "nnunet-3d-hippocampus"
NNUNET_HIPPOCAMPUS = {"channels": (32, 64, 128, 256), "norm": "instance", "patch": (40, 56, 40)}
#: Preset timing setups: (spatial dims, volume shape, patch): a hippocampus-sized 3D volume and CHAOS-sized slices.
PRESET_SETUPS = {"3d": (3, (48, 64, 48), (40, 56, 40)), "2d": (2, (8, 256, 256), (128, 128))}


def _flops(model: Any, shape: tuple[int, ...]) -> int:
    """Floating-point operations of one forward pass on a zero input (torch's FlopCounterMode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(*shape))
    return int(counter.get_total_flops())


def bench_presets(presets: str = "all", repeats: int = 3, quick: bool = False, classes: int = 3,
                  threads: list[int] | None = None) -> dict[str, Any]:
    """B2 --presets: per-volume latency of freshly built (untrained) presets and an nnU-Net-sized 3D net.

    Every model segments the same random volume through :class:`Segmenter` (batch norm folded, inference mode,
    4 windows per call), interleaved with alternating order, at 1 thread and at all cores; speed-up = teacher's
    median / the model's median.
    """
    import os

    import numpy as np
    import torch

    from ..models.presets import PRESETS, build_model
    from ..models.unet import UNet
    from ..segment import Segmenter

    names = list(PRESETS) if presets == "all" else [p.strip() for p in presets.split(",") if p.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ValueError(f"--presets: unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    if "teacher" not in names:
        names.insert(0, "teacher")
    counts = threads or sorted({1, os.cpu_count() or 1})
    before = torch.get_num_threads()
    results: dict[str, Any] = {"settings": {"repeats": repeats, "threads": counts, "classes": classes,
                                            "setups": {k: {"volume": v[1], "patch": v[2]}
                                                       for k, v in PRESET_SETUPS.items()}}, "setups": {}}
    try:
        for setup, (dims, shape, patch) in PRESET_SETUPS.items():
            if quick:
                patch = (32,) * dims  # deep enough for the teacher's instance norm (2 voxels at the bottom)
                shape = (2, 64, 64) if dims == 2 else patch
            torch.manual_seed(0)
            models = {n: build_model(n, dims, classes).eval() for n in names}
            if dims == 3:
                nn_cfg = NNUNET_HIPPOCAMPUS
                models[NNUNET] = UNet(3, 1, classes, nn_cfg["channels"], norm="instance").eval()
            segs = {n: Segmenter(m, classes, dims, list(patch), normalization="none", name=n)
                    for n, m in models.items()}
            image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            rows: dict[str, Any] = {n: {"params": segs[n].parameters, "flops_per_patch": _flops(m, (1, 1, *patch))}
                                    for n, m in models.items()}
            for t in counts:
                torch.set_num_threads(t)
                times: dict[str, list[float]] = {n: [] for n in segs}
                order = list(segs)
                for r in range(repeats + 1):  # round 0 is the warm-up
                    for n in order if r % 2 else order[::-1]:
                        _, dt = segs[n].timed(image)
                        if r:
                            times[n].append(dt)
                for n in segs:
                    rows[n][f"median_s_{t}t"] = statistics.median(times[n])
                for n in segs:
                    rows[n][f"speedup_{t}t"] = rows["teacher"][f"median_s_{t}t"] / rows[n][f"median_s_{t}t"]
                    if NNUNET in rows:
                        rows[n][f"vs_nnunet_{t}t"] = rows[NNUNET][f"median_s_{t}t"] / rows[n][f"median_s_{t}t"]
            results["setups"][setup] = {"volume": list(shape), "patch": list(patch), "models": rows}
            heads = ["model", "parameters", "GFLOP/patch"]
            for t in counts:
                heads += [f"ms ({t} thr)", f"speed-up ({t} thr)"] + (["vs nnU-Net"] if NNUNET in rows else [])
            table = []
            for n, r in rows.items():
                row = [n, f"{r['params']:,}", f"{r['flops_per_patch'] / 1e9:.3f}"]
                for t in counts:
                    row += [_ms(r[f"median_s_{t}t"]), f"{r[f'speedup_{t}t']:.2f}"]
                    row += [f"{r[f'vs_nnunet_{t}t']:.2f}"] if NNUNET in rows else []
                table.append(row)
            print(f"B2 presets, {setup}: volume {'x'.join(map(str, shape))}, patch {'x'.join(map(str, patch))}, "
                  f"untrained models, median of {repeats} interleaved run(s) per thread count")
            print(_table(heads, table))
    finally:
        torch.set_num_threads(before)
    return results
