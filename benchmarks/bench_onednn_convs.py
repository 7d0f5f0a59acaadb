"""B2: convolutions routed to oneDNN (``napari_dmd.models.onednn``) vs PyTorch's own kernel choice, per volume.

Every preset (freshly built; weights do not change the time) segments the dataset's validation volumes through
``Segmenter`` twice, interleaved in one process: as shipped (batch norm folded, convolutions routed to oneDNN on
the CPU) and as before the routing (the same folded copy, PyTorch's choice: batch-1 convolutions with few
channels go to its slow reference kernel). Prints the median ms per volume, the ratio, and each preset's
speed-up over the teacher both ways; labels are checked equal. Example::

    python benchmarks/bench_onednn_convs.py --datasets hippocampus3d chaos --threads 1 --repeats 2 \
        --json docs/benchmarks/bench-b2-onednn.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segmenter_arms import main  # noqa: E402

from napari_dmd.models.fold import fold_batchnorm  # noqa: E402
from napari_dmd.segment import Segmenter  # noqa: E402


def _pair(model: torch.nn.Module, classes: int, dims: int, patch: list[int], batch: int,
          name: str) -> dict[str, Segmenter]:
    folded = fold_batchnorm(model)  # what Segmenter ran before the routing: folded, PyTorch's kernels
    return {"onednn": Segmenter(model, classes, dims, patch, batch_size=batch, name=name),
            "pytorch": Segmenter(lambda x: folded(x), classes, dims, patch, batch_size=batch, name=name)}


if __name__ == "__main__":
    main(__doc__.splitlines()[0], _pair, new="onednn", old="pytorch",
         labels=("PyTorch's kernels", "oneDNN routed"))
