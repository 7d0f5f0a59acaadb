"""B2 fast students: Dice vs per-volume latency of every preset on hippocampus and CHAOS (the Pareto plot).

Latency: every preset (freshly built; weights do not change the time) segments the dataset's validation volumes
through Segmenter with the ablation's patch and batch (2D models, slice-wise), interleaved, one process,
median seconds per volume at the given thread count. Dice: mean foreground Dice on the validation split after
DMD distillation, from the job JSON files (``--jobs`` folders, later ones win; ``benchmarks/ablation.py``
layout). Writes a JSON file and a PNG. Example::

    python benchmarks/fast_students_report.py --classic-jobs docs/ablation/jobs --fast-jobs /tmp/fast/abl/jobs \
        --json docs/benchmarks/bench-b2-fast-students.json --png docs/images/b2_dice_latency.png

DMD jobs with the default target term (T = 1, ``target_temperature1`` in the file name) are preferred; a preset with
only T = 4 runs shows those, marked "(T=4)" in the plot and ``dmd_variant`` in the JSON (``--dmd-variant t4``:
T = 4 only). ``--redice`` re-reads the Dice for the latencies already in ``--json``. ``--preset-jobs
PRESET=FOLDER`` adds a folder searched first for one preset's jobs (runs made apart, e.g. docs/ablation_cpu4x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_specs import SPECS, dataset  # noqa: E402
from segmenter_arms import interleaved_seconds  # noqa: E402

from napari_dmd.models.presets import PRESETS, build_model, count_parameters  # noqa: E402
from napari_dmd.segment import Segmenter  # noqa: E402

DATASETS = ("hippocampus", "chaos")
#: which job files hold each preset's Dice: (setting, method prefix, where the classic presets were trained)
SOURCES = {"teacher": ("teacher", "none"), "student": ("full", "dmd"), "student-tiny": ("tiny", "dmd"),
           "student-fast": ("full", "dmd"), "student-fast-tiny": ("tiny", "dmd"),
           "student-fast-deep": ("full", "dmd")}


#: DMD's target term in the job file names: T = 1 (class-balanced, the default since the second GPU lease) or the
#: earlier T = 4 runs (no target settings in the name)
T1_TAG = "target_balance1_target_temperature1_"


def _dice(folders: dict, ds: str, preset: str, variant: str = "t1") -> tuple[list[float], str]:
    """Mean Dice of each seed's job for ``preset`` and which DMD variant they are (``t1``/``t4``/``-``).

    The preset's own folders (``--preset-jobs``) are searched before the default one. ``variant``: ``t1`` (prefer
    the T = 1 jobs in any folder, else the T = 4 ones), ``t4`` (only T = 4). Runs of different variants or
    folders are never mixed.
    """
    setting, method = SOURCES[preset]
    default = folders["fast" if preset.startswith("student-fast") else "classic"]
    candidates = []
    for folder in [*folders.get(preset, []), default]:
        found = [f for f in sorted(Path(folder).glob(f"{ds}_{setting}_{method}_*s[0-9].json")) if "pool" not in f.name]
        if method != "dmd":
            candidates.append(("-", found))
            continue
        candidates.append(("t1", [f for f in found if T1_TAG in f.name]))
        candidates.append(("t4", [f for f in found if "target_" not in f.name]))
    order = ["-", "t1", "t4"] if variant == "t1" else ["-", "t4"]
    for want in order:
        for used, files in candidates:
            if used == want and files:
                return [json.loads(f.read_text())["mean_dice"] for f in files], used
    return [], "-"


def _add_dice(res: dict, folders: dict[str, Path], variant: str) -> None:
    """Fill each row's Dice, spread, retention and DMD variant from the job files."""
    for ds, lat in res["datasets"].items():
        teacher = _dice({"classic": folders["fast"], "fast": folders["fast"]}, ds, "teacher")[0] or \
            _dice(folders, ds, "teacher")[0]
        for n, row in lat.items():
            d, used = (teacher, "-") if n == "teacher" else _dice(folders, ds, n, variant)
            row["dice_runs"] = d
            row["dmd_variant"] = used
            row["dice"] = float(np.mean(d)) if d else float("nan")
            row["dice_sd"] = float(np.std(d)) if len(d) > 1 else 0.0
            row["retention"] = row["dice"] / float(np.mean(teacher)) if teacher else float("nan")


def _table(res: dict) -> None:
    for ds, lat in res["datasets"].items():
        print(f"\n{ds}: patch {SPECS[ds].patch}, {res['threads']} thread(s), median s per validation volume")
        print("| preset | parameters | ms/volume | speed-up | Dice (mean ± sd, runs) | DMD | retention |")
        print("|---|---:|---:|---:|---|---|---:|")
        for n, r in lat.items():
            print(f"| {n} | {r['params']:,} | {1000 * r['median_s']:.1f} | {r['speedup']:.2f}x | "
                  f"{r['dice']:.4f} ± {r['dice_sd']:.4f} ({len(r['dice_runs'])}) | {r.get('dmd_variant', '?')} | "
                  f"{100 * r['retention']:.1f} % |")


