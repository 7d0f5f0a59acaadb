"""Sliding-window prediction for 2D images, 3D volumes, and 2D models run slice-wise on 3D volumes.

Tiling and Gaussian blending are MONAI's (`monai.inferers.sliding_window_inference`, ``mode="gaussian"``):
the predictor's *logits* are blended with a Gaussian importance map per window (as nnU-Net v2 does), and
the softmax is taken once, on the blended logits. Images smaller than the patch are zero-padded (centred)
and the result is cropped back. Images that fit one window (each spatial size <= the patch) are padded, run and
cropped here without MONAI: its blending of a single window returns the window's logits (to float rounding).

Array conventions (docs/architecture.md): images are NumPy arrays with spatial axes only, ``(y, x)`` or
``(z, y, x)``; a 2D model on a 3D volume runs over axis 0. Outputs are ``(C, *image.shape)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference

from .models.fold import fold_batchnorm
from .models.linear_upsample import first_class, running_argmax
from .models.onednn import onednn_convs
from .models.unet import UNet
from .window_pool import WindowPool

__all__ = [
    "InferenceCancelled",
    "fold_batchnorm",
    "count_windows",
    "predict_labels",
    "sliding_window_predict",
]

Predictor = Callable[[torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], Any]
StopFn = Callable[[], bool]

#: Standard deviation of the Gaussian importance map, as a fraction of the patch size (MONAI / nnU-Net: 1/8).
SIGMA_SCALE = 0.125


class InferenceCancelled(Exception):
    """Raised by :func:`sliding_window_predict` when ``should_stop()`` returns True."""


def _scan_interval(image_size: Sequence[int], patch_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Step between window starts per axis, exactly as MONAI's sliding window computes it."""
    out = []
    for size, patch in zip(image_size, patch_size):
        if size == patch:
            out.append(int(patch))
        else:
            out.append(max(int(patch * (1 - overlap)), 1))
    return tuple(out)


def count_windows(image_shape: Sequence[int], patch_size: Sequence[int], overlap: float = 0.5) -> int:
    """Number of windows the sliding window runs on one image of spatial shape ``image_shape``.

    ``patch_size`` has one entry per axis of ``image_shape``; an image smaller than the patch is padded first.
    """
    if len(image_shape) != len(patch_size):
        raise ValueError(
            f"image shape {tuple(image_shape)} and patch size {tuple(patch_size)} differ in length"
        )
    padded = tuple(max(int(s), int(p)) for s, p in zip(image_shape, patch_size))
    interval = _scan_interval(padded, patch_size, overlap)
    return len(dense_patch_slices(padded, tuple(int(p) for p in patch_size), interval))


