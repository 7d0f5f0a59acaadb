"""The ``napari-dmd bench VERB`` command line: the verbs' parsers, dispatch to B1-B6, and ``cmd_bench``.

``add_bench_parser`` registers ``bench`` on the main CLI's sub-parsers; ``cmd_bench`` prints the machine and the
exact command, runs one benchmark (or ``all`` of those whose inputs are given), and writes the JSON result.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .corrections import DATASETS, bench_corrections
from .dice_time import run_time_to_dice, time_to_dice
from .domain_shift import SHIFTS
from .gui import bench_gui
from .gui_inference import MODEL_CHOICES, bench_gui_inference
from .inference import bench_inference, bench_presets
from .machine import (
    DEFAULT_PATCH,
    QUICK_PATCH,
    QUICK_STUDENT,
    QUICK_TEACHER,
    command_line,
    format_machine,
    machine_info,
)
from .memory import bench_memory
from .sliding_window import bench_sliding_window
from .step import bench_step

VERBS = ("step", "inference", "sliding-window", "memory", "gui", "time-to-dice", "corrections", "all")


def _common(p: argparse.ArgumentParser, device: str = "auto") -> None:
    g = p.add_argument_group("output and machine")
    g.add_argument("--quick", action="store_true",
                   help="a seconds-long smoke version (tiny models; its numbers mean nothing)")
    g.add_argument("--json", metavar="PATH", help="write {benchmark, machine, command, date, results} to this file")
    g.add_argument("--device", default=device, help=f"auto | cpu | cuda | cuda:N | mps (default {device})")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, i.e. OMP_NUM_THREADS or cores)")


def _patch_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patch", type=int, nargs="+", help="training patch, one value per axis (default 2D "
                   f"{DEFAULT_PATCH[2]}, 3D {DEFAULT_PATCH[3]}; --quick: {QUICK_PATCH[2]}, {QUICK_PATCH[3]})")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher-model", help=f"teacher preset or channels (default teacher; --quick {QUICK_TEACHER})")
    p.add_argument("--student-model", help=f"student preset or channels (default student; --quick {QUICK_STUDENT})")


def add_verbs(sub: Any) -> None:
    """The bench verbs, on an argparse sub-parsers object."""
    s = sub.add_parser("step", help="B1: one DMD step vs teacher forward + student forward/backward")
    s.add_argument("--dims", type=int, choices=[2, 3], default=3)
    s.add_argument("--repeats", type=int, help="timed runs of each part, interleaved (default 10; --quick 2)")
    s.add_argument("--batch", type=int, default=2)
    s.add_argument("--scale-resample", choices=["up", "pool"], default="up",
                   help="how the DMD step meets the teacher at the coarse scales (config scale_resample)")
    _patch_arg(s)
    _model_args(s)
    _common(s)

    i = sub.add_parser("inference", help="B2: student vs teacher on the same cases: speed-up and Dice retention")
    i.add_argument("--teacher", help="teacher checkpoint (.pt; required unless --presets)")
    i.add_argument("--student", help="student checkpoint (.pt; required unless --presets)")
    i.add_argument("--presets", metavar="NAMES", help="instead: time freshly built presets (comma-separated, or "
                   "'all') and an nnU-Net-sized 3D net, untrained, at 1 thread and all cores (latency only)")
    i.add_argument("--data", default="phantom", help="MSD folder (imagesTr/ + labelsTr/), or 'phantom' (default)")
    i.add_argument("--cases", type=int, help="number of labelled cases (default 20; --quick 2)")
    i.add_argument("--repeats", type=int, default=1, help="runs per case and model (median)")
    _common(i)

    w = sub.add_parser("sliding-window", help="B3: the project's sliding window vs MONAI's, same net and windows")
    w.add_argument("--size", type=int, help="cubic volume edge in voxels (default 96; --quick 32)")
    w.add_argument("--patch", type=int, help="cubic window edge (default 64; --quick 16)")
    w.add_argument("--overlap", type=float, default=0.5)
    w.add_argument("--batch-size", type=int, default=2, help="windows per network call")
    w.add_argument("--classes", type=int, default=4)
    w.add_argument("--model", default="tiny", help="tiny (3-level 3D U-Net) or a U-Net preset / channels")
    w.add_argument("--repeats", type=int, help="timed runs of each path, interleaved (default 3; --quick 1)")
    _common(w)

    m = sub.add_parser("memory", help="B5: peak RSS / CUDA memory and step time over 3 patch sizes, 2D and 3D")
    m.add_argument("--steps", type=int, help="timed steps per configuration after one warm-up (default 5; --quick 1)")
    m.add_argument("--batch", type=int, default=2)
    m.add_argument("--dims", type=int, nargs="+", choices=[2, 3], default=[2, 3])
    _model_args(m)
    _common(m)

    g = sub.add_parser("gui", help="B4: event-loop stalls while distilling in the viewer; GUI vs headless samples/s")
    g.add_argument("--steps", type=int, help="training steps per run (default 200; --quick 12)")
    g.add_argument("--warmup", type=int, help="first steps not counted (default 10; --quick 2)")
    g.add_argument("--dims", type=int, choices=[2, 3], default=2)
    g.add_argument("--batch", type=int, default=2)
    g.add_argument("--rounds", type=int, default=1, help="GUI + headless pairs (median reported)")
    g.add_argument("--live-features", type=int, default=0, metavar="N",
                   help="Features widget in live mode, updated every N steps (default 0: no Features widget)")
    g.add_argument("--load", type=int, default=0, metavar="K",
                   help="K busy processes saturating the CPU during the whole benchmark (default 0)")
    g.add_argument("--inference", action="store_true",
                   help="instead: Segment, Compare and Features in the viewer, click to result layers, vs the same "
                        "inference headless (ratio target <= 1.2)")
    g.add_argument("--inference-models", choices=MODEL_CHOICES, default="auto",
                   help="--inference: the cached demo pair, or fresh 2d / 3d teacher + student presets (default "
                        "auto: demo when cached, else 2d; --quick: tiny 2D nets)")
    g.add_argument("--inference-repeats", type=int, metavar="N",
                   help="--inference: timed rounds per widget after a warm-up (median; default 3; --quick 1)")
    _patch_arg(g)
    _model_args(g)
    _common(g, device="cpu")

    t = sub.add_parser("time-to-dice", help="B6: wall time until the DMD student's validation mean Dice >= 0.80")
    t.add_argument("--events", help="analyse this run's events.jsonl (no training)")
    t.add_argument("--threshold", type=float, default=0.80)
    r = t.add_argument_group("or distil now on this machine (stops at the threshold)")
    r.add_argument("--teacher", help="teacher checkpoint or file")
    r.add_argument("--data", help="MSD folder (imagesTr/, labelsTr/), e.g. data/msd_hippocampus")
    r.add_argument("--out", help="output folder of the run (must not hold a run)")
    r.add_argument("--config", help="YAML settings of the run (e.g. a run's config.yaml); default: DMD, "
                                    "student, lr 3e-3, 10 %% validation (at most 20 cases)")
    r.add_argument("--student-model", default="student")
    r.add_argument("--iterations", type=int, help="at most this many steps (default 1500; --quick 20)")
    r.add_argument("--val-interval", type=int, help="validate every N steps (default 100; --quick 5)")
    r.add_argument("--num-threads", type=int, help="torch threads of the run (default: the config's)")
    r.add_argument("--keep-going", action="store_true", help="train all iterations instead of stopping")
    _common(t)

    c = sub.add_parser("corrections", help="the correction loop: a scripted painter corrects the most-disagreeing "
                       "slices, rounds fine-tune the student; validation Dice per round")
    c.add_argument("--dataset", choices=DATASETS, default="phantom2d")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--slices", type=int, default=5, help="slices (2D: tiles) painted per case and round")
    c.add_argument("--cases", type=int, default=3, help="training cases painted per round")
    c.add_argument("--iterations", type=int, help="steps per round (default 300; --quick 10)")
    c.add_argument("--student-iterations", type=int, help="steps of the first, label-free student (default 600)")
    c.add_argument("--teacher-iterations", type=int, help="phantoms without --teacher: teacher steps")
    c.add_argument("--data", help="MSD folder (default: ../shared/data/<dataset>)")
    c.add_argument("--teacher", help="teacher checkpoint (hippocampus, chaos default: the committed teacher, "
                   "with its validation cases)")
    c.add_argument("--downsample", type=int, help="in-plane down-sampling of the cases: block mean for images, "
                   "strided pick for labels (default 2 for chaos, as its teacher was trained; 1 otherwise)")
    c.add_argument("--max-train", type=int, default=40, help="training pool of the student (cases)")
    c.add_argument("--student-model", default="student")
    c.add_argument("--method", help="distillation method of the student and the rounds (default dmd; --quick kd)")
    c.add_argument("--uncertainty-weight", type=float, default=0.5, help="ranking: weight of the student's entropy")
    c.add_argument("--out", help="folder of the runs (default: a new temporary folder)")
    c.add_argument("--control", action="store_true", help="also a control arm: the same rounds from the same "
                   "round-0 student with nothing painted (the teacher everywhere); its Dice per round in the JSON's "
                   "\"control\" and the table's \"control mean\"")
    c.add_argument("--unseen", action="store_true", help="paint (and distil on) only cases the committed teacher "
                   "never trained on (its split left them out): there its prediction is not its own training label")
    c.add_argument("--round-seed", type=int, help="seed of the rounds in both arms (default: the round-0 student's)")
    c.add_argument("--shift", choices=SHIFTS, help="every image as another scanner shows it (scanner: gamma 0.5 and "
                   "a 0.5-1.5 bias field; labels kept): data where the teacher is wrong")
    c.add_argument("--balance-classes", action="store_true", help="the painter ranks slices with every class "
                   "weighed alike, so slices where a small class is lost come first")
    c.add_argument("--focus-fraction", type=float, help="the rounds' share of patches centred on painted voxels "
                   "(default: the config's, 0.9 for a 2D model, 0.5 for 3D)")
    c.add_argument("--round0", metavar="CKPT", help="start from this round-0 student (one this bench distilled "
                   "before with the same data and settings) instead of distilling a new one")
    c.add_argument("--head-supervision", type=float, metavar="W", help="the rounds' (both arms) deep supervision "
                   "at the student's scale heads, MFD/DMD (default 0, as every corrections round)")
    c.add_argument("--seed", type=int, help="seed of the round-0 student and of a phantom teacher trained here "
                   "(default 0); the rounds' is --round-seed")
    c.add_argument("--augment", choices=("off", "intensity", "spatial"), help="the round-0 student (unless --round0) "
                   "and every round of both arms train with augmentation, flips off: intensity changes, or also zoom "
                   "and rotation (spatial); off: none, also where the --round0 student had it; default: the "
                   "dataset's recipe (CHAOS: none)")
    _patch_arg(c)
    _common(c, device="cpu")

    a = sub.add_parser("all", help="B1, B3, B5, then B2 / B4 / B6 when their inputs (or a display) are given")
    a.add_argument("--teacher", help="teacher checkpoint for B2")
    a.add_argument("--student", help="student checkpoint for B2")
    a.add_argument("--data", default="phantom", help="B2 data: MSD folder or 'phantom'")
    a.add_argument("--events", help="B6: a run's events.jsonl")
    _common(a)
    for verb, parser in sub.choices.items():
        if verb in VERBS:
            parser.set_defaults(func=cmd_bench, bench_verb=verb, bench_parser=parser)


def add_bench_parser(sub: Any) -> None:
    """Register ``napari-dmd bench VERB`` on the CLI's sub-parsers."""
    b = sub.add_parser("bench", help="performance benchmarks B1-B6 (docs/benchmarks.md)",
                       description="Performance benchmarks B1-B6; see docs/benchmarks.md.")
    add_verbs(b.add_subparsers(dest="bench_verb", required=True, metavar="BENCHMARK"))


