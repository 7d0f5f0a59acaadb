"""Benchmarks B1-B6 behind ``napari-dmd bench VERB``; ``benchmarks/*.py`` wrap them.

Every benchmark first prints the machine and the exact command (every option spelled out), then Markdown
tables; ``--json PATH`` writes ``{benchmark, machine, command, date, results}``. Ratios are measured within
one process, so they hold across machines better than the absolute times, which are context only.
``--quick`` runs a seconds-long version with tiny models (a smoke test: its numbers mean nothing).
One module per benchmark: ``step`` (B1), ``inference`` (B2), ``sliding_window`` (B3), ``gui`` (B4), ``memory``
(B5), ``dice_time`` (B6); ``machine`` holds the shared helpers and ``cli`` the verbs' flags. A library: the
command line (``napari_dmd.cli``) calls it, never the reverse; ``python -m napari_dmd.bench`` is the
``__main__`` module. Qt-free: ``bench gui`` imports napari and Qt only when it runs.
"""

from __future__ import annotations

from .cli import VERBS, add_bench_parser, add_verbs, cmd_bench
from .dice_time import run_time_to_dice, time_to_dice
from .gui import bench_gui
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
from .memory import MEM_PATCHES, MEM_QUICK_PATCHES, bench_memory
from .sliding_window import bench_sliding_window
from .step import bench_step

__all__ = [
    "DEFAULT_PATCH", "MEM_PATCHES", "MEM_QUICK_PATCHES", "NUM_CLASSES", "QUICK_PATCH", "QUICK_STUDENT",
    "QUICK_TEACHER", "VERBS", "add_bench_parser", "add_verbs", "bench_gui", "bench_inference", "bench_memory",
    "bench_sliding_window", "bench_step", "cmd_bench", "command_line", "format_machine", "machine_info",
    "run_time_to_dice", "time_to_dice",
]
