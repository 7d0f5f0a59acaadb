"""Shared pieces of the benchmarks: constants, the machine and command lines that every benchmark prints first.

``machine_info`` / ``format_machine`` describe the CPU, cores, cgroup quota, load, torch and GPU that every figure
must name, and ``command_line`` spells out the exact command with every option; the small helpers (Markdown
``_table``, ``_ms``, the interleaved timer ``_interleaved``, ``_sync``, ``_mean_dice`` ...) are shared by B1-B6.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..runtime import machine_info as machine_info

NUM_CLASSES = 6  # the phantom's classes (background + 5 organs)
DEFAULT_PATCH = {2: [128, 128], 3: [32, 48, 32]}  # 3D: the engine's auto patch on hippocampus
QUICK_PATCH = {2: [64, 64], 3: [16, 32, 32]}
QUICK_TEACHER, QUICK_STUDENT = "8,16,32", "4,8,16"


def format_machine(m: dict[str, Any]) -> str:
    quota = f", cgroup quota {m['cpu_quota']:g} CPUs" if m.get("cpu_quota") else ""
    load = f", load {m['load_avg_1min']:.2f}" if m.get("load_avg_1min") is not None else ""
    return (f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable{quota}){load}; {m['os']}, "
            f"python {m['python']}, torch {m['torch']}, {m['torch_threads']} torch threads, "
            f"OMP_NUM_THREADS={m['OMP_NUM_THREADS']}, OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}; "
            f"GPU: {m['gpu'] or 'none'}; host {m['host']}")



def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (right-aligned), readable in a terminal and pasteable into docs/benchmarks.md."""
    cells = [[str(v) for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|", *map(line, cells)])


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def _channels(model: str) -> str | tuple[int, ...]:
    """A preset name, or channels like "8,16,32" as a tuple (as TrainConfig.model accepts)."""
    from ..config import TrainConfig

    return TrainConfig(model=model).model_channels()


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int, device: Any) -> dict[str, list[float]]:
    """Seconds per call of each function: one warm-up each, then ``repeats`` interleaved rounds."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):  # interleaved, so a drift of the machine hits all alike
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return times


def _finite(x: float) -> float | None:
    return x if isinstance(x, float | int) and math.isfinite(x) else None


def _stop_loader(distiller: Any) -> None:
    """Shut down the engine's data-loading workers, if it started any (CUDA runs)."""
    stop = getattr(distiller, "_stop_workers", None)
    if stop is not None:
        stop()


def _mean_dice(pred: Any, label: Any, num_classes: int) -> float:
    import numpy as np

    from ..metrics import dice_per_class

    d = dice_per_class(pred, label, num_classes)
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")



def command_line(args: argparse.Namespace) -> str:
    """The exact command, every option spelled out (so later changes of defaults do not change it)."""
    parser = args.bench_parser
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ]
    words = env + parser.prog.split()
    for a in parser._actions:
        if not a.option_strings or a.help == argparse.SUPPRESS or a.dest == "help":
            continue
        v = getattr(args, a.dest, None)
        flag = max(a.option_strings, key=len)
        if v is None or v is False:
            continue
        if v is True:
            words.append(flag)
        elif isinstance(v, list):
            words += [flag, *map(str, v)]
        else:
            words += [flag, str(v)]
    return shlex.join(words)
