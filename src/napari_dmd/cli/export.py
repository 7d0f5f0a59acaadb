"""``napari-dmd export``: TorchScript / ONNX files and a model card (:func:`napari_dmd.export.export_student`), and
with ``--format bioimageio`` a bioimage.io model zip (:func:`napari_dmd.bioimageio_export.write_bioimageio`)."""

from __future__ import annotations

import argparse
from typing import Any

from .cases import _add_data_flags, _load_cases


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``napari-dmd export`` to the CLI's subparsers (sets ``func=cmd_export``)."""
    from ..choices import EXPORT_CHOICES
    from ..choices import EXPORT_FORMATS as FORMATS
    from .flags import add_teacher_flags

    p = subparsers.add_parser("export", help="export a student to TorchScript / ONNX with a model card")
    p.add_argument("--model", required=True, help="student checkpoint (.pt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--formats", "--format", nargs="+", choices=list(EXPORT_CHOICES), default=list(FORMATS),
                   help="default: torchscript onnx; bioimageio packs both (exported too) as a bioimage.io model zip "
                        "(needs pip install 'napari-dmd[bioimageio]')")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    p.add_argument("--device", default="auto", help="where latency and Dice are measured")
    p.add_argument("--latency-runs", type=int, default=10)
    p.add_argument("--split", choices=["val", "all"], default="val",
                   help="Dice on the checkpoint's validation cases (default) or on all given cases")
    add_teacher_flags(p, required=False)
    _add_data_flags(p)
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``napari-dmd export``."""
    from ..export import export_student

    cases = None
    if getattr(args, "data", None) or getattr(args, "images", None):
        cases, _ = _load_cases(args)
    teacher = None
    if getattr(args, "teacher", None):
        from ..teachers import teacher_from_args

        teacher = teacher_from_args(args)
    formats = list(dict.fromkeys(args.formats))
    package = "bioimageio" in formats
    if package:  # fail before the slow export when the optional package is missing
        from ..bioimageio_export import _require_spec

        _require_spec()
        formats = ["torchscript", "onnx"]  # the package holds both weights formats
    card = export_student(args.model, args.out, formats=formats, cases=cases, teacher=teacher,
                          device=args.device, opset=args.opset, overwrite=args.overwrite,
                          latency_runs=args.latency_runs, split=args.split)
    for fmt, e in card["exports"].items():
        diff = e.get("max_abs_diff")
        print(f"{fmt}: {e['path']}  (max |difference| to PyTorch {'not checked' if diff is None else f'{diff:.2e}'})")
    lat = card["latency"]["pytorch"]["median_ms"]
    print(f"student: {card['parameters']:,} parameters, "
          f"{(card['flops_per_patch'] or 0) / 1e9:.3f} GFLOPs and {lat:.1f} ms per patch {card['patch_size']}")
    ev = card.get("evaluation")
    if ev:
        t = (ev.get("teacher") or {}).get("mean_dice")
        print(f"mean Dice on {len(ev['cases'])} cases ({ev['split']}): student {ev['student']['mean_dice']:.4f}"
              + (f", teacher {t:.4f}, retention {100 * ev['dice_retention']:.1f} %" if t else ""))
    print(f"model card: {card['files']['card_json']}  {card['files']['card_markdown']}")
    if package:
        from ..bioimageio_export import write_bioimageio

        card.setdefault("checkpoint", str(args.model))
        info = write_bioimageio(card, args.out, sample=cases[0].image if cases else None, overwrite=args.overwrite)
        v = info["validation"]
        print(f"bioimageio: {info['path']}  (bioimageio.spec: {v['status']}, {len(v['errors'])} errors, "
              f"{len(v['warnings'])} warnings)")
        for w in v["errors"] + v["warnings"]:
            print(f"  {w}")
        if info["not_expressible"]:
            print(f"  normalization: {info['not_expressible']}")
        if v["errors"]:
            return 1
    return 0
