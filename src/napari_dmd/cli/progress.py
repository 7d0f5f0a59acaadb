"""What a verb prints while it works: a progress bar on stderr, parameter counts, the final checkpoint line."""

from __future__ import annotations

import sys
from typing import Any


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


class ProgressPrinter:
    """The ``on_event`` of a run: one progress line for the steps (redrawn on a terminal, every 5 % in a log),
    each other event's message on a line of its own. Under torchrun only rank 0 prints."""

    def __init__(self, run: Any, quiet: bool = False) -> None:
        self.quiet = quiet or not run.dist.is_main
        self.tty = sys.stderr.isatty()
        self.every = max(1, run.total // 20)
        self.last_len = 0

    def __call__(self, ev: Any) -> None:
        if self.quiet:
            return
        if ev.kind == "step":
            parts = " ".join(f"{k} {v:.3f}" for k, v in ev.parts.items() if k != "total")
            line = _progress_line(ev.iteration, ev.total,
                                  f"loss {ev.parts.get('total', 0):.3f} ({parts}) lr {ev.lr:.1e} "
                                  f"{ev.samples_per_s:.1f} samples/s ETA {_fmt_eta(ev.eta_s)}")
            if self.tty:
                print(line.ljust(self.last_len), end="", file=sys.stderr, flush=True)
                self.last_len = len(line)
            elif ev.iteration % self.every == 0 or ev.iteration == ev.total:
                print(line.lstrip("\r"), file=sys.stderr, flush=True)
        else:
            print(f"\n{ev.message}" if ev.kind != "start" else ev.message, file=sys.stderr, flush=True)
            self.last_len = 0

    @staticmethod
    def interrupted() -> None:
        """The first Ctrl-C (the run stops at its next step and writes last.pt)."""
        print("\ninterrupted: stopping and writing a checkpoint...", file=sys.stderr, flush=True)


def _drive(run: Any, quiet: bool = False) -> dict[str, Any]:
    """Run to the end through :func:`napari_dmd.runner.drive` with a progress bar; the first Ctrl-C stops
    cleanly after writing a checkpoint. Returns the engine's result."""
    from ..runner import drive

    printer = ProgressPrinter(run, quiet)
    try:
        result = drive(run, on_event=printer, on_interrupt=printer.interrupted)
    except Exception:
        if printer.last_len:  # end the progress line, so that the error message gets a line of its own
            print(file=sys.stderr)
        raise
    if not printer.quiet:
        print(file=sys.stderr)
    return result


def _print_params(label: str, n: int, ref: int | None = None) -> None:
    ratio = ""
    if ref:
        ratio = f"  (1/{ref / n:.1f} of the teacher)" if n <= ref else f"  ({n / ref:.1f}x the teacher)"
    print(f"{label}: {n:,} parameters{ratio}")


def _dice_text(best: float) -> str:
    return f"best validation mean Dice {best:.4f}" if best >= 0 else "not validated: no validation cases"
