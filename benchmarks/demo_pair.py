"""Demo pair (``napari_dmd.pretrained``): how long the first-use training takes and how good the pair is.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/demo_pair.py              # threads as the button: demo_threads()
    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE python benchmarks/demo_pair.py --threads 2
    python benchmarks/demo_pair.py --recipe v2       # the previous recipe (250 + 250 steps, 64 x 64 x 8)
    python benchmarks/demo_pair.py --set teacher_iterations=300 student_patch=48   # any DemoRecipe field

Trains the pair exactly as the *Use demo models* button does (``pretrained.phantom_models``) into a temporary
cache folder, then prints the machine, the wall time, the process CPU time (user + sys), CPU / 2, and the CPU
time of the training thread, and the per-class Dice of teacher and student on the recipe's validation phantoms
and on the two sample images (seed 0, never trained on; the 3D sample slice by slice).

Reading the times: on a busy machine the wall time says little. With one thread the CPU time is what the
wall time would be on an idle core of this speed (measured: within 1 %). With two threads the wall time on an
idle 2-core machine is at least the larger of CPU / 2 and the training thread's own CPU time (that thread also
runs everything not split over threads); on our 2-core VM the latter was the larger, about the one-thread CPU
time. ``--json PATH`` writes every number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the widgets and the CLI run it; before torch loads

import numpy as np  # noqa: E402

from napari_dmd import pretrained  # noqa: E402
from napari_dmd.metrics import dice_per_class  # noqa: E402
from napari_dmd.phantom import PHANTOM_CLASS_NAMES, make_phantom  # noqa: E402

# recipes kept for comparison: fields that differ from pretrained.RECIPE
RECIPES: dict[str, dict] = {
    "current": {},
    # the recipe before (cache folder phantom2d-v2-t250-s250-...)
    "v2": dict(teacher_iterations=250, student_iterations=250, teacher_patch=64, student_patch=64, teacher_batch=8,
               student_batch=8, lr=1e-2, fg_fraction=0.9, teacher_method="none", lambda_logit=1.0),
}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _machine(threads: int) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "threads": threads,
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "os": platform.platform(terse=True), "python": platform.python_version(), "torch": torch.__version__,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _parse_set(items: list[str]) -> dict:
    fields = {f.name: f for f in dataclasses.fields(pretrained.DemoRecipe)}
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--set {item}: DemoRecipe has no field {key!r} ({', '.join(fields)})")
        default = getattr(pretrained.RECIPE, key)
        if value.lower() == "none":
            out[key] = None
        elif isinstance(default, bool) or value.lower() in ("true", "false"):
            out[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, tuple):
            out[key] = tuple(int(v) for v in value.split(","))
        elif isinstance(default, int) and "." not in value and "e" not in value.lower():
            out[key] = int(value)
        else:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def _evaluate(path: Path, cases: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, list[float]]:
    from napari_dmd.segment import Segmenter

    seg = Segmenter.from_checkpoint(path, device="cpu")
    return {name: [float(d) for d in dice_per_class(seg(img), lab, seg.num_classes)] for name, img, lab in cases}


def _row(name: str, dice: list[float]) -> str:
    cells = " | ".join("–" if np.isnan(d) else f"{d:.2f}" for d in dice)
    return f"| {name} | {cells} | **{np.nanmean(dice):.3f}** |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="current")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override DemoRecipe fields")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: pretrained.demo_threads(), as the button)")
    p.add_argument("--no-samples", action="store_true", help="skip the Dice on the two sample images")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)

    recipe = dataclasses.replace(pretrained.RECIPE, **RECIPES[a.recipe], **_parse_set(a.set),
                                 num_threads=a.threads)
    threads = recipe.num_threads or pretrained.demo_threads()
    machine = _machine(threads)
    print("command: " + " ".join(shlex.quote(s) for s in [sys.executable, *sys.argv]))
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    print("recipe:  " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(recipe).items()))

    marks: dict[str, float] = {}

    def progress(done: int, total: int) -> None:
        if done == recipe.teacher_iterations:
            marks.update(t_wall=time.perf_counter() - w0, t_cpu=_cpu() - c0, t_main=time.thread_time() - m0)

    with tempfile.TemporaryDirectory(prefix="demo-pair-") as tmp:
        w0, c0, m0 = time.perf_counter(), _cpu(), time.thread_time()
        teacher, student = pretrained.phantom_models(progress, tmp, recipe=recipe, device="cpu")
        wall, cpu, main_cpu = time.perf_counter() - w0, _cpu() - c0, time.thread_time() - m0
        machine["load_avg_1min_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        _, val = pretrained.phantom_cases_2d(recipe)
        cases = [(c.name, c.image, c.label) for c in val]
        if not a.no_samples:
            cases += [("sample 2D", *make_phantom((192, 192), seed=0)),
                      ("sample 3D (slices)", *make_phantom((48, 96, 96), seed=0))]
        dice = {"teacher": _evaluate(teacher, cases), "student": _evaluate(student, cases)}

    times = {"wall_s": wall, "cpu_s": cpu, "cpu_half_s": cpu / 2, "main_thread_cpu_s": main_cpu,
             "teacher_phase": marks, "threads": threads}
    print(f"\ntraining ({recipe.teacher_iterations} + {recipe.student_iterations} steps, {threads} thread(s)): "
          f"wall {wall:.1f} s, CPU {cpu:.1f} s, CPU/2 {cpu / 2:.1f} s, training thread CPU {main_cpu:.1f} s"
          + (f"; teacher phase: wall {marks['t_wall']:.1f} s, CPU {marks['t_cpu']:.1f} s" if marks else ""))
    names = PHANTOM_CLASS_NAMES[1:]
    print(f"\n| model | image | {' | '.join(names)} | mean |\n|---|---|{'---|' * len(names)}---|")
    means = {}
    for role, per_case in dice.items():
        for name, d in per_case.items():
            print(_row(f"{role} | {name}", d))
        val_names = [c.name for c in val]
        means[role] = {"val_mean": float(np.mean([np.nanmean(per_case[n]) for n in val_names])),
                       "val_per_class": [float(v) for v in np.nanmean([per_case[n] for n in val_names], axis=0)],
                       "all_mean": float(np.mean([np.nanmean(d) for d in per_case.values()]))}
    for role, m in means.items():
        print(f"{role}: validation phantoms mean Dice {m['val_mean']:.3f} (per class "
              + ", ".join(f"{n} {v:.2f}" for n, v in zip(names, m["val_per_class"]))
              + f"); mean over all images {m['all_mean']:.3f}")
    if a.json is not None:
        a.json.write_text(json.dumps({"machine": machine, "recipe": dataclasses.asdict(recipe), "times": times,
                                      "dice": dice, "means": means, "class_names": names}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
