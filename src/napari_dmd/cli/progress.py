"""What a verb prints while it works: a progress bar on stderr, parameter counts, the final checkpoint line.

On a terminal the bars are tqdm's (percentage, bar, done/total, then the run's fields: loss and its parts, learning
rate, samples/s and the engine's ETA); in a log (stderr not a terminal) a training run prints a plain line every 5 %
instead of redrawing, and predict prints one line per image. ``--quiet`` prints no progress.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from typing import Any


def _progress_line(done: int, total: int, extra: str = "", width: int = 28) -> str:
    frac = done / max(total, 1)
    bar = "#" * int(frac * width)
    return f"\r[{bar:<{width}}] {done}/{total} {extra}"


def _bar(total: int, desc: str | None = None) -> Any:
    """A tqdm bar on stderr: ``desc: 42%|#####   | 21/50, <fields>`` (its own rate and ETA left out: the
    engine's samples/s and ETA are in the fields)."""
    from shutil import get_terminal_size

    from tqdm import tqdm

    size = get_terminal_size((100, 20))  # 100 x 20 where the terminal reports no size (tqdm then draws nothing)
    return tqdm(total=total, desc=desc, file=sys.stderr, ncols=size.columns, nrows=size.lines, leave=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}{postfix}")


def window_progress(name: str, quiet: bool = False) -> tuple[Any, Any]:
    """(progress callback ``(done, total)``, close) of one image's sliding-window prediction: a tqdm bar named
    after the image on a terminal, nothing in a log or when ``quiet``."""
    state: dict[str, Any] = {"bar": None}

    def progress(done: int, total: int) -> None:
        if quiet or not sys.stderr.isatty():
            return
        if state["bar"] is None:
            state["bar"] = _bar(total, name)
        state["bar"].n = done
        state["bar"].refresh()

    def close() -> None:
        if state["bar"] is not None:  # ends the bar's line, so that a message after it gets a line of its own
            state["bar"].close()
            state["bar"] = None

    return progress, close


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressPrinter:
    """The ``on_event`` of a run: a tqdm bar for the steps on a terminal (a plain line every 5 % in a log), each
    other event's message on a line of its own (above the bar). Under torchrun only rank 0 prints."""

    def __init__(self, run: Any, quiet: bool = False) -> None:
        self.quiet = quiet or not run.dist.is_main
        self.tty = sys.stderr.isatty()
        self.every = max(1, run.total // 20)
        self.last_len = 0
        self.bar: Any = None  # the tqdm bar of the steps, on a terminal

    def __call__(self, ev: Any) -> None:
        if self.quiet:
            return
        if ev.kind == "step":
            parts = " ".join(f"{k} {v:.3f}" for k, v in ev.parts.items() if k != "total")
            fields = (f"loss {ev.parts.get('total', 0):.3f} ({parts}) lr {ev.lr:.1e} "
                      f"{ev.samples_per_s:.1f} samples/s ETA {_fmt_eta(ev.eta_s)}")
            line = _progress_line(ev.iteration, ev.total, fields)
            if self.tty:
                if self.bar is None:
                    self.bar = _bar(ev.total)
                self.bar.n = ev.iteration
                self.bar.set_postfix_str(fields)  # redraws the bar
                self.last_len = len(line)
            elif ev.iteration % self.every == 0 or ev.iteration == ev.total:
                print(line.lstrip("\r"), file=sys.stderr, flush=True)
        else:
            text = f"warning: {ev.message}" if ev.kind == "warning" else ev.message  # e.g. a class lost
            if self.bar is not None:  # above the bar, which stays on the last line
                self.bar.write(text, file=sys.stderr)
            else:
                print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """End the steps' bar (its last state stays on screen, the cursor on the next line)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
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
    if getattr(run.config, "tensorboard", False) and find_spec("tensorboard") is None:
        print("warning: --tensorboard: the tensorboard package is not installed, so this run writes no TensorBoard "
              "logs; install it with pip install 'napari-dmd[tensorboard]'", file=sys.stderr, flush=True)
    try:
        result = drive(run, on_event=printer, on_interrupt=printer.interrupted)
    finally:
        printer.close()  # end the progress line, so that an error message gets a line of its own
    return result


def _print_params(label: str, n: int, ref: int | None = None) -> None:
    ratio = ""
    if ref:
        ratio = f"  (1/{ref / n:.1f} of the teacher)" if n <= ref else f"  ({n / ref:.1f}x the teacher)"
    print(f"{label}: {n:,} parameters{ratio}")


def _dice_text(best: float) -> str:
    return f"best validation mean Dice {best:.4f}" if best >= 0 else "not validated: no validation cases"
