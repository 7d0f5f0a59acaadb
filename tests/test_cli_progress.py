"""CLI progress: tqdm bars on a terminal with the run's fields, plain lines in a log, nothing when quiet."""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

import pytest

from napari_dmd.cli import progress
from napari_dmd.distill.events import Event


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(total: int = 4, tensorboard: bool = False) -> SimpleNamespace:
    return SimpleNamespace(total=total, dist=SimpleNamespace(is_main=True),
                           config=SimpleNamespace(tensorboard=tensorboard))


def _events(total: int = 4) -> list[Event]:
    evs = [Event("start", 0, total, message="distilling 4 iterations")]
    for i in range(1, total + 1):
        evs.append(Event("step", i, total, parts={"total": 0.5, "kd": 0.2}, lr=1e-3, samples_per_s=12.0, eta_s=0.0))
        if i == 2:
            evs.append(Event("validation", i, total, message="validation: mean Dice 0.8000"))
            evs.append(Event("warning", i, total, message="class liver lost"))
    return evs


def test_steps_draw_a_tqdm_bar_on_a_terminal_and_messages_go_above_it(monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    printer = progress.ProgressPrinter(_run())
    for ev in _events():
        printer(ev)
    printer.close()
    out = err.getvalue()
    assert out.startswith("distilling 4 iterations\n")
    assert "100%|" in out and "4/4, loss 0.500 (kd 0.200) lr 1.0e-03 12.0 samples/s ETA 00:00" in out
    lines = out.replace("\r", "\n").splitlines()
    assert "validation: mean Dice 0.8000" in lines and "warning: class liver lost" in lines  # lines of their own
    assert out.endswith("\n")  # close() leaves the cursor on a new line


def test_log_gets_plain_lines_and_quiet_gets_nothing(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    printer = progress.ProgressPrinter(_run())
    for ev in _events():
        printer(ev)
    printer.close()
    out = err.getvalue()
    assert "\r" not in out and "4/4 loss 0.500 (kd 0.200) lr 1.0e-03 12.0 samples/s ETA 00:00\n" in out
    monkeypatch.setattr(sys, "stderr", _Terminal())
    quiet = progress.ProgressPrinter(_run(), quiet=True)
    for ev in _events():
        quiet(ev)
    quiet.close()
    assert sys.stderr.getvalue() == ""


def test_predict_window_bar(monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    show, close = progress.window_progress("case.nii.gz")
    for done in range(1, 7):
        show(done, 6)
    close()
    assert "case.nii.gz: 100%|" in err.getvalue() and "6/6" in err.getvalue() and err.getvalue().endswith("\n")
    for quiet, stream in ((True, _Terminal()), (False, io.StringIO())):  # --quiet, or a log
        monkeypatch.setattr(sys, "stderr", stream)
        show, close = progress.window_progress("case.nii.gz", quiet)
        show(1, 2)
        close()
        assert stream.getvalue() == ""


@pytest.mark.parametrize("installed", [False, True])
def test_tensorboard_without_the_extra_says_so_in_one_line(monkeypatch, installed):
    import napari_dmd.runner as runner

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(progress, "find_spec", lambda name: object() if installed else None)
    monkeypatch.setattr(runner, "drive", lambda run, on_event, on_interrupt: {"ok": True})
    assert progress._drive(_run(tensorboard=True)) == {"ok": True}
    warning = ("warning: --tensorboard: the tensorboard package is not installed, so this run writes no "
               "TensorBoard logs; install it with pip install 'napari-dmd[tensorboard]'\n")
    assert err.getvalue() == ("" if installed else warning)
