"""The ablation's report: Markdown tables, the bar chart and the computed verdicts, read from the job files."""

from __future__ import annotations

import itertools
import json
import os
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from ablation_specs import SPECS, STUDENT, TRAIN_THREADS, TUNE_DATASET

# B1's side-by-side measurement of the CPU training step since 3D students train channels-last (2026-12-05): job
# times older than that (docs/ablation_v2) are divided by its speed-up (``ablation.py --step-speedup``)
STEP_SPEEDUP = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "bench-b1-cpu-channels-last.json"

CLASS_NAMES = {
    "hippocampus": ["anterior", "posterior"], "hippocampus3d": ["anterior", "posterior"],
    "chaos": ["liver", "R kidney", "L kidney", "spleen"],
    "hc18": ["head"], "phantom2d": ["body", "liver", "kidney", "spleen", "lesion"],
    "phantom3d": ["body", "liver", "kidney", "spleen", "lesion"],
}
ORDER = {"none": 0, "alone": 0, "pseudo": 1, "ds": 2, "kd": 3, "dkd": 4, "mfd": 5, "mfd-pool": 5.5, "dmd": 6,
         "dmd-pool": 7, "dmd-hs": 8}
LABEL = {"none": "none (student alone)", "alone": "alone (labelled cases only)",
         "pseudo": "pseudo-labels (teacher argmax)", "ds": "heads + deep supervision", "kd": "KD", "dkd": "DKD",
         "mfd": "MFD", "dmd": "DMD as published", "mfd-pool": "MFD, pooled teacher", "dmd-pool": "DMD, pooled teacher",
         "dmd-hs": "**DMD + deep supervision at the heads** (the default)"}


def _load(out: Path) -> list[dict[str, Any]]:
    """Every job file of a run folder, in file-name order."""
    return [json.loads(p.read_text()) for p in sorted((out / "jobs").glob("*.json"))]


def _ms(values: list[float], pct: bool = True) -> str:
    """``mean ± sample std`` of the finite values (in % unless ``pct`` is false); ``–`` when none."""
    a = np.array(values, dtype=float) * (100 if pct else 1)
    a = a[np.isfinite(a)]
    if not a.size:
        return "–"
    return f"{a.mean():.1f} ± {a.std(ddof=1 if a.size > 1 else 0):.1f}" if a.size > 1 else f"{a.mean():.1f}"


def _groups(rows: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Student rows grouped by (dataset, setting, method[ + grid weight]), in table order."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["setting"] == "teacher":
            continue
        key = r["method"]
        if r["setting"] == "tune":
            key += "".join(f" {k}={v:.3g}" for k, v in sorted(r["weights"].items()))
        groups[(r["dataset"], r["setting"], key)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], ORDER[kv[0][2].split()[0]], kv[0][2])))


