"""Background work for the widgets: napari thread workers that hand failures back as values, stop flags
that the viewer's closing sets, the shared thread pool's size, and a throttled window-count progress bar.

Closing the viewer quits every worker napari knows of (its task manager calls ``worker.quit()``). A
generator worker then stops at its next ``yield`` and :func:`start_worker` closes its generator in the worker
thread, so a training run's engine writes ``last.pt``; a function worker only learns of it by polling a
:class:`StopFlag`, which also reads the worker's ``abort_requested``.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from typing import Any

from qtpy.QtCore import Qt, QThreadPool

__all__ = ["MIN_POOL_THREADS", "Failure", "StopFlag", "WindowProgress", "ensure_thread_pool", "start_worker",
           "training_threads"]

MIN_POOL_THREADS = 4


def training_threads() -> int:
    """CPU threads for a run started in napari: the cores this process may use, one left for napari."""
    from ..runtime import usable_cores

    return max(1, usable_cores() - 1)


def ensure_thread_pool() -> None:
    """A run holds a pool thread for its whole length: leave room for plots and feature workers."""
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < MIN_POOL_THREADS:
        pool.setMaxThreadCount(MIN_POOL_THREADS)



@dataclass
class Failure:
    """An exception raised in a worker, handed to the main thread as the worker's *result*.

    A napari worker that raises relays the exception to napari's notification manager (a second, traceback
    notification next to ours, and a test failure under pytest-qt); returning it as a value avoids both.
    """

    exc: Exception


class StopFlag:
    """A stop request for a widget's current work, polled by the work (``should_stop=flag``).

    Set by a Stop / Cancel button (:meth:`set`), when the widget is destroyed (connect ``destroyed`` to
    :meth:`set`), or when napari quits the worker :func:`start_worker` gave it (the viewer closes).
    """

    def __init__(self) -> None:
        self.requested = False
        self.worker: Any = None

    def reset(self) -> None:
        """Clear the request before new work starts."""
        self.requested = False
        self.worker = None

    def set(self, *_: Any) -> None:
        """Ask the work to stop at its next check."""
        self.requested = True

    def __call__(self) -> bool:
        worker = self.worker
        return self.requested or bool(worker is not None and worker.abort_requested)

    def unless_stopped(self, fn: Callable[..., Any]) -> Callable[..., None]:
        """``fn`` (e.g. a widget signal's ``emit``) made a no-op once a stop is requested: a worker must not
        signal a widget that the closing viewer deletes (emitting on a deleted widget crashed the process)."""
        def call(*args: Any) -> None:
            if not self():
                fn(*args)
        return call


def _guarded(fn: Callable) -> Callable:
    """``fn`` (a function or generator function) with its exceptions returned as :class:`Failure`."""
    if inspect.isgeneratorfunction(fn):
        def gen(*args: Any, **kwargs: Any):
            try:
                return (yield from fn(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a notification
                return Failure(exc)
        return gen

    def call(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            return Failure(exc)
    return call


def _drive(gen: Generator) -> Generator:
    return (yield from gen)


def _close(gen: Generator) -> None:
    """Close a quit worker's generator (in the worker thread): ``finally`` blocks and the engine's save run."""
    with contextlib.suppress(Exception):
        gen.close()


def start_worker(fn: Callable, *args: Any, on_returned: Callable[[Any], Any],
                 on_failed: Callable[[Exception], Any], on_yielded: Callable[[Any], Any] | None = None,
                 on_finished: Callable[[], Any] | None = None, stop: StopFlag | None = None, **kwargs: Any):
    """Run ``fn(*args, **kwargs)`` in a napari thread worker and return the (started) worker.

    A generator function gives a generator worker (``on_yielded`` gets every yielded value; quitting acts
    at a ``yield`` and closes the generator). ``on_returned`` gets the return value, ``on_failed`` the
    exception; all handlers run on the main thread, the only place layers may be changed. ``on_finished``
    runs last in every case. ``stop`` (polled by ``fn``) is tied to the worker, so quitting it sets it.
    """
    from napari.qt.threading import create_worker

    def returned(result: Any) -> None:
        if isinstance(result, Failure):
            on_failed(result.exc)
        else:
            on_returned(result)

    connect = {"errored": on_failed}
    if inspect.isgeneratorfunction(fn):
        gen = _guarded(fn)(*args, **kwargs)
        worker = create_worker(_drive, gen, _start_thread=False, _connect=connect)
        worker.aborted.connect(partial(_close, gen), Qt.ConnectionType.DirectConnection)
    else:
        worker = create_worker(_guarded(fn), *args, _start_thread=False, _connect=connect, **kwargs)
    if stop is not None:
        stop.worker = worker
    worker.returned.connect(returned)
    if on_yielded is not None:
        worker.yielded.connect(on_yielded)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker


class WindowProgress:
    """A napari progress bar for (done, total) window counts, redrawn at most ~10 times a second and at the end.

    Each redraw repaints the window (10-15 ms under software OpenGL) and napari's bar processes pending events
    while it updates, so callers set their own status text before :meth:`update`.
    """

    def __init__(self, desc: str, interval_s: float = 0.1) -> None:
        from napari.utils import progress

        self._bar = progress(total=0, desc=desc)
        self._interval_s = interval_s
        self._last = 0.0

    def due(self, done: int, total: int) -> bool:
        """Whether this count should be shown: the last one always, others after ``interval_s``."""
        now = time.perf_counter()
        if done < total and now - self._last < self._interval_s:
            return False
        self._last = now
        return True

    def update(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()
