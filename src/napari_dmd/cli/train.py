"""``napari-dmd train-teacher`` and ``napari-dmd distill``: checks, then :mod:`napari_dmd.runner`'s run path."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..runs import SAFE_TO_CHANGE
from .cases import _add_data_flags, _check_run_dir, _load_cases, _split_for_labels
from .flags import _add_config_flags, _build_config
from .progress import _dice_text, _drive, _print_params

OUT_HELP = ("output folder (default: a new folder under $NAPARI_DMD_RUNS or ~/napari-dmd-runs, named {kind}-<date>-"
            "<time>, never one in use; with --resume: that run's own folder)")


def _run_folder(args: argparse.Namespace, kind: str) -> Path:
    """``--out``, else the resumed run's folder, else a fresh folder (:func:`napari_dmd.runner.default_output_dir`)."""
    from ..config import ConfigError
    from ..runner import default_output_dir

    if args.out:
        return Path(args.out)
    if args.resume:
        return Path(args.resume).parent
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each process would pick its own dated folder
        raise ConfigError("under torchrun give --out FOLDER (all processes must write to the same run folder)")
    return default_output_dir(kind)


def _start(args: argparse.Namespace, kind: str) -> Path:
    """Choose and check the run folder before any data is read; print it."""
    out = _run_folder(args, kind)
    _check_run_dir(out, args.resume)
    args.out = str(out)
    print(f"run folder: {out}")
    return out


def cmd_train_teacher(args: argparse.Namespace) -> int:
    """Run ``napari-dmd train-teacher``."""
    from ..data.cases import check_patch_size
    from ..data.checks import resolve_class_names
    from ..runner import final_checkpoint, prepare_run

    cfg = _build_config(args, method="none" if args.method is None else None)
    if args.model is None and not getattr(args, "config", None):
        cfg.model = "teacher"
    out = _start(args, "teacher")
    cases, names = _load_cases(args)
    check_patch_size(cfg.patch_size, cases)
    cfg.num_classes, cfg.class_names = resolve_class_names(  # dataset.json's classes fix the class count
        cfg.num_classes, (args.config, cfg.class_names), (f"{args.data}/dataset.json", names))
    d, warnings = prepare_run(cfg, cases, output_dir=out, resume=args.resume, role="teacher")
    for warning in warnings:  # e.g. flips on classes told apart by position
        print(f"warning: {warning}", file=sys.stderr)
    _print_params("teacher", d.parameter_counts()["model"])
    result = _drive(d, args.quiet)
    print(f"teacher checkpoint: {final_checkpoint(d)}  ({_dice_text(result['best_dice'])}, {result['wall_s']:.0f} s)")
    return 0


def _teacher(args: argparse.Namespace) -> Any:
    """``--teacher``; without it, with ``--resume``, the teacher the resumed run recorded."""
    from ..teachers import teacher_from_args

    if args.teacher:
        return teacher_from_args(args)
    from ..checkpoint import load_checkpoint
    from ..corrections import recorded_teacher

    return recorded_teacher(load_checkpoint(args.resume), args.resume)


