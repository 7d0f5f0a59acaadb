"""B2: CPU threads per prediction while idle OpenMP threads sleep (``Segmenter.cpu_threads``), per volume.

napari-dmd's CLI and widgets set ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep: spinning ones slowed
training by an order of magnitude on a busy machine). Then every parallel operation wakes the threads, and a small
student's operations are too small to repay it. ``Segmenter`` now runs a U-Net whose call holds fewer than
``CPU_THREADED_FIRST_LEVEL`` first-level values on one thread ("auto"); the other arm uses every torch thread
("all", as before). Every preset segments the validation volumes in both arms, interleaved in one process; labels
are checked equal. Run it as the product runs, e.g.::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_inference_threads.py --datasets hippocampus3d chaos \
        --threads 2 --repeats 3 --json docs/benchmarks/bench-b2-inference-threads.json
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segmenter_arms import main  # noqa: E402

from napari_dmd.segment import Segmenter  # noqa: E402


def _pair(model: torch.nn.Module, classes: int, dims: int, patch: list[int], batch: int,
          name: str) -> dict[str, Segmenter]:
    auto = Segmenter(model, classes, dims, patch, name=name)
    return {"auto": auto, "all": Segmenter(model, classes, dims, patch, threads=torch.get_num_threads(), name=name)}


if __name__ == "__main__":
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}", flush=True)
    main(__doc__.splitlines()[0], _pair, "auto", "all", ("every thread, ms", "chosen by the model, ms"))
