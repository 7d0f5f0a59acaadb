"""B2's side-by-side benchmarks: every preset through two ``Segmenter`` arms, per validation volume, one process.

Used by ``bench_onednn_convs.py`` and ``bench_one_window.py``; :func:`interleaved_seconds` (the timing loop) also by
``fast_students_report.py`` and ``fast_student_variants.py``. Each preset is freshly built (seed 0; weights do not
change the time) and handed to ``make_arms``, which returns the two arms, the ``new`` pipeline and the ``old``
one. The arms segment the dataset's validation volumes interleaved (the order turns every volume and round; round 0
warms up), their labels are checked equal, and each row holds the median ms per volume of both arms
(``ms_<arm>``), ``gain`` (old / new) and the speed-up over the teacher in each arm (``speedup_<arm>``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_specs import SPECS, dataset  # noqa: E402

from napari_dmd.models.presets import PRESETS, build_model  # noqa: E402
from napari_dmd.segment import Segmenter  # noqa: E402

#: (model, classes, dims, patch, batch, preset name) -> {arm name: Segmenter}
MakeArms = Callable[[torch.nn.Module, int, int, list[int], int, str], dict[str, Segmenter]]


def interleaved_seconds(calls: dict[Any, Callable[[np.ndarray], Any]], images: list[np.ndarray], repeats: int,
                        check: Callable[[dict[Any, Any]], None] | None = None,
                        shuffle: bool = False) -> dict[Any, list[float]]:
    """Seconds of every call on every image, ``repeats`` rounds after one uncounted warm-up round; the calls run
    interleaved (their order reverses every image and round; with ``shuffle``, a new random order each time, so no
    call always follows the same one or repeats itself back to back) under ``torch.inference_mode``. ``check``,
    when given, sees each image's outputs by key."""
    times: dict[Any, list[float]] = {k: [] for k in calls}
    rng = np.random.default_rng(0)
    for r in range(repeats + 1):
        for i, image in enumerate(images):
            order = list(calls) if (r + i) % 2 else list(calls)[::-1]
            if shuffle:
                order = [order[j] for j in rng.permutation(len(order))]
            outputs = {}
            with torch.inference_mode():
                for k in order:
                    t0 = time.perf_counter()
                    outputs[k] = calls[k](image)
                    if r:
                        times[k].append(time.perf_counter() - t0)
            if check is not None:
                check(outputs)
    return times


def measure(ds: str, repeats: int, make_arms: MakeArms, new: str, old: str) -> dict[str, dict]:
    """Rows by preset for dataset ``ds`` (module docstring); exits when the arms' labels differ."""
    spec = SPECS[ds]
    _, val, classes = dataset(ds)
    segs = {}
    for n in PRESETS:
        torch.manual_seed(0)
        model = build_model(n, spec.dims, classes).eval()
        segs[n] = make_arms(model, classes, spec.dims, list(spec.patch), spec.batch, n)

    def same_labels(labels: dict[Any, np.ndarray]) -> None:
        for n in segs:
            same = float(np.mean(labels[n, new] == labels[n, old]))
            if same < 0.9999:
                raise SystemExit(f"{ds} {n}: labels differ at {100 * (1 - same):.3f} % of voxels")

    calls = {(n, k): segs[n][k] for n in segs for k in (new, old)}
    times = interleaved_seconds(calls, [case.image for case in val], repeats, check=same_labels)
    med = {key: statistics.median(v) for key, v in times.items()}
    return {n: {f"ms_{old}": 1000 * med[n, old], f"ms_{new}": 1000 * med[n, new],
                "gain": med[n, old] / med[n, new],
                f"speedup_{old}": med["teacher", old] / med[n, old],
                f"speedup_{new}": med["teacher", new] / med[n, new]} for n in segs}


def main(description: str, make_arms: MakeArms, new: str, old: str, labels: tuple[str, str]) -> None:
    """The command line: ``--datasets``, ``--threads``, ``--repeats``, ``--json``, ``--busy``; prints a Markdown
    table per dataset with the columns ``labels`` (old arm, new arm)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--datasets", nargs="+", default=["hippocampus3d", "chaos"], choices=list(SPECS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--busy", type=int, default=0, help="busy-looping processes beside the measurement (a loaded "
                   "desktop)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    res = {"threads": a.threads, "repeats": a.repeats, "busy": a.busy, "torch": torch.__version__, "datasets": {}}
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    try:
        for ds in a.datasets:
            res["datasets"][ds] = measure(ds, a.repeats, make_arms, new, old)
    finally:
        for proc in busy:
            proc.kill()
    for ds, rows in res["datasets"].items():
        print(f"\n{ds}: {a.threads} thread(s), {a.busy} busy process(es), median ms per validation volume, "
              f"patch {SPECS[ds].patch}")
        print(f"| preset | {labels[0]} | {labels[1]} | gain | speed-up vs teacher (before -> now) |")
        print("|---|---:|---:|---:|---:|")
        for n, r in rows.items():
            print(f"| {n} | {r[f'ms_{old}']:.1f} | {r[f'ms_{new}']:.1f} | {r['gain']:.2f}x | "
                  f"{r[f'speedup_{old}']:.2f}x -> {r[f'speedup_{new}']:.2f}x |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
