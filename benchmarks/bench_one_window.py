"""B2: one window per image without MONAI's blending, and the class argmax by a running maximum, per volume.

When every image (a volume, or each slice of a 2D model's volume) fits one window, ``napari_dmd.inference`` now
pads, runs and crops it directly instead of through MONAI's sliding window (whose Gaussian blending of a single
window divides the weighted logits by the same weights), and labels come from ``class_argmax`` instead of NumPy's
argmax along the first axis. Every preset (freshly built; weights do not change the time) segments the dataset's
validation volumes through ``Segmenter`` as shipped and through the previous pipeline (MONAI + NumPy's argmax, the
same oneDNN routing, a copy written out here), interleaved in one process; labels are checked equal. Prints the
median ms per volume, the gain and each preset's speed-up over the teacher both ways. Example::

    python benchmarks/bench_one_window.py --datasets hippocampus3d chaos --threads 1 --repeats 2 \
        --json docs/benchmarks/bench-b2-one-window.json
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segmenter_arms import main  # noqa: E402

from napari_dmd.inference import SIGMA_SCALE  # noqa: E402
from napari_dmd.models.onednn import onednn_convs  # noqa: E402
from napari_dmd.segment import Segmenter  # noqa: E402


def previous_labels(model: Any, image: np.ndarray, patch: Any, *, batch_size: int = 4, overlap: float = 0.5,
                    device: str = "cpu", **_: Any) -> np.ndarray:
    """The pipeline before this change (CPU): MONAI's sliding window for every image, NumPy's argmax."""
    patch = tuple(int(p) for p in patch)
    slicewise = len(patch) == 2 and image.ndim == 3
    x = torch.from_numpy(image)
    x = x[:, None] if slicewise else x[None, None]
    route = onednn_convs(model) if isinstance(model, torch.nn.Module) else contextlib.nullcontext()
    with torch.inference_mode(), route:
        logits = sliding_window_inference(x, patch, batch_size, model, overlap=overlap, mode="gaussian",
                                          sigma_scale=SIGMA_SCALE, padding_mode="constant", cval=0.0,
                                          sw_device=device, device=device)
    logits = logits.transpose(0, 1) if slicewise else logits[0]
    return logits.numpy().argmax(0).astype(np.uint8)


class PreviousSegmenter(Segmenter):
    """``Segmenter`` with the previous labels pipeline (normalization, folding and checks unchanged)."""

    def __call__(self, image: np.ndarray, **kw: Any) -> np.ndarray:
        return self._predict(previous_labels, image, **kw).astype(np.uint8, copy=False)


def _pair(model: torch.nn.Module, classes: int, dims: int, patch: list[int], batch: int,
          name: str) -> dict[str, Segmenter]:
    args = (model, classes, dims, patch)
    return {"now": Segmenter(*args, batch_size=batch, name=name),
            "before": PreviousSegmenter(*args, batch_size=batch, name=name)}


if __name__ == "__main__":
    main(__doc__.splitlines()[0], _pair, new="now", old="before", labels=("before (MONAI, NumPy argmax)", "now"))
