"""One CHAOS ablation job of DMD's default with its weights changed (the term experiments of docs/results.md,
2026-12-06, evening).

    python docs/ablation_v4/term_experiments/run_terms.py chaos full dmd-hs 0 lambda_logit:0,lambda_feat:0 zero [OUT]

Runs ``benchmarks/ablation_jobs.run_job`` with the method's table weight (``ablation_specs.WEIGHTS``) updated by
the ``key:value`` pairs (``true``/``false`` for switches such as ``correct_teacher``); the job file goes to
``OUT/<tag>/jobs/`` (default OUT: runs/terms). The committed files here are named ``<tag>__<job id>.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import ablation_jobs  # noqa: E402
import ablation_specs  # noqa: E402


def _value(text: str) -> bool | float:
    return text == "true" if text in ("true", "false") else float(text)


ds, setting, method, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
over = {k: _value(v) for k, v in (kv.split(":") for kv in sys.argv[5].split(",") if kv)}
tag = sys.argv[6]
out = Path(sys.argv[7] if len(sys.argv) > 7 else "runs/terms")
job = ablation_specs.Job(ds, setting, method, seed, {**ablation_specs.WEIGHTS[method.removesuffix("-hs")], **over})
r = ablation_jobs.run_job(job, out / tag)
print(tag, job.id, round(100 * r["mean_dice"], 2), [round(100 * d, 1) for d in r["dice"]], round(r["train_s"]))
