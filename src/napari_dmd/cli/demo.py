"""``napari-dmd demo``: teacher -> DMD student on the built-in phantom (:func:`napari_dmd.demo.run_demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .progress import _drive


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``napari-dmd demo`` with the CLI's progress bar."""
    from ..demo import run_demo

    run_demo(out=Path(args.out), iterations=args.iterations, spatial_dims=args.dims, quiet=args.quiet,
             drive=lambda run: _drive(run, args.quiet))
    return 0


def add_demo_parser(sub: Any) -> None:
    """Add ``demo`` to the CLI's subparsers."""
    m = sub.add_parser("demo", help="headless teacher -> DMD student on the built-in synthetic phantom")
    m.add_argument("--out", default="runs/demo",
                   help="run folder for the teacher and student checkpoints (default: %(default)s)")
    m.add_argument("--iterations", type=int, default=300,
                   help="training iterations of the teacher and of the student each (default: %(default)s)")
    m.add_argument("--dims", type=int, choices=[2, 3], default=2,
                   help="2D or 3D phantom and U-Nets (default: %(default)s)")
    m.add_argument("--quiet", action="store_true", help="print no progress bars, only the results")
    m.set_defaults(func=cmd_demo)
