"""Why output distillation loses small classes in short runs, and which fix removes it: small measured runs.

Each run is one student of the ablation recipe (``ablation_specs``: dataset, patch, batch, 600 iterations,
lr 1e-2, single-threaded), trained with a method (none / kd / dmd) and a *variant* of the distillation terms,
then evaluated on the dataset's fixed validation split (per-class Dice, :func:`ablation_jobs.evaluate_model`).
A class is lost when the teacher's Dice is >= 0.70 and the student's < 0.50 (:mod:`napari_dmd.distill.collapse`).

    .venv/bin/python benchmarks/lost_class.py --out /tmp/lost --dataset hippocampus --setting tiny \\
        --methods kd,dmd --variants base,balanced --seeds 0,1,2 --precision fp32
    .venv/bin/python benchmarks/lost_class.py --out /tmp/lost --diagnose --dataset hippocampus
    .venv/bin/python benchmarks/lost_class.py --out /tmp/lost --table

Variants (``VARIANTS``): ``base`` the shipped defaults; ``legacy`` the method before the fix (every term at
T = 4, pixel mean); ``T1`` temperature 1 for every term; ``tT1`` the target part (TCKD of DMD, KD) at T = 1, NCKD
at T (the fix, now the default); ``balanced`` the target part at T, class-balanced (each target class present
weighs the same, :func:`napari_dmd.distill.losses.class_balanced_mean`); ``warm30`` legacy with distill_warmup
0.3; ``lr3e-3`` legacy with learning rate 3e-3. Every run appends one JSON line to ``OUT/results.jsonl`` and is
skipped when that line exists. ``--diagnose`` writes the per-class soft targets and gradient shares
(``OUT/diagnose_<dataset>.json``). The teacher is the ablation's (``<ablation out>/teachers/<dataset>/last.pt``,
trained by ``benchmarks/ablation.py``): give it with ``--teacher`` (default ``OUT/teachers/<dataset>/last.pt``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ablation_specs import SPECS, WEIGHTS, Job, dataset  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},  # the shipped defaults (since the fix: the target part at target_temperature = 1)
    "legacy": {"target_T": None, "balance": False},  # before the fix: every term at T (4), pixel mean
    "T1": {"config": {"temperature": 1.0}},
    "tT1": {"target_T": 1.0},
    "balanced": {"target_T": None, "balance": True},  # at T (4), class-balanced
    "warm30": {"target_T": None, "config": {"distill_warmup": 0.3}},  # legacy terms, longer warm-up
    "lr3e-3": {"target_T": None, "config": {"lr": 3e-3}},  # legacy terms, lower learning rate
}


def _terms(method: str, target_T: float | None, balance: bool):
    """A method's terms with the target part at ``target_T`` (None: the run's T) and optional class balance."""
    from napari_dmd.distill.losses import default_lambda_feat, kd_loss, mfd_loss, tckd_loss

    def kd_terms(x, w):
        t = x.T if target_T is None else target_T
        kd = kd_loss(x.student, x.teacher, t, valid=x.target != x.ignore_index,
                     classes=x.target if balance else None, ignore_index=x.ignore_index)
        return w["kd_weight"] * kd, {"kd": kd}

    def dmd_terms(x, w):
        t = x.T if target_T is None else target_T
        tckd = tckd_loss(x.student, x.teacher, x.target, t, ignore_index=x.ignore_index, balance=balance)
        nckd = mfd_loss(x.student_scales, x.teacher, x.target, x.T, part="nckd", weights=x.weights,
                        ignore_index=x.ignore_index, resample=x.resample)
        lam = w["lambda_feat"] if w["lambda_feat"] is not None else default_lambda_feat(len(x.student_scales))
        return w["lambda_logit"] * tckd + lam * nckd, {"tckd": tckd, "nckd": nckd}

    return {"kd": kd_terms, "dmd": dmd_terms}[method]


def install(method: str, variant: str) -> dict[str, Any]:
    """Put the variant's terms in the method table (this process only); return its config overrides."""
    from napari_dmd.distill import methods

    v = VARIANTS[variant]
    original = {"kd": methods.kd.METHOD, "dmd": methods.dmd.METHOD}
    for name, m in original.items():
        methods._BY_NAME[name] = m  # reset
    if method in original and ("target_T" in v or "balance" in v):
        methods._BY_NAME[method] = dataclasses.replace(
            original[method], terms=_terms(method, v.get("target_T"), bool(v.get("balance"))))
    return dict(v.get("config", {}))


