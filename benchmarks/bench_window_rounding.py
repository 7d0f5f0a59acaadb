"""Sliding windows rounded up to a multiple of the model's stride: same work per window, fewer windows.

    OMP_NUM_THREADS=1 python benchmarks/bench_window_rounding.py

The default student (stride 32) pads every window to a multiple of 32, so a 16x48x48 window costs what a
32x64x64 one does. Times the student per volume with the checkpoint's window and with that window rounded up,
interleaved in one process (median of 5 after a warm-up), and prints the ratio and how many labels differ.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from napari_dmd.models.presets import build_model
from napari_dmd.segment import Segmenter, stride_window

CASES = {"phantom 3D 24x64x64, window 16x48x48": ((24, 64, 64), [16, 48, 48]),
         "hippocampus-like 36x50x35, window 40x56x40": ((36, 50, 35), [40, 56, 40]),
         "large 3D 96x128x128, window 40x56x40": ((96, 128, 128), [40, 56, 40])}


def main() -> None:
    torch.manual_seed(0)
    model = build_model("student", 3, 4).eval()
    rng = np.random.default_rng(0)
    for name, (shape, window) in CASES.items():
        image = rng.normal(size=shape).astype(np.float32)
        rounded = stride_window(window, model.total_stride)
        segs = {"as trained": Segmenter(model, 4, 3, window), "rounded": Segmenter(model, 4, 3, rounded)}
        labels = {k: s(image) for k, s in segs.items()}  # warm-up
        times: dict[str, list[float]] = {k: [] for k in segs}
        for r in range(5):
            for k in (segs if r % 2 == 0 else reversed(list(segs))):
                t0 = time.perf_counter()
                segs[k](image)
                times[k].append(time.perf_counter() - t0)
        a, b = (statistics.median(times[k]) for k in segs)
        differ = float((labels["as trained"] != labels["rounded"]).mean())
        print(f"{name}: {1000 * a:.0f} ms -> {1000 * b:.0f} ms with {'x'.join(map(str, rounded))} windows, "
              f"{a / b:.2f}x; labels differ at {100 * differ:.2f} % of voxels (untrained model)")


if __name__ == "__main__":
    main()
