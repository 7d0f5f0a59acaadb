"""One full-label ablation job at another student learning rate (docs/results.md, the Expect section, 2026-12-06).

    python docs/ablation_v4/lr_experiments/run_lr.py chaos dmd-hs 0 0.002 [OUT]

The job file goes to ``OUT/lr<rate>/jobs/`` (default OUT: runs/lr).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import ablation_jobs  # noqa: E402
import ablation_specs  # noqa: E402

ds, method, seed, lr = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
ablation_specs.SPECS[ds].lr = lr
job = ablation_specs.Job(ds, "full", method, seed, ablation_specs.WEIGHTS[method.removesuffix("-hs")])
r = ablation_jobs.run_job(job, Path(sys.argv[5] if len(sys.argv) > 5 else "runs/lr") / f"lr{lr:g}")
print(ds, method, seed, lr, round(100 * r["mean_dice"], 2), [round(100 * d, 1) for d in r["dice"]], round(r["train_s"]))
