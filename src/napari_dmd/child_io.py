"""What travels to a training child process (:mod:`napari_dmd.child`), and small helpers around it (Qt-free).

:func:`write_spec` / :func:`read_spec`: the run's spec as a temporary file, its arrays out of band;
:func:`folder_warning`: the model-data guard's warning for an MSD folder's cases; starting a spawned child
without the parent's ``__main__``, watching the parent from the child, and the child's quick exit.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import sys
import tempfile
import threading
from typing import Any

__all__ = ["folder_warning", "read_spec", "write_spec"]


def write_spec(spec: Any) -> str:
    """Pickle ``spec`` to a new temporary file, its arrays' buffers written out of band (a file write, which
    releases the GIL, instead of a copy into the pickle); returns the path."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(spec, protocol=5, buffer_callback=buffers.append)
    fd, path = tempfile.mkstemp(prefix="napari-dmd-run-", suffix=".pkl")
    with os.fdopen(fd, "wb") as f:
        raws = [b.raw() for b in buffers]
        pickle.dump((len(head), [r.nbytes for r in raws]), f, protocol=5)
        f.write(head)
        for r in raws:
            f.write(r)
    return path


def read_spec(path: str) -> Any:
    """The spec :func:`write_spec` wrote."""
    with open(path, "rb") as f:
        n_head, sizes = pickle.load(f)
        head, buffers = f.read(n_head), [bytearray(n) for n in sizes]
        for b in buffers:
            f.readinto(b)
    return pickle.loads(head, buffers=buffers)


def folder_warning(entry: Any, cases: list[Any]) -> str | None:
    """The model-data guard's warning for an MSD folder's cases against the teacher (the first case unlike its
    training data, and how many more are), or None."""
    from .guard import check_entry

    found = [w for c in cases if (w := check_entry(entry, c.image, image_name=c.source, image_spacing=c.spacing))]
    if not found:
        return None
    return found[0] + (f" ({len(found) - 1} more of the {len(cases)} cases are unlike it too)" if len(found) > 1
                       else "")


# ---------------------------------------------------------------------------------------------- process helpers
def _watch_parent(stop: Any) -> None:
    """Stop the run when the parent process dies."""
    parent = mp.parent_process()
    if parent is not None:
        parent.join()
        stop.set()


def _exit_now() -> None:
    """End the child at once: what it wrote is closed by now (last.pt, events.jsonl, the pipe). Python's own
    shutdown of a process that imported torch took 2 s here (measured), CPU the GUI needs while it closes."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


_START_LOCK = threading.Lock()


def _start_without_main(process: Any) -> None:
    """Start a spawned process without running the parent's ``__main__`` in it again.

    multiprocessing's spawn runs the parent's main script in the child (as ``__mp_main__``); a napari script
    without an ``if __name__ == "__main__"`` guard would open a second viewer there. The targets here live in
    importable modules, so the child needs no main module at all.
    """
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    with _START_LOCK:
        spawn.get_preparation_data = preparation_data
        try:
            process.start()
        finally:
            spawn.get_preparation_data = original