def _latency(ds: str, repeats: int) -> dict[str, dict]:
    spec = SPECS[ds]
    _, val, classes = dataset(ds)
    out = {}
    segs = {}
    for n in PRESETS:
        torch.manual_seed(0)
        m = build_model(n, spec.dims, classes).eval()
        segs[n] = Segmenter(m, classes, spec.dims, list(spec.patch), batch_size=spec.batch, name=n)
        out[n] = {"params": count_parameters(m)}
    times = interleaved_seconds(segs, [c.image for c in val], repeats)
    for n in segs:
        out[n]["median_s"] = statistics.median(times[n])
        out[n]["speedup"] = statistics.median(times["teacher"]) / out[n]["median_s"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classic-jobs", default="docs/ablation/jobs", help="job JSONs of teacher + classic students")
    p.add_argument("--fast-jobs", default="/tmp/fast/abl/jobs", help="job JSONs of the fast students")
    p.add_argument("--preset-jobs", nargs="*", default=[], metavar="PRESET=FOLDER",
                   help="job JSONs of one preset trained apart (e.g. student-fast-deep=docs/ablation_cpu/...)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", default="docs/benchmarks/bench-b2-fast-students.json")
    p.add_argument("--png", default="docs/images/b2_dice_latency.png")
    p.add_argument("--plot-only", action="store_true", help="redraw the PNG from the --json file, measure nothing")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(SPECS),
                   help="ablation datasets (e.g. hippocampus3d chaos for the committed teachers)")
    p.add_argument("--redice", action="store_true",
                   help="keep the --json file's latencies, read the Dice again from the job folders, redraw")
    p.add_argument("--dmd-variant", choices=("t1", "t4"), default="t1",
                   help="DMD's target term: t1 (the default, T = 1; T = 4 runs where no T = 1 run exists) or t4")
    a = p.parse_args()
    if a.plot_only:
        _plot(json.loads(Path(a.json).read_text()), Path(a.png))
        return
    folders = {"classic": Path(a.classic_jobs), "fast": Path(a.fast_jobs),
               **{k: [Path(v)] for k, v in (item.split("=", 1) for item in a.preset_jobs)}}
    if a.redice:
        res = json.loads(Path(a.json).read_text())
    else:
        torch.set_num_threads(a.threads)
        res = {"threads": a.threads, "repeats": a.repeats, "datasets": {ds: _latency(ds, a.repeats)
                                                                       for ds in a.datasets}}
    res["jobs"] = [a.classic_jobs, a.fast_jobs, *a.preset_jobs]
    res["dmd_variant"] = a.dmd_variant
    _add_dice(res, folders, a.dmd_variant)
    _table(res)
    Path(a.json).write_text(json.dumps(res, indent=1))
    _plot(res, Path(a.png))


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, Dice) points no faster point beats on Dice, fastest first."""
    front, best = [], -1.0
    for x, y in sorted(points):
        if y > best:
            front.append((x, y))
            best = y
    return front


def log_ms_axis(ax: Any, ms: list[float]) -> None:
    """A log latency axis labelled 10, 20, 50 ms (not 2x10^1 labels that overlap), ticks within the data's range."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks([tick for tick in (5, 10, 20, 50, 100, 200, 500, 1000, 2000)
                   if min(ms) / 1.5 <= tick <= max(ms) * 1.5])


def _plot(res: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(res["datasets"]), figsize=(11, 4.2))
    for ax, (ds, rows) in zip(np.atleast_1d(axes), res["datasets"].items()):
        front = pareto_front([(1000 * r["median_s"], r["dice"]) for r in rows.values() if np.isfinite(r["dice"])])
        ax.plot(*zip(*front), "--", color="0.6", zorder=1, label="Pareto front")
        for n, r in rows.items():
            fast = n.startswith("student-fast")
            ax.errorbar(1000 * r["median_s"], r["dice"], yerr=r["dice_sd"], fmt="o" if fast else "s",
                        color="C1" if fast else ("C0" if n != "teacher" else "k"), capsize=3, zorder=2)
            tag = " (T=4)" if r.get("dmd_variant") == "t4" and res.get("dmd_variant") == "t1" else ""
            ax.annotate(n + tag, (1000 * r["median_s"], r["dice"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
        t = rows["teacher"]["dice"]
        ax.axhline(0.98 * t, color="C2", lw=0.8, ls=":", label="98 % of teacher")
        ax.axhline(0.95 * t, color="C3", lw=0.8, ls=":", label="95 % of teacher")
        log_ms_axis(ax, [1000 * r["median_s"] for r in rows.values()])
        ax.set_xlabel(f"ms per validation volume ({res['threads']} CPU thread, log)")
        ax.set_ylabel("mean Dice (validation, DMD; mean ± sd over seeds)")
        ax.set_title(f"{ds} ({SPECS[ds].dims}D models, patch {'x'.join(map(str, SPECS[ds].patch))})")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