def _check_inputs(
    image: np.ndarray, patch_size: Sequence[int], overlap: float, batch_size: int
) -> np.ndarray:
    """Validate arguments; return the image as contiguous float32 ``(y, x)`` or ``(z, y, x)``."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(
            f"image must be 2D (y, x) or 3D (z, y, x) with spatial axes only, got shape {image.shape}"
        )
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values; normalize or clean it before inference")
    patch = tuple(patch_size)
    if len(patch) not in (2, 3) or any(int(p) != p or p < 1 for p in patch):
        raise ValueError(f"patch_size must be 2 or 3 positive integers, got {patch}")
    if not (len(patch) == image.ndim or (len(patch) == 2 and image.ndim == 3)):
        raise ValueError(
            f"a {len(patch)}D patch {patch} cannot run on a {image.ndim}D image of shape {image.shape}"
        )
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return image


class _WindowRunner:
    """Wraps the predictor: checks the stop request, counts windows, reports progress, checks outputs."""

    def __init__(
        self,
        predictor: Predictor,
        patch_size: tuple[int, ...],
        total: int,
        num_classes: int | None,
        progress: ProgressFn | None,
        should_stop: StopFn | None,
        autocast: bool,
        device: torch.device,
        pool: WindowPool | None = None,
    ) -> None:
        self.predictor = predictor
        self.pool = pool
        self.patch_size = patch_size
        self.total = total
        self.num_classes = num_classes
        self.progress = progress
        self.should_stop = should_stop
        self.autocast = autocast
        self.device = device
        self.done = 0

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise InferenceCancelled(f"inference cancelled after {self.done} of {self.total} windows")

    def __call__(self, x: torch.Tensor, region: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
        """(B, 1, *patch) float32 -> (B, C, *patch) float32 logits; with ``region`` (a :class:`UNet` predictor
        only, see :func:`takes_region`) those of that part of the window."""
        parts = self.parts(x, region)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def parts(self, x: torch.Tensor, region: Sequence[tuple[int, int]] | None = None,
              finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
              labels: torch.dtype | None = None) -> list[torch.Tensor]:
        """The logits of ``__call__`` in consecutive parts along the batch (one per worker of the pool); with
        ``finish``, ``finish(logits)`` of each part, computed in the part's worker; with ``labels`` (a U-Net that
        :func:`takes_labels`), its labels of that dtype instead (``predictor.labels``), ``finish`` not applied."""
        self.check_stop()

        def predict(part: torch.Tensor) -> torch.Tensor:
            if labels is not None:
                return self._checked_labels(part, self.predictor.labels(part, region=region, dtype=labels), region)
            ctx = torch.autocast(device_type="cuda") if self.autocast else contextlib.nullcontext()
            with ctx:
                out = self.predictor(part) if region is None else \
                    self.predictor(part, region=region)  # type: ignore[call-arg]
            out = self._checked(part, out, region)
            return out if finish is None else finish(out)

        outs = [predict(x)] if self.pool is None else self.pool.map(predict, x)
        self.done += int(x.shape[0])
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)
        return outs

    def _expected(self, x: torch.Tensor, region: Sequence[tuple[int, int]] | None) -> tuple[int, ...]:
        return (x.shape[0], *(self.patch_size if region is None else [b - a for a, b in region]))

    def _checked_labels(self, x: torch.Tensor, out: torch.Tensor,
                        region: Sequence[tuple[int, int]] | None) -> torch.Tensor:
        classes = self.predictor.num_classes  # type: ignore[union-attr]
        if self.num_classes is not None and classes != self.num_classes:
            raise ValueError(f"the predictor has {classes} classes, expected num_classes={self.num_classes}")
        if tuple(out.shape) != self._expected(x, region):
            raise ValueError(f"the predictor labelled a window of shape {tuple(x.shape)} as {tuple(out.shape)}")
        return out

    def _checked(self, x: torch.Tensor, out: Any, region: Sequence[tuple[int, int]] | None) -> torch.Tensor:
        """``out`` as float32 logits, if it has the shape and classes the windows ``x`` call for."""
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"the predictor must return a logits tensor (B, C, *patch), got {type(out).__name__}"
            )
        expected = self._expected(x, region)
        if out.ndim != x.ndim or (out.shape[0], *out.shape[2:]) != expected:
            raise ValueError(
                f"the predictor mapped a window of shape {tuple(x.shape)} to {tuple(out.shape)}; "
                f"expected ({x.shape[0]}, C, {', '.join(map(str, self.patch_size))})"
            )
        if self.num_classes is not None and out.shape[1] != self.num_classes:
            raise ValueError(
                f"the predictor returned {out.shape[1]} classes, expected num_classes={self.num_classes}"
            )
        return out.float()


def _stitch_device(device: torch.device, out_numel: int) -> torch.device:
    """Blend on the compute device, unless the output would crowd a CUDA device's free memory."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    # output + weight map + softmax temporary, with room left for the network's activations
    return device if 3 * 4 * out_numel < 0.5 * free else torch.device("cpu")


def takes_region(predictor: Predictor) -> bool:
    """Whether ``predictor`` computes the logits of part of a window for less (``predictor(x, region=...)``): a
    :class:`UNet` whose logits are upsampled from a strided stem."""
    return isinstance(predictor, UNet) and predictor.stem > 1


