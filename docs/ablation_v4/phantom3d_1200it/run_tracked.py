"""One phantom ablation job with the validation split evaluated during training (the trajectories of
docs/ablation_v4/phantom3d_1200it/trajectories.json, 2026-12-06, day).

    python docs/ablation_v4/phantom3d_1200it/run_tracked.py dmd-hs 0 600 50 runs/tracked

Runs ``benchmarks/ablation_jobs.run_job`` for ``phantom3d``, setting ``full``, with the student budget and a
validation every N steps; validation does not change the training (the final weights equal the table's). The run's
``events.jsonl`` (under ``OUT/runs/<job id>/``) holds the per-class Dice of every validation.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import ablation_jobs  # noqa: E402
import ablation_specs  # noqa: E402

import napari_dmd.distill.engine as engine  # noqa: E402

method, seed, iterations, every, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ablation_specs.SPECS["phantom3d"].student_iters = iterations
VAL = ablation_specs.dataset("phantom3d")[1]
_init = engine.Distiller.__init__


def _tracked_init(self, cfg, cases, val_cases=None, **kw):  # the ablation passes no validation cases
    cfg.val_interval = every
    _init(self, cfg, cases, val_cases=VAL, **kw)


engine.Distiller.__init__ = _tracked_init
job = ablation_specs.Job("phantom3d", "full", method, seed, dict(ablation_specs.WEIGHTS[method.removesuffix("-hs")]))
r = ablation_jobs.run_job(job, Path(out))
print(job.id, r["iterations"], round(100 * r["mean_dice"], 2), [round(100 * d, 1) for d in r["dice"]])
