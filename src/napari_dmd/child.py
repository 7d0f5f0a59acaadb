"""Training in a child process: the GUI's runs cannot hold its event loop (Qt-free).

A :class:`ChildProcess` starts a *spawned* Python process that runs a target function (here
:func:`distill_target`: the one run path of :mod:`napari_dmd.runner`, or :func:`demo_target`: the demo pair
of :mod:`napari_dmd.pretrained`) on a picklable spec, and streams what it reports back through a one-way
pipe as ``(kind, payload)`` messages:

* ``("notice", (message, warning))`` — a warning or note from preparing the run,
* ``("info", dict)`` — the run's folder and checkpoints, once the engine is built,
* ``("event", Event)`` — every engine :class:`~napari_dmd.distill.events.Event`, whatever its kind, unchanged,
* ``("snapshot", StudentSnapshot)`` — a CPU copy of the student, every ``live_every`` steps or on request,
* ``("progress", (done, total))`` — a generic target's progress (the demo pair),
* ``("result", value)`` / ``("failure", exception)`` — how the target ended.

The parent polls (:meth:`ChildProcess.poll`), never blocking longer than it asks. Stop is a
``multiprocessing.Event`` the engine asks inside each step too (:mod:`napari_dmd.distill.stopping`: the step in
progress is abandoned before the optimizer applies it) and after each event; it then writes ``last.pt`` at once
and sends ``("timing", dict)`` (when it saw the stop, saved, sent) before its last event.
:meth:`ChildProcess.close` asks for a stop, waits up to 1.5 s for the result, then sends SIGTERM: the child
closes the engine's generator (which writes ``last.pt``) or, when a step was cut short, writes it itself, and
exits; likewise when its parent dies. The child then ends with ``os._exit`` (Python's own shutdown after torch
took 2 s); nobody waits for it: :meth:`ChildProcess.finish_in_background` reaps it. A child that dies
(killed, out of memory) is one line (:meth:`ChildProcess.ended_message`). The spec travels in a temporary
file (:func:`write_spec`).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import multiprocessing.util  # noqa: F401 - its exit handler is registered first, so ours runs before it
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .child_io import (
    _exit_now,
    _start_without_main,
    _watch_parent,
    folder_warning,
    read_spec,
    write_spec,
)

__all__ = ["ChildDied", "ChildProcess", "GuardInfo", "RunSpec", "TeacherSpec", "Terminated", "demo_target",
           "distill_target", "run_in_child"]

Message = tuple[str, Any]

#: How long :meth:`ChildProcess.close` waits for a requested stop before terminating the child.
STOP_WAIT_S = 1.5


class Terminated(BaseException):
    """Raised in the child by SIGTERM (the parent gave up waiting for a stop)."""


@dataclass
class TeacherSpec:
    """How the child gets its teacher: the teacher object itself (picklable), else its file to load again."""

    teacher: Any = None
    path: str | None = None
    kind: str = "auto"
    trust: bool = False
    source: str | None = None
    spacing: Any = None

    def load(self) -> Any:
        if self.teacher is not None:
            return self.teacher
        from .teachers import load_teacher

        teacher = load_teacher(self.path, kind=self.kind, trust=self.trust)
        if self.source:
            with contextlib.suppress(AttributeError):
                teacher.source = self.source
        if self.spacing is not None and getattr(teacher, "spacing", None) is None:
            with contextlib.suppress(AttributeError):
                teacher.spacing = self.spacing
        return teacher


@dataclass
class GuardInfo:
    """What the model-data guard needs of a registry entry (:func:`napari_dmd.guard.check_entry`), picklable."""

    name: str
    info: dict[str, Any]
    segmenter: Any  # a namespace with spatial_dims and normalization

    @classmethod
    def of(cls, entry: Any) -> GuardInfo:
        from types import SimpleNamespace

        seg = entry.segmenter
        info = {k: v for k, v in (entry.info or {}).items() if k in ("spacing", "train_data")}
        return cls(entry.name, info, SimpleNamespace(spatial_dims=int(seg.spatial_dims),
                                                     normalization=str(seg.normalization or "zscore")))


@dataclass
class RunSpec:
    """A training run for :func:`distill_target`: what :func:`napari_dmd.runner.prepare_run` needs."""

    config: Any  # TrainConfig
    output_dir: str | None
    cases: list[Any] | None = None  # Case objects (arrays included), or None with ``folder``
    folder: str | None = None  # an MSD folder the child loads
    teacher: TeacherSpec | None = None
    guard: GuardInfo | None = None  # the teacher's entry, to check a folder's cases against
    resume: str | None = None
    patch_single: int | None = None  # one patch edge for every axis, the dims known once the data is
    role: str = "student"
    val_cases: list[Any] | None = None
    snapshot_name: str = "live student"
    extra: dict[str, Any] = field(default_factory=dict)


class Channel:
    """The child's side: send messages, and what the parent asks (stop, snapshots)."""

    def __init__(self, conn: Any, stop: Any, live_every: Any, snapshot: Any) -> None:
        self._conn = conn
        self._stop = stop
        self._live_every = live_every
        self._snapshot = snapshot
        self.lost = False  # the parent stopped listening

    def send(self, kind: str, payload: Any = None) -> None:
        """Send one message (pickled here, so that a failure to pickle is raised here)."""
        data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        if not self.lost:
            try:
                self._conn.send_bytes(data)
            except OSError:  # the parent is gone or closed its end: stop the run
                self.lost = True
                self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def live_due(self, iteration: int) -> bool:
        """Whether a snapshot of the student is wanted after this step."""
        if self._snapshot.is_set():
            self._snapshot.clear()
            return True
        n = int(self._live_every.value)
        return n > 0 and iteration % n == 0