def takes_labels(predictor: Predictor) -> bool:
    """Whether ``predictor`` labels windows for less than their logits' argmax (``predictor.labels``): a 2D
    :class:`UNet` whose logits are upsampled bilinearly from a strided stem (``UNet.labels_from_low_res``)."""
    return isinstance(predictor, UNet) and predictor.labels_from_low_res


def _one_window_logits(runner: _WindowRunner, inputs: torch.Tensor, patch: tuple[int, ...], batch_size: int,
                       stitch: torch.device, labels: bool = False) -> torch.Tensor:
    """(N, C, *spatial) logits of images that each fit one window (every spatial size <= the patch): padded as
    MONAI pads them (zeros, the odd voxel after), ``batch_size`` images per call, cropped back. MONAI's blending
    of a single window divides its weighted logits by the same weights: the same result to float rounding, without
    the weight maps and the output buffers (half the time of a 2D student on 128x128 slices). ``labels`` (stitching
    on the CPU only): the (N, *spatial) labels instead (:func:`window_labels`), each call's taken in its worker
    while its logits are fresh in the cache, and no logits gathered."""
    spatial = tuple(int(s) for s in inputs.shape[2:])
    before = [(p - s) // 2 for s, p in zip(spatial, patch)]
    pad: list[int] = []
    for s, p, b in reversed(list(zip(spatial, patch, before))):
        pad += [b, p - s - b]
    x = torch.nn.functional.pad(inputs, pad, value=0.0) if any(pad) else inputs
    region = [(b, b + s) for b, s in zip(before, spatial)]
    asks = any(pad) and takes_region(runner.predictor)  # the U-Net upsamples only the image's part of its logits
    crop = (slice(None), slice(None), *(slice(a, b) for a, b in region))

    def finish(out: torch.Tensor) -> torch.Tensor:
        out = out if asks else out[crop]
        return window_labels(out) if labels else out

    alone = runner.pool is None or LOW_RES_LABELS_BESIDE_WORKERS
    fused = label_dtype_torch(runner.predictor.num_classes) if labels and alone and takes_labels(runner.predictor) \
        else None
    outs = [out.to(stitch) for i in range(0, x.shape[0], batch_size)
            for out in runner.parts(x[i:i + batch_size], region if asks or fused else None, finish, fused)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def label_dtype(n_classes: int) -> type[np.integer]:
    """The label map's dtype for ``n_classes``: uint8, or int16 with more than 255 classes."""
    return np.uint8 if n_classes <= 255 else np.int16


def label_dtype_torch(n_classes: int) -> torch.dtype:
    """:func:`label_dtype` as a torch dtype."""
    return torch.uint8 if label_dtype(n_classes) is np.uint8 else torch.int16


def window_labels(logits: torch.Tensor) -> torch.Tensor:
    """(B, *spatial) labels of CPU logits (B, C, *spatial): their argmax over the classes by a running maximum
    (``first_class``; ties: the first class), as :func:`label_dtype`."""
    return first_class(logits, label_dtype_torch(logits.shape[1]))


def _sliding_window_logits(
    predictor: Predictor,
    image: np.ndarray,
    patch_size: Sequence[int],
    *,
    num_classes: int | None,
    overlap: float,
    batch_size: int,
    device: str | torch.device,
    progress: ProgressFn | None,
    should_stop: StopFn | None,
    amp: bool,
    workers: int = 1,
    threads_per_worker: int = 1,
    labels: bool = False,
) -> torch.Tensor:
    """Blended logits (C, *image.shape) float32, on the stitching device; with ``labels``, where images fit one
    window and stitching is on the CPU, their labels (*image.shape) instead (:func:`_one_window_logits`): the
    caller tells them apart by the dtype."""
    image = _check_inputs(image, patch_size, overlap, batch_size)
    patch = tuple(int(p) for p in patch_size)
    dev = torch.device(device)
    slicewise = len(patch) == 2 and image.ndim == 3
    spatial = image.shape[1:] if slicewise else image.shape
    n_images = image.shape[0] if slicewise else 1
    total = n_images * count_windows(spatial, patch, overlap)
    if workers < 1 or threads_per_worker < 1:
        raise ValueError(f"workers and threads_per_worker must be >= 1, got {workers} and {threads_per_worker}")
    side_by_side = workers > 1 and dev.type == "cpu" and isinstance(predictor, torch.nn.Module)
    pool = WindowPool(workers, threads_per_worker) if side_by_side else None
    runner = _WindowRunner(
        predictor, patch, total, num_classes, progress, should_stop, amp and dev.type == "cuda", dev, pool
    )
    runner.check_stop()
    batch_size = math.ceil(total / math.ceil(total / batch_size))  # equal calls: 17 + 16 rather than 32 + 1

    # (N, 1, *spatial): the slices of a volume are MONAI's batch axis, so windows batch across slices
    inputs = torch.from_numpy(image).to(dev)
    inputs = inputs[:, None] if slicewise else inputs[None, None]
    est_classes = num_classes if num_classes is not None else 16  # C is unknown until the first window
    stitch = _stitch_device(dev, math.prod(image.shape) * (est_classes + 1))

    module = predictor if isinstance(predictor, torch.nn.Module) else None
    was_training = module is not None and module.training
    try:
        if was_training:
            module.eval()  # type: ignore[union-attr]
        # small 3D convolutions of a one-window batch to oneDNN on the CPU (see models.onednn: 2-4x for students)
        route = onednn_convs(module) if module is not None and dev.type == "cpu" else contextlib.nullcontext()
        with torch.inference_mode(), route, pool or contextlib.nullcontext():
            if all(s <= p for s, p in zip(spatial, patch)):  # one window per image: no blending to do
                logits = _one_window_logits(runner, inputs, patch, batch_size, stitch,
                                            labels and stitch.type == "cpu")
            else:
                logits = sliding_window_inference(
                    inputs,
                    roi_size=patch,
                    sw_batch_size=batch_size,
                    predictor=runner,
                    overlap=overlap,
                    mode="gaussian",
                    sigma_scale=SIGMA_SCALE,
                    padding_mode="constant",
                    cval=0.0,
                    sw_device=dev,
                    device=stitch,
                )
    finally:
        if was_training:
            module.train()  # type: ignore[union-attr]
    if progress is not None and runner.done != total:  # defensive: always end on done == total
        progress(total, total)
    logits = torch.as_tensor(logits)
    if not logits.is_floating_point():  # labels (N, *spatial) -> image.shape
        return logits if slicewise else logits[0]
    # (N, C, *spatial) -> (C, *image.shape)
    return logits.transpose(0, 1) if slicewise else logits[0]


def sliding_window_predict(
    predictor: Predictor,
    image: np.ndarray,
    patch_size: Sequence[int],
    *,
    num_classes: int | None = None,
    overlap: float = 0.5,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    amp: bool = False,
    workers: int = 1,
    threads_per_worker: int = 1,
) -> np.ndarray:
    """Softmax probabilities of ``predictor`` over ``image`` by Gaussian-blended sliding windows.

    Args:
        predictor: maps a float tensor (B, 1, *patch) to logits (B, C, *patch); a torch module (put in eval
            mode for the call if it is training, then restored) or any function. It must live on ``device``.
        image: normalized float32 array, (y, x) or (z, y, x).
        patch_size: window size. Same length as ``image.ndim`` for direct 2D/3D tiling; length 2 on a 3D
            image runs a 2D model slice by slice along axis 0 (slices batched together, each tiled).
        num_classes: expected C; checked against the predictor's output when given.
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        batch_size: windows per predictor call (does not change the result beyond float tolerance).
        device: where the predictor runs; blending happens there too unless memory is short on CUDA.
        progress: ``progress(done, total)`` after each predictor call, counting windows (over all slices);
            ``total`` is fixed up front and the last call has ``done == total``.
        should_stop: polled before each predictor call; returning True raises :class:`InferenceCancelled`.
        amp: mixed precision (``torch.autocast``) for the predictor on CUDA; ignored elsewhere.
        workers: on the CPU, threads that run the windows of one call side by side (a torch module only; see
            :class:`~napari_dmd.window_pool.WindowPool`), each on ``threads_per_worker`` intra-op threads; the
            same logits per window.

    Returns:
        (C, *image.shape) float32 probabilities (summing to 1 over axis 0).
    """
    logits = _sliding_window_logits(
        predictor,
        image,
        patch_size,
        num_classes=num_classes,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        progress=progress,
        should_stop=should_stop,
        amp=amp,
        workers=workers,
        threads_per_worker=threads_per_worker,
    )
    probs = torch.softmax(logits, dim=0)
    return probs.cpu().numpy().astype(np.float32, copy=False)


def predict_labels(
    predictor: Predictor, image: np.ndarray, patch_size: Sequence[int], **kw: Any
) -> np.ndarray:
    """Label map (*image.shape) of :func:`sliding_window_predict`: the argmax over classes.

    uint8, or int16 with more than 255 classes. Keyword arguments are those of :func:`sliding_window_predict`.
    """
    known = {"num_classes": None, "overlap": 0.5, "batch_size": 4, "device": "cpu", "progress": None,
             "should_stop": None, "amp": False, "workers": 1, "threads_per_worker": 1}
    unknown = sorted(set(kw) - set(known))
    if unknown:
        raise TypeError(f"predict_labels() got unexpected keyword arguments: {', '.join(unknown)}")
    args = {**known, **kw}
    logits = _sliding_window_logits(predictor, image, patch_size, labels=True, **args)
    if not logits.is_floating_point():  # images that fit one window: labelled per call (_one_window_logits)
        return logits.numpy()
    dtype = label_dtype(logits.shape[0])
    # argmax of the blended logits == argmax of their softmax; on the CPU a running maximum over the classes (torch's
    # argmax over the first axis of a (C, *S) tensor is 4-5x slower there, NumPy's 2x), on CUDA torch's on the device
    if logits.device.type == "cpu":
        return class_argmax(logits.numpy(), dtype, args["workers"])
    return logits.argmax(dim=0).cpu().numpy().astype(dtype)


#: Whether calls split among window workers also take labels from the logits before upsampling (``UNet.labels``);
#: off: there their NumPy steps wait on each other for the GIL (docs/benchmarks.md, B2).
LOW_RES_LABELS_BESIDE_WORKERS = False

#: Scores from which :func:`class_argmax` splits its work among threads.
ARGMAX_SPLIT_VALUES = 2**22


def class_argmax(scores: np.ndarray, dtype: Any = np.uint8, workers: int = 1) -> np.ndarray:
    """``scores.argmax(0)`` as ``dtype`` (ties: the first class, as NumPy), by a running maximum over the classes:
    one pass per class over contiguous memory, 2-3x faster than NumPy's argmax along the first axis of a strided
    (C, N, y, x) view. ``workers`` > 1 and at least :data:`ARGMAX_SPLIT_VALUES` scores: parts of the first spatial
    axis side by side in threads (NumPy releases the GIL), the same result (1.5x on 3 M random scores, 2 threads;
    starting the threads cost 1 ms, more than a hippocampus volume's argmax)."""
    out = np.zeros(scores.shape[1:], dtype=dtype)
    parts = min(workers, scores.shape[1]) if scores.ndim > 1 and scores.size >= ARGMAX_SPLIT_VALUES else 1
    if parts < 2:
        running_argmax(scores, out)
        return out
    bounds = np.linspace(0, scores.shape[1], parts + 1).astype(int)
    with ThreadPoolExecutor(parts, "napari-dmd-argmax") as pool:
        list(pool.map(lambda a, b: running_argmax(scores[:, a:b], out[a:b]), bounds[:-1], bounds[1:]))
    return out
