"""B2: the windows of one call side by side in CPU threads (``Segmenter.cpu_workers``), per volume.

Under ``OMP_WAIT_POLICY=PASSIVE`` (as napari-dmd's CLI and widgets run) OpenMP shares a small student's operations
badly among cores. ``Segmenter`` now splits each call's windows among worker threads, one per thread, each on its
share of the threads (``napari_dmd.window_pool.WindowPool``, arm "workers"); the other arm runs every call in the
calling thread as before ("one"). Every preset segments the validation volumes in both arms, interleaved in one
process; labels are checked equal. Run it as the product runs, e.g.::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_window_workers.py --datasets chaos hippocampus3d \
        --threads 2 --repeats 3 --json docs/benchmarks/bench-b2-window-workers.json

``--busy 1`` measures beside a busy-looping process (a loaded desktop); ``--every-preset`` gives the workers arm
one worker per thread for every preset, also those the product keeps on one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segmenter_arms import main  # noqa: E402

from napari_dmd.segment import Segmenter  # noqa: E402

#: ``--every-preset``: the workers arm gives every preset one worker per thread, also those that
#: ``Segmenter.cpu_workers`` keeps on one (``student-tiny``), to measure why.
EVERY_PRESET = "--every-preset" in sys.argv


def _pair(model: torch.nn.Module, classes: int, dims: int, patch: list[int], batch: int,
          name: str) -> dict[str, Segmenter]:
    workers = torch.get_num_threads() if EVERY_PRESET else None
    return {"workers": Segmenter(model, classes, dims, patch, workers=workers, name=name),
            "one": Segmenter(model, classes, dims, patch, workers=1, name=name)}


if __name__ == "__main__":
    if EVERY_PRESET:
        sys.argv.remove("--every-preset")
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}", flush=True)
    main(__doc__.splitlines()[0], _pair, "workers", "one", ("calling thread, ms", "workers, ms"))
