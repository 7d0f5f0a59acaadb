"""Stop acts inside a step (napari_dmd.distill.stopping): the step in progress is abandoned before the optimizer
applies it, last.pt holds the last completed step, and resuming from it equals an uninterrupted run; a stop
skips the validation due at that step; the child wires its stop event in and says when it saw it.

Tiny 2D phantom runs in this process (one torch thread, a few steps each).
"""

from __future__ import annotations

import time

import pytest
import torch

from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import Distiller
from napari_dmd.teachers import load_teacher

TINY = dict(model="4,8,16", batch_size=2, patch_size=[32, 32], val_interval=3, checkpoint_interval=100,
            num_threads=1, norm="batch")  # batch norm: its running statistics change in the student's forward


@pytest.fixture(scope="module")
def cases():
    return phantom_cases(4, 2)


@pytest.fixture(scope="module")
def teacher_path(cases, tmp_path_factory):
    cfg = TrainConfig(method="none", iterations=2, **{**TINY, "norm": "auto"})
    d = Distiller(cfg, cases, output_dir=tmp_path_factory.mktemp("teacher"), role="teacher")
    d.run_to_end()
    return d.last_path


def _state(d: Distiller) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in d.net.state_dict().items()}  # weights and buffers, heads too


def _stop_at(question: int):
    """A stop_check that says stop from its ``question``-th question on (0-based); a run asks 4 times a step:
    3 times inside it (after the teacher, after the student's forward, after the backward pass), once after."""
    asked: list[bool] = []

    def stop_check() -> bool:
        asked.append(True)
        return len(asked) > question

    return stop_check


