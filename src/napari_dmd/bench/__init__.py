"""Benchmarks B1-B6 (issue 5 part B) behind ``napari-dmd bench VERB``; ``benchmarks/*.py`` wrap them.

Every benchmark first prints the machine and the exact command (every option spelled out), then Markdown
tables; ``--json PATH`` writes ``{benchmark, machine, command, date, results}``. Ratios are measured within
one process, so they hold across machines better than the absolute times, which are context only.
``--quick`` runs a seconds-long version with tiny models (a smoke test: its numbers mean nothing).
One module per benchmark: ``step`` (B1), ``inference`` (B2), ``sliding_window`` (B3), ``gui`` (B4), ``memory``
(B5), ``dice_time`` (B6); ``machine`` holds the shared helpers and ``cli`` the command line. Every name is
re-exported here, so ``napari_dmd.bench.<name>`` works as before the split. Qt-free: ``bench gui`` imports
napari and Qt only when it runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from .cli import VERBS, add_bench_parser, add_verbs, cmd_bench
from .cli import _common as _common
from .cli import _model_args as _model_args
from .cli import _patch_arg as _patch_arg
from .cli import _run_all as _run_all
from .cli import _run_verb as _run_verb
from .dice_time import run_time_to_dice, time_to_dice
from .gui import _gaps_ms as _gaps_ms
from .gui import _rate as _rate
from .gui import bench_gui
from .inference import _inference_cases as _inference_cases
from .inference import bench_inference
from .machine import (
    DEFAULT_PATCH,
    NUM_CLASSES,
    QUICK_PATCH,
    QUICK_STUDENT,
    QUICK_TEACHER,
    command_line,
    format_machine,
    machine_info,
)
from .machine import _channels as _channels
from .machine import _cpu_model as _cpu_model
from .machine import _cpu_quota as _cpu_quota
from .machine import _finite as _finite
from .machine import _interleaved as _interleaved
from .machine import _mean_dice as _mean_dice
from .machine import _ms as _ms
from .machine import _stop_loader as _stop_loader
from .machine import _sync as _sync
from .machine import _table as _table
from .memory import MEM_PATCHES, MEM_QUICK_PATCHES, bench_memory
from .memory import _memory_child as _memory_child
from .memory import _peak_rss_mib as _peak_rss_mib
from .sliding_window import _tiny_unet3d as _tiny_unet3d
from .sliding_window import bench_sliding_window
from .step import bench_step

__all__ = [
    "DEFAULT_PATCH", "MEM_PATCHES", "MEM_QUICK_PATCHES", "NUM_CLASSES", "QUICK_PATCH", "QUICK_STUDENT",
    "QUICK_TEACHER", "VERBS", "add_bench_parser", "add_verbs", "bench_gui", "bench_inference", "bench_memory",
    "bench_sliding_window", "bench_step", "cmd_bench", "command_line", "format_machine", "machine_info", "main",
    "run_time_to_dice", "time_to_dice",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_dmd.bench VERB ...``: the same as ``napari-dmd bench VERB ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--memory-child"]:
        print(json.dumps(_memory_child(json.loads(argv[1]))))
        return 0
    from ..cli import main as cli_main

    return cli_main(["bench", *argv])