# ---------------------------------------------------------------------------------------------- targets
def distill_target(spec: RunSpec, chan: Channel) -> dict[str, Any]:
    """Prepare the run (:func:`napari_dmd.runner.prepare_run`) and drive it, streaming its events."""
    from . import runner
    from .data.cases import load_msd_folder

    cfg = spec.config
    cases, names = spec.cases, None
    if cases is None:
        cases, names = load_msd_folder(spec.folder or "")
        if spec.guard is not None and (note := folder_warning(spec.guard, cases)):
            chan.send("notice", (note, True))
    teacher = spec.teacher.load() if spec.teacher is not None else None
    if spec.patch_single is not None:
        dims = cfg.spatial_dims or (teacher.spatial_dims if teacher is not None else cases[0].ndim)
        cfg.patch_size = [spec.patch_single] * dims
    d, warnings = runner.prepare_run(cfg, cases, teacher=teacher, val_cases=spec.val_cases,
                                     output_dir=spec.output_dir, resume=spec.resume, role=spec.role,
                                     class_names=names)
    for message in warnings:
        chan.send("notice", (message, True))  # e.g. flips on positional classes
    chan.send("info", {"output_dir": str(d.output_dir), "last_path": str(d.last_path),
                       "best_path": str(d.best_path), "iteration": d.iteration, "total": d.total,
                       "class_names": d.config.class_names})
    saved, saved_at = d.iteration, 0.0
    seen: list[float] = []  # when the stop was first seen (time.monotonic: comparable with the parent's)

    def should_stop() -> bool:
        if not chan.should_stop():
            return False
        if not seen:
            seen.append(time.monotonic())
        return True

    d.step_guard.stop_check = should_stop  # a stop also abandons the step in progress (distill/stopping.py)
    gen = runner.events(d, should_stop=should_stop)
    try:
        for ev in gen:
            if ev.kind == "checkpoint":
                saved, saved_at = ev.iteration, time.monotonic()
            if ev.kind in ("done", "stopped"):  # the last snapshot first: the parent may stop reading at this event
                if int(chan._live_every.value) > 0:
                    chan.send("snapshot", _snapshot(d, spec))
                if seen:
                    chan.send("timing", {"seen": seen[0], "step_end": d.step_guard.abandoned_at or seen[0],
                                         "saved": saved_at, "sent": time.monotonic()})
            chan.send("event", ev)
            if ev.kind == "step" and chan.live_due(ev.iteration):
                chan.send("snapshot", _snapshot(d, spec))
    except Terminated:  # the parent stopped waiting: keep the steps done
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with contextlib.suppress(Exception):
            gen.close()  # suspended between steps: the engine writes last.pt
        if d.iteration > saved and d.dist.is_main:
            with contextlib.suppress(Exception):
                d._save_last()  # cut short mid-step: rolled back before the optimizer's update (stopping.py)
        raise
    return {"iteration": d.iteration, "last": str(d.last_path),
            "best": str(d.best_path) if d.best_path.exists() else None}


def _snapshot(d: Any, spec: RunSpec) -> Any:
    """A CPU copy of the run's student for the parent (:class:`~napari_dmd.features.StudentSnapshot`)."""
    from .features import StudentSnapshot

    return StudentSnapshot.take(d.model, heads=d.heads, feature_scales=d.feature_scales,
                                normalization=d.normalization, iteration=d.iteration, name=spec.snapshot_name)


def demo_target(spec: dict[str, Any], chan: Channel) -> tuple[str, str]:
    """The phantom demo pair (:func:`napari_dmd.pretrained.phantom_models`), its progress streamed."""
    from .pretrained import phantom_models

    teacher, student = phantom_models(progress=lambda done, total: chan.send("progress", (done, total)),
                                      should_stop=chan.should_stop, **spec)
    return str(teacher), str(student)


