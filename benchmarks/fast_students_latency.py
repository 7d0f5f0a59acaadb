"""Design search for the fast students: per-volume sliding-window latency of candidate U-Nets (untrained).

Every candidate segments the same random volume in one process, interleaved, median of ``--repeats`` runs;
batch-norm candidates are folded first (as Segmenter does). Prints parameters, FLOPs per patch and the speed-up
against ``teacher``. Example::

    python benchmarks/fast_students_latency.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from napari_dmd.export import count_flops
from napari_dmd.inference import sliding_window_predict
from napari_dmd.models.fold import fold_batchnorm
from napari_dmd.models.presets import count_parameters
from napari_dmd.models.unet import UNet

S, T = (8, 16, 24, 40, 64), (4, 8, 16, 24, 32)
CANDIDATES: dict[str, dict] = {
    "teacher": dict(channels=(16, 32, 64, 128, 256)),
    "student": dict(channels=S),
    "tiny-classic": dict(channels=T),
    "S bn": dict(channels=S, norm="batch"),
    "S bn stem2": dict(channels=S, norm="batch", stem=2),
    "S bn stem2 learned": dict(channels=S, norm="batch", stem=2, upsample="learned"),
    "S bn stem2 4lv": dict(channels=(8, 16, 24, 40), norm="batch", stem=2),
    "S16 bn stem2": dict(channels=(16, 24, 32, 48, 64), norm="batch", stem=2),
    "S12 bn stem2 4lv": dict(channels=(12, 16, 24, 32), norm="batch", stem=2),
    "S16 bn stem2 ds": dict(channels=(16, 24, 32, 48, 64), norm="batch", stem=2, block="dsconv"),
    "S8 bn stem4": dict(channels=(16, 24, 32, 48), norm="batch", stem=4),
    "S16 bn stem2 4lv": dict(channels=(16, 24, 32, 48), norm="batch", stem=2),
    "S16w bn stem2 4lv": dict(channels=(16, 32, 48, 64), norm="batch", stem=2),
    "T8 bn stem2 4lv": dict(channels=(8, 12, 16, 24), norm="batch", stem=2),
    "thin-top 4/16 bn": dict(channels=(4, 16, 24, 40), norm="batch"),
    "thin-top 6/16 bn": dict(channels=(6, 16, 24, 40), norm="batch"),
    "thin-top 4/12 bn": dict(channels=(4, 12, 16, 24), norm="batch"),
    "T bn stem2": dict(channels=T, norm="batch", stem=2),
    "T bn stem2 4lv": dict(channels=(4, 8, 16, 24), norm="batch", stem=2),
    "T8 bn stem2 4lv ds": dict(channels=(8, 12, 16, 24), norm="batch", stem=2, block="dsconv"),
    "T8 bn stem2 3lv": dict(channels=(8, 12, 16), norm="batch", stem=2),
}
SETUPS = {"3d": (3, (48, 64, 48), (40, 56, 40), 2), "2d": (2, (8, 256, 256), (128, 128), 8)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--setups", default="3d,2d")
    p.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    names = [n for n in CANDIDATES if not a.only or n in a.only.split(",")]
    for setup in a.setups.split(","):
        dims, shape, patch, bs = SETUPS[setup]
        image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        models = {}
        for n in names:
            torch.manual_seed(0)
            net = UNet(dims, 1, 3, **CANDIDATES[n]).eval()
            models[n] = (net, fold_batchnorm(net))
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(a.repeats + 1):
            for n in names if r % 2 else reversed(names):
                t0 = time.perf_counter()
                sliding_window_predict(models[n][1], image, patch, batch_size=bs)
                if r:
                    times[n].append(time.perf_counter() - t0)
        base = statistics.median(times["teacher"]) if "teacher" in times else float("nan")
        print(f"\n{setup}: volume {shape}, patch {patch}, {a.threads} thread(s), median of {a.repeats}")
        print(f"{'candidate':22s} {'params':>9s} {'GFLOP/patch':>11s} {'ms':>8s} {'speed-up':>8s}")
        for n in names:
            net = models[n][0]
            med = statistics.median(times[n])
            fl = count_flops(net, (1, 1, *patch)) or 0
            print(f"{n:22s} {count_parameters(net):9,d} {fl / 1e9:11.3f} {1000 * med:8.1f} {base / med:8.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
