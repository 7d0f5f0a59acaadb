"""What a run works out at its start from its settings and the machine: patch size, data-loading workers,
precision (autocast type) and the learning-rate schedule."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..models.unet import padded_size

if TYPE_CHECKING:
    from ..config import TrainConfig


def resolve_num_workers(setting: int, device: torch.device) -> int:
    """Data-loading workers: ``setting`` if >= 0; auto (-1) is 0 off CUDA, else min(4, cores per local rank - 1)."""
    if setting >= 0:
        return int(setting)
    if device.type != "cuda":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    cores //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(4, cores - 1))


def auto_patch_size(shapes: Sequence[Sequence[int]], spatial_dims: int, multiple: int) -> list[int]:
    """Median case shape (last ``spatial_dims`` axes) rounded to a multiple of the network stride, capped."""
    med = np.median(np.array([s[-spatial_dims:] for s in shapes]), axis=0)
    cap = 64 if spatial_dims == 3 else 256
    return [int(min(cap, max(multiple, multiple * round(m / multiple)))) for m in med]


def padding_warning(patch: Sequence[int], stride: int, limit: float = 1.25) -> str | None:
    """A warning when a patch that is not a multiple of the network's total ``stride`` along each axis makes the
    model pad it to at least ``limit`` times its voxels (it computes on the zeros and sees nothing there); None
    otherwise. Names the padded size and the multiples on either side."""
    padded = padded_size(patch, stride)
    ratio = math.prod(padded) / max(1, math.prod(patch))
    if ratio < limit:
        return None
    below = [max(stride, stride * (p // stride)) for p in patch]
    fmt = "x".join
    return (f"patch {fmt(map(str, patch))} is padded to {fmt(map(str, padded))} inside the model (its input must be "
            f"a multiple of {stride} along each axis): {100 * (1 - 1 / ratio):.0f} % of the model's work per step "
            f"goes to zeros. A patch of {fmt(map(str, padded))} costs the model the same and shows it more image"
            + (f"; {fmt(map(str, below))} costs less" if below != padded else "")
            + "; leave the patch size empty to have one chosen.")


def lr_factor(iteration: int, total: int, warmup: float) -> float:
    """Linear warm-up then cosine decay to 1 % of the base learning rate."""
    w = int(round(warmup * total))
    if iteration < w:
        return (iteration + 1) / w
    progress = (iteration - w) / max(1, total - w)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def choose_precision(cfg: TrainConfig, device: torch.device, spatial_dims: int,
                     cpu_bf16_supported: Callable[[], bool]) -> tuple[torch.dtype | None, torch.dtype | None, str]:
    """The autocast types of the student's step and of the teacher's forward pass (None: float32), and a note for
    the start message.

    CUDA with ``amp``: bfloat16 where supported, else float16, for both. CPU with ``cpu_bf16`` where
    ``cpu_bf16_supported()`` (native oneDNN bfloat16): bfloat16 for both with a 2D model; with a 3D model only the
    teacher's forward pass (no gradient) goes bfloat16 and the student stays float32. Else float32, with a note
    saying why.
    """
    amp_ok = cfg.amp and device.type == "cuda"
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if amp_ok else None
    teacher = dtype
    note = ""
    if cfg.cpu_bf16 and device.type == "cpu":
        if not cpu_bf16_supported():
            note = ", float32 (cpu_bf16 ignored: this CPU has no native bfloat16)"
        elif spatial_dims == 3:
            # measured: a 3D convolution's bfloat16 weight gradient (oneDNN, torch 2.13) turned NaN after
            # ~10 steps when the process had run a 2D job before; the teacher's forward has no gradient
            teacher = torch.bfloat16
            note = ", float32 student, bfloat16 teacher forward (3D: cpu_bf16 trains the student in float32)"
        else:
            dtype = teacher = torch.bfloat16
    if dtype is not None:
        note = f", {str(dtype).removeprefix('torch.')} autocast"
    return dtype, teacher, note


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """An autocast context for ``dtype`` on ``device`` (a disabled one for float32)."""
    if dtype is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def student_memory_format(channels_last: bool, device: torch.device, spatial_dims: int) -> torch.memory_format | None:
    """The student's training layout: channels-last on CUDA, and on the CPU for 3D models (None: PyTorch's default).

    On the CPU oneDNN's backward of the few-channel full-resolution 3D layers is 3-4x faster channels-last, the
    student's forward and backward 1.3-1.9x, a whole DMD step 1.04-1.33x (``benchmarks/bench_cpu_channels_last.py``);
    2D steps and the teacher's forward pass were no faster, so they keep the default layout there.
    """
    pays = device.type == "cuda" or (device.type == "cpu" and spatial_dims == 3)
    if not (channels_last and pays):
        return None
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def layout_batch(x: torch.Tensor, fmt: torch.memory_format | None,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(the teacher's batch, the student's batch): the student's in ``fmt``; the teacher's the same on CUDA, and
    channels-first on the CPU, where its no-grad forward pass measured faster that way."""
    if fmt is None:
        return x, x
    x_student = x.contiguous(memory_format=fmt)
    return (x_student if device.type == "cuda" else x), x_student