@pytest.fixture(scope="module")
def full(cases, teacher_path, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The state of an uninterrupted 4-step run."""
    d = Distiller(TrainConfig(method="dmd", iterations=4, **TINY), cases, teacher=load_teacher(teacher_path),
                  output_dir=tmp_path_factory.mktemp("full"))
    d.run_to_end()
    return _state(d)


@pytest.mark.parametrize("check", [0, 1, 2, 3], ids=["after-teacher", "after-student", "after-backward",
                                                     "after-step"])
def test_a_stop_inside_a_step_abandons_it_and_resume_equals_an_uninterrupted_run(check, cases, teacher_path, full,
                                                                                  tmp_path):
    cfg = TrainConfig(method="dmd", iterations=4, **TINY)
    part = Distiller(cfg, cases, teacher=load_teacher(teacher_path), output_dir=tmp_path)
    done = 1  # inside step 2: step 2 is abandoned; after it (check 3 of step 1): a stop between steps
    part.step_guard.stop_check = _stop_at(4 * done + check if check < 3 else check)
    events = list(part.run())
    assert events[-1].kind == "stopped" and events[-1].iteration == done
    assert max(e.iteration for e in events if e.kind == "step") == done
    assert (part.step_guard.abandoned_at is not None) == (check < 3)
    assert load_checkpoint(part.last_path)["iteration"] == done

    resumed = Distiller(cfg, cases, teacher=load_teacher(teacher_path), output_dir=tmp_path, resume=part.last_path)
    resumed.run_to_end()
    assert resumed.iteration == 4
    got = _state(resumed)
    assert any("running_mean" in k for k in full), "the test needs batch-norm buffers"
    for k, v in full.items():
        assert torch.equal(got[k], v), k


def test_a_stop_after_a_step_skips_the_validation_due_there(cases, teacher_path, tmp_path):
    cfg = TrainConfig(method="dmd", iterations=6, **TINY)  # validation every 3 steps
    d = Distiller(cfg, cases, teacher=load_teacher(teacher_path), output_dir=tmp_path)
    d.step_guard.stop_check = lambda: d.iteration >= 3
    events = list(d.run())
    assert [e.kind for e in events if e.iteration == 3] == ["step", "checkpoint", "stopped"]
    assert not [e for e in events if e.kind == "validation"]


def test_without_a_stop_check_a_stop_still_acts_between_steps(cases, teacher_path, tmp_path):
    """The CLI and scripts (no stop_check): request_stop() ends the run after the step, validation as before."""
    cfg = TrainConfig(method="dmd", iterations=6, **TINY)
    d = Distiller(cfg, cases, teacher=load_teacher(teacher_path), output_dir=tmp_path)
    events = []
    for ev in d.run():
        events.append(ev)
        if ev.kind == "step" and ev.iteration == 3:
            d.request_stop()
    assert events[-1].kind == "stopped" and events[-1].iteration == 3
    assert [e.iteration for e in events if e.kind == "validation"] == [3]
    assert d.step_guard.abandoned_at is None


class _FakeChannel:
    """The child's Channel as distill_target uses it, in this process; says stop from ``stop_after`` sends."""

    def __init__(self, stop_after_steps: int) -> None:
        self.sent: list[tuple[str, object]] = []
        self.stop_after_steps = stop_after_steps
        self.clicked: float | None = None

        class _Live:
            value = 0
        self._live_every = _Live()

    def send(self, kind: str, payload: object = None) -> None:
        self.sent.append((kind, payload))

    def should_stop(self) -> bool:
        steps = sum(1 for k, p in self.sent if k == "event" and p.kind == "step")
        if steps >= self.stop_after_steps and self.clicked is None:
            self.clicked = time.monotonic()
        return steps >= self.stop_after_steps

    def live_due(self, iteration: int) -> bool:
        return False


def test_the_child_checks_its_stop_inside_steps_and_reports_when_it_saw_it(cases, teacher_path, tmp_path):
    from napari_dmd.child import RunSpec, TeacherSpec, distill_target

    cfg = TrainConfig(method="dmd", iterations=50, **TINY)
    chan = _FakeChannel(stop_after_steps=2)
    result = distill_target(RunSpec(cfg, str(tmp_path / "run"), cases=cases,
                                    teacher=TeacherSpec(teacher=load_teacher(teacher_path))), chan)
    kinds = [k if k != "event" else p.kind for k, p in chan.sent]
    assert kinds[-3:] == ["checkpoint", "timing", "stopped"], kinds
    assert result["iteration"] == 2 and load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 2
    timing = next(p for k, p in chan.sent if k == "timing")
    assert chan.clicked is not None and chan.clicked <= timing["seen"] <= timing["saved"] <= timing["sent"]


def _stopped_then_slow_exit_target(spec, chan):
    """A child that sends the run's last event, then takes long to end (as Python's shutdown after torch did)."""
    from napari_dmd.distill.events import Event

    chan.send("timing", {"seen": time.monotonic(), "saved": time.monotonic(), "sent": time.monotonic()})
    chan.send("event", Event("stopped", 3, 10, message="stopped at iteration 3"))
    time.sleep(30)
    return {}


def test_the_distill_worker_ends_at_the_last_event_not_at_the_child_exit(tmp_path, monkeypatch):
    """The widget says "stopped" once the child has saved: the worker does not wait for the process to end
    (reaped in the background); ChildProcess.close does not wait for it either."""
    from napari_dmd import child as child_mod
    from napari_dmd._widgets._distill_run import RunHandle, train_worker
    from napari_dmd._widgets._live import LiveStudent

    monkeypatch.setattr(child_mod, "distill_target", _stopped_then_slow_exit_target)
    run = RunHandle(TrainConfig(method="none", model="4,8,16", iterations=10), tmp_path / "run")
    items = []
    for item in train_worker(run, LiveStudent()):
        items.append(item)
    kinds = [i[0].kind for i in items if isinstance(i, tuple) and i[0] is not None]
    assert kinds == ["stopped"] and run.distiller.iteration == 3
    assert run.child.alive, "the worker returned while the child was still running (its exit is not awaited)"
    assert {"seen", "saved", "sent", "received", "finished"} <= set(run.timeline)
    t0 = time.monotonic()
    assert run.child.close(wait_s=5.0) == [] and time.monotonic() - t0 < 1.0  # handed to the reaper: no wait
    run.child.process.kill()
    deadline = time.monotonic() + 30
    while run.child.exited_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.child.exited_at is not None and not run.child.alive
