"""Bringing logits between scales (interpolate up, pool down) and deep supervision over the scale heads.

Shapes and conventions as in :mod:`.losses`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.linear_upsample import upsample
from ._common import _as_float, _check_logits
from .task import task_loss

__all__ = ["RESAMPLE_MODES", "upsample_like", "pool_to_scale", "deep_supervision_loss"]

RESAMPLE_MODES: tuple[str, ...] = ("up", "pool")


def upsample_like(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Interpolate (N, C, *spatial) logits to spatial ``size``: bilinear in 2D, trilinear in 3D.

    ``align_corners=False``; returns ``logits`` unchanged when the size already matches. Half-precision inputs
    come back as float32.
    """
    _check_logits("logits", logits)
    size = tuple(int(v) for v in size)
    if len(size) != logits.dim() - 2:
        raise ValueError(f"size {size} does not match the spatial dims of logits {tuple(logits.shape)}")
    if tuple(logits.shape[2:]) == size:
        return logits
    modes = {1: "linear", 2: "bilinear", 3: "trilinear"}
    if len(size) not in modes:
        raise ValueError(f"upsample_like supports 1D, 2D and 3D logits, got shape {tuple(logits.shape)}")
    factors = [o // i if o % i == 0 else 0 for i, o in zip(logits.shape[2:], size)]
    if len(size) > 1 and min(factors) >= 1:
        # whole multiples per axis: the same weights as F.interpolate, by matrix products (2-4x faster on the CPU,
        # forward and backward: napari_dmd.models.linear_upsample)
        return upsample(_as_float(logits), factors)
    return F.interpolate(_as_float(logits), size=size, mode=modes[len(size)], align_corners=False)


def _block_stride(n: int, m: int) -> int:
    """Stride of a scale of size ``m`` on an axis of size ``n``: the smallest power of two with ceil(n/s) == m
    (a U-Net's stride-2 stages), else ceil(n/m)."""
    s = 1
    while s <= n:
        if -(-n // s) == m:
            return s
        s *= 2
    return -(-n // m)


def _block_mean(x: Tensor, strides: Sequence[int]) -> Tensor:
    """Mean of ``x`` (N, C, *spatial) over blocks of ``strides``; the last block per axis may be partial."""
    pool = F.avg_pool3d if x.dim() == 5 else F.avg_pool2d if x.dim() == 4 else F.avg_pool1d
    k = tuple(strides)
    pad: list[int] = []
    for n, st in zip(reversed(x.shape[2:]), reversed(strides)):
        pad += [0, (-n) % st]
    if not any(pad):
        return pool(x, kernel_size=k, stride=k)
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    return pool(F.pad(x, pad), kernel_size=k, stride=k) / pool(F.pad(ones, pad), kernel_size=k, stride=k)


def _votes(target: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """One-hot (N, C + 1, *spatial) float of the labels; channel C stands for ``ignore_index``."""
    ids = torch.where(target == ignore_index, torch.full_like(target, num_classes), target.clamp(0, num_classes))
    return F.one_hot(ids, num_classes + 1).movedim(-1, 1).float()


def _pool_down(teacher: Tensor, votes: Tensor | None, size: Sequence[int],
               ignore_index: int) -> tuple[Tensor, Tensor | None]:
    """:func:`pool_to_scale` on float logits and the one-hot :func:`_votes` (computed once for every scale)."""
    strides = [_block_stride(int(n), int(m)) for n, m in zip(teacher.shape[2:], size)]
    pooled = _block_mean(teacher, strides)
    if votes is None:
        return pooled, None
    c = teacher.shape[1]
    labels = _block_mean(votes, strides).argmax(1)
    return pooled, torch.where(labels == c, torch.full_like(labels, ignore_index), labels)


def pool_to_scale(teacher: Tensor, target: Tensor | None, size: Sequence[int], *,
                  ignore_index: int = 255) -> tuple[Tensor, Tensor | None]:
    """Teacher logits and labels brought *down* to a coarse scale of spatial ``size``.

    Each coarse cell covers the block of input pixels it sees at its stride (``_block_stride``; the last block
    of an axis may be partial). Logits: mean over the block. Labels: majority vote over the block, ignored
    pixels voting too (ties go to the lower class id; a cell whose majority is ignored is ignored).
    """
    votes = None if target is None else _votes(target, teacher.shape[1], ignore_index)
    return _pool_down(_as_float(teacher), votes, size, ignore_index)


def _scale_weights(n: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} scale weights for {n} student scales")
    return weights


def _check_scales(student_scales: Sequence[Tensor] | None) -> list[Tensor]:
    if student_scales is None or len(student_scales) == 0:
        raise ValueError("this loss needs the student's per-scale logits (student_scales is empty)")
    return list(student_scales)


def deep_supervision_loss(
    student_scales: Sequence[Tensor],
    target: Tensor,
    *,
    weights: Sequence[float] | None = None,
    ignore_index: int = 255,
) -> Tensor:
    """Deep supervision (ablation control): ``Σ_k w_k · task_loss(upsample(z_s^k), target)``.

    student_scales: list of (N, C, *spatial_k) logits; target (N, *spatial) int. Scalar.
    """
    scales = _check_scales(student_scales)
    w = _scale_weights(len(scales), weights)
    size = tuple(target.shape[1:])
    total: Tensor | None = None
    for wk, zk in zip(w, scales):
        term = task_loss(upsample_like(zk, size), target, ignore_index=ignore_index)
        total = wk * term if total is None else total + wk * term
    assert total is not None
    return total
