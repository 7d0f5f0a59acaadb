"""The ablation table: teacher vs students trained with none / DS / KD / DKD / MFD / DMD, on real data.

One command reproduces everything (``--jobs 2`` runs two single-threaded trainings side by side):

    .venv/bin/python benchmarks/ablation.py --out runs/ablation --jobs 2
    .venv/bin/python benchmarks/ablation.py --out runs/ablation --report docs/results.md

Per dataset one teacher is trained (cached in ``OUT/teachers``), then students with the same architecture,
iteration budget, learning rate, batch and patch, differing only in the method and its own weights:

* ``full``: every training case labelled; methods none, ds (per-scale heads + deep supervision, no
  distillation: the control), kd, dkd, mfd, dmd.
* ``lowlabel``: labels for a few training cases only; the student sees all training images. "alone" = the
  labelled cases only, no teacher; "pseudo" = the teacher's argmax as labels where none, no distillation
  loss; kd/dkd/dmd distil on every case (teacher argmax as the target class where no label).
* ``tiny``: the much smaller student-tiny preset (1/33 of the teacher), methods none / kd / dmd (hippocampus and CHAOS).
* ``tune``: the grid of each method's own weight (one seed), on the hippocampus validation split, low-label.
* extra, on request (``--settings pool hs``): MFD/DMD with the pooled teacher; DMD plus deep supervision at its
  heads (``head_supervision`` 1).

Other students and machines: ``--student``/``--tiny-student`` choose the presets; ``--keep-weights`` keeps each
student's ``last.pt``; ``--cache DIR --write-cache`` stores the datasets as one file each for a machine without the
raw data (``--cache DIR`` then reads them; ``benchmarks/gpu_ablation.sh`` runs this on a lent GPU), and
``--evaluate-saved`` writes the job files from kept weights trained elsewhere.

Every job writes ``OUT/jobs/<id>.json`` (final weights evaluated on the fixed validation split: per-class
Dice and HD95, latency per volume) and is skipped when that file exists, so an interrupted run continues.
Datasets are read from $NAPARI_DMD_DATA (default: ``shared/data`` beside the repository folder):
msd_hippocampus, chaos_mr_t2 (in-plane 2x down-sampled to 128x128), hc18_fetal_head (8x down-sampled), and the
project's phantom (2D and 3D). 2D models on the 3D MRI sets (slice-wise training and inference) keep the whole
table within ~90 minutes on 2 CPU cores.

This file is the command line; the work lives beside it: ``ablation_specs.py`` (datasets, settings, weights,
the job plan), ``ablation_jobs.py`` (training and evaluating one job, the cached teachers, latency) and
``ablation_report.py`` (tables, chart, Markdown). Its names are re-exported here.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from ablation_jobs import (
    _config,
    _worker,
    evaluate_model,
    evaluate_saved,
    measure_latency,
    run_all,
    run_job,
    teacher_path,
)
from ablation_report import CLASS_NAMES, LABEL, ORDER, STEP_SPEEDUP, bar_chart, expectations, report
from ablation_specs import (
    CPU_BF16,
    DATA,
    DEFAULT_DATASETS,
    EXTRA_SETTINGS,
    FULL_METHODS,
    GRID,
    LOW_METHODS,
    POOL_METHODS,
    SEEDS,
    SETTINGS,
    SPECS,
    TINY_METHODS,
    TUNE_DATASET,
    WEIGHTS,
    Job,
    Spec,
    apply_scale,
    dataset,
    load_dataset,
    plan,
    save_cache,
)

__all__ = [  # the names this script has always offered to an importer (tests, notebooks)
    "CLASS_NAMES", "CPU_BF16", "DATA", "DEFAULT_DATASETS", "EXTRA_SETTINGS", "FULL_METHODS", "GRID", "LABEL",
    "LOW_METHODS", "ORDER", "POOL_METHODS", "SEEDS", "SETTINGS", "SPECS", "TINY_METHODS", "TUNE_DATASET", "WEIGHTS",
    "Job", "Spec", "_config", "_worker", "apply_scale", "bar_chart", "dataset", "expectations", "evaluate_model",
    "load_dataset", "main",
    "measure_latency", "plan", "report", "run_all", "run_job", "teacher_path",
]


def _set_env(args: argparse.Namespace) -> None:
    """Pass the preset, weight and cache choices to this process and the job processes (spawned: they read the
    environment at import)."""
    import ablation_jobs
    import ablation_specs

    for flag, var, attr in (("student", "STUDENT", "STUDENT"), ("tiny_student", "TINY_STUDENT", "TINY_STUDENT"),
                            ("cache", "CACHE", "CACHE")):
        value = getattr(args, flag)
        if value:
            os.environ[f"NAPARI_DMD_ABLATION_{var}"] = value
            for mod in (ablation_specs, ablation_jobs):
                if hasattr(mod, attr):
                    setattr(mod, attr, value)
    if args.keep_weights:
        os.environ["NAPARI_DMD_ABLATION_KEEP_WEIGHTS"] = "1"
        ablation_specs.KEEP_WEIGHTS = ablation_jobs.KEEP_WEIGHTS = True


def main(argv: list[str] | None = None) -> None:
    """Train the planned jobs and measure latency, or (``--report``) only write the tables."""
    ap = argparse.ArgumentParser(description="napari-dmd ablation table")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=list(SPECS))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--methods", nargs="+", help="run only these methods' student jobs (default: every method)")
    ap.add_argument("--report", help="write the Markdown tables to this file (no training)")
    ap.add_argument("--precision", help="with --report: a float32 run's --out folder to compare with")
    ap.add_argument("--notes", help="with --report: a Markdown file of hand-written reading to include (e.g. "
                    "benchmarks/ablation_notes.md for the first table in docs/results.md)")
    ap.add_argument("--expectations", help="write the Distill widget's expectation file (e.g. "
                    "src/napari_dmd/resources/expectations.json) from the run's job files (no training)")
    ap.add_argument("--step-speedup", action="store_true", help="with --expectations: divide the jobs' seconds per "
                    "iteration by B1's channels-last step speed-up (job files from before 2026-12-05 noon)")
    ap.add_argument("--latency", action="store_true", help="measure teacher/student latency per volume only")
    ap.add_argument("--no-latency", action="store_true", help="train only: no latency measurement afterwards")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every iteration budget (smoke tests)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=[*SETTINGS, *EXTRA_SETTINGS],
                    help="which parts to run (default: tune full lowlabel hs; the weights in WEIGHTS "
                         "(ablation_specs.py) were chosen after running 'tune'; hs: DMD's default, with deep "
                         "supervision at its heads; "
                         "tiny: student-tiny rows; pool: MFD/DMD with scale_resample=pool as extra full-table rows)")
    ap.add_argument("--student", help="student preset of the full and low-label settings (default: student)")
    ap.add_argument("--tiny-student", help="student preset of the tiny setting (default: student-tiny)")
    ap.add_argument("--keep-weights", action="store_true", help="keep every student's last.pt in OUT/runs/<job>")
    ap.add_argument("--cache", help="folder of <dataset>.pkl.xz read instead of the raw data (see --write-cache)")
    ap.add_argument("--write-cache", action="store_true", help="with --cache: write the datasets there and stop")
    ap.add_argument("--evaluate-saved", action="store_true", help="no training: write the missing job files from "
                    "the weights kept in OUT/runs (--keep-weights on another machine)")
    args = ap.parse_args(argv)
    _set_env(args)
    out = Path(args.out)
    if args.write_cache:
        for ds in args.datasets:
            print(save_cache(ds, Path(args.cache)))
        return
    apply_scale(args.scale)
    if args.evaluate_saved:
        evaluate_saved(out, args.datasets, tuple(args.seeds), tuple(args.settings), args.methods)
        return
    if args.latency:
        measure_latency(out, args.datasets)
        return
    if args.expectations:
        expectations(out, Path(args.expectations), speedups=STEP_SPEEDUP if args.step_speedup else None)
        return
    if args.report:
        report(out, Path(args.report), Path(args.precision) if args.precision else None,
               Path(args.notes) if args.notes else None)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{sys.version.split()[0]}; command: {' '.join(sys.argv)}", flush=True)
    run_all(out, args.datasets, tuple(args.seeds), args.jobs, args.scale, tuple(args.settings), args.methods)
    if not args.no_latency:
        measure_latency(out, args.datasets)  # one process after the training: the latency table


if __name__ == "__main__":
    main()
