"""B2: candidate 3D networks for the default `student` and `student-tiny` on hippocampus 3D, as the plugin runs.

A hippocampus validation volume fits one window, so with 2 threads (idle threads asleep, ``OMP_WAIT_POLICY=PASSIVE``
as napari-dmd runs) the teacher uses the second core and a small student barely does; what decides a student's
speed-up there is how many small operations it runs. Each candidate is a ``UNet`` built with ``build_model``'s
options, freshly initialised (weights do not change the time), batch norm folded, and segments the validation
volumes through ``Segmenter``, interleaved with the teacher in one process (round 0 warms up). Prints parameters,
median ms per volume and the speed-up over the teacher. Example::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_3d_student_candidates.py --threads 2 --repeats 3 \
        --json docs/benchmarks/bench-b2-3d-student-candidates-2threads.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_specs import SPECS, dataset  # noqa: E402
from fast_student_variants import latency  # noqa: E402

from napari_dmd.models.presets import build_model, count_parameters  # noqa: E402

#: name -> (preset, build_model options)
CANDIDATES: dict[str, tuple[str, dict]] = {
    "teacher": ("teacher", {}),
    "student-fast-deep (5 levels 8-64, stem 2)": ("student-fast-deep", {}),  # the 3D `student` until 2026-12-06
    "student-fast (4 levels 8-40, stem 2)": ("student-fast", {}),  # the 3D `student` since
    "4 levels 4-24, stem 2": ((4, 8, 16, 24), {"norm": "batch", "stem": 2}),
    "4 levels 8-24, stem 2": ((8, 12, 16, 24), {"norm": "batch", "stem": 2}),
    "3 levels 8-24, stem 2": ((8, 16, 24), {"norm": "batch", "stem": 2}),  # the 3D `student-tiny` since
    "3 levels 8-16, stem 2": ((8, 12, 16), {"norm": "batch", "stem": 2}),
    "3 levels 16-32, stem 2": ((16, 24, 32), {"norm": "batch", "stem": 2}),
    "4 levels 8-40, stem 4": ("student-fast", {"stem": 4}),
    "3 levels 8-24, stem 4": ((8, 16, 24), {"norm": "batch", "stem": 4}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dataset", default="hippocampus3d", choices=[k for k, s in SPECS.items() if s.dims == 3])
    p.add_argument("--only", nargs="*", default=None, help="candidate names (default: all)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    chosen = {n: c for n, c in CANDIDATES.items() if a.only is None or n in a.only or n == "teacher"}
    med = latency(a.dataset, a.repeats, chosen)
    _, val, classes = dataset(a.dataset)  # loaded once per process (latency loaded it)
    params = {n: count_parameters(build_model(preset, 3, classes, **opts)) for n, (preset, opts) in chosen.items()}
    rows = {n: {"params": params[n], "ms": 1000 * med[n], "speedup": med["teacher"] / med[n]} for n in chosen}
    print(f"{a.dataset}: {a.threads} thread(s), {len(val)} validation volumes, median of {a.repeats} rounds")
    print("| candidate | parameters | ms per volume | speed-up |\n|---|---:|---:|---:|")
    for n, r in rows.items():
        print(f"| {n} | {r['params']:,} | {r['ms']:.1f} | {r['speedup']:.2f}x |")
    if a.json:
        Path(a.json).write_text(json.dumps({"dataset": a.dataset, "threads": a.threads, "repeats": a.repeats,
                                            "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