def _cmd_round(args: argparse.Namespace) -> int:
    """``distill --resume CKPT --corrections FILE...``: a new round (a new folder) from that checkpoint; ``distill
    --resume ROUND/last.pt`` (a round's folder): that round resumed exactly, with its own corrections."""
    from ..checkpoint import load_checkpoint
    from ..config import ConfigError
    from ..corrections import load_corrections, match_files, resume_round, split_by_record, start_round
    from ..runner import final_checkpoint
    from .flags import _config_fields

    if args.config:
        raise ConfigError("--config: a corrections round takes its parent's settings; change them with flags "
                          "(e.g. --iterations, --lr)")
    if not (args.data or args.images):
        raise ConfigError(f"--resume {args.resume}: give the run's data (--data FOLDER or --images FILE...)")
    flags = {f.name: getattr(args, f.name) for f in _config_fields() if getattr(args, f.name, None) is not None}
    ckpt = load_checkpoint(args.resume)
    if args.corrections:
        out = Path(args.out) if args.out else None
        if out is not None:
            _check_run_dir(out)
        cases, _ = _load_cases(args)
        train, val = split_by_record(ckpt, cases, args.resume)
        files = match_files(args.corrections, [c.name for c in train], [c.name for c in val])
        corr = [None if f is None else load_corrections(f) for f in files]
        teacher = _teacher(args)
        d = start_round(args.resume, train, corr, teacher=teacher, iterations=flags.pop("iterations", 300),
                        out=out, val_cases=val, sources=[str(f or c.name) for f, c in zip(files, train)], **flags)
        info = json.loads((d.output_dir / "round.json").read_text(encoding="utf-8"))
        print(f"run folder: {d.output_dir}")
        print(f"round {info['round']} from {args.resume}: {info['painted_voxels']:,} voxels painted in "
              f"{len(info['cases'])} case(s), {d.total} iterations at lr {d.config.lr:g}")
    else:
        out = _start(args, "round")
        cases, _ = _load_cases(args)
        unsafe = sorted(k for k in flags if k not in SAFE_TO_CHANGE)
        if unsafe:
            raise ConfigError(f"--resume {args.resume}: a round resumes with its own settings; "
                              f"--{unsafe[0].replace('_', '-')} cannot change")
        d = resume_round(args.resume, cases, teacher=_teacher(args), **flags)
        print(f"resuming round at iteration {d.iteration} in {out}")
    _print_params(f"student ({d.config.model})", d.parameter_counts()["model"])
    result = _drive(d, args.quiet)
    print(f"student checkpoint: {final_checkpoint(d)}  ({_dice_text(result['best_dice'])}, {result['wall_s']:.0f} s)")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """Run ``napari-dmd distill``."""
    from ..config import ConfigError
    from ..corrections import round_info
    from ..data.cases import check_patch_size
    from ..data.checks import resolve_class_names
    from ..runner import final_checkpoint, prepare_run

    if args.corrections and not args.resume:
        raise ConfigError("--corrections needs --resume CHECKPOINT (the student the round continues)")
    if not args.teacher and not args.resume:
        raise ConfigError("the following arguments are required: --teacher")
    if args.resume and (args.corrections or round_info(args.resume) is not None):
        return _cmd_round(args)
    cfg = _build_config(args)
    out = _start(args, f"student-{cfg.method}")
    teacher = _teacher(args)
    cases, names = _load_cases(args)
    check_patch_size(cfg.patch_size, cases)
    _, cfg.class_names = resolve_class_names(cfg.num_classes or teacher.num_classes, (args.config, cfg.class_names),
                                             (teacher.source, teacher.class_names),
                                             (f"{args.data}/dataset.json", names))
    train, val = _split_for_labels(cases, cfg, args)
    d, warnings = prepare_run(cfg, train, val_cases=val, teacher=teacher, output_dir=out, resume=args.resume)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    counts = d.parameter_counts()
    _print_params("teacher", counts["teacher"])
    _print_params(f"student ({cfg.model})", counts["model"], counts["teacher"])
    result = _drive(d, args.quiet)
    print(f"student checkpoint: {final_checkpoint(d)}  ({_dice_text(result['best_dice'])}, {result['wall_s']:.0f} s)")
    return 0


def add_train_parsers(sub: Any) -> None:
    """Add ``train-teacher`` and ``distill`` to the CLI's subparsers."""
    from .flags import add_teacher_flags

    t = sub.add_parser("train-teacher", help="train a teacher U-Net on labelled data")
    t.add_argument("--config", help="YAML file of settings (a run's saved config.yaml works as is)")
    t.add_argument("--out", help=OUT_HELP.format(kind="teacher"))
    t.add_argument("--resume", help="resume from this last.pt, in its folder, with the run's settings and data")
    t.add_argument("--quiet", action="store_true")
    _add_data_flags(t)
    _add_config_flags(t)
    t.set_defaults(func=cmd_train_teacher)

    d = sub.add_parser("distill", help="distil a small student from a teacher")
    d.add_argument("--config", help="YAML file of settings (a run's saved config.yaml works as is)")
    d.add_argument("--out", help=OUT_HELP.format(kind="student-<method>"))
    d.add_argument("--resume", help="resume from this last.pt, in its folder, with the run's settings, data, teacher "
                                    "(--teacher: default the run's own)")
    d.add_argument("--corrections", nargs="+", metavar="FILE",
                   help="with --resume CHECKPOINT: start a new round (a new folder) from that student with these "
                        "painted corrections (label files, 255 = unpainted; one per training case, matched by "
                        "case name in the file name, else in order) as ground truth over the teacher's targets; "
                        "default 300 iterations at the run's lr / 5; give the run's --data")
    d.add_argument("--quiet", action="store_true")
    add_teacher_flags(d, required=False)
    _add_data_flags(d)
    _add_config_flags(d)
    d.set_defaults(func=cmd_distill)