def _run_verb(verb: str, a: argparse.Namespace) -> dict[str, Any]:
    if verb == "step":
        return bench_step(a.dims, a.repeats, a.batch, a.patch, a.teacher_model, a.student_model, a.device, a.quick,
                          a.scale_resample)
    if verb == "inference" and getattr(a, "presets", None):
        return bench_presets(a.presets, max(a.repeats, 3), a.quick)
    if verb == "inference":
        if not (a.teacher and a.student):
            raise ValueError("bench inference: give --teacher and --student checkpoints, or --presets")
        return bench_inference(a.teacher, a.student, a.data, a.cases, a.repeats, a.device, a.quick)
    if verb == "sliding-window":
        return bench_sliding_window(a.size, a.repeats, a.patch, a.overlap, a.batch_size, a.classes, a.model,
                                    a.device, a.quick)
    if verb == "memory":
        return bench_memory(a.steps, a.batch, a.dims, a.teacher_model, a.student_model, a.device, a.quick)
    if verb == "gui" and getattr(a, "inference", False):
        return bench_gui_inference(a.inference_repeats or (1 if a.quick else 3), a.quick, a.inference_models,
                                   a.device)
    if verb == "gui":
        return bench_gui(a.steps, a.warmup, a.dims, a.batch, a.patch, a.teacher_model, a.student_model, a.device,
                         a.rounds, a.quick, live_features=getattr(a, "live_features", 0), load=getattr(a, "load", 0))
    if verb == "time-to-dice":
        if a.events:
            return time_to_dice(a.events, a.threshold)
        if not (a.teacher and a.data and a.out):
            raise ValueError("give --events EVENTS.jsonl, or --teacher, --data and --out to distil now")
        return run_time_to_dice(a.teacher, a.data, a.out, a.threshold, a.iterations, a.val_interval, a.config,
                                a.student_model, a.num_threads, a.device, a.keep_going, a.quick)
    if verb == "corrections":
        return bench_corrections(a.dataset, a.rounds, a.slices, a.cases, a.iterations, a.quick, a.out, a.data,
                                 a.teacher, a.student_iterations, a.teacher_iterations, a.max_train, a.student_model,
                                 a.method, a.uncertainty_weight, a.device, a.patch,
                                 downsample=getattr(a, "downsample", None), control=getattr(a, "control", False),
                                 unseen=getattr(a, "unseen", False), round_seed=getattr(a, "round_seed", None),
                                 shift=getattr(a, "shift", None),
                                 balance_classes=getattr(a, "balance_classes", False),
                                 focus_fraction=getattr(a, "focus_fraction", None), round0=getattr(a, "round0", None),
                                 head_supervision=getattr(a, "head_supervision", None),
                                 augment=getattr(a, "augment", None), seed=getattr(a, "seed", None))
    raise ValueError(f"unknown benchmark {verb!r}")


