"""B2: logits of reduced-resolution students upsampled by per-axis matrix products, not ``F.interpolate``.

``napari_dmd.models.linear_upsample`` gives the same values as ``F.interpolate(..., align_corners=False)`` by one
small matrix product per axis. Two measurements, each side by side in one process:

* per volume (``--datasets``): every preset segments the validation volumes through two ``Segmenter`` arms,
  "matmul" (the product) and "interpolate" (a copy of the same model whose logit upsampler calls
  ``F.interpolate`` as before, for the whole window and for the image's region of it); labels checked equal;
* per operation (``--ops``): the upsampling alone, forward and forward + backward (a training step's share), on
  the logits the stem students make of their windows;
* per training pass (``--train``): a student's forward + backward on a training batch, both ways;
* per DMD step (``--step``): ``napari-dmd bench step``'s whole DMD step (the teacher's forward, the student's forward
  and backward, every loss) with the multi-scale losses' ``upsample_like`` by matrix products or by
  ``F.interpolate``, alternating, 3D hippocampus-sized and 2D CHAOS-sized batches, one thread.

Run it as the product runs::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_linear_upsample.py --datasets chaos hippocampus3d \
        --threads 2 --repeats 3 --json docs/benchmarks/bench-b2-linear-upsample.json
    python benchmarks/bench_linear_upsample.py --ops
    python benchmarks/bench_linear_upsample.py --train
    python benchmarks/bench_linear_upsample.py --step
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segmenter_arms import main  # noqa: E402

from napari_dmd.models.blocks import LogitUpsampler  # noqa: E402
from napari_dmd.models.linear_upsample import linear_upsample  # noqa: E402
from napari_dmd.models.presets import build_model  # noqa: E402
from napari_dmd.models.unet import UNet  # noqa: E402
from napari_dmd.segment import Segmenter  # noqa: E402


class InterpolatingUpsampler(LogitUpsampler):
    """The upsampler as it was: ``F.interpolate`` of the whole grid, or of the source range a region reads."""

    def _interpolate(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=float(self.factor), mode=self.interp, align_corners=False)

    def forward_region(self, x: torch.Tensor, image: torch.Tensor, region: Sequence[tuple[int, int]]) -> torch.Tensor:
        if self.factor == 1 or self.mode != "bilinear":
            return super().forward_region(x, image, region)
        f = self.factor
        src = [(max(0, math.floor((a + 0.5) / f - 0.5)), min(int(n), math.floor((b - 0.5) / f - 0.5) + 2))
               for (a, b), n in zip(region, x.shape[2:])]
        y = self._interpolate(x[(..., *[slice(lo, hi) for lo, hi in src])])
        return y[(..., *[slice(a - f * lo, b - f * lo) for (a, b), (lo, _) in zip(region, src)])]


def _pair(model: torch.nn.Module, classes: int, dims: int, patch: list[int], batch: int,
          name: str) -> dict[str, Segmenter]:
    old = copy.deepcopy(model)
    if isinstance(old, UNet):
        old.logit_upsampler.__class__ = InterpolatingUpsampler
    return {"matmul": Segmenter(model, classes, dims, patch, name=name),
            "interpolate": Segmenter(old, classes, dims, patch, name=name)}


def _ms(fn, repeats: int = 20) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def ops() -> None:
    """Print the upsampling's own time, both ways, forward and forward + backward, on one thread (as a window
    worker and a training step on the CPU run it by default)."""
    torch.set_num_threads(1)
    cases = {"student-tiny, 2D, 64 windows of 128x128 (factor 4)": ((64, 5, 32, 32), 4),
             "student, 2D, 16 windows of 128x128 (factor 2)": ((16, 5, 64, 64), 2),
             "student, 3D, one 40x56x40 window (factor 2)": ((1, 3, 20, 28, 20), 2),
             "student, 3D training batch, 2 x 40x56x40 (factor 2)": ((2, 3, 20, 28, 20), 2)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median ms of 20")
    print("| logits | interpolate | matmul | ratio | fwd+bwd interpolate | fwd+bwd matmul | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, (shape, f) in cases.items():
        a, b, c, d = _op_ms(shape, f)
        print(f"| {label} | {a:.2f} | {b:.2f} | {a / b:.2f}x | {c:.2f} | {d:.2f} | {c / d:.2f}x |")


def _op_ms(shape: tuple[int, ...], f: int) -> tuple[float, float, float, float]:
    """Median ms of interpolate and matmul, forward (inference mode), then forward + backward."""
    mode = "trilinear" if len(shape) == 5 else "bilinear"
    x = torch.randn(*shape)
    with torch.inference_mode():
        a = _ms(lambda: F.interpolate(x, scale_factor=float(f), mode=mode, align_corners=False))
        b = _ms(lambda: linear_upsample(x, f))
    xg = x.clone().requires_grad_()
    c = _ms(lambda: F.interpolate(xg, scale_factor=float(f), mode=mode, align_corners=False).square().sum()
            .backward())
    d = _ms(lambda: linear_upsample(xg, f).square().sum().backward())
    return a, b, c, d


def train(repeats: int = 10) -> None:
    """Print a student's forward + backward (training mode) on a training batch, both ways, one thread."""
    torch.set_num_threads(1)
    print("| preset | batch | interpolate, ms | matmul, ms | gain |")
    print("|---|---|---:|---:|---:|")
    for name, dims, shape in (("student", 3, (2, 1, 40, 56, 40)), ("student", 2, (4, 1, 128, 128)),
                              ("student-tiny", 2, (4, 1, 128, 128))):
        torch.manual_seed(0)
        new = build_model(name, dims, 3).train()
        old = copy.deepcopy(new)
        old.logit_upsampler.__class__ = InterpolatingUpsampler
        x = torch.randn(*shape)
        times: dict[str, list[float]] = {"new": [], "old": []}
        for r in range(repeats + 1):
            for key, net in (("new", new), ("old", old))[:: 1 if r % 2 else -1]:
                t0 = time.perf_counter()
                net(x).square().mean().backward()
                if r:
                    times[key].append(time.perf_counter() - t0)
        o, n = (1000 * statistics.median(times[k]) for k in ("old", "new"))
        print(f"| {name} ({dims}D) | {'x'.join(map(str, shape))} | {o:.1f} | {n:.1f} | {o / n:.2f}x |")


