"""B6 (``napari-dmd bench time-to-dice``): wall time until a DMD student's validation mean Dice reaches 0.80.

``time_to_dice`` reads a run's ``events.jsonl`` (resumes accounted for); ``run_time_to_dice`` first distils a
student on this machine, stopping once the threshold is reached, then reads its log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .machine import _table


def time_to_dice(events: str | Path, threshold: float = 0.80) -> dict[str, Any]:
    """B6: wall time from a run's first "start" event until validation mean Dice first reaches ``threshold``.

    ``active_s`` leaves out the time between a stop and a resume (events.jsonl is appended to on resume).
    """
    path = Path(events)
    try:
        evs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON-lines event log ({e})") from e
    starts = [e for e in evs if e.get("kind") == "start"]
    if not starts:
        raise ValueError(f"{path}: no 'start' event; is this a napari-dmd events.jsonl?")
    t_start = starts[0]["time"]
    vals = [e for e in evs if e.get("kind") == "validation" and e.get("mean_dice") is not None]
    hit = next((e for e in vals if e["mean_dice"] >= threshold), None)
    active, seg_start, last_t = 0.0, None, t_start
    for e in evs:  # sum of the segments start -> last event before the next start
        if e.get("kind") == "start":
            if seg_start is not None:
                active += last_t - seg_start
            seg_start = e["time"]
        last_t = e.get("time", last_t)
        if hit is not None and e is hit:
            break
    active += last_t - (seg_start or t_start)
    best = max(vals, key=lambda e: e["mean_dice"]) if vals else None
    cfg_path = path.with_name("config.yaml")
    res = {"events": str(path), "threshold": threshold, "reached": hit is not None,
           "iteration": hit["iteration"] if hit else None, "mean_dice": hit["mean_dice"] if hit else None,
           "wall_s": hit["time"] - t_start if hit else None, "active_s": active if hit else None,
           "validations": len(vals), "best_mean_dice": best["mean_dice"] if best else None,
           "best_iteration": best["iteration"] if best else None, "resumes": len(starts) - 1,
           "run": starts[0].get("message", ""), "config": str(cfg_path) if cfg_path.is_file() else None}
    print(f"B6 time to Dice {threshold:.2f}: {path} ({res['run']}; {len(vals)} validations, "
          f"{res['resumes']} resume(s))")
    if hit:
        print(_table(["threshold", "iteration", "mean Dice", "wall s", "wall min", "active s"],
                     [[f"{threshold:.2f}", hit["iteration"], f"{hit['mean_dice']:.4f}", f"{res['wall_s']:.0f}",
                       f"{res['wall_s'] / 60:.1f}", f"{active:.0f}"]]))
    else:
        print(f"mean Dice never reached {threshold:.2f} (best {res['best_mean_dice']} at iteration "
              f"{res['best_iteration']})")
    print("wall time counts from the run's start event to the validation event that first reaches the threshold "
          "(validation time included; the teacher's training is not); target <= 10 min on 2 CPU cores")
    return res


def run_time_to_dice(teacher: str, data: str, out: str | Path, threshold: float = 0.80, iterations: int | None = None,
                     val_interval: int | None = None, config: str | None = None, student_model: str = "student",
                     num_threads: int | None = None, device: str = "auto", keep_going: bool = False,
                     quick: bool = False) -> dict[str, Any]:
    """Distil a DMD student on this machine, stop once validation mean Dice reaches ``threshold``, then B6."""
    from ..config import TrainConfig
    from ..data.cases import load_msd_folder
    from ..runner import events, prepare_run
    from ..teachers import load_teacher

    cfg = TrainConfig.load_yaml(config) if config else TrainConfig(
        method="dmd", model=student_model, lr=3e-3, val_fraction=0.1, max_val_cases=20)
    cfg.method, cfg.device = "dmd", device
    cfg.iterations = iterations or (20 if quick else cfg.iterations if config else 1500)
    cfg.val_interval = val_interval or (5 if quick else 100)
    cfg.checkpoint_interval = max(cfg.checkpoint_interval, cfg.val_interval)
    cfg.num_threads = num_threads or cfg.num_threads
    if quick:
        cfg.max_val_cases = 2
    cases, names = load_msd_folder(data)
    cases = cases[:12] if quick else cases
    cfg.class_names = cfg.class_names or names
    d, warnings = prepare_run(cfg, cases, teacher=load_teacher(teacher), output_dir=out)
    for warning in warnings:
        print(f"warning: {warning}", flush=True)
    print(f"distilling {cfg.model} with DMD on {len(d.train_cases)} train / {len(d.val_cases)} val cases of {data}, "
          f"{cfg.iterations} iterations max, validation every {cfg.val_interval}, {d.device}")
    for ev in events(d):
        if ev.kind == "validation":
            print(f"  iteration {ev.iteration}: validation mean Dice {ev.mean_dice:.4f}", flush=True)
            if ev.mean_dice is not None and ev.mean_dice >= threshold and not keep_going:
                d.request_stop()
    return time_to_dice(Path(out) / "events.jsonl", threshold)
