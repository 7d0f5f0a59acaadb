"""B2: one window per image without MONAI's blending, and the class argmax by a running maximum, per volume.

When every image (a volume, or each slice of a 2D model's volume) fits one window, ``napari_dmd.inference`` now
pads, runs and crops it directly instead of through MONAI's sliding window (whose Gaussian blending of a single
window divides the weighted logits by the same weights), and labels come from ``class_argmax`` instead of NumPy's
argmax along the first axis. Every preset (freshly built; weights do not change the time) segments the dataset's
validation volumes through ``Segmenter`` as shipped and through the previous pipeline (MONAI + NumPy's argmax, the
same oneDNN routing, a copy written out here), interleaved in one process; labels are checked equal. Prints the
median ms per volume, the gain and each preset's speed-up over the teacher both ways. Example::

    python benchmarks/bench_one_window.py --datasets hippocampus3d chaos --threads 1 --repeats 2 \
        --json docs/benchmarks/bench-b2-one-window.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_specs import SPECS, dataset  # noqa: E402

from napari_dmd.inference import SIGMA_SCALE  # noqa: E402
from napari_dmd.models.onednn import onednn_convs  # noqa: E402
from napari_dmd.models.presets import PRESETS, build_model  # noqa: E402
from napari_dmd.segment import Segmenter  # noqa: E402


def previous_labels(model: Any, image: np.ndarray, patch: Any, *, batch_size: int = 4, overlap: float = 0.5,
                    device: str = "cpu", **_: Any) -> np.ndarray:
    """The pipeline before this change (CPU): MONAI's sliding window for every image, NumPy's argmax."""
    patch = tuple(int(p) for p in patch)
    slicewise = len(patch) == 2 and image.ndim == 3
    x = torch.from_numpy(image)
    x = x[:, None] if slicewise else x[None, None]
    route = onednn_convs(model) if isinstance(model, torch.nn.Module) else contextlib.nullcontext()
    with torch.inference_mode(), route:
        logits = sliding_window_inference(x, patch, batch_size, model, overlap=overlap, mode="gaussian",
                                          sigma_scale=SIGMA_SCALE, padding_mode="constant", cval=0.0,
                                          sw_device=device, device=device)
    logits = logits.transpose(0, 1) if slicewise else logits[0]
    return logits.numpy().argmax(0).astype(np.uint8)


class PreviousSegmenter(Segmenter):
    """``Segmenter`` with the previous labels pipeline (normalization, folding and checks unchanged)."""

    def __call__(self, image: np.ndarray, **kw: Any) -> np.ndarray:
        return self._predict(previous_labels, image, **kw).astype(np.uint8, copy=False)


def measure(ds: str, repeats: int) -> dict[str, dict]:
    spec = SPECS[ds]
    _, val, classes = dataset(ds)
    segs = {}
    for n in PRESETS:
        torch.manual_seed(0)
        model = build_model(n, spec.dims, classes).eval()
        args = (model, classes, spec.dims, list(spec.patch))
        segs[n] = {"now": Segmenter(*args, batch_size=spec.batch, name=n),
                   "before": PreviousSegmenter(*args, batch_size=spec.batch, name=n)}
    times = {(n, k): [] for n in segs for k in ("now", "before")}
    for r in range(repeats + 1):  # round 0 warms up
        for i, case in enumerate(val):
            order = list(times) if (r + i) % 2 else list(times)[::-1]
            labels = {}
            for n, k in order:
                t0 = time.perf_counter()
                labels[n, k] = segs[n][k](case.image)
                if r:
                    times[n, k].append(time.perf_counter() - t0)
            for n in segs:
                same = float(np.mean(labels[n, "now"] == labels[n, "before"]))
                if same < 0.9999:
                    raise SystemExit(f"{ds} {n}: labels differ at {100 * (1 - same):.3f} % of voxels")
    med = {key: statistics.median(v) for key, v in times.items()}
    return {n: {"ms_before": 1000 * med[n, "before"], "ms_now": 1000 * med[n, "now"],
                "gain": med[n, "before"] / med[n, "now"],
                "speedup_before": med["teacher", "before"] / med[n, "before"],
                "speedup_now": med["teacher", "now"] / med[n, "now"]} for n in segs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["hippocampus3d", "chaos"], choices=list(SPECS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default=None, help="write the figures here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    res = {"threads": a.threads, "repeats": a.repeats, "torch": torch.__version__, "datasets": {}}
    for ds in a.datasets:
        rows = measure(ds, a.repeats)
        res["datasets"][ds] = rows
        print(f"\n{ds}: {a.threads} thread(s), median ms per validation volume, patch {SPECS[ds].patch}")
        print("| preset | before (MONAI, NumPy argmax) | now | gain | speed-up vs teacher (before -> now) |")
        print("|---|---:|---:|---:|---:|")
        for n, r in rows.items():
            print(f"| {n} | {r['ms_before']:.1f} | {r['ms_now']:.1f} | {r['gain']:.2f}x | "
                  f"{r['speedup_before']:.2f}x -> {r['speedup_now']:.2f}x |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