def _interpolated_like(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``distill.scales.upsample_like`` as it was: ``F.interpolate`` to ``size``."""
    size = tuple(int(v) for v in size)
    if tuple(logits.shape[2:]) == size:
        return logits
    mode = "trilinear" if len(size) == 3 else "bilinear"
    return F.interpolate(logits.float(), size=size, mode=mode, align_corners=False)


def step(rounds: int = 4) -> None:
    """Print the median DMD step both ways (``bench_step``'s own median of 5 per round, rounds alternating)."""
    from napari_dmd.bench.step import bench_step
    from napari_dmd.distill import losses, scales

    torch.set_num_threads(1)
    matmul = scales.upsample_like
    print("| DMD step (1 thread) | F.interpolate, ms | matrix products, ms | gain |")
    print("|---|---:|---:|---:|")
    for dims, patch, batch in ((3, [40, 56, 40], 2), (2, [128, 128], 4)):
        times: dict[str, list[float]] = {"old": [], "new": []}
        try:
            for r in range(rounds):
                for key, fn in (("old", _interpolated_like), ("new", matmul))[:: 1 if r % 2 else -1]:
                    losses.upsample_like = scales.upsample_like = fn
                    with contextlib.redirect_stdout(io.StringIO()):  # bench_step prints its own table
                        res = bench_step(dims=dims, patch=patch, batch=batch, repeats=5)
                    times[key].append(res["dmd_step_s"])
        finally:
            losses.upsample_like = scales.upsample_like = matmul
        o, n = (1000 * statistics.median(times[k]) for k in ("old", "new"))
        print(f"| {dims}D, batch {batch} x {'x'.join(map(str, patch))} | {o:.1f} | {n:.1f} | {o / n:.2f}x |")


if __name__ == "__main__":
    if "--step" in sys.argv:
        step()
    elif "--train" in sys.argv:
        train()
    elif "--ops" in sys.argv:
        ops()
    else:
        main(__doc__.splitlines()[0], _pair, "matmul", "interpolate", ("interpolate, ms", "matmul, ms"))
