"""``napari-dmd predict`` (label images with a model) and ``napari-dmd evaluate`` (Dice / HD95 on labelled data)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .. import jsonsafe
from .cases import _add_data_flags, _check_writable, _load_cases
from .progress import window_progress


def _output_path(out: Path, src_name: str, many: bool) -> Path:
    """Where one prediction goes: ``out`` itself, or a file of the input's name inside the folder ``out``."""
    from ..safe_paths import resolve_inside

    if many or out.is_dir():
        return resolve_inside(out, src_name, what="output file")
    return out


def _volume_folder(p: Path) -> bool:
    """Whether folder ``p`` is one image: a DICOM series or an OME-Zarr image."""
    from ..data.cases import is_image_folder

    return is_image_folder(p)


def _label_name(src: Path) -> str:
    """The file name of an input's labels in an output folder: the input's name, or ``<folder>.nii.gz`` for a
    DICOM series or OME-Zarr folder (NIfTI keeps their world geometry)."""
    from ..data.zarr_io import ome_zarr_name

    return f"{ome_zarr_name(src)}.nii.gz" if _volume_folder(src) else src.name


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``napari-dmd predict``."""
    from ..data.checks import shape_text
    from ..data.io import WRITABLE_SUFFIXES, DataError, file_suffix, is_supported_file, read_image, write_image
    from ..segment import Segmenter

    seg = Segmenter.from_checkpoint(args.model, device=args.device)
    inputs: list[Path] = []
    for item in args.input:
        p = Path(item)
        if p.is_dir() and not _volume_folder(p):  # a folder of images (files, DICOM series, OME-Zarr folders)
            inputs += sorted(q for q in p.iterdir() if (q.is_file() and is_supported_file(q)) or _volume_folder(q))
        else:
            inputs.append(p)
    if not inputs:
        raise DataError(f"{' '.join(args.input)}: no input images")
    out = Path(args.output)
    many = len(inputs) > 1 or any(Path(i).is_dir() and not _volume_folder(Path(i)) for i in args.input)  # -> a folder
    targets = [_output_path(out, _label_name(p), many) for p in inputs]
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
        progress, close = window_progress(src.name, args.quiet)  # a tqdm bar on a terminal
        try:
            labels = seg(img.array, progress=progress, source=str(src))
            write_image(dst, labels, img.spacing, img.affine, overwrite=args.overwrite)
        finally:
            close()  # end the bar's line, so that an error message gets a line of its own
        print(f"{src} -> {dst}  ({time.perf_counter() - t0:.2f} s)")
    return 0


def _print_evaluation(label: str, summ: dict[str, Any], seg: Any, n_cases: int) -> None:
    dice, hd = summ.get("dice_mean", []), summ.get("hd95_mean", [])
    print(f"{label} ({seg.name}): {seg.parameters:,} parameters, {n_cases} cases, "
          f"{summ['seconds_per_case']:.3f} s/case")
    names = seg.class_names or [f"class {i}" for i in range(seg.num_classes)]
    for i, d in enumerate(dice):
        cls = names[i + 1] if len(names) > i + 1 else f"class {i + 1}"
        hd_s = f"  HD95 {hd[i]:.2f} mm" if i < len(hd) else ""
        print(f"  {cls:<24} Dice {d:.4f}{hd_s}")
    print(f"  mean foreground Dice {summ['mean_dice']:.4f}")
    if hd:
        from ..metrics import hd95_label

        print(f"  {hd95_label(summ.get('hd95_convention', 'monai'))}, in mm")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run ``napari-dmd evaluate`` through :func:`napari_dmd.evaluation.evaluate_cases`."""
    from ..checkpoint import load_checkpoint
    from ..data.io import DataError
    from ..evaluation import compression, evaluate_cases, teacher_segmenter
    from ..runtime import resolve_device
    from ..safe_paths import atomic_write_text
    from ..segment import Segmenter

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
        from ..teachers import teacher_from_args

        models.insert(0, ("teacher", teacher_segmenter(
            teacher_from_args(args), fallback_patch=models[0][1].patch_size,
            device=str(resolve_device(args.device)), name=Path(args.teacher).name)))
    report: dict[str, Any] = {"cases": [c.name for c in cases]}
    for label, seg in models:
        report[label] = evaluate_cases(seg, cases, hd95=True)
        _print_evaluation(label, report[label], seg, len(cases))
    if args.teacher:
        r = compression(report["teacher"], report["model"])
        print(f"compression: {r['compression']:.1f}x fewer parameters, {r['speedup']:.1f}x faster, "
              f"Dice retention {100 * r['retention']:.1f} %")
    if report_path is not None:  # random temp file + rename: the report is replaced whole or not at all
        atomic_write_text(report_path, jsonsafe.dumps(report, indent=2))
    return 0


def add_predict_parsers(sub: Any) -> None:
    """Add ``predict`` and ``evaluate`` to the CLI's subparsers."""
    from .flags import add_teacher_flags

    r = sub.add_parser("predict", help="segment images with a trained model")
    r.add_argument("--model", required=True, help="checkpoint (.pt)")
    r.add_argument("--input", required=True, nargs="+",
                   help="image files, DICOM series folders, OME-Zarr images, or a folder of them")
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
