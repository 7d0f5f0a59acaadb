"""The Features widget's jobs: what one computation needs (gathered on the main thread), the function that
computes it, and the rule that decides whether it is small enough to compute in the main thread."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..features import ScaleFeatures, StudentSnapshot
    from ..models.heads import ScaleHeads
    from ..models.unet import UNet

__all__ = ["INLINE_MAX_IMAGE_VOXELS", "INLINE_MAX_WORK", "INLINE_VOXEL_WORK", "compute_job", "job_work",
           "runs_inline"]

#: Largest job computed in the main thread, in voxels the model runs on x (its parameters + 120 000): above
#: it a worker thread computes, so the GUI never waits long. The 120 000 stands for the per-voxel work that
#: does not grow with the model (normalisation, resampling, PCA). Measured with 2 torch threads on the 2-core
#: development VM: the demo student (180k parameters) takes 8 ms on a 96x96 slice (work 2.8e9) and 25 ms on
#: 192x192 (1.1e10); a 7.5k-parameter U-Net 16 ms on 256x256 (8.4e9); the demo teacher (1.9M) 20 ms on 96x96
#: (1.9e10, so it goes to the worker). At 1.5e10 a main-thread call takes at most ~30-40 ms, well under the
#: ~100 ms a click may freeze the viewer; the worker's fixed cost (~10-15 ms of thread hand-off) is what it
#: saves, 1-2.5x of a one-slice computation.
INLINE_MAX_WORK = 1.5e10
INLINE_VOXEL_WORK = 120_000
#: Largest image computed in the main thread: the whole image is normalised (~8-14 ns a voxel here: 1M
#: voxels ~10 ms) even when a 2D model runs on one slice of it.
INLINE_MAX_IMAGE_VOXELS = 1_000_000


@dataclass
class _Job:
    """Everything the worker needs, gathered on the main thread."""

    image_name: str
    data: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    slice_index: int | None
    stages: list[int]
    channel: int
    kinds: set[str]
    model_name: str
    normalization: str = "zscore"
    model: UNet | None = None
    heads: ScaleHeads | None = None
    head_stages: list[int] | None = None
    snapshot: StudentSnapshot | None = None
    extra_meta: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None  # names the head labels layers' values on hover


class _LiveCache:
    """The live student's modules, rebuilt from each snapshot (used by one worker at a time)."""

    def __init__(self) -> None:
        self.modules: tuple[UNet, ScaleHeads | None] | None = None


def compute_job(job: _Job, cache: _LiveCache) -> list[ScaleFeatures]:
    """Worker function: build the live model if needed and compute the features."""
    from ..features import compute_features

    model, heads, head_stages = job.model, job.heads, job.head_stages
    if job.snapshot is not None:
        model, heads = job.snapshot.build("cpu", reuse=cache.modules)
        cache.modules = (model, heads)
        head_stages = job.snapshot.feature_scales
    return compute_features(model, job.data, heads=heads, head_stages=head_stages, feature_scales=job.stages,
                            normalization=job.normalization, spacing=job.spacing, origin=job.origin,
                            slice_index=job.slice_index)


def job_work(job: _Job) -> float | None:
    """Estimated work of ``job`` in :data:`INLINE_MAX_WORK`'s units; None when unknown before it runs (a
    live snapshot: its model is built in the worker, and the training child shares the cores)."""
    from ..features import DEFAULT_MAX_VOXELS

    if job.model is None or job.snapshot is not None:
        return None
    shape = job.data.shape
    if job.model.spatial_dims == 2 and len(shape) == 3:
        voxels = int(np.prod(shape[1:]))  # one slice
    else:
        voxels = min(int(np.prod(shape)), DEFAULT_MAX_VOXELS) if len(shape) == 3 else int(np.prod(shape))
    params = sum(p.numel() for p in job.model.parameters())
    if job.heads is not None:
        params += sum(p.numel() for p in job.heads.parameters())
    return float(voxels) * (params + INLINE_VOXEL_WORK)


def runs_inline(job: _Job) -> bool:
    """Whether ``job`` is small enough to compute in the main thread (see :data:`INLINE_MAX_WORK`)."""
    work = job_work(job)
    return work is not None and work <= INLINE_MAX_WORK and job.data.size <= INLINE_MAX_IMAGE_VOXELS
