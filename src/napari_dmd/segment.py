"""Segmenter: a trained model (or teacher) plus the normalization and tiling it needs, image -> labels.

Shared by the CLI (predict, evaluate), the napari widgets (Segment, Compare) and the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint, model_from_checkpoint
from .data.io import DataError
from .data.transforms import normalize
from .inference import predict_labels, sliding_window_predict
from .models.fold import fold_batchnorm, has_batchnorm
from .models.presets import count_parameters
from .models.unet import UNet, padded_size

#: Values (positions x channels) of a U-Net's first level that one CPU call of the sliding window may hold: small
#: students run many windows per call, the teacher 4 (:meth:`Segmenter.windows_per_call`).
CPU_FIRST_LEVEL_BUDGET = 2**19
#: With idle OpenMP threads asleep (``OMP_WAIT_POLICY=PASSIVE``, as napari-dmd's CLI and widgets set it), a CPU call
#: whose U-Net first level holds fewer values than this runs on one thread: waking the others for each of its small
#: operations cost more than they gained (2 threads: the default student 1.1x, ``student-tiny`` 1.3x slower than 1 on
#: hippocampus 3D, 1.15x / 1.25x on CHAOS; the teacher 1.35-1.55x faster; docs/benchmarks.md, B2).
CPU_THREADED_FIRST_LEVEL = 2**20
#: First-level values that the windows in flight on all CPU workers together may hold (:meth:`Segmenter.cpu_workers`):
#: 64 MB of float32, a few hundred MB for a whole U-Net; a 3D teacher on large windows keeps one worker.
CPU_POOL_FIRST_LEVEL = 2**24
#: A U-Net computing at 1/4 of the resolution or less (``student-tiny``) keeps one CPU worker: per CHAOS volume, 2
#: threads, two workers gained it 1.14x on an idle machine and made it 1.05x slower beside one busy process (1.24x in
#: a side run), while the teacher ran 1.38x and 1.29x faster (docs/benchmarks.md, B2).
CPU_POOL_MAX_STEM = 4


def idle_threads_sleep() -> bool:
    """Whether OpenMP's idle threads sleep between parallel regions (``OMP_WAIT_POLICY=PASSIVE``)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Within the block, torch runs ``n`` intra-op threads in this thread (OpenMP's count is per calling thread);
    the previous count is restored after. None: unchanged."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stride_window(patch: list[int], stride: int) -> list[int]:
    """``patch`` rounded up to a multiple of the model's total ``stride`` along each axis: the model pads every
    window to that size anyway (:func:`~napari_dmd.models.unet.padded_size`), so the rounded window costs the same
    and fewer of them cover an image."""
    return padded_size(patch, stride)


