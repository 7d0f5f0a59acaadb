"""Per-class Dice + HD95: our metrics vs MONAI (compute_dice, compute_hausdorff_distance) on hippocampus cases.

Each reference label map, shifted by one voxel and given one false voxel, is scored by both; prints the time per
case (median of 20, one thread) and the largest HD95 difference. Run::

    OMP_NUM_THREADS=1 python benchmarks/bench_metrics_vs_monai.py
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from napari_dmd.data.cases import load_msd_folder
from napari_dmd.metrics import dice_per_class, hd95_per_class

DATA = Path(os.environ.get("NAPARI_DMD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def one_hot(a: np.ndarray, classes: int = 3) -> torch.Tensor:
    """(1, C, *shape) float one-hot, MONAI's layout."""
    return torch.nn.functional.one_hot(torch.from_numpy(a), classes).movedim(-1, 0)[None].float()


def main() -> None:
    torch.set_num_threads(1)
    cases, _ = load_msd_folder(DATA / "msd_hippocampus", require_labels=True)
    rng = np.random.default_rng(0)
    own, mon, diff = [], [], []
    for c in cases[:20]:
        ref = c.label.astype(np.int64)
        pred = ref.copy()
        pred[tuple(rng.integers(0, s) for s in ref.shape)] = 1  # one false voxel
        pred = np.roll(pred, 1, axis=1)
        t = time.perf_counter()
        ours = hd95_per_class(pred, ref, 3, spacing=c.spacing)
        dice_per_class(pred, ref, 3)
        own.append(time.perf_counter() - t)
        t = time.perf_counter()
        theirs = compute_hausdorff_distance(one_hot(pred), one_hot(ref), include_background=False, percentile=95,
                                            spacing=list(c.spacing))
        compute_dice(one_hot(pred), one_hot(ref), include_background=False)
        mon.append(time.perf_counter() - t)
        diff.append(float(np.abs(ours - theirs.numpy()[0]).max()))
    print(f"own {1000 * statistics.median(own):.1f} ms, MONAI {1000 * statistics.median(mon):.1f} ms per case "
          f"(median of {len(own)}); largest HD95 difference {max(diff):.2e} mm")


if __name__ == "__main__":
    main()
