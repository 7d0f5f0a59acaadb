"""Soak test: distil for N minutes and show that memory stays flat and throughput steady.

Runs the engine's DMD distillation on the 3D phantom (teacher = a preset teacher trained for a few
hundred steps first, so its logits are meaningful), with validation and checkpoints on, for ``--minutes``.
Every minute it records the process RSS (psutil), the steps done in that minute, samples/s of wall time and
samples per CPU-second of this process (which stays comparable when other jobs share the cores), and at the
end prints a table plus the RSS growth between minute 2 and the last minute, and the throughput spread.

    .venv/bin/python benchmarks/soak.py --minutes 30 --out /tmp/soak
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from pathlib import Path

import psutil
import torch

from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import Distiller
from napari_dmd.teachers import ModelTeacher


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--dims", type=int, default=3, choices=(2, 3))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher-steps", type=int, default=200)
    ap.add_argument("--out", default="/tmp/napari-dmd-soak")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    cases = phantom_cases(8, args.dims)
    train, val = cases[:6], cases[6:]
    patch = [32, 48, 48] if args.dims == 3 else [128, 128]

    tcfg = TrainConfig(method="none", model="teacher", iterations=args.teacher_steps, batch_size=2,
                       patch_size=patch, val_interval=10**9, checkpoint_interval=10**9, num_threads=args.threads)
    tdist = Distiller(tcfg, train, val_cases=[], output_dir=out / "teacher", role="teacher")
    tdist.run_to_end()
    teacher = ModelTeacher(tdist.model.eval(), tdist.num_classes, args.dims, normalization=tdist.normalization)

    cfg = TrainConfig(method="dmd", model="student", iterations=10**9, batch_size=2, patch_size=patch,
                      val_interval=200, checkpoint_interval=200, log_interval=50, num_threads=args.threads)
    d = Distiller(cfg, train, val_cases=val, teacher=teacher, output_dir=out / "student")
    proc = psutil.Process()
    samples: list[dict] = []
    state = {"steps": 0}
    t_end = time.monotonic() + args.minutes * 60

    def sampler() -> None:
        last_steps, last_t, minute = 0, time.monotonic(), 0
        last_cpu = sum(proc.cpu_times()[:2])
        while True:
            time.sleep(max(0.0, last_t + 60 - time.monotonic()))
            now, steps, cpu = time.monotonic(), state["steps"], sum(proc.cpu_times()[:2])
            minute += 1
            rec = {"minute": minute, "rss_mib": proc.memory_info().rss / 2**20, "steps": steps - last_steps,
                   "samples_per_s": (steps - last_steps) * cfg.batch_size / (now - last_t),
                   "samples_per_cpu_s": (steps - last_steps) * cfg.batch_size / max(cpu - last_cpu, 1e-9)}
            samples.append(rec)
            print(json.dumps(rec), flush=True)
            last_steps, last_t, last_cpu = steps, now, cpu
            if now >= t_end:
                d.request_stop()
                return

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    summary = {}
    gen = d.run()
    try:
        while True:
            ev = next(gen)
            if ev.kind == "step":
                state["steps"] = ev.iteration
    except StopIteration as stop:
        summary = stop.value
    th.join()
    full = samples[1:] if len(samples) > 2 else samples  # minute 1 includes start-up
    rates = [s["samples_per_s"] for s in full]
    per_cpu = [s["samples_per_cpu_s"] for s in full]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cpus, torch "
                   f"{torch.__version__}, {args.threads} thread(s)",
        "command": f"python benchmarks/soak.py --minutes {args.minutes:g} --dims {args.dims} "
                   f"--threads {args.threads}",
        "iterations": summary.get("iteration"), "best_dice": summary.get("best_dice"),
        "rss_first_mib": full[0]["rss_mib"], "rss_last_mib": full[-1]["rss_mib"],
        "rss_max_mib": max(s["rss_mib"] for s in full),
        "rss_growth_mib": full[-1]["rss_mib"] - full[0]["rss_mib"],
        "samples_per_s_median": statistics.median(rates),
        "samples_per_s_min": min(rates), "samples_per_s_max": max(rates),
        "samples_per_cpu_s_median": statistics.median(per_cpu), "samples_per_cpu_s_min": min(per_cpu),
        "samples_per_cpu_s_max": max(per_cpu),
        "per_minute": samples,
    }
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    print("\nminute  RSS MiB  steps  samples/s  samples/CPU-s")
    for s in samples:
        print(f"{s['minute']:6d}  {s['rss_mib']:7.1f}  {s['steps']:5d}  {s['samples_per_s']:9.2f}  "
              f"{s['samples_per_cpu_s']:13.2f}")
    print(f"RSS growth minute 2 -> last: {result['rss_growth_mib']:+.1f} MiB (max {result['rss_max_mib']:.1f});"
          f" samples/s median {result['samples_per_s_median']:.2f} (min {result['samples_per_s_min']:.2f},"
          f" max {result['samples_per_s_max']:.2f}); samples/CPU-s median {result['samples_per_cpu_s_median']:.2f}"
          f" (min {result['samples_per_cpu_s_min']:.2f}, max {result['samples_per_cpu_s_max']:.2f}); best val Dice"
          f" {result['best_dice']:.3f}")
    return result


if __name__ == "__main__":
    main()