# ---------------------------------------------------------------------------------------------- the child
def _child_main(target: Callable[[Any, Channel], Any], spec_path: str, conn: Any, stop: Any, live_every: Any,
                snapshot: Any) -> None:
    """The child process: load the spec, run the target, send its result or failure."""
    armed = [True]

    def on_term(signum: int, frame: Any) -> None:
        stop.set()
        if armed[0]:
            armed[0] = False
            raise Terminated

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal: the parent decides
    threading.Thread(target=_watch_parent, args=(stop,), daemon=True).start()
    chan = Channel(conn, stop, live_every, snapshot)
    try:
        spec = read_spec(spec_path)
        with contextlib.suppress(OSError):
            os.unlink(spec_path)
        chan.send("result", target(spec, chan))
    except Terminated:
        pass
    except Exception as exc:  # noqa: BLE001 - every failure goes to the parent as a message
        try:
            chan.send("failure", exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
            chan.send("failure", RuntimeError(f"{type(exc).__name__}: {exc}"))
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    _exit_now()


# ---------------------------------------------------------------------------------------------- the parent
_LIVE: set[ChildProcess] = set()


class ChildProcess:
    """A spawned child running ``target(spec, channel)``; poll it for messages, stop or close it.

    ``target`` must be a module-level function (it is pickled by name).
    """

    def __init__(self, target: Callable[[Any, Channel], Any], spec: Any, *, live_every: int = 0,
                 name: str = "napari-dmd-train") -> None:
        ctx = mp.get_context("spawn")
        self._ctx = ctx
        self.target, self.spec, self.name = target, spec, name
        self.stop_event = ctx.Event()
        self._snapshot = ctx.Event()
        self._live_every = ctx.Value("i", int(live_every), lock=False)
        self._recv, self._send = ctx.Pipe(duplex=False)
        self.process: Any = None
        self.result: Any = None
        self.failure: BaseException | None = None
        self.ended_cleanly = False  # a result or failure arrived
        self.terminated = False
        self._eof = False
        self._spec_path: str | None = None
        self._finisher: threading.Thread | None = None
        self.exited_at: float | None = None  # time.monotonic() when the process was seen to exit

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Write the spec to a temporary file and spawn the child (returns at once)."""
        self._spec_path = write_spec(self.spec)
        self.process = self._ctx.Process(
            target=_child_main, name=self.name, daemon=False,
            args=(self.target, self._spec_path, self._send, self.stop_event, self._live_every, self._snapshot))
        _start_without_main(self.process)
        self._send.close()  # the child holds the only writer: its death ends the pipe (EOFError here)
        _LIVE.add(self)

    def request_stop(self) -> None:
        """Ask the run to stop before its next step (it then writes last.pt)."""
        self.stop_event.set()

    def set_live_every(self, n: int) -> None:
        """Send a student snapshot every ``n`` steps (0: never)."""
        self._live_every.value = max(0, int(n))

    def request_snapshot(self) -> None:
        """Send a snapshot after the next step."""
        self._snapshot.set()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode if self.process is not None else None

    @property
    def done(self) -> bool:
        """The child has ended and every message it sent was read."""
        return self._eof

    def poll(self, timeout: float = 0.0, max_messages: int = 256) -> list[Message]:
        """The messages that arrived, waiting up to ``timeout`` seconds for the first one."""
        out: list[Message] = []
        if self._eof:
            return out
        wait = timeout
        while len(out) < max_messages:
            try:
                if not self._recv.poll(wait):
                    break
                kind, payload = pickle.loads(self._recv.recv_bytes())
            except (EOFError, OSError):
                self._eof = True
                break
            wait = 0.0
            if kind == "result":
                self.result, self.ended_cleanly = payload, True
            elif kind == "failure":
                self.failure, self.ended_cleanly = payload, True
            out.append((kind, payload))
        if self._eof or (self.process is not None and not self.alive and not out):
            self._reap()
        return out

    def ended_message(self) -> str | None:
        """One line when the child ended without a result or failure (killed, crashed), else None."""
        if self.ended_cleanly or self.terminated or self.process is None or self.alive:
            return None
        code = self.exitcode
        how = f"exit code {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                how = f"killed by {signal.Signals(-code).name}"
        return (f"the training process ended unexpectedly ({how}); the run folder keeps its last checkpoint "
                "(Resume continues from it)")

    @property
    def ended(self) -> bool:
        """The child sent its result or failure, or its pipe closed (it ended, or is exiting)."""
        return self.ended_cleanly or self._eof

    def close(self, wait_s: float = STOP_WAIT_S, term_wait_s: float = 1.0) -> list[Message]:
        """Ask for a stop and wait up to ``wait_s`` for the child's result (it has written last.pt by then), else
        SIGTERM it (it writes last.pt and exits); then wait up to ``term_wait_s`` for its exit; returns the
        messages read meanwhile. A child still exiting or saving after that is reaped in the background
        (:meth:`finish_in_background`; at interpreter exit, :func:`_close_all`)."""
        got: list[Message] = []
        if self.process is None or self._finisher is not None:
            return got
        self.request_stop()
        deadline = time.perf_counter() + wait_s
        while not self.ended and self.alive and time.perf_counter() < deadline:
            got += self.poll(0.05)
        if not self.ended and self.alive:
            self.terminated = True
            with contextlib.suppress(Exception):
                self.process.terminate()
        self.process.join(term_wait_s)  # it exits right after its result (os._exit: ~0.1 s) or after saving
        got += self.poll(0.0)
        self.finish_in_background()
        return got

    def finish_in_background(self) -> None:
        """Read what the child still sends and wait for its exit in a daemon thread, then reap it; the caller
        reads no more messages (the run's end was seen). Returns at once."""
        if self.process is None or self._finisher is not None:
            return

        def finish() -> None:
            with contextlib.suppress(Exception):
                while not self._eof:
                    self.poll(0.2)
                self.process.join()
                self.exited_at = time.monotonic()
                self._reap()

        self._finisher = threading.Thread(target=finish, name=f"{self.name}-reaper", daemon=True)
        self._finisher.start()

    def _reap(self) -> None:
        if self.process is not None:  # the pipe closes just before the child exits: its exit code for a death
            self.process.join(0.5 if self._eof and not self.ended_cleanly else 0)
        if self.process is not None and not self.process.is_alive():
            _LIVE.discard(self)
            if self._spec_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._spec_path)  # the child died before reading it


class ChildDied(RuntimeError):
    """A child process ended without a result (killed, crashed, or terminated)."""


def stream_child(target: Callable[[Any, Channel], Any], spec: Any, *, should_stop: Callable[[], bool] | None = None,
                 name: str = "napari-dmd-child", stopped_message: str = "the child process was stopped before it "
                 "finished") -> Generator[Message, None, Any]:
    """Run ``target(spec, channel)`` in a child process, yield each message it sends, and return its result.

    When ``should_stop()`` turns True the child is closed (:meth:`ChildProcess.close`: it writes last.pt and sends
    its result). Closing this generator closes the child too. Its failure is raised here; a child that died, or
    was stopped without a result, raises :class:`ChildDied` (``stopped_message`` when nothing else is known).
    """
    child = ChildProcess(target, spec, name=name)
    child.start()
    try:
        while not child.done:
            messages = child.poll(0.1)
            stopped = should_stop is not None and should_stop()
            if stopped:
                messages += child.close()  # its result read (or it was terminated); its exit reaped in the background
            yield from messages
            if stopped:
                break
    finally:
        if child.alive:
            child.close()
    if child.failure is not None:
        raise child.failure
    if child.ended_cleanly:
        return child.result
    raise ChildDied(child.ended_message() or stopped_message)


def run_in_child(target: Callable[[Any, Channel], Any], spec: Any, *,
                 on_progress: Callable[[int, int], Any] | None = None,
                 should_stop: Callable[[], bool] | None = None, name: str = "napari-dmd-child") -> Any:
    """Run ``target(spec, channel)`` in a child process and return its result (for a worker thread: blocks).

    ``on_progress(done, total)`` gets its progress messages; the rest is :func:`stream_child`'s.
    """
    stream = stream_child(target, spec, should_stop=should_stop, name=name)
    while True:
        try:
            kind, payload = next(stream)
        except StopIteration as end:
            return end.value
        if kind == "progress" and on_progress is not None:
            on_progress(*payload)


def _close_all() -> None:
    """At interpreter exit: stop every child still running (they write last.pt), wait a little for each."""
    for child in list(_LIVE):
        with contextlib.suppress(Exception):
            child.close(wait_s=1.0, term_wait_s=3.0)


atexit.register(_close_all)  # after multiprocessing's exit handler (which joins children): runs before it


def spec_teacher(entry: Any) -> TeacherSpec:
    """A :class:`TeacherSpec` for a registry entry: a private copy of its model when it pickles, else its file."""
    from .registry import teacher_from_entry

    teacher = teacher_from_entry(entry)
    try:
        pickle.dumps(teacher, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - e.g. TorchScript: loaded again from its file in the child
        if entry.checkpoint is None:
            raise
        return TeacherSpec(path=str(Path(entry.checkpoint)), kind=entry.info.get("kind", "auto"),
                           trust=bool(entry.info.get("trusted", False)), source=entry.name,
                           spacing=entry.info.get("spacing"))
    return TeacherSpec(teacher=teacher)
