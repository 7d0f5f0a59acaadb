"""B2: a U-Net with a strided stem upsamples only the image's part of its logits (``UNet.forward(region=...)``).

A volume smaller than the sliding window (every hippocampus volume) is padded to the window; until 2026-12-06 a
half-resolution student upsampled its logits over the whole padded window and the result was cropped, which took a
fifth of a small 3D student's time. Now :func:`napari_dmd.inference.takes_region` lets the one-window path ask the
U-Net for the image's part only. Every preset segments the dataset's validation volumes through ``Segmenter`` as
shipped ("region") and with the U-Net hidden behind a plain wrapper ("full": the whole window upsampled, the same
windows per call), interleaved in one process; labels are checked equal. Example::

    python benchmarks/bench_region_upsampling.py --datasets hippocampus3d chaos --threads 1 --repeats 3 \
        --json docs/benchmarks/bench-b2-region-upsampling.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segmenter_arms import main  # noqa: E402

from napari_dmd.segment import Segmenter  # noqa: E402


class _Hidden(torch.nn.Module):
    """The same network, not recognised as a :class:`UNet`: the whole window's logits are upsampled, then cropped."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _pair(model: torch.nn.Module, classes: int, dims: int, patch: list[int], batch: int,
          name: str) -> dict[str, Segmenter]:
    now = Segmenter(model, classes, dims, patch, name=name)
    full = Segmenter(_Hidden(model), classes, dims, patch, batch_size=now.windows_per_call(), name=name)
    return {"region": now, "full": full}


if __name__ == "__main__":
    main(__doc__.splitlines()[0], _pair, "region", "full", ("whole window upsampled, ms", "image's part, ms"))
