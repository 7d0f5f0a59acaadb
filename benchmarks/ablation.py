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

Every job writes ``OUT/jobs/<id>.json`` (final weights evaluated on the fixed validation split: per-class
Dice and HD95, latency per volume) and is skipped when that file exists, so an interrupted run continues.
Datasets: ../shared/data (or $NAPARI_DMD_DATA): msd_hippocampus, chaos_mr_t2 (in-plane 2x down-sampled to
128x128), hc18_fetal_head (8x down-sampled), and the project's phantom (2D and 3D). 2D models on the 3D MRI
sets (slice-wise training and inference) keep the whole table within ~90 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(os.environ.get("NAPARI_DMD_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
SEEDS = (0, 1, 2)
FULL_METHODS = ("none", "ds", "kd", "dkd", "mfd", "dmd")
LOW_METHODS = ("alone", "pseudo", "kd", "dkd", "dmd")
TINY_METHODS = ("none", "kd", "dmd")
# each method's own weight: the value used in the table (chosen on the tuning grid, see docs/results.md)
WEIGHTS: dict[str, dict[str, float]] = {
    "ds": {"ds_weight": 1.0}, "kd": {"kd_weight": 0.25}, "dkd": {"beta": 8.0},
    "mfd": {"lambda_feat": 8 / 3}, "dmd": {"lambda_feat": 2 / 3},
}
SETTINGS = ("tune", "full", "lowlabel", "tiny")
EXTRA_SETTINGS = ("pool",)  # not in the default run: MFD/DMD with scale_resample=pool (hippocampus, CHAOS)
POOL_METHODS = ("mfd-pool", "dmd-pool")
CPU_BF16 = os.environ.get("NAPARI_DMD_ABLATION_FP32") != "1"  # bfloat16 autocast where the CPU has it natively
TUNE_DATASET = "hippocampus"  # the weight grid runs here: low-label setting, seed 0, validation split
GRID: dict[str, tuple[str, tuple[float, ...]]] = {
    "kd": ("kd_weight", (0.25, 1.0, 4.0)),
    "dkd": ("beta", (0.5, 2.0, 8.0)), "mfd": ("lambda_feat", (1 / 6, 2 / 3, 8 / 3)),
    "dmd": ("lambda_feat", (1 / 6, 2 / 3, 8 / 3)),
}


@dataclass
class Spec:
    """How one dataset is trained: model dims, patch, batch, budgets, low-label count."""

    name: str
    dims: int
    patch: list[int]
    batch: int
    student_iters: int
    teacher_iters: int
    low_labels: int = 0  # labelled training cases in the low-label setting (0: no low-label rows)
    lr: float = 1e-2  # students (at 3e-3 and 300 iterations every student on hippocampus missed a class)
    teacher_lr: float = 3e-3
    extra: dict[str, Any] = field(default_factory=dict)


SPECS = {
    "hippocampus": Spec("hippocampus", 2, [48, 48], 16, 600, 900, low_labels=6),
    # chaos: with the default augmentation its teacher reached only 0.46-0.48 mean Dice in 1200 iterations
    # (lr 3e-3 or 1e-2), 0.52 with intensity changes only, 0.73 without augmentation (one run each)
    "chaos": Spec("chaos", 2, [128, 128], 4, 600, 1200, low_labels=2, teacher_lr=1e-2,
                  extra={"augment": False}),
    "hc18": Spec("hc18", 2, [64, 96], 8, 600, 900),
    "phantom2d": Spec("phantom2d", 2, [96, 96], 4, 600, 900),
    "phantom3d": Spec("phantom3d", 3, [16, 32, 32], 2, 300, 900),
}


# ----------------------------------------------------------------------------------------------- data
def _down(image: np.ndarray, label: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """In-plane down-sampling by ``f``: block mean for the image, strided pick for the labels."""
    y, x = (image.shape[-2] // f) * f, (image.shape[-1] // f) * f
    im = image[..., :y, :x].astype(np.float32)
    im = im.reshape(*im.shape[:-2], y // f, f, x // f, f).mean(axis=(-3, -1))
    return im, label[..., f // 2:y:f, f // 2:x:f]


def load_dataset(name: str) -> tuple[list, list, int]:
    """(train cases, fixed validation cases, number of classes) of a dataset."""
    from napari_dmd.data.cases import Case, load_folder_pairs, load_msd_folder
    from napari_dmd.data.sampling import split_cases
    from napari_dmd.phantom import make_phantom_dataset

    if name.startswith("phantom"):
        shape = (96, 96) if name == "phantom2d" else (24, 64, 64)
        pairs = make_phantom_dataset(24 if name == "phantom2d" else 16, shape, seed=7)
        cases = [Case(image=i, label=lab, spacing=(1.0,) * len(shape), affine=np.eye(4), name=f"phantom_{k:02d}")
                 for k, (i, lab) in enumerate(pairs)]
        n_val = 8 if name == "phantom2d" else 4
        return cases[n_val:], cases[:n_val], 6
    if name == "hippocampus":
        cases, _ = load_msd_folder(DATA / "msd_hippocampus", require_labels=True)
        tr, va = split_cases(len(cases), 0.1, seed=0)
        return [cases[i] for i in tr], [cases[i] for i in va], 3
    if name == "chaos":
        cases, _ = load_msd_folder(DATA / "chaos_mr_t2", require_labels=True)
        for c in cases:
            c.image, c.label = _down(c.image, c.label, 2)
            c.spacing = (c.spacing[0], c.spacing[1] * 2, c.spacing[2] * 2)
        tr, va = split_cases(len(cases), 0.25, seed=0)  # 8 train / 3 val patients
        return [cases[i] for i in tr], [cases[i] for i in va], 5
    if name == "hc18":
        root = DATA / "hc18_fetal_head"
        cases = load_folder_pairs(root / "images", root / "labels", spacing_csv=root / "pixel_size_and_HC.csv")
        for c in cases:
            c.image, c.label = _down(c.image, c.label, 8)
            c.spacing = tuple(s * 8 for s in c.spacing)
        exams = sorted({re.match(r"(\d+)", c.name).group(1) for c in cases})
        _, va = split_cases(len(exams), 0.2, seed=0)
        val_exams = {exams[i] for i in va}  # split by examination: images of one exam stay together
        return ([c for c in cases if re.match(r"(\d+)", c.name).group(1) not in val_exams],
                [c for c in cases if re.match(r"(\d+)", c.name).group(1) in val_exams], 2)
    raise ValueError(f"unknown dataset {name!r}")


_CACHE: dict[str, tuple[list, list, int]] = {}


def dataset(name: str) -> tuple[list, list, int]:
    if name not in _CACHE:
        _CACHE[name] = load_dataset(name)
    return _CACHE[name]


# ----------------------------------------------------------------------------------------------- jobs
@dataclass
class Job:
    dataset: str
    setting: str  # teacher | full | lowlabel | tiny | tune
    method: str
    seed: int = 0
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        w = "".join(f"_{k}{v:.3g}" for k, v in sorted(self.weights.items()))
        return f"{self.dataset}_{self.setting}_{self.method}{w}_s{self.seed}"


def plan(datasets: list[str], seeds: tuple[int, ...], settings: tuple[str, ...] = SETTINGS) -> list[Job]:
    """Every student job of the requested settings (teachers are planned by :func:`run_all`)."""
    jobs: list[Job] = []
    if TUNE_DATASET in datasets and "tune" in settings:
        for m, (key, values) in GRID.items():
            jobs += [Job(TUNE_DATASET, "tune", m, 0, {key: v}) for v in values]
    for ds in datasets:
        spec = SPECS[ds]
        for s in seeds:
            if "full" in settings:
                jobs += [Job(ds, "full", m, s, WEIGHTS.get(m, {})) for m in FULL_METHODS]
            if spec.low_labels and "lowlabel" in settings:
                jobs += [Job(ds, "lowlabel", m, s, WEIGHTS.get(m, {})) for m in LOW_METHODS]
            if ds in ("hippocampus", "chaos") and "tiny" in settings:
                jobs += [Job(ds, "tiny", m, s, WEIGHTS.get(m, {})) for m in TINY_METHODS]
            if ds in ("hippocampus", "chaos") and "pool" in settings:  # rows of the full table
                jobs += [Job(ds, "full", m, s, WEIGHTS[m.removesuffix("-pool")]) for m in POOL_METHODS]
    return jobs


def _config(spec: Spec, job: Job, model: str, iters: int) -> Any:
    from napari_dmd.config import TrainConfig

    method = {"alone": "none", "pseudo": "none"}.get(job.method, job.method)
    resample = "pool" if method.endswith("-pool") else "up"
    method = method.removesuffix("-pool")
    lr = spec.teacher_lr if job.setting == "teacher" else spec.lr
    return TrainConfig(method=method, model=model, iterations=iters, batch_size=spec.batch,
                       patch_size=list(spec.patch), spatial_dims=spec.dims, lr=lr, seed=job.seed,
                       val_interval=10**9, checkpoint_interval=10**9, log_interval=50, num_threads=1,
                       cpu_bf16=CPU_BF16, scale_resample=resample,
                       **{**spec.extra, **job.weights})


def evaluate_model(model: Any, spec: Spec, val: list, num_classes: int) -> dict[str, Any]:
    """Final-weights metrics on the validation split, and the latency per volume."""
    from napari_dmd.metrics import evaluate, summarize
    from napari_dmd.segment import Segmenter

    seg = Segmenter(model.eval(), num_classes, spec.dims, list(spec.patch), batch_size=spec.batch)
    results, times = [], []
    for c in val:
        t0 = time.perf_counter()
        pred = seg(c.image)
        times.append(time.perf_counter() - t0)
        results.append(evaluate(pred, c.label, num_classes, c.spacing))
    s = summarize(results)
    return {"dice": s["dice_mean"], "hd95": s["hd95_mean"], "mean_dice": float(np.nanmean(s["dice_mean"])),
            "mean_hd95": float(np.nanmean(s["hd95_mean"])), "latency_s": float(np.median(times)),
            "class_names": s["class_names"]}


def teacher_path(out: Path, ds: str) -> Path:
    return out / "teachers" / ds / "last.pt"


def run_job(job: Job, out: Path) -> dict[str, Any]:
    """Train one model (teacher or student) and evaluate it; the result is also written as JSON."""
    import torch

    from napari_dmd.checkpoint import load_checkpoint, model_from_checkpoint
    from napari_dmd.distill.engine import Distiller
    from napari_dmd.export import count_flops
    from napari_dmd.models.presets import count_parameters
    from napari_dmd.teachers import ModelTeacher

    torch.set_num_threads(1)
    spec = SPECS[job.dataset]
    train, val, num_classes = dataset(job.dataset)
    target = out / "jobs" / f"{job.id}.json"
    run_dir = out / "runs" / job.id
    t0 = time.perf_counter()
    if job.setting == "teacher":
        cfg = _config(spec, job, "teacher", spec.teacher_iters)
        cfg.checkpoint_interval = 100  # an interrupted teacher resumes
        d = Distiller(cfg, train, val_cases=[], output_dir=out / "teachers" / job.dataset,
                      resume=teacher_path(out, job.dataset) if teacher_path(out, job.dataset).exists() else None,
                      role="teacher")
    else:
        ck = load_checkpoint(teacher_path(out, job.dataset))
        tnet = model_from_checkpoint(ck, teacher_path(out, job.dataset))
        teacher = ModelTeacher(tnet, num_classes, spec.dims, normalization=ck.get("normalization", "zscore"))
        cases = list(train)
        if job.setting in ("lowlabel", "tune"):
            n = spec.low_labels or 2
            rng = np.random.default_rng(1234)  # the same labelled subset for every method and seed
            keep = set(rng.choice(len(cases), n, replace=False).tolist())
            cases = [c if i in keep else _unlabelled(c) for i, c in enumerate(cases)]
            if job.method == "alone":
                cases = [c for c in cases if c.has_label]
        use_teacher = job.method != "alone" and not (job.method in ("none", "ds") and job.setting in ("full", "tiny"))
        model = "student-tiny" if job.setting == "tiny" else "student"
        cfg = _config(spec, job, model, spec.student_iters)
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # an interrupted job restarts from scratch (its JSON was never written)
        d = Distiller(cfg, cases, val_cases=[], teacher=teacher if use_teacher else None, output_dir=run_dir)
    summary = d.run_to_end()
    train_s = time.perf_counter() - t0
    res = evaluate_model(d.model, spec, val, num_classes)
    shape = [1, 1, *spec.patch]
    res.update(job.__dict__, id=job.id, train_s=train_s, iterations=summary["iteration"],
               params=count_parameters(d.model), flops_per_patch=count_flops(d.model, shape),
               patch=spec.patch, n_train=len(train), n_val=len(val),
               labelled=sum(c.has_label for c in d.train_cases))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(res, indent=1))
    if job.setting != "teacher":
        for p in (run_dir / "last.pt", run_dir / "best.pt"):
            p.unlink(missing_ok=True)  # keep the logs, drop the weights (disk)
    return res


def _unlabelled(c: Any) -> Any:
    from dataclasses import replace

    return replace(c, label=None)


def apply_scale(scale: float) -> None:
    """Multiply every iteration budget by ``scale`` (smoke runs); idempotent per process."""
    for name, spec in SPECS.items():
        base = _BASE.setdefault(name, (spec.student_iters, spec.teacher_iters))
        spec.student_iters = max(2, round(base[0] * scale))
        spec.teacher_iters = max(2, round(base[1] * scale))


_BASE: dict[str, tuple[int, int]] = {}


def _worker(args: tuple[Job, str, float]) -> str:
    job, out, scale = args
    apply_scale(scale)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        r = run_job(job, Path(out))
        return f"{job.id}: mean Dice {r['mean_dice']:.4f} ({r['train_s']:.0f} s)"
    except Exception as e:  # keep the other jobs going; the job is retried on the next invocation
        return f"{job.id}: FAILED {e.__class__.__name__}: {e}"


def run_all(out: Path, datasets: list[str], seeds: tuple[int, ...], jobs: int, scale: float = 1.0,
            settings: tuple[str, ...] = SETTINGS) -> None:
    import multiprocessing as mp

    t0 = time.perf_counter()
    todo = [j for j in plan(datasets, seeds, settings) if not (out / "jobs" / f"{j.id}.json").exists()]
    teachers = [Job(ds, "teacher", "none") for ds in datasets
                if not (out / "jobs" / f"{ds}_teacher_none_s0.json").exists()]
    print(f"{len(teachers)} teachers and {len(todo)} student jobs to run with {jobs} worker(s)", flush=True)
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, maxtasksperchild=8) as pool:
        for msg in pool.imap_unordered(_worker, [(j, str(out), scale) for j in teachers]):
            print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)
        # the grid first, then the main table seed by seed (a cut-short run still has complete seeds), then tiny
        rank = {"tune": 0, "full": 1, "lowlabel": 1, "tiny": 2}
        todo.sort(key=lambda j: (rank[j.setting], j.seed))
        for msg in pool.imap_unordered(_worker, [(j, str(out), scale) for j in todo]):
            print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)
    wall = time.perf_counter() - t0
    print(f"total wall time {wall:.0f} s", flush=True)
    if teachers or todo:  # record the invocation that trained something (the report states it)
        log = out / "runs.json"
        runs = json.loads(log.read_text()) if log.exists() else []
        runs.append({"wall_s": wall, "teachers": len(teachers), "student_jobs": len(todo), "workers": jobs,
                     "cpu_bf16": CPU_BF16, "datasets": datasets, "settings": list(settings),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                     "command": " ".join(sys.argv), "finished": time.strftime("%Y-%m-%d %H:%M")})
        log.write_text(json.dumps(runs, indent=1))


# --------------------------------------------------------------------------------------------- report
CLASS_NAMES = {
    "hippocampus": ["anterior", "posterior"], "chaos": ["liver", "R kidney", "L kidney", "spleen"],
    "hc18": ["head"], "phantom2d": ["body", "liver", "kidney", "spleen", "lesion"],
    "phantom3d": ["body", "liver", "kidney", "spleen", "lesion"],
}
ORDER = {"none": 0, "alone": 0, "pseudo": 1, "ds": 2, "kd": 3, "dkd": 4, "mfd": 5, "mfd-pool": 5.5, "dmd": 6,
         "dmd-pool": 7}
LABEL = {"none": "none (student alone)", "alone": "alone (labelled cases only)",
         "pseudo": "pseudo-labels (teacher argmax)", "ds": "heads + deep supervision", "kd": "KD", "dkd": "DKD",
         "mfd": "MFD", "dmd": "**DMD**", "mfd-pool": "MFD, pooled teacher", "dmd-pool": "DMD, pooled teacher"}


def measure_latency(out: Path, datasets: list[str], repeats: int = 3) -> dict[str, dict[str, float]]:
    """Median seconds per validation volume of teacher, student and student-tiny, alternating, one process."""
    import torch

    from napari_dmd.checkpoint import load_checkpoint, model_from_checkpoint
    from napari_dmd.models.presets import build_model
    from napari_dmd.segment import Segmenter

    res: dict[str, dict[str, float]] = {}
    for ds in datasets:
        spec = SPECS[ds]
        _, val, c = dataset(ds)
        t = teacher_path(out, ds)
        if not t.exists():
            continue
        torch.manual_seed(0)
        models = {"teacher": model_from_checkpoint(load_checkpoint(t), t),
                  "student": build_model("student", spec.dims, c),
                  "student-tiny": build_model("student-tiny", spec.dims, c)}
        segs = {k: Segmenter(m.eval(), c, spec.dims, list(spec.patch), batch_size=spec.batch)
                for k, m in models.items()}
        times: dict[str, list[float]] = defaultdict(list)
        for seg in segs.values():
            seg(val[0].image)  # warm-up
        for r in range(repeats):
            for case in val[:10]:
                order = list(segs) if r % 2 == 0 else list(reversed(segs))
                for k in order:
                    t0 = time.perf_counter()
                    segs[k](case.image)
                    times[k].append(time.perf_counter() - t0)
        res[ds] = {k: float(np.median(v)) for k, v in times.items()}
        res[ds]["threads"] = torch.get_num_threads()
        print(ds, {k: round(v, 4) for k, v in res[ds].items()}, flush=True)
    path = out / "latency.json"  # other datasets' earlier measurements are kept
    merged = {**(json.loads(path.read_text()) if path.exists() else {}), **res}
    path.write_text(json.dumps(merged, indent=1))
    return res


def _load(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "jobs").glob("*.json"))]


