"""B4 (``napari-dmd bench gui``): event-loop stalls while the Distill widget trains in a real napari viewer.

A 10 ms QTimer measures the gaps of the event loop while distilling; the same configuration then also trains
headless in this process, to compare samples/s. napari and Qt are imported only when the benchmark runs.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .machine import DEFAULT_PATCH, QUICK_PATCH, QUICK_STUDENT, QUICK_TEACHER, _table


def _gaps_ms(stamps: Sequence[float]) -> dict[str, float]:
    import numpy as np

    gaps = np.diff(np.asarray(stamps)) * 1000
    if gaps.size == 0:
        return {"ticks": len(stamps), "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"ticks": len(stamps), "p50_ms": float(np.percentile(gaps, 50)), "p99_ms": float(np.percentile(gaps, 99)),
            "max_ms": float(gaps.max())}


def _rate(stamps: Sequence[float], batch: int) -> float:
    """Samples/s between the first and the last stamp (one stamp per step)."""
    return batch * (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")


def _busy() -> None:  # pragma: no cover - runs in a load process
    """Keep one core busy until terminated (``--load``)."""
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


def start_load(k: int) -> list[Any]:
    """``k`` busy processes (spawned, daemonic) that saturate the CPU for the benchmark; stop with :func:`stop_load`."""
    import multiprocessing as mp

    procs = [mp.get_context("spawn").Process(target=_busy, daemon=True, name=f"napari-dmd-load-{i}")
             for i in range(max(0, int(k)))]
    for p in procs:
        p.start()
    return procs


def stop_load(procs: Sequence[Any]) -> None:
    """End the processes :func:`start_load` started."""
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(5)


def _wait(app_loop: Any, until: Any, timeout_s: float) -> bool:
    """Run the event loop in 20 ms slices until ``until()`` or the timeout; whether ``until()`` became true."""
    from qtpy.QtCore import QTimer

    deadline = time.perf_counter() + timeout_s
    while not until():
        if time.perf_counter() > deadline:
            return False
        QTimer.singleShot(20, app_loop.quit)
        app_loop.exec()
    return True


#: The parts of a stop, in order, as :attr:`~napari_dmd._widgets._distill_run.RunHandle.timeline` names them.
STOP_PARTS = (("seen", "the child saw the stop"), ("step_end", "its step ended (abandoned or done)"),
              ("saved", "last.pt written"), ("sent", "its last event sent"),
              ("received", "the worker got it"), ("finished", "the worker ended"),
              ("shown", 'the widget says "stopped"'), ("registered", "the student registered"),
              ("exited", "the child process exited"))


def _open_viewer(napari: Any, dims: int, teacher: str, student_model: str, patch: Sequence[int], batch: int,
                 device: str, live_features: int, title: str = "napari-dmd bench gui") -> tuple[Any, Any, Any]:
    """A viewer with the phantom sample and two more image/labels pairs, Distill docked (the teacher, DMD, the
    student, patch, batch, device set) and, with ``live_features``, Features in live mode; (viewer, distill,
    features or None)."""
    from ..phantom import make_phantom_dataset

    viewer = napari.Viewer(title=title)
    viewer.open_sample("napari-dmd", f"phantom-{dims}d")
    for i, (img, lab) in enumerate(make_phantom_dataset(2, (128, 128) if dims == 2 else (32, 64, 64), seed=7)):
        viewer.add_image(img, name=f"extra {i}")
        viewer.add_labels(lab, name=f"extra {i} labels")
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Distill")
    w.teacher_chooser.setCurrentText(teacher)
    w.set_method("dmd")
    w.student_combo.setCurrentText(student_model)
    w.patch_edit.setText(",".join(map(str, patch)))
    w.batch_spin.setValue(batch)
    fw = None
    if live_features > 0:  # Features in live mode on the phantom image, with its default view
        _, fw = viewer.window.add_plugin_dock_widget("napari-dmd", "Features")
        fw.image_chooser.set_layer(f"phantom {dims}D")
        fw.live_steps.setValue(live_features)
        fw.live_check.setChecked(True)
    idx = w.device_combo.findData(device)
    if idx < 0:
        raise ValueError(f"device {device!r} is not offered by the Distill widget on this machine")
    w.device_combo.setCurrentIndex(idx)
    return viewer, w, fw


def _parts(run: Any, t0: float) -> dict[str, float]:
    """The run's stop timeline (:data:`STOP_PARTS`) in seconds from ``t0`` (time.monotonic())."""
    marks = dict(run.timeline)
    child = run.child
    if child is not None and child.exited_at is not None:
        marks["exited"] = child.exited_at
    return {k: marks[k] - t0 for k, _ in STOP_PARTS if k in marks}


