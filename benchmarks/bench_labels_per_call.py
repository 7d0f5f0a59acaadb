"""B2: labels taken per model call in its worker, and the cheaper z-score, per volume.

Two changes to what surrounds the network, each measured side by side in one process:

* per volume (``--datasets``): every preset segments the validation volumes through two ``Segmenter`` arms,
  "per call" (the product: where images fit one window, each call's argmax is taken in the worker that ran it,
  while its logits are in the cache, and no logits are gathered) and "gathered" (the logits of every call
  concatenated, then one argmax over the volume, as before); labels checked equal;
* ``--normalize``: ``normalize(image, "zscore")`` now (two passes in place; the outlier band from at most 2^17
  voxels) against the code before (``np.std`` in float64 and new arrays; the band from up to 4 M voxels), per
  validation volume, with the largest difference of the outputs.

Run it as the product runs::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_labels_per_call.py --datasets chaos hippocampus3d \
        --threads 2 --repeats 3 --json docs/benchmarks/bench-b2-labels-per-call.json
    python benchmarks/bench_labels_per_call.py --normalize
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_specs import dataset  # noqa: E402
from segmenter_arms import main  # noqa: E402

from napari_dmd import inference  # noqa: E402
from napari_dmd.data.transforms import normalize  # noqa: E402
from napari_dmd.segment import Segmenter  # noqa: E402


class GatheredSegmenter(Segmenter):
    """Labels as before: every call's logits gathered into one tensor, then one argmax."""

    def __call__(self, image: np.ndarray, **kw: Any) -> np.ndarray:
        def how(model: Any, x: np.ndarray, patch: list[int], **k: Any) -> np.ndarray:
            logits = inference._sliding_window_logits(model, x, patch, **k)
            return inference.class_argmax(logits.numpy(), np.uint8, k["workers"])

        return self._predict(how, image, **kw)


def _pair(model: torch.nn.Module, classes: int, dims: int, patch: list[int], batch: int,
          name: str) -> dict[str, Segmenter]:
    return {"per_call": Segmenter(model, classes, dims, patch, name=name),
            "gathered": GatheredSegmenter(model, classes, dims, patch, name=name)}


def _old_normalize(image: np.ndarray) -> np.ndarray:
    """``normalize(image, "zscore")`` as it was before 2026-12-06 (afternoon)."""
    img = np.array(image, dtype=np.float32, copy=True)
    flat = img.reshape(-1)
    if flat.size > 4_000_000:
        flat = flat[:: flat.size // 4_000_000]
    n = flat.size
    k = max(1, int(np.ceil(n * 1e-3)))
    values = img
    if n >= 2 * k + 2:
        part = np.partition(flat, (k, n - 1 - k))
        lo, hi = float(part[k]), float(part[n - 1 - k])
        width = hi - lo
        if np.isfinite(width) and width > 0:
            lo, hi = lo - 4 * width, hi + 4 * width
            if not (img.min() >= lo and img.max() <= hi):
                values = img[(img >= lo) & (img <= hi)]
                np.clip(img, lo, hi, out=img)
    mean = float(np.mean(values, dtype=np.float64))
    std = float(np.std(values, dtype=np.float64))
    out = img - np.float32(mean)
    if std > 1e-8:
        out *= np.float32(1.0 / std)
    else:
        out[...] = 0.0
    return out


def normalize_rows(repeats: int = 20) -> None:
    """Print the median ms of both z-scores per validation volume, interleaved, and their largest difference."""
    print("| dataset | volume | before, ms | now, ms | ratio | largest difference |")
    print("|---|---|---:|---:|---:|---:|")
    for ds in ("chaos", "hippocampus3d"):
        _, val, _ = dataset(ds)
        for case in val[:3]:
            image = case.image
            times: dict[str, list[float]] = {"before": [], "now": []}
            for r in range(repeats + 1):
                for key, fn in (("before", _old_normalize), ("now", normalize))[:: 1 if r % 2 else -1]:
                    t0 = time.perf_counter()
                    fn(image)
                    if r:
                        times[key].append(time.perf_counter() - t0)
            before, now = (1000 * statistics.median(times[k]) for k in ("before", "now"))
            diff = float(np.abs(_old_normalize(image) - normalize(image)).max())
            print(f"| {ds} | {'x'.join(map(str, image.shape))} | {before:.2f} | {now:.2f} | {before / now:.2f}x | "
                  f"{diff:.1e} |")


if __name__ == "__main__":
    if "--normalize" in sys.argv:
        normalize_rows()
    else:
        main(__doc__.splitlines()[0], _pair, "per_call", "gathered", ("gathered, ms", "per call, ms"))