def bar_chart(groups: dict, teachers: dict, path: Path) -> None:
    """Mean foreground Dice per method (mean ± std over seeds), one panel per dataset and setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(ds, st) for st in ("full", "lowlabel", "tiny") for ds in SPECS
              if any(k[0] == ds and k[1] == st for k in groups)]
    cols = 3
    rows_n = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False)
    for ax, (ds, st) in zip(axes.flat, panels):
        items = [(k[2], v) for k, v in groups.items() if k[0] == ds and k[1] == st]
        means = [100 * np.mean([r["mean_dice"] for r in v]) for _, v in items]
        stds = [100 * np.std([r["mean_dice"] for r in v], ddof=1) if len(v) > 1 else 0 for _, v in items]
        colors = ["tab:red" if m == "dmd-hs" else "salmon" if m == "dmd" else  # the default; DMD as published
                  "tab:gray" if m in ("none", "alone", "pseudo") else "tab:blue"
                  for m, _ in items]
        ax.bar(range(len(items)), means, yerr=stds, color=colors, capsize=3)
        for i, (_, v) in enumerate(items):  # every seed as a dot
            ax.scatter([i] * len(v), [100 * r["mean_dice"] for r in v], s=9, color="k", zorder=3)
        ax.set_xticks(range(len(items)), [m for m, _ in items], rotation=30, fontsize=8)
        if ds in teachers:
            ax.axhline(100 * teachers[ds]["mean_dice"], color="k", ls="--", lw=1, label="teacher")
            ax.legend(fontsize=7, loc="best")  # "best" keeps clear of the seed dots
        lo = min(100 * r["mean_dice"] for _, v in items for r in v) - 5
        top = max([m + e for m, e in zip(means, stds)] + [100 * teachers.get(ds, {}).get("mean_dice", 0)])
        ax.set_ylim(max(0, lo), min(100, top + 3))
        ax.set_title(f"{ds} — {st}", fontsize=9)
        ax.set_ylabel("mean Dice %", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


REFERENCES = {"dmd-hs": "DMD's default (with heads)", "dmd": "DMD as published"}  # the rows compared with the rest


def _verdict(groups: dict, teachers: dict) -> list[str]:
    """Plain statements, computed: DMD's default and DMD as published vs each other row (difference of seed means
    vs the seeds' spread) and vs the teacher."""
    lines = []
    for (ds, st, m), rs in groups.items():
        if m not in REFERENCES or st == "tune":
            continue
        dmd = np.array([r["mean_dice"] for r in rs])
        t = teachers.get(ds)
        parts = []
        if t:
            parts.append(f"teacher {100 * (dmd.mean() - t['mean_dice']):+.1f}")
        for (ds2, st2, m2), rs2 in groups.items():
            if ds2 != ds or st2 != st or m2 == m:
                continue
            other = np.array([r["mean_dice"] for r in rs2])
            diff = 100 * (dmd.mean() - other.mean())
            noise = 100 * np.sqrt((dmd.var(ddof=1) if dmd.size > 1 else 0) / dmd.size
                                  + (other.var(ddof=1) if other.size > 1 else 0) / other.size)
            if min(dmd.size, other.size) < 2:
                parts.append(f"{m2} {diff:+.1f} (one seed: no noise estimate)")
                continue
            tag = "beyond noise" if abs(diff) > 2 * noise else "within noise"
            parts.append(f"{m2} {diff:+.1f} ({tag}, 2·SE {2 * noise:.1f})")
        lost = sum(_collapsed(r) for r in rs)
        lines.append(f"- **{ds}, {st}**: {REFERENCES[m]} minus " + "; ".join(parts)
                     + f" Dice points; {lost} of {len(rs)} jobs lose a class.")
    return lines


def _collapsed(r: dict) -> bool:
    """A class lost: any foreground class below 0.5 Dice."""
    return any(d < 0.5 for d in r["dice"] if np.isfinite(d))


def _seeds(rs: list[dict]) -> str:
    """Each seed's mean Dice in %, in seed order."""
    return " / ".join(f"{100 * r['mean_dice']:.1f}" for r in sorted(rs, key=lambda r: r["seed"]))