@dataclass
class Segmenter:
    """Predicts labels for raw images (spatial axes only) with the model's own normalization."""

    model: nn.Module | Callable[[torch.Tensor], torch.Tensor]
    num_classes: int
    spatial_dims: int
    patch_size: list[int]
    normalization: str = "zscore"
    class_names: list[str] | None = None
    device: str = "cpu"
    name: str = "model"
    overlap: float = 0.5
    batch_size: int | None = None  # windows per model call (per CPU worker); None: windows_per_call decides
    threads: int | None = None  # CPU threads of a prediction; None: torch's, 1 for a small model (cpu_threads)
    workers: int | None = None  # CPU threads running one call's windows side by side; None: cpu_workers decides
    _folded: tuple[Any, nn.Module] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Segmenter:
        """Load a napari-dmd checkpoint (weights only) as a segmenter; its sliding window is the training patch
        rounded up to a multiple of the model's stride (:func:`stride_window`)."""
        from .runtime import resolve_device

        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt, path)
        dev = str(resolve_device(device))
        patch = stride_window(ckpt.get("patch_size") or [64] * model.spatial_dims, model.total_stride)
        return cls(model.to(dev), model.num_classes, model.spatial_dims, patch,
                   ckpt.get("normalization", "zscore"), ckpt.get("class_names"), dev, name=Path(path).name)

    @property
    def parameters(self) -> int:
        """Weights of the model (also of a teacher adapter, whose weights are frozen); 0 when unknown (ONNX)."""
        if isinstance(self.model, nn.Module):
            return count_parameters(self.model)
        params = getattr(self.model, "parameters", None)
        return sum(p.numel() for p in params()) if callable(params) else 0

    def check_image(self, image: np.ndarray, source: str = "image") -> None:
        """Raise DataError if this model cannot segment ``image``."""
        if image.ndim not in (2, 3):
            raise DataError(f"{source}: {image.ndim}D data with shape {image.shape}; expected a 2D image or "
                            "3D volume with one channel")
        if image.ndim < self.spatial_dims:
            raise DataError(f"{source}: a {self.spatial_dims}D model cannot segment a {image.ndim}D image")
        if not np.isfinite(image).all():
            raise DataError(f"{source}: the image holds NaN or infinite values")

    def probabilities(self, image: np.ndarray, *, progress: Callable[[int, int], None] | None = None,
                      should_stop: Callable[[], bool] | None = None, source: str = "image") -> np.ndarray:
        """Softmax probabilities (C, *image.shape)."""
        return self._predict(sliding_window_predict, image, progress, should_stop, source)

    def _predict(self, how: Callable[..., np.ndarray], image: np.ndarray,
                 progress: Callable[[int, int], None] | None = None, should_stop: Callable[[], bool] | None = None,
                 source: str = "image") -> np.ndarray:
        """``how`` (probabilities or labels) of the normalized image by the inference model's sliding windows."""
        self.check_image(image, source)
        model = self._inference_model()
        x = normalize(np.asarray(image, dtype=np.float32), self.normalization)
        cuda = self.device.startswith("cuda")
        workers, each = (1, 1) if cuda else self.cpu_workers()
        with torch_threads(None if cuda else self.cpu_threads()):
            return how(model, x, self.patch_size, num_classes=self.num_classes, overlap=self.overlap,
                       batch_size=self.windows_per_call() * workers, device=self.device, progress=progress,
                       should_stop=should_stop, amp=cuda, workers=workers, threads_per_worker=each)

    def _first_level_values(self) -> int | None:
        """Values (positions x channels) of a U-Net's first level for one window; None for another model."""
        model = self.model
        if not isinstance(model, UNet):
            return None
        positions = np.prod(padded_size(self.patch_size, model.stem)) / model.stem ** model.spatial_dims
        return max(1, int(positions * model.channels[0]))

    def cpu_threads(self) -> int:
        """Threads of a CPU prediction: the given ``threads``; else torch's count, but one for a U-Net whose call
        holds fewer than :data:`CPU_THREADED_FIRST_LEVEL` first-level values while idle OpenMP threads sleep
        (:func:`idle_threads_sleep`): the students, not the teacher."""
        if self.threads is not None:
            return self.threads
        first = self._first_level_values()
        if first is not None and idle_threads_sleep() and first * self.windows_per_call() < CPU_THREADED_FIRST_LEVEL:
            return 1
        return torch.get_num_threads()

    def cpu_workers(self) -> tuple[int, int]:
        """(workers, threads each) of a CPU prediction: ``workers`` threads each run :meth:`windows_per_call`
        windows side by side (:class:`~napari_dmd.window_pool.WindowPool`) on an equal share of the threads
        (``threads`` or torch's). The given ``workers``; else one per thread while the windows in flight hold at
        most :data:`CPU_POOL_FIRST_LEVEL` first-level values (memory), at least one; one for a U-Net whose stem
        divides the resolution by :data:`CPU_POOL_MAX_STEM` or more. Windows that come one at a time (a volume
        that fits one window) run in the calling thread on :meth:`cpu_threads`."""
        total = max(1, self.threads if self.threads is not None else torch.get_num_threads())
        if not isinstance(self.model, nn.Module):
            return 1, total
        if self.workers is not None:
            workers = max(1, self.workers)
        elif isinstance(self.model, UNet) and self.model.stem >= CPU_POOL_MAX_STEM:
            workers = 1
        else:
            first = self._first_level_values() or CPU_FIRST_LEVEL_BUDGET
            workers = max(1, min(total, CPU_POOL_FIRST_LEVEL // (first * self.windows_per_call())))
        return workers, max(1, total // workers)

    def windows_per_call(self) -> int:
        """Sliding windows per model call: the given ``batch_size``; on the CPU, as many as keep a U-Net's first
        level under :data:`CPU_FIRST_LEVEL_BUDGET` values, between 4 and 64 (4 for the teacher; 16 for the default
        2D student and 64 for the quarter-resolution ``student-tiny`` on 128x128 windows, which ran 1.2x / 1.6x
        faster than 4 per call while the teacher ran 1.06x / 1.25x slower with 16 / 64: docs/benchmarks.md, B2);
        on CUDA as many as fit 4 M voxels, between 4 and 16 (16 windows ran 1.4-3.7x faster than 4 on an H200 for
        teacher and student, 2D and 3D)."""
        if self.batch_size is not None:
            return self.batch_size
        if not self.device.startswith("cuda"):
            first = self._first_level_values()
            return 4 if first is None else int(min(64, max(4, CPU_FIRST_LEVEL_BUDGET // first)))
        return int(min(16, max(4, 2**22 // max(1, int(np.prod(self.patch_size))))))

    def _inference_model(self) -> nn.Module | Callable[[torch.Tensor], torch.Tensor]:
        """The model in eval mode; with batch norm, a folded copy (conv + batch norm fused: the same outputs, one
        pass less per layer), made once and remade only when the weights change (an in-place update, e.g. an
        optimizer step or ``load_state_dict``, bumps a tensor's version; a new tensor changes its address)."""
        model = self.model
        if not isinstance(model, nn.Module):
            return model
        if model.training:
            model.eval()
        if not has_batchnorm(model):
            return model
        key = (id(model), tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers())))
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, fold_batchnorm(model))
        return self._folded[1]

    def __call__(self, image: np.ndarray, **kw) -> np.ndarray:
        """Label map (uint8) of the same shape as ``image``: the argmax of the blended logits (that of their
        softmax, without computing it)."""
        return self._predict(predict_labels, image, **kw).astype(np.uint8, copy=False)

    def timed(self, image: np.ndarray, **kw) -> tuple[np.ndarray, float]:
        """Labels and the wall time of the prediction in seconds."""
        t0 = time.perf_counter()
        labels = self(image, **kw)
        return labels, time.perf_counter() - t0
