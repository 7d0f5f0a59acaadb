"""B2: sliding windows per model call on the CPU sized by the model (``Segmenter.windows_per_call``), per volume.

Until 2026-12-06 (evening) every model ran 4 windows per call on the CPU; now a U-Net runs as many as keep its
first level under ``CPU_FIRST_LEVEL_BUDGET`` values (4 to 64: the teacher 4, the default 2D student 16 and the
quarter-resolution ``student-tiny`` 64 on CHAOS's 128x128 slices). Every preset (freshly built; weights do not
change the time) segments the dataset's validation volumes through ``Segmenter`` as shipped and with 4 windows per
call, interleaved in one process; labels are checked equal. Prints the median ms per volume, the gain and each
preset's speed-up over the teacher both ways. Example::

    python benchmarks/bench_windows_per_call.py --datasets hippocampus3d chaos --threads 1 --repeats 3 \
        --json docs/benchmarks/bench-b2-windows-per-call.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segmenter_arms import main  # noqa: E402

from napari_dmd.segment import Segmenter  # noqa: E402


def _pair(model: torch.nn.Module, classes: int, dims: int, patch: list[int], batch: int,
          name: str) -> dict[str, Segmenter]:
    args = (model, classes, dims, patch)
    return {"now": Segmenter(*args, name=name), "four": Segmenter(*args, batch_size=4, name=name)}


if __name__ == "__main__":
    main(__doc__.splitlines()[0], _pair, "now", "four", ("4 per call, ms", "sized by the model, ms"))
