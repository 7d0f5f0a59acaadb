"""B2: student vs teacher inference on the same volumes: speed-up and Dice retention, in one process.

    python benchmarks/bench_inference.py --teacher runs/teacher/best.pt --student runs/student/best.pt \
        --data ../shared/data/msd_hippocampus --cases 20

Both models segment the same labelled cases (the student's validation split when it records one) with the
same sliding-window settings; the script prints median seconds per case, the speed-up (target >= 8x) and
the student's mean Dice as a fraction of the teacher's (target >= 98 %).
"""

from __future__ import annotations

import argparse
import platform
import statistics

import numpy as np
import torch

from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.data.cases import load_msd_folder
from napari_dmd.metrics import dice_per_class
from napari_dmd.segment import Segmenter


def run(teacher: str, student: str, data: str, n_cases: int = 20, repeats: int = 1) -> dict[str, float]:
    cases, _ = load_msd_folder(data)
    names = load_checkpoint(student).get("val_cases") or []
    chosen = [c for c in cases if c.name in set(names) and c.has_label] or [c for c in cases if c.has_label]
    chosen = chosen[:n_cases]
    segs = {"teacher": Segmenter.from_checkpoint(teacher), "student": Segmenter.from_checkpoint(student)}
    res: dict[str, dict[str, float]] = {}
    for tag, seg in segs.items():
        seg(chosen[0].image)  # warm-up
        times, dices = [], []
        for c in chosen:
            best = float("inf")
            for _ in range(repeats):
                pred, dt = seg.timed(c.image)
                best = min(best, dt)
            times.append(best)
            dices.append(np.nanmean(dice_per_class(pred, c.label, seg.num_classes)))
        res[tag] = {"s_per_case": statistics.median(times), "dice": float(np.mean(dices)),
                    "params": seg.parameters}
    speedup = res["teacher"]["s_per_case"] / res["student"]["s_per_case"]
    retention = res["student"]["dice"] / res["teacher"]["dice"]
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{len(chosen)} cases")
    for tag, r in res.items():
        print(f"  {tag:<8} {r['params']:>10,} params  {1000 * r['s_per_case']:8.1f} ms/case  Dice {r['dice']:.4f}")
    print(f"  speed-up {speedup:.2f}x (target >= 8x), Dice retention {100 * retention:.1f} % (target >= 98 %)")
    return {"speedup": speedup, "retention": retention}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    run(a.teacher, a.student, a.data, a.cases, a.repeats)
