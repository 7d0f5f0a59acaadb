"""The parser of every verb and ``main``: bad input ends with one line and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Sequence

EXIT_BAD_INPUT = 2
EXIT_BUG = 1
DESCRIPTION = "Command line: napari-dmd train-teacher | distill | predict | evaluate | export | bench | demo."


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to find help, not the whole usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-dmd`` parser with every verb."""
    from .. import __version__
    from ..bench import add_bench_parser
    from .demo import add_demo_parser
    from .export import add_export_parser
    from .predict import add_predict_parsers
    from .train import add_train_parsers

    p = _Parser(prog="napari-dmd", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"napari-dmd {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_train_parsers(sub)
    add_predict_parsers(sub)
    add_export_parser(sub)
    add_demo_parser(sub)
    add_bench_parser(sub)  # napari-dmd bench step | inference | sliding-window | memory | gui | time-to-dice | all
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; returns the exit status (0, 2 for bad input, 1 for a bug, 130 when interrupted)."""
    # idle OpenMP threads sleep instead of spinning: on a shared or small machine spinning threads can slow
    # training by an order of magnitude (measured 25x on 2 busy cores); set OMP_WAIT_POLICY to override
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..data.io import DataError
    from ..distill.engine import TrainingError

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
