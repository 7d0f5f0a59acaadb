"""Running the ablation's jobs: one training + evaluation per job, the teachers first, then latency.

Every job writes ``OUT/jobs/<id>.json`` and is skipped when that file exists; a teacher is trained once per
dataset and cached in ``OUT/teachers/<dataset>/last.pt`` (an interrupted teacher resumes from it).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from ablation_specs import (
    CPU_BF16,
    KEEP_WEIGHTS,
    SETTINGS,
    SPECS,
    STUDENT,
    TINY_STUDENT,
    TRAIN_THREADS,
    Job,
    Spec,
    apply_scale,
    committed_teacher,
    dataset,
    plan,
)


def _config(spec: Spec, job: Job, model: str, iters: int) -> Any:
    """The TrainConfig of a job: the dataset's spec, the method (``-pool``: pooled teacher; ``-hs``: with deep
    supervision at the scale heads, ``head_supervision`` 1; without it every method as published, head supervision
    0, although DMD's default is 1) and its weights."""
    from napari_dmd.config import TrainConfig

    method = {"alone": "none", "pseudo": "none"}.get(job.method, job.method)
    resample = "pool" if method.endswith("-pool") else "up"
    heads = {"head_supervision": 1.0 if method.endswith("-hs") else 0.0}
    method = method.removesuffix("-pool").removesuffix("-hs")
    lr = spec.teacher_lr if job.setting == "teacher" else spec.lr
    return TrainConfig(method=method, model=model, iterations=iters, batch_size=spec.batch,
                       patch_size=list(spec.patch), spatial_dims=spec.dims, lr=lr, seed=job.seed,
                       val_interval=10**9, checkpoint_interval=10**9, log_interval=50, num_threads=TRAIN_THREADS,
                       num_workers=0,
                       cpu_bf16=CPU_BF16, amp=CPU_BF16, scale_resample=resample,
                       **{**spec.extra, **heads, **job.weights})


def evaluate_model(model: Any, spec: Spec, val: list, num_classes: int) -> dict[str, Any]:
    """Final-weights metrics on the validation split (the one evaluator), and the latency per volume."""
    from napari_dmd.evaluation import evaluate_cases
    from napari_dmd.segment import Segmenter

    device = str(next(model.parameters()).device)  # a model trained on CUDA is evaluated there
    seg = Segmenter(model.eval(), num_classes, spec.dims, list(spec.patch), batch_size=spec.batch, device=device)
    s = evaluate_cases(seg, val, hd95=True)
    return {"dice": s["dice_mean"], "hd95": s["hd95_mean"], "mean_dice": float(np.nanmean(s["dice_mean"])),
            "mean_hd95": float(np.nanmean(s["hd95_mean"])), "latency_s": s["median_seconds_per_case"],
            "class_names": s["class_names"]}


def _record(job: Job, net: Any, target: Path, train: list, val: list, num_classes: int, train_s: float,
            iterations: int | None, **extra: Any) -> dict[str, Any]:
    """Evaluate ``net`` (:func:`evaluate_model`), add the job's fields (size, FLOPs, data, ``extra``) and write
    the job file ``target``; returns the result."""
    from napari_dmd.export import count_flops
    from napari_dmd.models.presets import count_parameters

    spec = SPECS[job.dataset]
    res = evaluate_model(net, spec, val, num_classes)
    res.update(job.__dict__, id=job.id, train_s=train_s, iterations=iterations, params=count_parameters(net),
               flops_per_patch=count_flops(net, [1, 1, *spec.patch]), patch=spec.patch, n_train=len(train),
               n_val=len(val), threads=TRAIN_THREADS, **extra)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(res, indent=1))
    return res


def teacher_path(out: Path, ds: str) -> Path:
    """Where the dataset's teacher lives: the committed one (benchmarks/teachers/), else the one cached in OUT."""
    return committed_teacher(ds) or out / "teachers" / ds / "last.pt"