def _time_stop(w: Any, tmp: Path, app_loop: Any, step_at: list[float], warmup: int) -> dict[str, Any]:
    """Press Stop during a long run: until the widget is idle (``stop_s``), and each part of it."""
    w.iterations_spin.setValue(1_000_000)
    w.output_edit.setText(str(tmp / "stop"))
    step_at.clear()
    w.start()
    _wait(app_loop, lambda: len(step_at) >= warmup, 600)
    run = w.run
    t0, c0 = time.perf_counter(), time.monotonic()
    w.stop()
    _wait(app_loop, lambda: not w.running, 120)
    stop_s = time.perf_counter() - t0
    _wait(app_loop, lambda: run.child is None or run.child.exited_at is not None, 30)
    last = tmp / "stop" / "last.pt"
    return {"stop_s": stop_s, "stop_parts": _parts(run, c0), "stop_kept_last_pt": last.is_file(),
            "stop_iteration": run.events[-1].iteration if run.events else None}


def _time_closes(napari: Any, make_viewer: Any, tmp: Path, app_loop: Any, warmup: int) -> dict[str, Any]:
    """Close a new viewer with no run (napari's own close, with the same layers and docks: the baseline), then
    another one mid-run: ``close()`` returning, the run's worker ending, last.pt kept, the child's exit."""
    from qtpy.QtCore import QTimer

    def settle(seconds: float) -> None:
        QTimer.singleShot(int(seconds * 1000), app_loop.quit)
        app_loop.exec()

    viewer, w, _ = make_viewer("napari-dmd bench gui: close, no run")
    settle(1.0)
    t0 = time.perf_counter()
    viewer.close()
    idle_s = time.perf_counter() - t0
    settle(1.0)

    viewer, w, _ = make_viewer("napari-dmd bench gui: close mid-run")
    out = tmp / "close"
    w.iterations_spin.setValue(1_000_000)
    w.output_edit.setText(str(out))
    steps: list[float] = []
    w.run_event.connect(lambda ev: steps.append(time.perf_counter()) if ev.kind == "step" else None)
    w.start()
    _wait(app_loop, lambda: len(steps) >= warmup, 600)
    run, worker = w.run, w.worker
    ended: list[float] = []
    if worker is not None:
        worker.finished.connect(lambda: ended.append(time.perf_counter()))
    t0, c0 = time.perf_counter(), time.monotonic()
    viewer.close()
    close_return_s = time.perf_counter() - t0
    _wait(app_loop, lambda: bool(ended) or worker is None, 120)
    close_done_s = (ended[0] if ended else time.perf_counter()) - t0
    _wait(app_loop, lambda: (out / "last.pt").is_file(), 5)
    _wait(app_loop, lambda: run.child is None or run.child.exited_at is not None, 30)
    return {"close_idle_s": idle_s, "close_return_s": close_return_s, "close_done_s": close_done_s,
            "close_kept_last_pt": (out / "last.pt").is_file(), "close_parts": _parts(run, c0)}