def _precision_section(main: dict, other: dict, where: Path) -> list[str]:
    """bfloat16 (this table) vs float32 students, same teacher and seeds."""
    lines = ["## Precision check: bfloat16 vs float32 students (same teacher, same seeds)", "",
             f"The table above trains 2D students under bfloat16 autocast (`cpu_bf16`, about 1.4x faster per "
             f"job here). The same jobs in float32 (`NAPARI_DMD_ABLATION_FP32=1`, read from `{where}/jobs`):",
             "", "| dataset | setting | method | bfloat16 | float32 | seeds bf16 | seeds fp32 "
             "| classes lost bf16 / fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for key, rs32 in other.items():
        rs16 = main.get(key)
        if not rs16:
            continue
        ds, st, m = key
        lines.append(f"| {ds} | {st} | {LABEL.get(m, m)} | {_ms([r['mean_dice'] for r in rs16])} | "
                     f"{_ms([r['mean_dice'] for r in rs32])} | {_seeds(rs16)} | {_seeds(rs32)} | "
                     f"{sum(map(_collapsed, rs16))} / {sum(map(_collapsed, rs32))} |")
    return lines + ["", "A class counts as lost when its Dice is below 50.", ""]


def _time_section(out: Path, rows: list[dict]) -> list[str]:
    """Wall time of each training invocation (runs.json) and the sum of the jobs' training times."""
    lines = ["## Time", ""]
    log = out / "runs.json"
    runs = json.loads(log.read_text()) if log.exists() else []
    for r in runs:
        lines.append(f"- `{r['command']}` ({r['workers']} workers, cpu_bf16 {r['cpu_bf16']}, {r['machine']}): "
                     f"{r['teachers']} teachers + {r['student_jobs']} student jobs in **{r['wall_s'] / 60:.1f} min** "
                     f"wall, finished {r['finished']}.")
    wall = sum(r["train_s"] for r in rows)
    lines += ["", f"Sum of the jobs' training times: {wall / 60:.0f} CPU-thread minutes ({len(rows)} jobs; with two "
              f"workers about {wall / 120:.0f} min of wall time, plus evaluation).", ""]
    return lines


def step_speedups(path: Path | None = STEP_SPEEDUP) -> dict[tuple[str, str], float]:
    """(dataset, preset) -> measured training-step speed-up of the current code over the job files' (B1's JSON)."""
    if path is None or not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {(data["dataset"], r["preset"]): float(r["speedup"]) for r in data["rows"]}


def _recipe(spec: Any, widget: Any) -> dict[str, str]:
    """How a dataset's jobs differ from the Distill widget's defaults (``widget``: a default TrainConfig;
    augmentation with flips, its learning rate and batch), as a note."""
    notes = []
    if spec.extra.get("augment") is False:
        notes.append("trained without augmentation")
    elif spec.extra.get("flips") is False:
        notes.append("trained without flips")
    if spec.lr != widget.lr:
        notes.append(f"learning rate {spec.lr:g}, the widget's {widget.lr:g}")
    if spec.batch != widget.batch_size:
        notes.append(f"{spec.batch} patches per step, the widget's {widget.batch_size}")
    return {"recipe": "; ".join(notes)} if notes else {}


def expectations(out: Path, path: Path, methods: tuple[str, ...] = ("dmd", "dmd-hs"),
                 speedups: Path | None = None) -> dict[str, Any]:
    """Write what the Distill widget's defaults give (the run's student preset, ``STUDENT``; each of ``methods``
    — ``dmd-hs``: DMD with the Heads box ticked —, full labels) per dataset:
    retention, speed-up (latency.json, its ``threads`` as ``latency_threads``) and training seconds per iteration on
    the jobs' ``threads`` (one), means over the seeds;
    the seconds are divided by B1's measured step speed-up where ``speedups`` (e.g. ``STEP_SPEEDUP``, for job
    files older than the speed-up) has one for the dataset."""
    from napari_dmd.config import TrainConfig

    widget = TrainConfig()
    rows = _load(out)
    factors = step_speedups(speedups)
    teachers = {r["dataset"]: r for r in rows if r["setting"] == "teacher"}
    lat = json.loads((out / "latency.json").read_text()) if (out / "latency.json").exists() else {}
    result = []
    for method, (ds, spec) in itertools.product(methods, SPECS.items()):
        jobs = [r for r in rows if r["dataset"] == ds and r["setting"] == "full" and r["method"] == method]
        if not jobs or ds not in teachers or "student" not in lat.get(ds, {}):
            continue
        factor = factors.get((ds, "student"), 1.0)
        result.append({
            "dataset": ds, "dims": spec.dims, "method": method, "student": STUDENT, "seeds": len(jobs),
            "retention": float(np.mean([r["mean_dice"] for r in jobs]) / teachers[ds]["mean_dice"]),
            "student_dice": float(np.mean([r["mean_dice"] for r in jobs])),
            "teacher_dice": float(teachers[ds]["mean_dice"]),
            "speedup": float(lat[ds]["teacher"] / lat[ds]["student"]),
            "seconds_per_iteration": float(np.mean([r["train_s"] / r["iterations"] for r in jobs]) / factor),
            "step_speedup_applied": factor,
            "threads": int(jobs[0].get("threads", TRAIN_THREADS)), "latency_threads": int(lat[ds].get("threads", 1)),
            "patch": jobs[0].get("patch"),
            "iterations": int(jobs[0]["iterations"]), **_recipe(spec, widget)})
    src = f"benchmarks/ablation.py --expectations, from {out}/jobs/*.json and {out}/latency.json"
    if factors:
        src += f"; seconds per iteration divided by the step speed-up in {speedups.relative_to(speedups.parents[2])}"
    data = {"source": src, "rows": result}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return data


def report(out: Path, path: Path, precision: Path | None = None, notes: Path | None = None) -> None:
    """Write the Markdown results of run folder ``out`` to ``path`` and its chart to ``path.parent/images``;
    ``notes``: a hand-written reading of the tables, placed before the computed comparisons."""
    rows = _load(out)
    teachers = {r["dataset"]: r for r in rows if r["setting"] == "teacher"}
    groups = _groups(rows)
    lat = json.loads((out / "latency.json").read_text()) if (out / "latency.json").exists() else {}
    chart = path.parent / "images" / "ablation.png"
    chart.parent.mkdir(parents=True, exist_ok=True)
    bar_chart(groups, teachers, chart)
    n_seeds = max((len(v) for k, v in groups.items() if k[1] != "tune"), default=0)
    lines = ["# Results: the ablation table", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU; "
             f"each training job single-threaded, two jobs side by side. Produced by `benchmarks/ablation.py` "
             f"(commands at the end); every number is read from the job files (`{out}/jobs/*.json`), none "
             f"typed by hand. Dice in %, mean ± sample std over {n_seeds} seeds (0, 1, 2) of the student's "
             f"final weights (no checkpoint selection) on a fixed validation split; HD95 in mm (phantom: voxels), "
             f"mean over finite values. Retention = student / teacher mean Dice.", "",
             f"![mean Dice per method](images/{chart.name})", ""]
    titles = {"full": "Full labels", "lowlabel": "Low-label: the student has labels for a few cases only",
              "tiny": "student-tiny (1/33 of the teacher's parameters)",
              "tune": f"Tuning grid ({TUNE_DATASET}, low-label, seed 0, validation split)"}
    for setting, title in titles.items():
        block = {k: v for k, v in groups.items() if k[1] == setting}
        if not block:
            continue
        lines += [f"## {title}", ""]
        for ds in SPECS:
            items = [(k, v) for k, v in block.items() if k[0] == ds]
            if not items:
                continue
            t = teachers.get(ds)
            names = CLASS_NAMES[ds]
            spec = SPECS[ds]
            lines += [f"### {ds} ({spec.dims}D model, patch {'×'.join(map(str, spec.patch))}, batch {spec.batch}, "
                      f"{items[0][1][0]['iterations']} student iterations"
                      + "".join(f", {k}={v}" for k, v in spec.extra.items()) + ")", ""]
            if t:
                tl = lat.get(ds, {}).get("teacher", t["latency_s"])
                lines.append(f"Teacher: {t['params']:,} parameters, {t['flops_per_patch'] / 1e9:.3f} GFLOPs per patch, "
                             f"{t['iterations']} iterations, mean Dice "
                             f"**{100 * t['mean_dice']:.1f}** ("
                             + ", ".join(f"{n} {100 * d:.1f}" for n, d in zip(names, t["dice"]))
                             + f"), HD95 {t['mean_hd95']:.2f}, {1000 * tl:.0f} ms per volume. "
                             f"Training cases: {t['n_train']}, validation: {t['n_val']}.")
                r0 = items[0][1][0]
                if setting in ("lowlabel", "tune"):
                    lines[-1] += f" Labelled training cases for the student: {r0['labelled']} of {r0['n_train']}."
                lines.append("")
            head = ["method", "n", "mean Dice", *names, "HD95", "retention %", "params", "GFLOPs/patch",
                    "ms/volume"]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for (_, _, m), rs in items:
                md = [r["mean_dice"] for r in rs]
                ret = [r["mean_dice"] / t["mean_dice"] for r in rs] if t else []
                per = [_ms([r["dice"][k] for r in rs]) for k in range(len(names))]
                fl = rs[0]["flops_per_patch"]
                preset = "student-tiny" if setting == "tiny" else "student"
                ms = lat.get(ds, {}).get(preset, float(np.median([r["latency_s"] for r in rs])))
                lines.append("| " + " | ".join([
                    LABEL.get(m, m), str(len(rs)), _ms(md), *per, _ms([r["mean_hd95"] for r in rs], pct=False),
                    _ms(ret) if ret else "–", f"{rs[0]['params']:,}", f"{fl / 1e9:.3f}" if fl else "–",
                    f"{1000 * ms:.0f}"]) + " |")
            lines.append("")
    gaps = []
    for (ds, st, m), rs in groups.items():
        t = teachers.get(ds)
        if t and m in ("none", "alone") and st in ("full", "lowlabel"):
            alone = np.array([r["mean_dice"] for r in rs])
            gaps.append(f"- **{ds}, {st}**: teacher {100 * t['mean_dice']:.1f} vs student {m} "
                        f"{100 * alone.mean():.1f} ± {100 * alone.std(ddof=1) if alone.size > 1 else 0:.1f}: "
                        f"gap {100 * (t['mean_dice'] - alone.mean()):+.1f} Dice points.")
    if gaps:
        lines += ["## How much the teacher has to give (teacher minus student alone)", "", *gaps, ""]
    if notes is not None:  # e.g. benchmarks/ablation_notes.md, the reading of the first table (docs/results.md)
        lines += [notes.read_text().strip(), ""]
    lines += ["## DMD against each baseline (computed)", "",
              "Difference of seed means in Dice points; *beyond noise* when it exceeds twice its standard error "
              "(sqrt(s₁²/n₁ + s₂²/n₂)); a class is lost when its Dice is below 50.", "",
              *_verdict(groups, teachers), ""]
    if lat:
        lines += ["## Latency (one process, alternating order, median over validation volumes)", "",
                  "| dataset | teacher ms | student ms | speed-up | student-tiny ms | speed-up | threads |",
                  "|---|---|---|---|---|---|---|"]
        for ds, v in lat.items():
            lines.append(f"| {ds} | {1000 * v['teacher']:.0f} | {1000 * v['student']:.0f} | "
                         f"{v['teacher'] / v['student']:.1f}x | {1000 * v['student-tiny']:.0f} | "
                         f"{v['teacher'] / v['student-tiny']:.1f}x | {v['threads']:.0f} |")
        lines.append("")
    if precision is not None:
        lines += _precision_section(groups, _groups(_load(precision)), precision)
    lines += _time_section(out, rows)
    lines += ["## Commands", "", "```bash",
              f".venv/bin/python benchmarks/ablation.py --out {out.name} --jobs 2"
              "    # the table: full, low-label and DMD's default (hs) rows, then latency (resumable)",
              f".venv/bin/python benchmarks/ablation.py --out {out.name} --jobs 2 --settings tiny pool t1"
              "    # extra rows: student-tiny, the pooled teacher, target terms at T = 1",
              f"NAPARI_DMD_ABLATION_FP32=1 .venv/bin/python benchmarks/ablation.py --out {out.name}_fp32 --jobs 2"
              "    # float32 students, the precision reference",
              f".venv/bin/python benchmarks/ablation.py --out {out.name} --report results.md"
              + (f" --precision {precision.name}" if precision is not None else "")
              + (f" --notes {notes}" if notes is not None else ""),
              "```", "", "The weights in `WEIGHTS` (benchmarks/ablation_specs.py) were set from the grid's best value "
              "per method after a `--settings tune` run on 2D hippocampus (docs/results.md, tuning grid).", ""]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path} and {chart}")
