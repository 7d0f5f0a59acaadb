"""Command line: napari-dmd train-teacher | distill | predict | evaluate | export | demo.

Every verb calls the same engine as the napari widgets. Bad input ends with a one-line error and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


# ---------------------------------------------------------------------------------------------- helpers
def _progress_line(done: int, total: int, extra: str = "", width: int = 28) -> str:
    frac = done / max(total, 1)
    bar = "#" * int(frac * width)
    return f"\r[{bar:<{width}}] {done}/{total} {extra}"


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _config_fields() -> list[dataclasses.Field]:
    from .config import TrainConfig

    return [f for f in dataclasses.fields(TrainConfig) if f.name not in ("extra", "class_names")]


def _field_kind(f: dataclasses.Field) -> tuple[type, bool]:
    """(scalar type, is_list) of a TrainConfig field."""
    hints = typing.get_type_hints(__import__("napari_dmd.config", fromlist=["TrainConfig"]).TrainConfig)
    t = hints[f.name]
    args = [a for a in typing.get_args(t) if a is not type(None)] if isinstance(t, types.UnionType) else [t]
    t = args[0]
    if typing.get_origin(t) is list:
        return typing.get_args(t)[0], True
    return t, False


def _add_config_flags(p: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    from .config import HELP

    g = p.add_argument_group("training settings (override --config)")
    for f in _config_fields():
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        scalar, is_list = _field_kind(f)
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f"{HELP.get(f.name, '')} (default {default})"
        if scalar is bool:
            g.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                           help=text)
        elif is_list:
            g.add_argument(flag, dest=f.name, default=None, nargs="+", type=scalar, help=text)
        else:
            g.add_argument(flag, dest=f.name, default=None, type=scalar, help=text)


def _build_config(args: argparse.Namespace, **forced: Any):
    from .config import TrainConfig

    cfg = TrainConfig.load_yaml(args.config) if getattr(args, "config", None) else TrainConfig()
    for f in _config_fields():
        v = getattr(args, f.name, None)
        if v is not None:
            setattr(cfg, f.name, v)
    for k, v in forced.items():
        if v is not None:
            setattr(cfg, k, v)
    return cfg.validate()


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder in Medical Segmentation Decathlon layout (imagesTr/, labelsTr/), "
                                  "or a folder with images/ and labels/ subfolders")
    g.add_argument("--images", nargs="+", help="image files (or one folder of images)")
    g.add_argument("--labels", nargs="+", help="label files matching --images (or one folder)")
    g.add_argument("--spacing-csv", help="CSV with 'filename' and 'pixel size' columns (2D images)")
    g.add_argument("--max-cases", type=int, help="use at most this many cases (after sorting by name)")
    g.add_argument("--labelled-cases", type=int,
                   help="keep labels for only this many training cases; the rest are distilled unlabelled "
                        "(the validation split keeps its labels)")
    g.add_argument("--no-labels", action="store_true", help="distil without any training labels")


def _load_cases(args: argparse.Namespace):
    from .data.cases import load_folder_pairs, load_msd_folder, load_pair_lists
    from .data.io import DataError

    names = None
    if args.data:
        root = Path(args.data)
        if not root.is_dir():
            raise DataError(f"{root}: --data must be a folder (MSD layout or images/ + labels/)")
        if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
            cases, names = load_msd_folder(root)
        elif (root / "images").is_dir():
            labels = root / "labels"
            csv = args.spacing_csv or next(iter(sorted(root.glob("*.csv"))), None)
            cases = load_folder_pairs(root / "images", labels if labels.is_dir() else None, spacing_csv=csv)
        else:
            raise DataError(f"{root}: found neither imagesTr/ (MSD layout) nor images/ in this folder")
    elif args.images:
        if len(args.images) == 1 and Path(args.images[0]).is_dir():
            lab = args.labels[0] if args.labels else None
            cases = load_folder_pairs(args.images[0], lab, spacing_csv=args.spacing_csv)
        else:
            cases = load_pair_lists(args.images, args.labels)
    else:
        raise DataError("no input data: give --data FOLDER or --images FILE...")
    cases = sorted(cases, key=lambda c: c.name)
    if args.max_cases:
        cases = cases[: args.max_cases]
    if not cases:
        raise DataError(f"{args.data or args.images}: no image files found")
    return cases, names


def _split_for_labels(cases, cfg, args):
    """Return (train, val) when only some training cases keep labels, else (cases, None)."""
    n_lab = 0 if args.no_labels else args.labelled_cases
    if n_lab is None:
        return cases, None
    from .data.sampling import split_cases

    labelled = [c for c in cases if c.has_label]
    tr, va = split_cases(len(labelled), cfg.val_fraction, cfg.seed)
    val = [labelled[i] for i in va]
    train = [labelled[i] for i in tr] + [c for c in cases if not c.has_label]
    for i, c in enumerate(train):
        if i >= n_lab:
            train[i] = dataclasses.replace(c, label=None)
    return train, val


def _drive(distiller, quiet: bool = False) -> dict[str, Any]:
    """Run the engine with a progress bar; Ctrl-C stops cleanly after writing a checkpoint."""
    gen = distiller.run()
    quiet = quiet or not distiller.dist.is_main  # under torchrun only rank 0 reports
    last_len = 0
    tty = sys.stderr.isatty()
    every = max(1, distiller.total // 20)
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            if not quiet:
                print(file=sys.stderr)
            return stop.value
        except KeyboardInterrupt:
            distiller.request_stop()
            print("\ninterrupted: stopping and writing a checkpoint...", file=sys.stderr)
            continue
        if quiet:
            continue
        if ev.kind == "step":
            parts = " ".join(f"{k} {v:.3f}" for k, v in ev.parts.items() if k != "total")
            line = _progress_line(ev.iteration, ev.total,
                                  f"loss {ev.parts.get('total', 0):.3f} ({parts}) lr {ev.lr:.1e} "
                                  f"{ev.samples_per_s:.1f} samples/s ETA {_fmt_eta(ev.eta_s)}")
            if tty:
                print(line.ljust(last_len), end="", file=sys.stderr, flush=True)
                last_len = len(line)
            elif ev.iteration % every == 0 or ev.iteration == ev.total:
                print(line.lstrip("\r"), file=sys.stderr, flush=True)
        else:
            print(f"\n{ev.message}" if ev.kind != "start" else ev.message, file=sys.stderr, flush=True)
            last_len = 0


def _print_params(label: str, n: int, ref: int | None = None) -> None:
    ratio = f"  (1/{ref / n:.1f} of the teacher)" if ref else ""
    print(f"{label}: {n:,} parameters{ratio}")


# ---------------------------------------------------------------------------------------------- verbs
def cmd_train_teacher(args: argparse.Namespace) -> int:
    from .distill.engine import Distiller

    cfg = _build_config(args, method="none" if args.method is None else None)
    if args.model is None and not getattr(args, "config", None):
        cfg.model = "teacher"
    cases, names = _load_cases(args)
    cfg.class_names = cfg.class_names or names
    d = Distiller(cfg, cases, output_dir=args.out, role="teacher", resume=args.resume)
    _print_params("teacher", d.parameter_counts()["model"])
    result = _drive(d, args.quiet)
    print(f"teacher checkpoint: {d.best_path if d.best_path.exists() else d.last_path}  "
          f"(best validation mean Dice {result['best_dice']:.4f}, {result['wall_s']:.0f} s)")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .distill.engine import Distiller
    from .teachers import teacher_from_args

    cfg = _build_config(args)
    teacher = teacher_from_args(args)
    cases, names = _load_cases(args)
    cfg.class_names = cfg.class_names or teacher.class_names or names
    train, val = _split_for_labels(cases, cfg, args)
    resume = args.resume
    d = Distiller(cfg, train, val_cases=val, teacher=teacher, output_dir=args.out, resume=resume)
    counts = d.parameter_counts()
    _print_params("teacher", counts["teacher"])
    _print_params(f"student ({cfg.model})", counts["model"], counts["teacher"])
    result = _drive(d, args.quiet)
    print(f"student checkpoint: {d.best_path if d.best_path.exists() else d.last_path}  "
          f"(best validation mean Dice {result['best_dice']:.4f}, {result['wall_s']:.0f} s)")
    return 0


def _output_path(out: Path, src_name: str, many: bool) -> Path:
    if many or out.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        return out / src_name
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from .data.io import DataError, read_image, write_image
    from .segment import Segmenter

    seg = Segmenter.from_checkpoint(args.model, device=args.device)
    inputs: list[Path] = []
    for item in args.input:
        p = Path(item)
        if p.is_dir():
            inputs += sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith("."))
        else:
            inputs.append(p)
    if not inputs:
        raise DataError(f"{args.input}: no input images")
    out = Path(args.output)
    many = len(inputs) > 1
    targets = [_output_path(out, p.name, many) for p in inputs]
    clashes = [t for t in targets if t.exists()]
    if clashes and not args.overwrite:
        raise DataError(f"{clashes[0]}: output file exists; pass --overwrite to replace it")
    for src, dst in zip(inputs, targets):
        img = read_image(src)
        t0 = time.perf_counter()

        def progress(done: int, total: int, name: str = src.name) -> None:
            if not args.quiet:
                print(_progress_line(done, total, name), end="", file=sys.stderr, flush=True)

        labels = seg(img.array, progress=progress, source=str(src))
        write_image(dst, labels, img.spacing, img.affine, overwrite=args.overwrite)
        if not args.quiet:
            print(file=sys.stderr)
        print(f"{src} -> {dst}  ({time.perf_counter() - t0:.2f} s)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .checkpoint import load_checkpoint
    from .metrics import evaluate, summarize
    from .segment import Segmenter

    cases, _ = _load_cases(args)
    ckpt = load_checkpoint(args.model)
    val_names = ckpt.get("val_cases")
    if args.split == "val":
        if not val_names:
            raise ValueError(f"{args.model}: records no validation split; use --split all")
        cases = [c for c in cases if c.name in set(val_names)]
        if not cases:
            raise ValueError(f"{args.model}: none of its validation cases is in the given data")
    cases = [c for c in cases if c.has_label]
    if not cases:
        raise ValueError("evaluate needs labelled cases")
    models = [("model", Segmenter.from_checkpoint(args.model, args.device))]
    if args.teacher:
        models.insert(0, ("teacher", Segmenter.from_checkpoint(args.teacher, args.device)))
    report: dict[str, Any] = {"cases": [c.name for c in cases]}
    for label, seg in models:
        results, times = [], []
        for c in cases:
            pred, dt = seg.timed(c.image, source=c.image_path or c.name)
            times.append(dt)
            results.append(evaluate(pred, c.label, seg.num_classes, c.spacing, class_names=seg.class_names))
        summ = summarize(results)
        summ["parameters"] = seg.parameters
        summ["seconds_per_case"] = float(np.mean(times))
        report[label] = summ
        dice = summ.get("dice_mean", [])
        hd = summ.get("hd95_mean", [])
        print(f"{label} ({seg.name}): {seg.parameters:,} parameters, {len(cases)} cases, "
              f"{summ['seconds_per_case']:.3f} s/case")
        names = seg.class_names or [f"class {i}" for i in range(seg.num_classes)]
        for i, d in enumerate(dice):
            cls = names[i + 1] if len(names) > i + 1 else f"class {i + 1}"
            hd_s = f"  HD95 {hd[i]:.2f} mm" if i < len(hd) else ""
            print(f"  {cls:<24} Dice {d:.4f}{hd_s}")
        print(f"  mean foreground Dice {summ['mean_dice']:.4f}")
    if args.teacher:
        t, s = report["teacher"], report["model"]
        ratio = t["parameters"] / max(s["parameters"], 1)
        print(f"compression: {ratio:.1f}x fewer parameters, {t['seconds_per_case'] / s['seconds_per_case']:.1f}x "
              f"faster, Dice retention {100 * s['mean_dice'] / max(t['mean_dice'], 1e-9):.1f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=Path(args.out), iterations=args.iterations, spatial_dims=args.dims, quiet=args.quiet)
    return 0


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-dmd", description=__doc__.split("\n")[0])
    from . import __version__
    from .export import add_export_parser
    from .teachers import add_teacher_flags

    p.add_argument("--version", action="version", version=f"napari-dmd {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = sub.add_parser("train-teacher", help="train a teacher U-Net on labelled data")
    t.add_argument("--config", help="YAML file of settings (a run's saved config.yaml works as is)")
    t.add_argument("--out", default="runs/teacher", help="output folder for checkpoints and logs")
    t.add_argument("--resume", help="resume from this last.pt")
    t.add_argument("--quiet", action="store_true")
    _add_data_flags(t)
    _add_config_flags(t)
    t.set_defaults(func=cmd_train_teacher)

    d = sub.add_parser("distill", help="distil a small student from a teacher")
    d.add_argument("--config", help="YAML file of settings (a run's saved config.yaml works as is)")
    d.add_argument("--out", default="runs/student", help="output folder for checkpoints and logs")
    d.add_argument("--resume", help="resume from this last.pt")
    d.add_argument("--quiet", action="store_true")
    add_teacher_flags(d)
    _add_data_flags(d)
    _add_config_flags(d)
    d.set_defaults(func=cmd_distill)

    r = sub.add_parser("predict", help="segment images with a trained model")
    r.add_argument("--model", required=True, help="checkpoint (.pt)")
    r.add_argument("--input", required=True, nargs="+", help="image files or a folder")
    r.add_argument("--output", required=True, help="output file (one input) or folder")
    r.add_argument("--overwrite", action="store_true", help="replace existing output files")
    r.add_argument("--device", default="auto")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="per-class Dice / HD95 of a model (and its teacher) on labelled data")
    e.add_argument("--model", required=True, help="checkpoint to evaluate")
    e.add_argument("--teacher", help="also evaluate this teacher and print the compression report")
    e.add_argument("--split", choices=["val", "all"], default="val",
                   help="the validation split recorded in the checkpoint (default) or all cases")
    e.add_argument("--json", help="write the report to this JSON file")
    e.add_argument("--device", default="auto")
    _add_data_flags(e)
    e.set_defaults(func=cmd_evaluate)

    add_export_parser(sub)

    m = sub.add_parser("demo", help="headless teacher -> DMD student on the built-in synthetic phantom")
    m.add_argument("--out", default="runs/demo")
    m.add_argument("--iterations", type=int, default=300)
    m.add_argument("--dims", type=int, choices=[2, 3], default=2)
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # idle OpenMP threads sleep instead of spinning: on a shared or small machine spinning threads can slow
    # training by an order of magnitude (measured 25x on 2 busy cores); set OMP_WAIT_POLICY to override
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data.io import DataError
    from .distill.engine import TrainingError

    try:
        return int(args.func(args) or 0)
    except (DataError, ConfigError, CheckpointError, TrainingError, ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        if isinstance(e, OSError) and getattr(e, "filename", None) and str(e.filename) not in msg:
            msg = f"{e.filename}: {msg}"
        print(f"napari-dmd {args.verb}: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"napari-dmd {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