def bench_gui(steps: int | None = None, warmup: int | None = None, dims: int = 2, batch: int = 2,
              patch: Sequence[int] | None = None, teacher_model: str | None = None, student_model: str | None = None,
              device: str = "cpu", rounds: int = 1, quick: bool = False, timeout_s: float = 1800,
              live_features: int = 0, load: int = 0) -> dict[str, Any]:
    """B4: event-loop stalls while the Distill widget trains in a real viewer, and GUI vs headless samples/s.

    Each round trains the same configuration (the widget's: threads, validation and checkpoint intervals) on the
    same cases and teacher once in the viewer (Start, the engine in a thread worker) and once headless in the main
    thread of this process, alternating which goes first, after one short uncounted GUI run (first-use costs).
    Samples/s count from the end of warm-up to the last step; after each GUI run the widget's last plot draw and
    notification are let finish before anything else is timed.

    ``live_features`` N > 0 docks the Features widget in live mode (every N steps, its default view) on the
    phantom image; ``load`` K starts K busy processes that saturate the CPU for the whole benchmark (GUI and
    headless alike). At the end, Stop and closing the viewer mid-run are timed: ``stop_s`` (Stop pressed to
    the widget is idle, each part of it in ``stop_parts``), ``close_idle_s`` (``viewer.close()`` of a new viewer
    with the same layers and docks and no run: napari's own close, the baseline), ``close_return_s``
    (``viewer.close()`` of another one mid-run returning) and ``close_done_s`` (until the run's worker has
    finished; ``close_parts``: when the child saw the stop, saved, ended).
    """
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                                 or os.environ.get("QT_QPA_PLATFORM")):
        raise ValueError("bench gui needs a display: run it under xvfb-run -a")
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from ..config import TrainConfig
    from ..distill.engine import Distiller
    from ..registry import REGISTRY, entry_from_checkpoint, teacher_from_entry

    steps, warmup = steps or (12 if quick else 200), warmup or (2 if quick else 10)
    if steps < warmup + 3:
        raise ValueError(f"--steps {steps} must exceed --warmup {warmup} by at least 3")
    patch = list(patch or (QUICK_PATCH if quick else DEFAULT_PATCH)[dims])
    teacher_model = teacher_model or (QUICK_TEACHER if quick else "teacher")
    student_model = student_model or (QUICK_STUDENT if quick else "student")
    tmp = Path(tempfile.mkdtemp(prefix="napari-dmd-bench-gui-"))

    load_procs = start_load(load)
    viewer = None
    layer_cases = None
    name = "teacher: napari-dmd bench"
    try:
        # a teacher checkpoint (one step: its weights do not change the timing), registered like a loaded one
        from ..demo import phantom_cases

        tcfg = TrainConfig(method="none", model=teacher_model, iterations=1, patch_size=patch, batch_size=batch,
                           device=device)
        t = Distiller(tcfg, phantom_cases(2, dims), val_cases=[], output_dir=tmp / "teacher", role="teacher")
        t.run_to_end()
        entry = REGISTRY.add(entry_from_checkpoint(t.last_path, role="teacher", device=device, name=name))

        def make_viewer(title: str = "napari-dmd bench gui") -> tuple[Any, Any, Any]:
            return _open_viewer(napari, dims, name, student_model, patch, batch, device, live_features, title)

        viewer, w, fw = make_viewer()
        w.iterations_spin.setValue(steps)

        app_loop = QEventLoop()
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start()
        for _ in range(2):  # let the new window settle for 1 s, then 1 s of the idle loop: the floor of the figures
            ticks.clear()
            QTimer.singleShot(1000, app_loop.quit)
            app_loop.exec()
        idle = _gaps_ms(ticks)

        step_at: list[float] = []  # when each step event reached the main thread

        def on_event(ev: Any) -> None:
            if ev.kind == "step":
                step_at.append(time.perf_counter())

        w.run_event.connect(on_event)
        w.run_finished.connect(app_loop.quit)
        guard = QTimer()
        guard.setSingleShot(True)
        guard.timeout.connect(app_loop.quit)
        gui_rounds, head_rounds = [], []
        cfg = None

        def settle() -> None:
            """After a GUI run: let its last plot draw finish and close its notification, so that neither runs
            during the next measurement (a toast animates the window for its 4 s on screen)."""
            deadline = time.perf_counter() + 10
            while True:
                QTimer.singleShot(100, app_loop.quit)
                app_loop.exec()
                if not getattr(w.plot, "busy", False) or time.perf_counter() > deadline:
                    break
            with contextlib.suppress(Exception):
                from napari._qt.dialogs.qt_notification import NapariQtNotification

                for toast in list(NapariQtNotification._instances):
                    toast.close()
            QTimer.singleShot(200, app_loop.quit)
            app_loop.exec()

        def gui_round(r: int | str) -> None:
            nonlocal cfg, layer_cases
            w.output_edit.setText(str(tmp / f"gui{r}"))
            step_at.clear()
            ticks.clear()
            renders = getattr(w.plot, "renders", 0)
            computed = fw.computations if fw is not None else 0
            charged = len(fw.live_cpu_s) if fw is not None else 0
            cpu0 = time.process_time()  # this (the GUI) process's CPU time, all its threads
            guard.start(int(timeout_s * 1000))
            w.start()
            if not w.running:
                raise ValueError(f"the Distill widget did not start: {w.last_error or 'unknown reason'}")
            app_loop.exec()
            t_end = time.perf_counter()
            gui_cpu_s = time.process_time() - cpu0
            guard.stop()
            if w.running or not w.events or w.events[-1].kind != "done":
                w.stop()
                raise ValueError(f"the GUI run did not finish within {timeout_s:.0f} s: {w.last_error}")
            if r == "warm-up":
                settle()
                return
            run = w.run
            cfg, layer_cases = copy.deepcopy(run.config), run.cases
            t0 = step_at[warmup - 1]
            gui_rounds.append({**_gaps_ms([t for t in ticks if t0 <= t <= t_end]),
                               "samples_per_s": _rate(step_at[warmup - 1:], batch),
                               "engine_samples_per_s": next(e.samples_per_s for e in reversed(w.events)
                                                            if e.kind == "step"),
                               "plot_renders": getattr(w.plot, "renders", 0) - renders,
                               "gui_process_cpu_s": gui_cpu_s, "wall_s": t_end - step_at[0],
                               "feature_updates": (fw.computations - computed) if fw is not None else 0,
                               "live_update_cpu_ms": 1000 * statistics.median(fw.live_cpu_s[charged:])
                               if fw is not None and fw.live_cpu_s[charged:] else None,
                               "feature_layers": sum(1 for lay in viewer.layers if " features " in lay.name),
                               "visible_feature_layers": sum(1 for lay in viewer.layers
                                                             if " features " in lay.name and lay.visible)})
            settle()

        def headless_round(r: int) -> None:
            # the same configuration, cases and teacher, headless in this process (main thread)
            d = Distiller(copy.deepcopy(cfg), layer_cases, teacher=teacher_from_entry(entry),
                          output_dir=tmp / f"headless{r}")
            head_at: list[float] = []
            last = None
            for ev in d.run():
                if ev.kind == "step":
                    head_at.append(time.perf_counter())
                    last = ev
            head_rounds.append({"samples_per_s": _rate(head_at[warmup - 1:], batch),
                                "engine_samples_per_s": last.samples_per_s if last else float("nan")})

        # a short GUI run first, not counted: the process's first-use costs (the plot's first draw loads fonts, the
        # first validation, thread start-up) would otherwise fall in round 1's GUI run only
        w.iterations_spin.setValue(min(steps, warmup + 10))
        gui_round("warm-up")
        w.iterations_spin.setValue(steps)
        for r in range(rounds):  # GUI, headless, headless, GUI, ...: a drifting machine load favours neither
            order = (gui_round, headless_round) if r % 2 == 0 else (headless_round, gui_round)
            for run_round in order:
                run_round(r)
        timer.stop()
        stop_close = _time_stop(w, tmp, app_loop, step_at, warmup)
        viewer.close()  # its Features would follow the next runs' snapshots too
        viewer = None
        stop_close.update(_time_closes(napari, make_viewer, tmp, app_loop, warmup))
    finally:
        with contextlib.suppress(Exception):
            REGISTRY.remove(name)
        with contextlib.suppress(Exception):
            if viewer is not None:
                viewer.close()
        stop_load(load_procs)
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [g["samples_per_s"] / h["samples_per_s"] for g, h in zip(gui_rounds, head_rounds)]
    stall = {k: statistics.median(g[k] for g in gui_rounds) for k in ("p50_ms", "p99_ms", "max_ms")}
    stall["max_ms"] = max(g["max_ms"] for g in gui_rounds)
    res = {"settings": {"dims": dims, "patch": patch, "batch": batch, "teacher": teacher_model,
                        "student": student_model, "steps": steps, "warmup": warmup, "rounds": rounds,
                        "live_features": live_features, "load": load,
                        "device": device, "num_threads": cfg.num_threads if cfg else None,
                        "val_interval": cfg.val_interval if cfg else None,
                        "checkpoint_interval": cfg.checkpoint_interval if cfg else None,
                        "train_cases": len(layer_cases or []), "napari": napari.__version__,
                        "display": os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM")},
           "idle": idle, "gui": gui_rounds, "headless": head_rounds, "stall": stall,
           "gui_samples_per_s": statistics.median(g["samples_per_s"] for g in gui_rounds),
           "headless_samples_per_s": statistics.median(h["samples_per_s"] for h in head_rounds),
           "ratio": statistics.median(ratios), **stop_close}
    print(f"B4 GUI: napari {napari.__version__}, Distill widget, DMD {dims}D patch {patch} x {batch}, teacher "
          f"{teacher_model}, student {student_model}, {steps} steps ({warmup} warm-up steps not counted), "
          f"{res['settings']['num_threads']} torch thread(s), validation every {res['settings']['val_interval']} "
          f"and checkpoint every {res['settings']['checkpoint_interval']} steps (the widget's choices), "
          f"{rounds} round(s) (GUI and headless in turn going first, after one uncounted GUI run), device {device}")
    print(_table(["event loop (10 ms QTimer)", "ticks", "gap p50 ms", "gap p99 ms", "gap max ms"],
                 [["idle viewer", idle["ticks"], f"{idle['p50_ms']:.1f}", f"{idle['p99_ms']:.1f}",
                   f"{idle['max_ms']:.1f}"]] +
                 [[f"distilling, round {i + 1}", g["ticks"], f"{g['p50_ms']:.1f}", f"{g['p99_ms']:.1f}",
                   f"{g['max_ms']:.1f}"] for i, g in enumerate(gui_rounds)]))
    print(_table(["round", "GUI samples/s", "headless samples/s", "GUI / headless", "live feature updates",
                  "CPU per update ms", "GUI process CPU s"],
                 [[i + 1, f"{g['samples_per_s']:.2f}", f"{h['samples_per_s']:.2f}", f"{q:.3f}",
                   g["feature_updates"], _s(g["live_update_cpu_ms"]), f"{g['gui_process_cpu_s']:.2f}"]
                  for i, (g, h, q) in enumerate(zip(gui_rounds, head_rounds, ratios))]))
    print(f"ratio GUI / headless samples/s = {res['ratio']:.3f}  (target >= 0.9)")
    print(f"Stop to the widget idle {res['stop_s']:.2f} s (target <= 1), last.pt kept: {res['stop_kept_last_pt']}; "
          f"closing a viewer: close, no run {res['close_idle_s']:.2f} s (napari's own close, the same layers and "
          f"docks) vs close mid-run {res['close_return_s']:.2f} s (target <= 2), the run's worker ended after "
          f"{res['close_done_s']:.2f} s, last.pt kept: {res['close_kept_last_pt']}")
    names = dict(STOP_PARTS)
    print(_table(["part (s after Stop / close())", "Stop", "close mid-run"],
                 [[names[k], _s(res["stop_parts"].get(k)), _s(res["close_parts"].get(k))] for k in names]))
    return res


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
