"""One ablation job with another patch size (the padding experiments of docs/results.md, 2026-12-06).

    python docs/ablation_v4/patch_experiments/run_patch.py phantom3d 32,64,64 dmd-hs 0 [OUT]

Runs ``benchmarks/ablation_jobs.run_job`` for the full-label setting with the dataset's patch replaced; the job
file goes to ``OUT/<dataset>_<patch>/jobs/`` (default OUT: runs/patch).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import ablation_jobs  # noqa: E402
import ablation_specs  # noqa: E402

ds, patch, method, seed = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], sys.argv[3], int(sys.argv[4])
out = Path(sys.argv[5] if len(sys.argv) > 5 else "runs/patch")
ablation_specs.SPECS[ds].patch = patch
job = ablation_specs.Job(ds, "full", method, seed, ablation_specs.WEIGHTS[method.removesuffix("-hs")])
r = ablation_jobs.run_job(job, out / f"{ds}_{'x'.join(map(str, patch))}")
print(job.id, patch, round(100 * r["mean_dice"], 2), [round(100 * d, 1) for d in r["dice"]], round(r["train_s"]))
