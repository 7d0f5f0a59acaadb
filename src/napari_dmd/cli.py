"""Command line: napari-dmd train-teacher | distill | predict | evaluate | export | bench | demo.

Every verb calls the same engine as the napari widgets. Bad input ends with a one-line error and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_BUG = 1


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to find help, not the whole usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


_TYPE_WORDS = {int: "integer", float: "number", str: "string", bool: "true/false", type(None): "null"}


def _type_ok(value: Any, hint: Any) -> bool:
    """True when ``value`` (from YAML) fits the type hint of a TrainConfig field."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    origin = typing.get_origin(hint)
    if origin is list:
        return isinstance(value, list) and all(_type_ok(v, typing.get_args(hint)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint in (str, type(None)):
        return isinstance(value, hint)
    return True


def _type_words(hint: Any) -> str:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_words(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_type_words(typing.get_args(hint)[0])}s"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _check_config_types(cfg: Any, source: str) -> None:
    """Refuse settings of the wrong type in a config file (numbers written as text, e.g. ``1e-3``, are read)."""
    from .config import ConfigError, TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        value, hint = getattr(cfg, f.name), hints[f.name]
        if isinstance(value, str) and _type_ok(1.5, hint) and not _type_ok(value, hint):
            try:  # YAML reads 1e-3 (no dot) as a string
                value = float(value)
                setattr(cfg, f.name, value)
            except ValueError:
                pass
        if not _type_ok(value, hint):
            raise ConfigError(f"{source}: setting {f.name} must be {_type_words(hint)}, got {value!r}")


def _load_config_file(path: str):
    """TrainConfig from a YAML file; every error names the file."""
    from .config import ConfigError, TrainConfig

    try:
        cfg = TrainConfig.load_yaml(path)
    except ConfigError as e:
        msg = str(e)
        mark = getattr(e.__cause__, "problem_mark", None)
        if mark is not None:  # a YAML syntax error: say where
            problem = getattr(e.__cause__, "problem", None) or "syntax error"
            msg = f"{path}: line {mark.line + 1}, column {mark.column + 1}: {problem} (not valid YAML)"
        if "unknown setting" in msg:
            msg += " (a config file holds training settings only; give output folders and checkpoints " \
                   "on the command line: --out, --resume, --teacher)"
        raise ConfigError(msg if str(path) in msg else f"{path}: {msg}") from e
    _check_config_types(cfg, str(path))
    return cfg


def _build_config(args: argparse.Namespace, **forced: Any):
    from .config import ConfigError, TrainConfig

    cfg = _load_config_file(args.config) if getattr(args, "config", None) else TrainConfig()
    for f in _config_fields():
        v = getattr(args, f.name, None)
        if v is not None:
            setattr(cfg, f.name, v)
    for k, v in forced.items():
        if v is not None:
            setattr(cfg, k, v)
    try:
        return cfg.validate()
    except ConfigError as e:  # a bad value from the config file: name the file
        src, name = getattr(args, "config", None), str(e).split(" ", 1)[0]
        from_file = src and name in {f.name for f in dataclasses.fields(cfg)} and getattr(args, name, None) is None
        raise ConfigError(f"{src}: {e}" if from_file and str(src) not in str(e) else str(e)) from e


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
    from .config import ConfigError
    from .data.cases import load_folder_pairs, load_msd_folder, load_pair_lists
    from .data.io import DataError

    if args.max_cases is not None and args.max_cases < 1:
        raise ConfigError(f"--max-cases must be >= 1, got {args.max_cases}")
    if getattr(args, "labelled_cases", None) is not None and args.labelled_cases < 0:
        raise ConfigError(f"--labelled-cases must be >= 0, got {args.labelled_cases}")
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
    if args.max_cases is not None:
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
        except Exception:
            if last_len:  # end the progress line, so that the error message gets a line of its own
                print(file=sys.stderr)
            raise
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
    ratio = ""
    if ref:
        ratio = f"  (1/{ref / n:.1f} of the teacher)" if n <= ref else f"  ({n / ref:.1f}x the teacher)"
    print(f"{label}: {n:,} parameters{ratio}")


def _dice_text(best: float) -> str:
    return f"best validation mean Dice {best:.4f}" if best >= 0 else "not validated: no validation cases"


# ------------------------------------------------------------------------------------------ pre-checks
from .runs import RUN_FILES  # noqa: E402 - the files of a run folder (last.pt, best.pt, config.yaml, ...)


def _check_writable(folder: Path, what: str = "output folder") -> None:
    """Refuse a folder that cannot be created or written, before any work is done (nothing is created)."""
    from .data.io import DataError

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise DataError(f"{folder}: cannot be used as {what}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise DataError(f"{folder}: {what} is not writable ({e.strerror or e})") from e


def _check_run_dir(out: Path, resume: str | None = None) -> None:
    """The run folder: writable, no run file leading outside through a link, no other run's files in a new run."""
    from .runs import check_new_run_folder
    from .safe_paths import resolve_inside

    for name in RUN_FILES:
        resolve_inside(out, name, what="run file")
    _check_writable(out, "the --out folder")
    if resume is None:
        check_new_run_folder(out)


def _check_dims(cases, spatial_dims: int | None, model: str) -> None:
    """A 3D model needs 3D images (a one-slice volume reads as 2D); the message names the image and model."""
    from .data.checks import shape_text
    from .data.io import DataError

    case = min(cases, key=lambda c: c.ndim)
    if spatial_dims is not None and spatial_dims > case.ndim:
        hint = " (a volume with a single slice reads as 2D)" if case.ndim == 2 else ""
        raise DataError(f"{case.source}: {case.ndim}D image of shape {shape_text(case.image.shape, case.image_path)}"
                        f"{hint}, but {model} is "
                        f"{spatial_dims}D; give {spatial_dims}D volumes or a {case.ndim}D model")


def _check_patch(d, cfg) -> None:
    """Refuse a patch the model cannot train on: instance norm needs more than one voxel at the deepest level."""
    from .config import ConfigError

    stride = d.model.total_stride
    bottom = [-(-int(p) // stride) for p in d.patch_size]
    if cfg.norm == "instance" and math.prod(bottom) < 2:
        raise ConfigError(f"patch_size {list(d.patch_size)} is too small for model {cfg.model!r}: it is halved "
                          f"down to one voxel, which instance normalization cannot train on; use patch_size "
                          f"{2 * stride} or more along one axis (small images are padded) or a shallower model "
                          f"such as --model 8,16,32")


# ---------------------------------------------------------------------------------------------- verbs
def cmd_train_teacher(args: argparse.Namespace) -> int:
    from .data.cases import check_patch_size
    from .data.checks import resolve_class_names
    from .distill.engine import Distiller

    cfg = _build_config(args, method="none" if args.method is None else None)
    if args.model is None and not getattr(args, "config", None):
        cfg.model = "teacher"
    args.out = args.out or (str(Path(args.resume).parent) if args.resume else "runs/teacher")
    _check_run_dir(Path(args.out), args.resume)
    cases, names = _load_cases(args)
    _check_dims(cases, cfg.spatial_dims, "the model (spatial_dims)")
    check_patch_size(cfg.patch_size, cases)
    cfg.num_classes, cfg.class_names = resolve_class_names(  # dataset.json's classes fix the class count
        cfg.num_classes, (args.config, cfg.class_names), (f"{args.data}/dataset.json", names))
    d = Distiller(cfg, cases, output_dir=args.out, role="teacher", resume=args.resume)
    _check_patch(d, cfg)
    _print_params("teacher", d.parameter_counts()["model"])
    result = _drive(d, args.quiet)
    print(f"teacher checkpoint: {d.best_path if d.best_path.exists() else d.last_path}  "
          f"({_dice_text(result['best_dice'])}, {result['wall_s']:.0f} s)")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .data.cases import check_patch_size
    from .data.checks import resolve_class_names
    from .distill.engine import Distiller
    from .teachers import check_teacher, teacher_from_args

    cfg = _build_config(args)
    args.out = args.out or (str(Path(args.resume).parent) if args.resume else "runs/student")
    _check_run_dir(Path(args.out), args.resume)
    teacher = teacher_from_args(args)
    cases, names = _load_cases(args)
    _check_dims(cases, cfg.spatial_dims or teacher.spatial_dims,
                f"the teacher {teacher.source}" if cfg.spatial_dims is None else "the model (spatial_dims)")
    for warning in check_teacher(teacher, cases, num_classes=cfg.num_classes):
        print(f"warning: {warning}", file=sys.stderr)
    check_patch_size(cfg.patch_size, cases)
    _, cfg.class_names = resolve_class_names(cfg.num_classes or teacher.num_classes, (args.config, cfg.class_names),
                                             (teacher.source, teacher.class_names),
                                             (f"{args.data}/dataset.json", names))
    train, val = _split_for_labels(cases, cfg, args)
    d = Distiller(cfg, train, val_cases=val, teacher=teacher, output_dir=args.out, resume=args.resume)
    _check_patch(d, cfg)
    counts = d.parameter_counts()
    _print_params("teacher", counts["teacher"])
    _print_params(f"student ({cfg.model})", counts["model"], counts["teacher"])
    result = _drive(d, args.quiet)
    print(f"student checkpoint: {d.best_path if d.best_path.exists() else d.last_path}  "
          f"({_dice_text(result['best_dice'])}, {result['wall_s']:.0f} s)")
    return 0


def _output_path(out: Path, src_name: str, many: bool) -> Path:
    """Where one prediction goes: ``out`` itself, or a file of the input's name inside the folder ``out``."""
    from .safe_paths import resolve_inside

    if many or out.is_dir():
        return resolve_inside(out, src_name, what="output file")
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from .data.checks import shape_text
    from .data.io import WRITABLE_SUFFIXES, DataError, file_suffix, is_supported_file, read_image, write_image
    from .segment import Segmenter

    seg = Segmenter.from_checkpoint(args.model, device=args.device)
    inputs: list[Path] = []
    for item in args.input:
        p = Path(item)
        if p.is_dir():
            inputs += sorted(q for q in p.iterdir() if q.is_file() and is_supported_file(q))
        else:
            inputs.append(p)
    if not inputs:
        raise DataError(f"{' '.join(args.input)}: no input images")
    out = Path(args.output)
    many = len(inputs) > 1
    targets = [_output_path(out, p.name, many) for p in inputs]
    for src, dst in zip(inputs, targets):
        if file_suffix(dst) not in WRITABLE_SUFFIXES:
            raise DataError(f"{dst}: cannot write labels as '{file_suffix(dst) or dst.name}'; use one of "
                            f"{', '.join(WRITABLE_SUFFIXES)}")
        if src.exists() and dst.exists() and src.resolve() == dst.resolve():
            raise DataError(f"{dst}: the output would replace the input image; choose another output")
    clashes = [t for t in targets if t.exists()]
    if clashes and not args.overwrite:
        raise DataError(f"{clashes[0]}: output file exists; pass --overwrite to replace it")
    for folder in sorted({t.parent for t in targets}):
        _check_writable(folder)
    for src, dst in zip(inputs, targets):
        img = read_image(src)
        if min(img.array.shape) < 2:
            raise DataError(f"{src}: image too small to segment (shape {shape_text(img.array.shape, str(src))}); "
                            "every dimension needs "
                            ">= 2 voxels")
        t0 = time.perf_counter()
        shown = [False]

        def progress(done: int, total: int, name: str = src.name, shown: list[bool] = shown) -> None:
            if not args.quiet:
                shown[0] = True
                print(_progress_line(done, total, name), end="", file=sys.stderr, flush=True)

        try:
            labels = seg(img.array, progress=progress, source=str(src))
            write_image(dst, labels, img.spacing, img.affine, overwrite=args.overwrite)
        finally:
            if shown[0]:  # end the progress line, so that an error message gets a line of its own
                print(file=sys.stderr)
        print(f"{src} -> {dst}  ({time.perf_counter() - t0:.2f} s)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .checkpoint import load_checkpoint
    from .data.io import DataError
    from .metrics import evaluate, summarize
    from .safe_paths import atomic_write_text
    from .segment import Segmenter

    report_path = Path(args.json) if args.json else None
    if report_path is not None:
        if report_path.exists() and not args.overwrite:
            raise DataError(f"{report_path}: report file exists; pass --overwrite to replace it")
        if report_path.is_dir():
            raise DataError(f"{report_path}: is a folder; give a file name for the JSON report")
        _check_writable(report_path.parent, "report folder")
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
        raise DataError(f"{args.data or ' '.join(args.images or [])}: evaluate needs labelled cases; none of "
                        "the given images has a label")
    models = [("model", Segmenter.from_checkpoint(args.model, args.device))]
    if args.teacher:
        models.insert(0, ("teacher", _teacher_segmenter(args, models[0][1])))
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
    if report_path is not None:  # random temp file + rename: the report is replaced whole or not at all
        atomic_write_text(report_path, json.dumps(report, indent=2, default=float))
    return 0


def _teacher_segmenter(args: argparse.Namespace, student: Any) -> Any:
    """A Segmenter for ``--teacher`` of any format (napari-dmd, TorchScript, nnU-Net v2, MONAI, ONNX)."""
    from .distill.engine import resolve_device
    from .segment import Segmenter
    from .teachers import teacher_from_args

    teacher = teacher_from_args(args)
    device = str(resolve_device(args.device))
    teacher.to(device)
    patch = list(teacher.patch_size or student.patch_size)
    return Segmenter(teacher, teacher.num_classes, teacher.spatial_dims, patch, teacher.normalization,
                     teacher.class_names, device, name=Path(args.teacher).name)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=Path(args.out), iterations=args.iterations, spatial_dims=args.dims, quiet=args.quiet)
    return 0


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="napari-dmd", description=__doc__.split("\n")[0])
    from . import __version__
    from .export import add_export_parser
    from .teachers import add_teacher_flags

    p.add_argument("--version", action="version", version=f"napari-dmd {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = sub.add_parser("train-teacher", help="train a teacher U-Net on labelled data")
    t.add_argument("--config", help="YAML file of settings (a run's saved config.yaml works as is)")
    t.add_argument("--out", help="output folder (default runs/teacher; with --resume: that run's own folder)")
    t.add_argument("--resume", help="resume from this last.pt, in its folder, with the run's settings and data")
    t.add_argument("--quiet", action="store_true")
    _add_data_flags(t)
    _add_config_flags(t)
    t.set_defaults(func=cmd_train_teacher)

    d = sub.add_parser("distill", help="distil a small student from a teacher")
    d.add_argument("--config", help="YAML file of settings (a run's saved config.yaml works as is)")
    d.add_argument("--out", help="output folder (default runs/student; with --resume: that run's own folder)")
    d.add_argument("--resume", help="resume from this last.pt, in its folder, with the run's settings, data, teacher")
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
    e.add_argument("--split", choices=["val", "all"], default="val",
                   help="the validation split recorded in the checkpoint (default) or all cases")
    e.add_argument("--json", help="write the report to this JSON file")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --json report")
    e.add_argument("--device", default="auto")
    _add_data_flags(e)
    add_teacher_flags(e, required=False)
    e.set_defaults(func=cmd_evaluate)

    add_export_parser(sub)

    m = sub.add_parser("demo", help="headless teacher -> DMD student on the built-in synthetic phantom")
    m.add_argument("--out", default="runs/demo")
    m.add_argument("--iterations", type=int, default=300)
    m.add_argument("--dims", type=int, choices=[2, 3], default=2)
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=cmd_demo)

    from .bench import add_bench_parser

    add_bench_parser(sub)  # napari-dmd bench step | inference | sliding-window | memory | gui | time-to-dice | all
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
    except Exception as e:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("NAPARI_DMD_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(f"napari-dmd {args.verb}: error: unexpected {type(e).__name__}: {first} (please report it; set "
              "NAPARI_DMD_DEBUG=1 to see the traceback)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
