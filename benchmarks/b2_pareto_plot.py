"""B2: Dice against latency of today's presets (the Pareto plot the README shows), from committed measurements.

Nothing is trained or timed here. Latency: the median ms per validation volume on one CPU thread (``--threads 2``:
two, idle threads asleep, as napari-dmd runs) of the Intel development VM, as the Segmenter runs today, with each
student trained 200 iterations (the labelling's time depends on the prediction; ``bench_labels_from_low_res.py
--threads 1`` / ``2``, its "fused" arm, 5 repeats, one JSON per dataset). Dice: each
preset's DMD runs with DMD's default (head supervision, "dmd-hs"), the longest budget measured for it, mean ± sd
over seeds, from the job files named in :data:`RUNS` (the budget is in each label: runs of different budgets are
not a like-for-like ranking). Presets without such runs are left out.
Example::

    python benchmarks/b2_pareto_plot.py --png docs/images/b2_dice_latency_presets.png \
        --json docs/benchmarks/bench-b2-pareto-presets.json
    python benchmarks/b2_pareto_plot.py --threads 2 --png docs/images/b2_dice_latency_presets_2threads.png \
        --json docs/benchmarks/bench-b2-pareto-presets-2threads.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fast_students_report's plotting helpers

DOCS = Path(__file__).resolve().parents[1] / "docs"
DATASETS = ("hippocampus3d", "chaos")
#: latency JSON per thread count and dataset (its "fused" arm is today's pipeline), measured 2026-12-06, evening
LATENCY = {n: {ds: f"benchmarks/bench-b2-pairs-{ds}-{'1thread' if n == 1 else '2threads'}.json" for ds in DATASETS}
           for n in (1, 2)}
ARM = "ms_fused"
TEACHER = {ds: f"ablation_v4/jobs/{ds}_teacher_none_s0.json" for ds in DATASETS}
#: per dataset: preset -> (glob of its DMD-default job files under docs/, what the label says about the budget)
RUNS = {
    "hippocampus3d": {
        "student": ("ablation_cpu4x/student-fast-noflip/hippocampus3d_full_dmd-hs_*_s[0-9].json",
                    "= student-fast in 3D, 1600 it."),
        "student-tiny": ("ablation_cpu4x/student-tiny-noflip/hippocampus3d_full_dmd-hs_*_s[0-9].json", "1600 it."),
        "student-fast-deep": ("ablation_cpu4x/student-fast-deep-noflip/hippocampus3d_full_dmd-hs_*_s[0-9].json",
                              "1600 it."),
        "student-classic": ("ablation_v3/hippocampus3d_noflip/jobs/hippocampus3d_full_dmd-hs_*_s[0-9].json",
                            "400 it."),
    },
    "chaos": {
        "student": ("ablation_cpu8x/student-fast-deep/chaos_full_dmd-hs_*_s[0-9].json", "4800 it."),
        "student-tiny": ("ablation_cpu8x/student-tiny/chaos_full_dmd-hs_*_s[0-9].json", "4800 it."),
        "student-classic": ("ablation_cpu4x/student-hs/chaos_full_dmd-hs_*_s[0-9].json", "2400 it."),
    },
}


def collect(threads: int = 1) -> dict[str, dict[str, dict]]:
    """Rows per dataset and preset: ms, speed-up, Dice runs, mean, sd, retention, label."""
    out: dict[str, dict[str, dict]] = {}
    for ds in DATASETS:
        measured = json.loads((DOCS / LATENCY[threads][ds]).read_text())["datasets"][ds]
        lat = measured["presets"]
        teacher = json.loads((DOCS / TEACHER[ds]).read_text())["mean_dice"]
        rows = {"teacher": {"ms": measured["teacher_ms"], "dice_runs": [teacher], "label": "teacher"}}
        for preset, (pattern, budget) in RUNS[ds].items():
            files = sorted(DOCS.glob(pattern))
            if not files:
                raise SystemExit(f"{ds} {preset}: no job files match docs/{pattern}")
            rows[preset] = {"ms": lat[preset][ARM], "dice_runs": [json.loads(f.read_text())["mean_dice"]
                                                                 for f in files],
                            "label": f"{preset} ({budget})", "jobs": pattern,
                            "speedup": lat[preset]["speedup_fused"]}  # against the teacher of its own round
        rows["teacher"]["speedup"] = 1.0
        for r in rows.values():
            r["dice"] = float(np.mean(r["dice_runs"]))
            r["dice_sd"] = float(np.std(r["dice_runs"])) if len(r["dice_runs"]) > 1 else 0.0
            r["retention"] = r["dice"] / teacher
        out[ds] = rows
    return out


def plot(res: dict[str, dict[str, dict]], png: Path, threads: int = 1) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fast_students_report import log_ms_axis, pareto_front

    titles = {"hippocampus3d": "hippocampus 3D (no flips, patch 40x56x40)", "chaos": "CHAOS (2D, patch 128x128)"}
    fig, axes = plt.subplots(1, len(res), figsize=(11, 4.4))
    for ax, (ds, rows) in zip(np.atleast_1d(axes), res.items()):
        front = pareto_front([(r["ms"], r["dice"]) for r in rows.values()])
        ax.plot(*zip(*front), "--", color="0.6", zorder=1, label="Pareto front")
        for n, r in rows.items():
            color = "k" if n == "teacher" else ("C0" if n.endswith("classic") else "C1")
            ax.errorbar(r["ms"], r["dice"], yerr=r["dice_sd"], fmt="s" if n == "teacher" else "o", color=color,
                        capsize=3, zorder=2)
            text = r["label"] if n == "teacher" else f"{r['label']}\n{r['speedup']:.1f}x, {100 * r['retention']:.1f} %"
            above = n in ("student-tiny", "student-fast-deep")  # the others' labels go below their points
            ax.annotate(text, (r["ms"], r["dice"]), textcoords="offset points", fontsize=7.5,
                        xytext=(6, 6) if above else (6, -18), va="bottom" if above else "top")
        t = rows["teacher"]["dice"]
        ax.axhline(0.98 * t, color="C2", lw=0.8, ls=":", label="98 % of the teacher")
        ax.axhline(0.95 * t, color="C3", lw=0.8, ls=":", label="95 % of the teacher")
        ms = [r["ms"] for r in rows.values()]
        log_ms_axis(ax, ms)
        ax.set_xlim(min(ms) / 1.3, max(ms) * 2.2)
        what = "1 CPU thread" if threads == 1 else f"{threads} threads as napari-dmd runs"
        ax.set_xlabel(f"ms per validation volume ({what}, Intel VM, log)")
        ax.set_ylabel("mean Dice, DMD + Heads (mean ± sd over seeds)")
        ax.set_title(titles.get(ds, ds))
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--png", default="docs/images/b2_dice_latency_presets.png")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--threads", type=int, choices=sorted(LATENCY), default=1)
    a = p.parse_args()
    res = collect(a.threads)
    for ds, rows in res.items():
        print(f"\n{ds}\n| preset | ms/volume | speed-up | Dice (runs) | retention |\n|---|---:|---:|---:|---:|")
        for r in rows.values():
            print(f"| {r['label']} | {r['ms']:.1f} | {r['speedup']:.1f}x | {100 * r['dice']:.2f} ± "
                  f"{100 * r['dice_sd']:.2f} ({len(r['dice_runs'])}) | {100 * r['retention']:.1f} % |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    plot(res, Path(a.png), a.threads)


if __name__ == "__main__":
    main()