def _ms(values: list[float], pct: bool = True) -> str:
    a = np.array(values, dtype=float) * (100 if pct else 1)
    a = a[np.isfinite(a)]
    if not a.size:
        return "–"
    return f"{a.mean():.1f} ± {a.std(ddof=1 if a.size > 1 else 0):.1f}" if a.size > 1 else f"{a.mean():.1f}"


def _groups(rows: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
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
        colors = ["tab:red" if m == "dmd" else "tab:gray" if m in ("none", "alone", "pseudo") else "tab:blue"
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


def _verdict(groups: dict, teachers: dict) -> list[str]:
    """Plain statements, computed: DMD vs each baseline (difference of seed means vs the seeds' spread)."""
    lines = []
    for (ds, st, m), rs in groups.items():
        if m != "dmd" or st == "tune":
            continue
        dmd = np.array([r["mean_dice"] for r in rs])
        t = teachers.get(ds)
        parts = []
        if t:
            parts.append(f"teacher {100 * (dmd.mean() - t['mean_dice']):+.1f}")
        for (ds2, st2, m2), rs2 in groups.items():
            if ds2 != ds or st2 != st or m2 == "dmd":
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
        lines.append(f"- **{ds}, {st}**: DMD minus " + "; ".join(parts) + " Dice points.")
    return lines


def _collapsed(r: dict) -> bool:
    """A class lost: any foreground class below 0.5 Dice."""
    return any(d < 0.5 for d in r["dice"] if np.isfinite(d))


def _seeds(rs: list[dict]) -> str:
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


def report(out: Path, path: Path, precision: Path | None = None) -> None:
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
    notes = Path(__file__).with_name("ablation_notes.md")
    if notes.exists():  # the hand-written reading of the computed tables above
        lines += [notes.read_text().strip(), ""]
    lines += ["## DMD against each baseline (computed)", "",
              "Difference of seed means in Dice points; *beyond noise* when it exceeds twice its standard error "
              "(sqrt(s₁²/n₁ + s₂²/n₂)).", "", *_verdict(groups, teachers), ""]
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
              "    # teachers, the weight grid, the tables, then latency (resumable)",
              f".venv/bin/python benchmarks/ablation.py --out {out.name} --jobs 2 --settings pool"
              "    # extra rows: MFD/DMD with the pooled teacher",
              "mkdir -p ablation_fp32/teachers ablation_fp32/jobs && cp -r ablation/teachers/hippocampus "
              "ablation_fp32/teachers/ && cp ablation/jobs/hippocampus_teacher_none_s0.json ablation_fp32/jobs/",
              "NAPARI_DMD_ABLATION_FP32=1 .venv/bin/python benchmarks/ablation.py --out ablation_fp32 --jobs 2 "
              "--datasets hippocampus --settings full lowlabel    # precision check, same teacher",
              f".venv/bin/python benchmarks/ablation.py --out {out.name} --report docs/results.md"
              + (f" --precision {precision.name}" if precision is not None else ""),
              "```", "", "The weights in `WEIGHTS` (benchmarks/ablation.py) were set from the grid's best value per "
              "method after a first `--settings tune` run (an earlier, float32 run: see the grid above for this "
              "run's values).", ""]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path} and {chart}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="napari-dmd ablation table")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--datasets", nargs="+", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--report", help="write the Markdown tables to this file (no training)")
    ap.add_argument("--precision", help="with --report: a float32 run's --out folder to compare with")
    ap.add_argument("--latency", action="store_true", help="measure teacher/student latency per volume only")
    ap.add_argument("--no-latency", action="store_true", help="train only: no latency measurement afterwards")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every iteration budget (smoke tests)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=[*SETTINGS, *EXTRA_SETTINGS],
                    help="which parts to run (default: all but pool; the weights in WEIGHTS were chosen after "
                         "running 'tune'; pool: MFD/DMD with scale_resample=pool as extra full-table rows)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    apply_scale(args.scale)
    if args.latency:
        measure_latency(out, args.datasets)
        return
    if args.report:
        report(out, Path(args.report), Path(args.precision) if args.precision else None)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{sys.version.split()[0]}; command: {' '.join(sys.argv)}", flush=True)
    run_all(out, args.datasets, tuple(args.seeds), args.jobs, args.scale, tuple(args.settings))
    if not args.no_latency:
        measure_latency(out, args.datasets)  # one process after the training: the latency table


if __name__ == "__main__":
    main()
