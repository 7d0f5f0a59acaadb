"""What head supervision (DMD's default since 2026-12-05) costs per training step, side by side in one process.

Two engines with the same data, teacher and student — DMD as published (``head_supervision`` 0) and DMD's
default (1) — take whole engine steps (teacher forward, student forward/backward, optimiser) in alternating order;
the script prints the median step of each and their ratio::

    python benchmarks/bench_head_supervision.py --threads 1 --repeats 15 --json bench-head-supervision.json

Phantom data, random-weight ``teacher`` / ``student`` presets (time does not depend on the weights); 2D: patch
128x128, batch 4 (the ablation's CHAOS jobs); 3D: 40x56x40, batch 2 (hippocampus 3D).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from napari_dmd.bench.machine import NUM_CLASSES, _interleaved, _stop_loader
from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import Distiller
from napari_dmd.models.presets import build_model
from napari_dmd.teachers import ModelTeacher

SETUPS = {2: ([128, 128], 4), 3: ([40, 56, 40], 2)}


def measure(dims: int, repeats: int) -> dict:
    """Median engine step (s) with head supervision 0 and 1, interleaved, and their ratio."""
    patch, batch = SETUPS[dims]
    torch.manual_seed(0)
    teacher = ModelTeacher(build_model("teacher", dims, NUM_CLASSES), NUM_CLASSES, dims)
    cases = phantom_cases(4, dims)
    engines = {}
    with tempfile.TemporaryDirectory(prefix="napari-dmd-hs-") as tmp:
        for hs in (0.0, 1.0):
            cfg = TrainConfig(method="dmd", model="student", iterations=10_000, batch_size=batch, patch_size=patch,
                              augment=False, val_interval=10_000, device="cpu", head_supervision=hs)
            engines[hs] = Distiller(cfg, cases, val_cases=[], teacher=teacher, output_dir=f"{tmp}/hs{hs:g}")
        try:
            times = _interleaved({"published": engines[0.0]._step, "with_heads": engines[1.0]._step}, repeats,
                                 engines[0.0].device)
        finally:
            for d in engines.values():
                _stop_loader(d)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"dims": dims, "patch": patch, "batch": batch, "repeats": repeats, **{f"{k}_s": v for k, v in med.items()},
            "ratio_with_heads_over_published": med["with_heads"] / med["published"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for dims in a.dims:
        r = measure(dims, a.repeats)
        rows.append(r)
        print(f"{dims}D patch {r['patch']} x {r['batch']}: DMD as published {1000 * r['published_s']:.0f} ms, "
              f"with heads {1000 * r['with_heads_s']:.0f} ms per step (median of {a.repeats}, interleaved): "
              f"ratio {r['ratio_with_heads_over_published']:.3f}", flush=True)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"benchmark": "head supervision step cost", "threads": a.threads,
                       "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