def _run_all(a: argparse.Namespace) -> dict[str, Any]:
    ns = argparse.Namespace
    q, dev = a.quick, a.device
    out: dict[str, Any] = {}
    plan: list[tuple[str, argparse.Namespace | None, str]] = [
        ("step", ns(dims=3, repeats=None, batch=2, patch=None, teacher_model=None, student_model=None,
                    scale_resample="up"), ""),
        ("sliding-window", ns(size=None, repeats=None, patch=None, overlap=0.5, batch_size=2, classes=4,
                              model="tiny"), ""),
        ("memory", ns(steps=None, batch=2, dims=[2, 3], teacher_model=None, student_model=None), ""),
        ("inference", ns(teacher=a.teacher, student=a.student, data=a.data, cases=None, repeats=1)
         if a.teacher and a.student else None, "give --teacher and --student"),
        ("gui", ns(steps=None, warmup=None, dims=2, batch=2, patch=None, teacher_model=None, student_model=None,
                   rounds=1) if os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM") else None,
         "no display; run under xvfb-run -a"),
        ("time-to-dice", ns(events=a.events, threshold=0.80) if a.events else None, "give --events"),
    ]
    for verb, sub_args, why in plan:
        print(f"\n## {verb}")
        if sub_args is None:
            print(f"skipped: {why}")
            out[verb] = {"skipped": why}
            continue
        sub_args.quick, sub_args.device = q, ("cpu" if verb == "gui" and dev == "auto" else dev)
        out[verb] = _run_verb(verb, sub_args)
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    """Print the machine and the command, run the benchmark, print its tables, optionally write JSON."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    machine, cmd = machine_info(), command_line(args)
    print(format_machine(machine))
    print(f"command: {cmd}", flush=True)
    verb = args.bench_verb
    results = _run_all(args) if verb == "all" else _run_verb(verb, args)
    if args.json:
        doc = {"benchmark": verb, "machine": machine, "command": cmd,
               "date": datetime.now(UTC).isoformat(timespec="seconds"), "results": results}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
        print(f"results written to {args.json}")
    return 0