def run_job(job: Job, out: Path) -> dict[str, Any]:
    """Train one model (teacher or student) and evaluate it; the result is also written as JSON."""
    import torch

    from napari_dmd.checkpoint import load_checkpoint, model_from_checkpoint
    from napari_dmd.distill.engine import Distiller
    from napari_dmd.teachers import ModelTeacher

    torch.set_num_threads(TRAIN_THREADS)
    spec = SPECS[job.dataset]
    train, val, num_classes = dataset(job.dataset)
    target = out / "jobs" / f"{job.id}.json"
    run_dir = out / "runs" / job.id
    t0 = time.perf_counter()
    if job.setting == "teacher" and committed_teacher(job.dataset):  # evaluated, not trained
        ck = load_checkpoint(teacher_path(out, job.dataset))
        net = model_from_checkpoint(ck, teacher_path(out, job.dataset))
        return _record(job, net, target, train, val, num_classes, train_s=0.0, iterations=ck.get("iteration"),
                       committed=str(teacher_path(out, job.dataset)))
    if job.setting == "teacher":
        cfg = _config(spec, job, "teacher", spec.teacher_iters)
        cfg.checkpoint_interval = 100  # an interrupted teacher resumes
        folder = out / "teachers" / job.dataset
        if folder.exists() and not teacher_path(out, job.dataset).exists():
            import shutil

            shutil.rmtree(folder)  # stopped before its first last.pt: nothing to resume, and a new run needs
            # a folder without run files (config.yaml, events.jsonl)
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
        model = TINY_STUDENT if job.setting == "tiny" else STUDENT
        cfg = _config(spec, job, model, spec.student_iters)
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # an interrupted job restarts from scratch (its JSON was never written)
        d = Distiller(cfg, cases, val_cases=[], teacher=teacher if use_teacher else None, output_dir=run_dir)
    summary = d.run_to_end()
    train_s = time.perf_counter() - t0
    res = _record(job, d.model, target, train, val, num_classes, train_s=train_s, iterations=summary["iteration"],
                  labelled=sum(c.has_label for c in d.train_cases))
    if job.setting != "teacher" and not KEEP_WEIGHTS:
        for p in (run_dir / "last.pt", run_dir / "best.pt"):
            p.unlink(missing_ok=True)  # keep the logs, drop the weights (disk)
    return res


def events_wall_s(run_dir: Path) -> float:
    """Training wall time of a run, from the first to the last event of its ``events.jsonl`` (0 without one)."""
    path = run_dir / "events.jsonl"
    if not path.exists():
        return 0.0
    times = [json.loads(line).get("time") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    times = [t for t in times if isinstance(t, int | float)]
    return float(max(times) - min(times)) if times else 0.0


def evaluate_saved(out: Path, datasets: list[str], seeds: tuple[int, ...], settings: tuple[str, ...] = SETTINGS,
                   methods: list[str] | None = None) -> int:
    """Write the missing job files from the students' kept weights (``OUT/runs/<job>/last.pt``, e.g. trained on a
    GPU machine with ``--keep-weights`` whose evaluation did not finish); returns the number written."""
    import torch

    from napari_dmd.checkpoint import load_checkpoint, model_from_checkpoint

    done = 0
    for job in plan(datasets, seeds, settings):
        target, weights = out / "jobs" / f"{job.id}.json", out / "runs" / job.id / "last.pt"
        if target.exists() or not weights.exists() or (methods and job.method not in methods):
            continue
        train, val, num_classes = dataset(job.dataset)
        ck = load_checkpoint(weights)
        model = model_from_checkpoint(ck, weights).float()
        torch.set_num_threads(1)
        res = _record(job, model, target, train, val, num_classes, train_s=events_wall_s(weights.parent),
                      iterations=ck.get("iteration"), model=ck["config"]["model"], evaluated_from=str(weights))
        print(f"{job.id}: mean Dice {res['mean_dice']:.4f}", flush=True)
        done += 1
    return done


def _unlabelled(c: Any) -> Any:
    """A copy of the case without its label."""
    from dataclasses import replace

    return replace(c, label=None)


def _worker(args: tuple[Job, str, float]) -> str:
    """Run one job in a pool process; one line for the log, also when the job fails."""
    job, out, scale = args
    apply_scale(scale)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        r = run_job(job, Path(out))
        return f"{job.id}: mean Dice {r['mean_dice']:.4f} ({r['train_s']:.0f} s)"
    except Exception as e:  # keep the other jobs going; the job is retried on the next invocation
        return f"{job.id}: FAILED {e.__class__.__name__}: {e}"


def run_all(out: Path, datasets: list[str], seeds: tuple[int, ...], jobs: int, scale: float = 1.0,
            settings: tuple[str, ...] = SETTINGS, methods: list[str] | None = None) -> None:
    """Train the missing teachers, then every missing student job (of ``methods``, default all), ``jobs`` at a
    time; log the run in runs.json."""
    import multiprocessing as mp

    t0 = time.perf_counter()
    todo = [j for j in plan(datasets, seeds, settings) if not (out / "jobs" / f"{j.id}.json").exists()
            and (not methods or j.method in methods)]
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
                  "student": build_model(STUDENT, spec.dims, c),
                  "student-tiny": build_model(TINY_STUDENT, spec.dims, c)}
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
