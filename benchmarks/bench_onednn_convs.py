"""B2: convolutions routed to oneDNN (``napari_dmd.models.onednn``) vs PyTorch's own kernel choice, per volume.

Every preset (freshly built; weights do not change the time) segments the dataset's validation volumes through
``Segmenter`` twice, interleaved in one process: as shipped (batch norm folded, convolutions routed to oneDNN on
the CPU) and as before the routing (the same folded copy, PyTorch's choice: batch-1 convolutions with few
channels go to its slow reference kernel). Prints the median ms per volume, the ratio, and each preset's
speed-up over the teacher both ways; labels are checked equal. Example::

    python benchmarks/bench_onednn_convs.py --datasets hippocampus3d chaos --threads 1 --repeats 2 \
        --json docs/benchmarks/bench-b2-onednn.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_specs import SPECS, dataset  # noqa: E402

from napari_dmd.models.fold import fold_batchnorm  # noqa: E402
from napari_dmd.models.presets import PRESETS, build_model  # noqa: E402
from napari_dmd.segment import Segmenter  # noqa: E402


def _pair(name: str, dims: int, classes: int, patch: list[int], batch: int) -> dict[str, Segmenter]:
    torch.manual_seed(0)
    model = build_model(name, dims, classes).eval()
    folded = fold_batchnorm(model)  # what Segmenter ran before the routing: folded, PyTorch's kernels
    return {"onednn": Segmenter(model, classes, dims, patch, batch_size=batch, name=name),
            "pytorch": Segmenter(lambda x: folded(x), classes, dims, patch, batch_size=batch, name=name)}


def measure(ds: str, repeats: int) -> dict[str, dict]:
    spec = SPECS[ds]
    _, val, classes = dataset(ds)
    segs = {n: _pair(n, spec.dims, classes, list(spec.patch), spec.batch) for n in PRESETS}
    times = {(n, k): [] for n in segs for k in ("onednn", "pytorch")}
    for r in range(repeats + 1):  # round 0 warms up
        for i, case in enumerate(val):
            order = list(times) if (r + i) % 2 else list(times)[::-1]
            labels = {}
            with torch.inference_mode():
                for n, k in order:
                    t0 = time.perf_counter()
                    labels[n, k] = segs[n][k](case.image)
                    if r:
                        times[n, k].append(time.perf_counter() - t0)
            for n in segs:
                same = float(np.mean(labels[n, "onednn"] == labels[n, "pytorch"]))
                if same < 0.9999:
                    raise SystemExit(f"{ds} {n}: labels differ at {100 * (1 - same):.3f} % of voxels")
    med = {key: statistics.median(v) for key, v in times.items()}
    return {n: {"ms_pytorch": 1000 * med[n, "pytorch"], "ms_onednn": 1000 * med[n, "onednn"],
                "gain": med[n, "pytorch"] / med[n, "onednn"],
                "speedup_pytorch": med["teacher", "pytorch"] / med[n, "pytorch"],
                "speedup_onednn": med["teacher", "onednn"] / med[n, "onednn"]} for n in segs}


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
        print("| preset | PyTorch's kernels | oneDNN routed | gain | speed-up vs teacher (before -> now) |")
        print("|---|---:|---:|---:|---:|")
        for n, r in rows.items():
            print(f"| {n} | {r['ms_pytorch']:.1f} | {r['ms_onednn']:.1f} | {r['gain']:.2f}x | "
                  f"{r['speedup_pytorch']:.2f}x -> {r['speedup_onednn']:.2f}x |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
