"""B5: peak memory and step time of distillation, 2D and 3D, and their growth with patch size.

Each configuration runs in a fresh subprocess (so peak RSS is its own): a teacher preset, the student
preset, DMD, `--steps` steps after one warm-up. Prints peak RSS (and CUDA max allocated when a GPU is used)
and the median step time, with ratios against the smallest patch of the same dimensionality.

    python benchmarks/bench_memory.py --steps 5
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {2: [[64, 64], [128, 128], [256, 256]], 3: [[16, 32, 32], [32, 48, 32], [48, 64, 64]]}
DEFAULT = {2: [128, 128], 3: [32, 48, 32]}


def child(dims: int, patch: list[int], batch: int, steps: int, device: str) -> None:
    import torch

    from napari_dmd.config import TrainConfig
    from napari_dmd.demo import phantom_cases
    from napari_dmd.distill.engine import Distiller
    from napari_dmd.models.presets import build_model
    from napari_dmd.teachers import ModelTeacher

    shape = [max(p, 2 * p) for p in patch]
    import numpy as np

    from napari_dmd.data.cases import Case
    from napari_dmd.phantom import make_phantom_dataset

    cases = [Case(i, lab, (1.0,) * dims, np.eye(4), f"p{k}") for k, (i, lab) in
             enumerate(make_phantom_dataset(2, tuple(shape)))] if dims == 3 else phantom_cases(2, 2)
    teacher = ModelTeacher(build_model("teacher", dims, 6), 6, dims)
    cfg = TrainConfig(method="dmd", model="student", iterations=10_000, batch_size=batch, patch_size=patch,
                      val_interval=10_000, device=device)
    d = Distiller(cfg, cases, val_cases=[], teacher=teacher, output_dir=f"/tmp/napari-dmd-bench-mem-{time.time()}")
    d._step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        d._step()
        times.append(time.perf_counter() - t0)
    cuda = torch.cuda.max_memory_allocated() / 2**20 if d.device.type == "cuda" else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"step_s": statistics.median(times), "rss_mib": rss, "cuda_mib": cuda}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        dims, *patch = (int(v) for v in a.child)
        child(dims, patch, a.batch, a.steps, a.device)
        return
    print(f"machine: {platform.machine()}, python {platform.python_version()}; DMD, teacher + student presets, "
          f"batch {a.batch}, median of {a.steps} steps")
    print(f"{'dims':>4} {'patch':>14} {'step s':>8} {'peak RSS MiB':>13} {'CUDA MiB':>9} {'time x':>7} {'RSS x':>6}")
    for dims, patches in CONFIGS.items():
        base = None
        for patch in patches:
            r = subprocess.run([sys.executable, __file__, "--steps", str(a.steps), "--batch", str(a.batch),
                                "--device", a.device, "--child", str(dims), *map(str, patch)],
                               capture_output=True, text=True, check=True)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            base = base or res
            mark = " (default)" if patch == DEFAULT[dims] else ""
            cuda = f"{res['cuda_mib']:.0f}" if res["cuda_mib"] else "-"
            print(f"{dims:>4} {'x'.join(map(str, patch)):>14} {res['step_s']:>8.3f} {res['rss_mib']:>13.0f} "
                  f"{cuda:>9} {res['step_s'] / base['step_s']:>7.2f} {res['rss_mib'] / base['rss_mib']:>6.2f}{mark}")


if __name__ == "__main__":
    main()
