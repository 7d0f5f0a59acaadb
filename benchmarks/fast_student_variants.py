"""B2: `student-fast` with other logit upsampling and normalization, per validation volume, against the teacher.

Each variant is ``student-fast`` built with one option changed (``build_model(..., upsample=..., norm=...)``),
freshly initialised (weights do not change the time), and segments the dataset's validation volumes through
``Segmenter``, interleaved with the teacher in one process (the order turns every volume and round; round 0 warms
up). Prints median ms per volume and the speed-up over the teacher. ``--ceiling`` also prints what a logit map at
half (and quarter) resolution can reach at best: the ground truth one-hot, average-pooled, log, interpolated back
and argmaxed, against the ground truth (mean foreground Dice). Example::

    python benchmarks/fast_student_variants.py --datasets hippocampus3d chaos --threads 1 --repeats 2 --ceiling
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_specs import SPECS, dataset  # noqa: E402
from segmenter_arms import interleaved_seconds  # noqa: E402

from napari_dmd.models.presets import build_model  # noqa: E402
from napari_dmd.segment import Segmenter  # noqa: E402

VARIANTS: dict[str, tuple[str, dict]] = {
    "teacher": ("teacher", {}),
    "student-fast (bilinear, batch norm)": ("student-fast", {}),
    "upsample=shuffle": ("student-fast", {"upsample": "shuffle"}),
    "upsample=refine": ("student-fast", {"upsample": "refine"}),
    "norm=instance": ("student-fast", {"norm": "instance"}),
    "norm=group": ("student-fast", {"norm": "group"}),
    "student-fast-deep": ("student-fast-deep", {}),
}


def latency(ds: str, repeats: int, variants: dict[str, tuple[Any, dict]] | None = None) -> dict[str, float]:
    """Median seconds per validation volume of every variant (``variants``: name -> (preset or channels,
    ``build_model`` options), default :data:`VARIANTS`), interleaved through ``Segmenter`` in one process."""
    spec = SPECS[ds]
    _, val, classes = dataset(ds)
    segs = {}
    for name, (preset, opts) in (VARIANTS if variants is None else variants).items():
        torch.manual_seed(0)
        model = build_model(preset, spec.dims, classes, **opts).eval()
        segs[name] = Segmenter(model, classes, spec.dims, list(spec.patch), batch_size=spec.batch, name=name)
    times = interleaved_seconds(segs, [case.image for case in val], repeats)
    return {n: statistics.median(t) for n, t in times.items()}


def ceiling(ds: str, factor: int) -> float:
    """Mean foreground Dice of the ground truth through a logit map at 1/``factor`` resolution (docstring)."""
    spec = SPECS[ds]
    _, val, classes = dataset(ds)
    scores = []
    for case in val:
        lab = torch.as_tensor(np.asarray(case.label)).long()
        onehot = F.one_hot(lab, classes).movedim(-1, 0).float()
        onehot = onehot.movedim(1, 0) if spec.dims == 2 and lab.ndim == 3 else onehot[None]  # 2D: slice-wise
        size = onehot.shape[2:]
        flat: list[int] = []
        for n in reversed(size):
            flat += [0, (-n) % factor]
        pooled = (F.avg_pool2d if len(size) == 2 else F.avg_pool3d)(F.pad(onehot, flat), factor)
        mode = "bilinear" if len(size) == 2 else "trilinear"
        up = F.interpolate(torch.log(pooled + 1e-4), scale_factor=float(factor), mode=mode, align_corners=False)
        pred = up[(..., *[slice(0, n) for n in size])].argmax(1).reshape(lab.shape).numpy()
        truth = lab.numpy()
        for k in range(1, classes):
            s = (pred == k).sum() + (truth == k).sum()
            if s:
                scores.append((k, 2 * ((pred == k) & (truth == k)).sum() / s))
    per_class = [np.mean([d for c, d in scores if c == k]) for k in range(1, classes)]
    return float(100 * np.mean(per_class))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["hippocampus3d", "chaos"], choices=list(SPECS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ceiling", action="store_true", help="also the half/quarter-resolution ceiling of the Dice")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for ds in a.datasets:
        t = latency(ds, a.repeats)
        print(f"\n{ds}: ms per validation volume, {a.threads} thread(s), median of {a.repeats} round(s)")
        for n, s in t.items():
            print(f"  {n:38s} {1000 * s:8.1f} ms  {t['teacher'] / s:5.1f}x")
        if a.ceiling:
            print(f"  ceiling of a logit map at 1/2 resolution: {ceiling(ds, 2):.2f}, at 1/4: {ceiling(ds, 4):.2f}")


if __name__ == "__main__":
    main()
