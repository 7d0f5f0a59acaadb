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
