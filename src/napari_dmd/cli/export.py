"""``napari-dmd export``: TorchScript / ONNX files and a model card (:func:`napari_dmd.export.export_student`)."""

from __future__ import annotations

import argparse
from typing import Any

from .cases import _add_data_flags, _load_cases


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``napari-dmd export`` to the CLI's subparsers (sets ``func=cmd_export``)."""
    from ..choices import EXPORT_FORMATS as FORMATS
    from .flags import add_teacher_flags

    p = subparsers.add_parser("export", help="export a student to TorchScript / ONNX with a model card")
    p.add_argument("--model", required=True, help="student checkpoint (.pt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS))
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
    card = export_student(args.model, args.out, formats=args.formats, cases=cases, teacher=teacher,
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
    return 0