def _teacher(path: Path, num_classes: int, dims: int):
    from napari_dmd.checkpoint import load_checkpoint, model_from_checkpoint
    from napari_dmd.teachers import ModelTeacher

    ck = load_checkpoint(path)
    return ModelTeacher(model_from_checkpoint(ck, path), num_classes, dims,
                        normalization=ck.get("normalization", "zscore"))


def _cases(ds: str, setting: str, method: str) -> list:
    """The training cases of a setting as the ablation builds them (low-label: a fixed labelled subset)."""
    from dataclasses import replace

    train, _, _ = dataset(ds)
    cases = list(train)
    if setting == "lowlabel":
        rng = np.random.default_rng(1234)
        keep = set(rng.choice(len(cases), SPECS[ds].low_labels or 2, replace=False).tolist())
        cases = [c if i in keep else replace(c, label=None) for i, c in enumerate(cases)]
    return cases


def run_one(ds: str, setting: str, method: str, seed: int, variant: str, precision: str, teacher_path: Path,
            out: Path) -> dict[str, Any]:
    """Train one student, evaluate it; return (and append to OUT/results.jsonl) its record."""
    import torch
    from ablation_jobs import _config, evaluate_model

    from napari_dmd.distill.collapse import lost_classes
    from napari_dmd.distill.engine import Distiller

    torch.set_num_threads(1)
    spec = SPECS[ds]
    _, val, num_classes = dataset(ds)
    overrides = install(method, variant)
    job = Job(ds, setting, method, seed, WEIGHTS.get(method, {}))
    cfg = _config(spec, job, "student-tiny" if setting == "tiny" else "student", spec.student_iters)
    cfg.cpu_bf16 = precision == "bf16"
    for k, v in overrides.items():
        setattr(cfg, k, v)
    teacher = _teacher(teacher_path, num_classes, spec.dims)
    use_teacher = method != "none" or setting == "lowlabel"
    run_dir = out / "runs" / f"{ds}_{setting}_{method}_{variant}_{precision}_s{seed}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    d = Distiller(cfg, _cases(ds, setting, method), val_cases=[], teacher=teacher if use_teacher else None,
                  output_dir=run_dir)
    d.run_to_end()
    res = evaluate_model(d.model, spec, val, num_classes)
    tdice = json.loads((out / f"teacher_{ds}.json").read_text())["dice"] if (out / f"teacher_{ds}.json").exists() \
        else None
    if tdice is None:
        tdice = evaluate_model(teacher.model, spec, val, num_classes)["dice"]
        (out / f"teacher_{ds}.json").write_text(json.dumps({"dice": tdice}))
    rec = {"dataset": ds, "setting": setting, "method": method, "seed": seed, "variant": variant,
           "precision": precision, "dice": [round(float(v), 4) for v in res["dice"]],
           "mean_dice": round(res["mean_dice"], 4), "teacher_dice": [round(float(v), 4) for v in tdice],
           "lost": lost_classes(res["dice"], tdice), "train_s": round(time.perf_counter() - t0, 1),
           "config": {k: getattr(cfg, k) for k in ("temperature", "distill_warmup", "lr", "iterations")}}
    for p in (run_dir / "last.pt", run_dir / "best.pt"):
        p.unlink(missing_ok=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def diagnose(ds: str, teacher_path: Path, out: Path, batches: int = 8, seed: int = 0) -> dict[str, Any]:
    """Per class: pixel share in the training batches, the teacher's mean target probability p_y(T) on the
    class's pixels (T = 1, 4), and, for an untrained student, the signed gradient each term puts on the class's
    logit z_c, summed over the class's own pixels ("own", < 0 raises z_c) and over all other pixels ("other",
    > 0 lowers z_c). Written to OUT/diagnose.json."""
    import torch

    from napari_dmd.data.sampling import PatchSampler
    from napari_dmd.data.transforms import normalize
    from napari_dmd.distill.losses import kd_loss, task_loss, tckd_loss
    from napari_dmd.models.presets import build_model

    torch.set_num_threads(1)
    spec = SPECS[ds]
    train, _, c = dataset(ds)
    teacher = _teacher(teacher_path, c, spec.dims)
    sampler = PatchSampler([normalize(k.image, teacher.normalization) for k in train], [k.label for k in train],
                           tuple(spec.patch), batch_size=spec.batch, spatial_dims=spec.dims, fg_fraction=0.33,
                           num_classes=c, augment=False, ignore_index=255, seed=seed)
    torch.manual_seed(seed)
    student = build_model("student-tiny", spec.dims, c)
    student.train()
    acc: dict[str, Any] = {}

    def add(key: str, value: np.ndarray) -> None:
        acc[key] = acc.get(key, 0) + value

    for _ in range(batches):
        x, y, _ = sampler.sample()
        x, y = torch.from_numpy(x), torch.from_numpy(y).long()
        with torch.no_grad():
            zt = teacher(x).float()
        onehot = torch.nn.functional.one_hot(y, c).movedim(-1, 1).bool()
        add("pixels", onehot.sum(dim=(0, 2, 3)).numpy().astype(float))
        for T in (1.0, 4.0):
            pt = torch.softmax(zt / T, 1)
            add(f"p_y_T{T:g}", (pt * onehot).sum(dim=(0, 2, 3)).numpy())
        zs = student(x)
        terms = {"task": lambda z, y=y: task_loss(z, y),
                 "tckd_T4": lambda z, y=y, zt=zt: tckd_loss(z, zt, y, 4.0),
                 "tckd_T1": lambda z, y=y, zt=zt: tckd_loss(z, zt, y, 1.0),
                 "tckd_T4_balanced": lambda z, y=y, zt=zt: tckd_loss(z, zt, y, 4.0, balance=True),
                 "kd_T4": lambda z, zt=zt: kd_loss(z, zt, 4.0), "kd_T1": lambda z, zt=zt: kd_loss(z, zt, 1.0)}
        for name, fn in terms.items():
            (g,) = torch.autograd.grad(fn(zs), zs, retain_graph=True)
            own = (g * onehot).sum(dim=(0, 2, 3)).numpy()
            other = (g * ~onehot).sum(dim=(0, 2, 3)).numpy()
            add(f"{name}_own", own)
            add(f"{name}_other", other)
    n = acc["pixels"]
    res: dict[str, Any] = {"dataset": ds, "batches": batches, "pixel_share": (n / n.sum()).round(4).tolist()}
    for T in (1.0, 4.0):
        res[f"teacher_p_y_T{T:g}"] = (acc[f"p_y_T{T:g}"] / np.maximum(n, 1)).round(4).tolist()
    for name in ("task", "tckd_T4", "tckd_T1", "tckd_T4_balanced", "kd_T4", "kd_T1"):
        own, other = acc[f"{name}_own"] / batches, acc[f"{name}_other"] / batches
        res[name] = {"own": own.round(5).tolist(), "other": other.round(5).tolist(),
                     "net_push_up": (-(own + other)).round(5).tolist()}
    (out / f"diagnose_{ds}.json").write_text(json.dumps(res, indent=1))
    return res


def table(out: Path) -> str:
    """The Markdown table of every recorded run (seed, method, setting, variant, precision, per-class Dice)."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: (r["dataset"], r["setting"], r["method"], r["variant"], r["precision"], r["seed"]))
    lines = ["| dataset | setting | method | variant | precision | seed | per-class Dice | mean | lost |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lost = ", ".join(str(i + 1) for i in r["lost"]) or "no"
        lines.append(f"| {r['dataset']} | {r['setting']} | {r['method']} | {r['variant']} | {r['precision']} | "
                     f"{r['seed']} | {' / '.join(f'{v:.3f}' for v in r['dice'])} | {r['mean_dice']:.3f} | {lost} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dataset", default="hippocampus")
    p.add_argument("--setting", default="tiny", choices=("full", "tiny", "lowlabel"))
    p.add_argument("--methods", default="kd,dmd")
    p.add_argument("--variants", default="base")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default: OUT/teachers/DS/last.pt)")
    p.add_argument("--diagnose", action="store_true")
    p.add_argument("--table", action="store_true")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.table:
        print(table(a.out))
        return 0
    teacher = a.teacher or a.out / "teachers" / a.dataset / "last.pt"
    if not teacher.exists():
        print(f"{teacher}: no teacher; train it with benchmarks/ablation.py or give --teacher", file=sys.stderr)
        return 2
    if a.diagnose:
        print(json.dumps(diagnose(a.dataset, teacher, a.out), indent=1))
        return 0
    done = set()
    if (a.out / "results.jsonl").exists():
        for line in (a.out / "results.jsonl").read_text().splitlines():
            r = json.loads(line)
            done.add((r["dataset"], r["setting"], r["method"], r["seed"], r["variant"], r["precision"]))
    for seed in (int(s) for s in a.seeds.split(",")):
        for variant in a.variants.split(","):
            for method in a.methods.split(","):
                if method == "none" and variant != "base" or \
                        (a.dataset, a.setting, method, seed, variant, a.precision) in done:
                    continue
                r = run_one(a.dataset, a.setting, method, seed, variant, a.precision, teacher, a.out)
                print(f"{a.dataset} {a.setting} {method} {variant} {a.precision} s{seed}: dice {r['dice']} "
                      f"lost {r['lost']} ({r['train_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
