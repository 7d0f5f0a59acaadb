"""Training in a child process (napari_dmd.child): events streamed, stop, terminate, a killed child, snapshots.

Tiny 2D phantom runs (one torch thread); each test spawns one child (a few seconds of imports).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.child import ChildProcess, RunSpec, TeacherSpec, distill_target
from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.events import Event
from napari_dmd.features import StudentSnapshot

TINY = "4,8,16"


def _spec(out, iterations: int, **kw) -> RunSpec:
    cfg = TrainConfig(method="none", model=TINY, iterations=iterations, patch_size=[32, 32], batch_size=1,
                      num_threads=1, val_interval=1000, checkpoint_interval=1000, **kw)
    return RunSpec(cfg, str(out), cases=phantom_cases(2, 2), role="teacher")


def _drain(child: ChildProcess, until, timeout: float = 120.0) -> list:
    got = []
    deadline = time.time() + timeout
    while not until(got):
        assert time.time() < deadline, f"timed out; messages so far: {[k for k, _ in got]}"
        got += child.poll(0.1)
        if child.done:
            break
    return got


def _events(messages) -> list[Event]:
    return [p for k, p in messages if k == "event"]


def test_child_streams_start_step_done_events_and_writes_last_pt(tmp_path):
    out = tmp_path / "run"
    child = ChildProcess(distill_target, _spec(out, 4), live_every=2)
    child.start()
    got = _drain(child, lambda g: False)
    snaps = [p for k, p in got if k == "snapshot"]  # every 2 steps, and at the end
    assert [s.iteration for s in snaps] == [2, 4, 4] and isinstance(snaps[0], StudentSnapshot)
    kinds = [e.kind for e in _events(got)]
    assert kinds[0] == "start" and kinds.count("step") == 4 and kinds[-1] == "done"
    info = next(p for k, p in got if k == "info")
    assert info["last_path"] == str(out / "last.pt")
    assert child.result["iteration"] == 4 and child.ended_message() is None
    assert load_checkpoint(out / "last.pt")["iteration"] == 4
    child.process.join(60)
    assert not child.alive


def test_child_carries_any_event_kind_unchanged(tmp_path, monkeypatch):
    """A kind the widget does not know (e.g. a warning the engine adds) arrives as the same Event."""
    ev = Event("warning", 3, 10, message="class 2 lost", parts={"x": 1.0}, eta_s=2.0)
    child = ChildProcess(_echo_target, ev)
    child.start()
    got = _drain(child, lambda g: False)
    assert _events(got) == [ev]


def _echo_target(ev, chan):
    chan.send("event", ev)
    return None


def test_stop_ends_the_run_and_keeps_last_pt(tmp_path):
    out = tmp_path / "run"
    child = ChildProcess(distill_target, _spec(out, 100_000))
    child.start()
    got = _drain(child, lambda g: len([e for e in _events(g) if e.kind == "step"]) >= 3)
    child.request_stop()
    got += _drain(child, lambda g: False)
    last = _events(got)[-1]
    assert last.kind == "stopped"
    assert load_checkpoint(out / "last.pt")["iteration"] == last.iteration >= 3


def test_close_terminates_a_busy_child_and_it_saves_last_pt(tmp_path):
    """SIGTERM mid-run (the parent did not wait for the stop): the child writes last.pt before it exits."""
    out = tmp_path / "run"
    child = ChildProcess(distill_target, _spec(out, 100_000))
    child.start()
    got = _drain(child, lambda g: len([e for e in _events(g) if e.kind == "step"]) >= 3)
    at = max(e.iteration for e in _events(got) if e.kind == "step")
    child.close(wait_s=0.0, term_wait_s=30.0)  # no grace: terminated at once
    assert child.terminated and not child.alive
    assert child.ended_message() is None
    assert load_checkpoint(out / "last.pt")["iteration"] >= at


def test_a_killed_child_gives_one_line_not_a_hang(tmp_path):
    child = ChildProcess(distill_target, _spec(tmp_path / "run", 100_000))
    child.start()
    _drain(child, lambda g: len([e for e in _events(g) if e.kind == "step"]) >= 1)
    os.kill(child.process.pid, signal.SIGKILL)
    _drain(child, lambda g: False, timeout=30)
    assert child.done
    message = child.ended_message()
    assert message is not None and "killed by SIGKILL" in message and "\n" not in message


def test_a_failure_in_the_child_comes_back_as_the_exception(tmp_path):
    bad = _spec(tmp_path / "bad", 4)
    bad.config.method = "dmd"  # needs a teacher
    bad.teacher = TeacherSpec(path=str(tmp_path / "missing.pt"))
    child = ChildProcess(distill_target, bad)
    child.start()
    _drain(child, lambda g: False)
    assert child.failure is not None and "missing.pt" in str(child.failure)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])


def test_bench_gui_takes_live_features_and_load(monkeypatch):
    """``napari-dmd bench gui --live-features N --load K`` reaches bench_gui; the load processes end with it."""
    from napari_dmd.bench import cli as bench_cli
    from napari_dmd.bench.gui import start_load, stop_load
    from napari_dmd.cli.main import build_parser

    got = {}
    monkeypatch.setattr(bench_cli, "bench_gui", lambda *a, **k: got.update(k) or {})
    a = build_parser().parse_args(["bench", "gui", "--live-features", "10", "--load", "2", "--quick"])
    bench_cli._run_verb("gui", a)
    assert got == {"live_features": 10, "load": 2}
    procs = start_load(1)
    assert procs[0].is_alive()
    stop_load(procs)
    assert not procs[0].is_alive()
