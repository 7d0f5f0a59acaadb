"""Distillation losses: task (CE + soft Dice), KD, TCKD, NCKD, DKD, MFD, DMD.

Shapes: logits are ``(N, C, *spatial)``, targets ``(N, *spatial)`` integer class ids with ``ignore_index``
marking pixels/voxels that count for no loss. Every KL term carries the ``T**2`` factor and is averaged over
the valid pixels (``sum / max(count, 1)``). The teacher is always detached. Half-precision inputs
(float16/bfloat16) are cast to float32 first; float64 stays float64 (used by gradcheck). Everything is
computed in log space with ``log_softmax``; ``log(1 - p_y)`` is a logsumexp of the non-target
log-probabilities, never the log of a difference, so confident logits (``|z| >= 100``) give finite values
and gradients.

Per pixel the decomposition ``KL(p_t||p_s) = KL(b_t||b_s) + (1 - p_t[y]) * KL(q_t||q_s)`` holds, i.e.
``KD = TCKD + (1 - p_t[y]) * NCKD`` with the same ``T``.

Binary problems (C == 2) have a single non-target class, so NCKD is identically zero; :func:`nckd_loss` warns
once per process and returns a zero that stays connected to the student's graph (DMD then reduces to
task + TCKD).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "task_loss",
    "soft_dice_loss",
    "kd_loss",
    "tckd_loss",
    "nckd_loss",
    "dkd_loss",
    "upsample_like",
    "mfd_loss",
    "pool_to_scale",
    "deep_supervision_loss",
    "dmd_loss",
    "distill_loss",
    "METHODS",
]

#: Methods understood by :func:`distill_loss`.
METHODS: tuple[str, ...] = ("none", "ds", "kd", "dkd", "mfd", "dmd")

_MFD_PARTS = ("kd", "tckd", "nckd")
RESAMPLE_MODES: tuple[str, ...] = ("up", "pool")
_DICE_EPS = 1e-5
# Masked entries are pushed this far below the smallest entry of their vector: exp(-1e4) == 0 exactly in
# float32 and float64, and the value stays finite, so no inf (and no 0 * inf) appears in forward or backward.
_MASK_GAP = 1.0e4
_NCKD_BINARY_WARNED = False


# --------------------------------------------------------------------------------------------- helpers
def _as_float(x: Tensor) -> Tensor:
    """Cast to a computation dtype: float64 stays, everything else becomes float32."""
    if x.dtype == torch.float64 or x.dtype == torch.float32:
        return x
    return x.float()


def _check_logits(name: str, x: Tensor) -> None:
    if x.dim() < 2:
        raise ValueError(f"{name} must be (N, C, *spatial) logits, got shape {tuple(x.shape)}")


def _check_pair(student: Tensor, teacher: Tensor) -> None:
    _check_logits("student", student)
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )


def _check_target(logits: Tensor, target: Tensor) -> Tensor:
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must have shape (N, *spatial) = {expected} to match logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex():
        raise ValueError(f"target must hold integer class ids, got dtype {target.dtype}")
    return target.long()


def _masked_mean(per_pixel: Tensor, valid: Tensor | None) -> Tensor:
    """Mean of ``per_pixel`` (N, *spatial) over ``valid`` pixels: ``sum / max(count, 1)``."""
    if valid is None:
        return per_pixel.mean() if per_pixel.numel() else per_pixel.sum()
    per_pixel = torch.where(valid, per_pixel, torch.zeros((), dtype=per_pixel.dtype, device=per_pixel.device))
    count = valid.sum().clamp_min(1).to(per_pixel.dtype)
    return per_pixel.sum() / count


def _valid_and_safe(target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Valid mask (N, *spatial) and a target with ignored pixels replaced by class 0 (safe to gather)."""
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device))
    return valid, safe


def _target_mask(safe_target: Tensor, num_classes: int) -> Tensor:
    """Boolean one-hot (N, C, *spatial) of the target class."""
    classes = torch.arange(num_classes, device=safe_target.device)
    shape = (1, num_classes) + (1,) * (safe_target.dim() - 1)
    return safe_target.unsqueeze(1) == classes.view(shape)


def _fill_masked(x: Tensor, mask: Tensor) -> Tensor:
    """Replace ``x`` where ``mask`` (over dim 1) by a finite value far below the rest of its vector."""
    fill = x.detach().amin(dim=1, keepdim=True) - _MASK_GAP
    return torch.where(mask, fill, x)


def _kl_from_log(log_p: Tensor, log_q: Tensor, dim: int = 1) -> Tensor:
    """``KL(p||q)`` summed over ``dim`` from log-probabilities (finite when both logs are finite)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=dim)


# ----------------------------------------------------------------------------------------- per-pixel maps
def _kd_map(student: Tensor, teacher: Tensor, T: float) -> Tensor:
    """Per-pixel ``T² KL(p_t||p_s)`` -> (N, *spatial)."""
    log_ps = F.log_softmax(student / T, dim=1)
    log_pt = F.log_softmax(teacher / T, dim=1)
    return (T * T) * _kl_from_log(log_pt, log_ps)


def _binary_log_probs(logits: Tensor, mask: Tensor, T: float) -> Tensor:
    """``log [p_y, 1 - p_y]`` (N, 2, *spatial) as ``z_y/T - lse`` and ``lse_non-target - lse``.

    ``log(1 - p_y)`` is a logsumexp over the non-target entries (the target masked to -inf: weight 0 in value
    and gradient), never the log of a difference.
    """
    z = logits / T
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    z_y = torch.where(mask, z, torch.zeros((), dtype=z.dtype, device=z.device)).sum(dim=1, keepdim=True)
    lse_rest = torch.logsumexp(z.masked_fill(mask, float("-inf")), dim=1, keepdim=True)
    return torch.cat([z_y - lse, lse_rest - lse], dim=1)


def _tckd_map(student: Tensor, teacher: Tensor, mask: Tensor, T: float) -> Tensor:
    """Per-pixel ``T² KL(b_t||b_s)`` -> (N, *spatial)."""
    log_bs = _binary_log_probs(student, mask, T)
    log_bt = _binary_log_probs(teacher, mask, T)
    return (T * T) * _kl_from_log(log_bt, log_bs)


def _nckd_map(student: Tensor, teacher: Tensor, mask: Tensor, T: float) -> Tensor:
    """Per-pixel ``T² KL(q_t||q_s)`` over the C-1 non-target classes -> (N, *spatial)."""
    log_qs = F.log_softmax(_fill_masked(student / T, mask), dim=1)
    log_qt = F.log_softmax(_fill_masked(teacher / T, mask), dim=1)
    zero = torch.zeros((), dtype=log_qs.dtype, device=log_qs.device)
    # Drop the target entry explicitly (its q is exactly 0 anyway): only finite numbers are multiplied.
    terms = torch.where(mask, zero, log_qt.exp() * (log_qt - log_qs))
    return (T * T) * terms.sum(dim=1)


def _prepare(student: Tensor, teacher: Tensor, target: Tensor, ignore_index: int):
    _check_pair(student, teacher)
    target = _check_target(student, target)
    s = _as_float(student)
    t = _as_float(teacher.detach()).to(s.dtype)
    valid, safe = _valid_and_safe(target, ignore_index)
    mask = _target_mask(safe, s.shape[1])
    return s, t, valid, mask


# ------------------------------------------------------------------------------------------- task loss
def soft_dice_loss(logits: Tensor, target: Tensor, *, ignore_index: int = 255) -> Tensor:
    """Soft batch Dice loss over the foreground classes 1..C-1.

    logits (N, C, *spatial), target (N, *spatial) int. Probabilities are ``softmax(logits)``; per class
    ``dice_c = (2 Σ p g + eps) / (Σ p + Σ g + eps)`` summed over batch and space, ignored pixels excluded,
    eps = 1e-5. Returns the scalar ``1 - mean_c dice_c``.
    """
    _check_logits("logits", logits)
    target = _check_target(logits, target)
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"soft Dice needs at least 2 classes (background + foreground), got C={num_classes}")
    x = _as_float(logits)
    valid, safe = _valid_and_safe(target, ignore_index)
    validf = valid.unsqueeze(1).to(x.dtype)
    probs = torch.softmax(x, dim=1)[:, 1:] * validf
    onehot = _target_mask(safe, num_classes)[:, 1:].to(x.dtype) * validf
    dims = [0, *range(2, x.dim())]
    inter = (probs * onehot).sum(dim=dims)
    denom = probs.sum(dim=dims) + onehot.sum(dim=dims)
    dice = (2.0 * inter + _DICE_EPS) / (denom + _DICE_EPS)
    return 1.0 - dice.mean()


def task_loss(
    logits: Tensor,
    target: Tensor,
    *,
    ignore_index: int = 255,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    pixel_weight: Tensor | None = None,
) -> Tensor:
    """Supervised loss ``ce_weight * CE + dice_weight * soft Dice``.

    logits (N, C, *spatial), target (N, *spatial) int, pixel_weight optional (N, *spatial) non-negative
    weights for the cross-entropy only (confidence-weighted pseudo-labels): CE = Σ_valid w·ce / n_valid
    (unweighted: the plain mean over valid pixels). Returns a scalar.
    """
    _check_logits("logits", logits)
    target = _check_target(logits, target)
    x = _as_float(logits)
    valid, safe = _valid_and_safe(target, ignore_index)
    log_p = F.log_softmax(x, dim=1)
    ce = -log_p.gather(1, safe.unsqueeze(1)).squeeze(1)
    if pixel_weight is not None:
        if tuple(pixel_weight.shape) != tuple(target.shape):
            raise ValueError(
                f"pixel_weight must have the target's shape {tuple(target.shape)}, "
                f"got {tuple(pixel_weight.shape)}"
            )
        ce = ce * pixel_weight.detach().to(ce.dtype)
    loss = ce_weight * _masked_mean(ce, valid)
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(x, target, ignore_index=ignore_index)
    return loss


# ------------------------------------------------------------------------------------ logit distillation
def kd_loss(student: Tensor, teacher: Tensor, T: float = 4.0, *, valid: Tensor | None = None) -> Tensor:
    """Classic KD: ``T² KL(softmax(z_t/T) || softmax(z_s/T))`` per pixel, averaged over ``valid`` pixels.

    student, teacher (N, C, *spatial); valid optional bool (N, *spatial) (None: every pixel). Scalar.
    """
    _check_pair(student, teacher)
    s = _as_float(student)
    t = _as_float(teacher.detach()).to(s.dtype)
    if valid is not None:
        expected = (s.shape[0], *s.shape[2:])
        if tuple(valid.shape) != expected:
            raise ValueError(f"valid must have shape {expected}, got {tuple(valid.shape)}")
        valid = valid.to(torch.bool)
    return _masked_mean(_kd_map(s, t, T), valid)


def tckd_loss(
    student: Tensor, teacher: Tensor, target: Tensor, T: float = 4.0, *, ignore_index: int = 255
) -> Tensor:
    """Target-class KD: ``T² KL(b_t || b_s)``, ``b = [p_y, 1 - p_y]``, averaged over non-ignored pixels.

    student, teacher (N, C, *spatial); target (N, *spatial) int. Scalar.
    """
    s, t, valid, mask = _prepare(student, teacher, target, ignore_index)
    return _masked_mean(_tckd_map(s, t, mask, T), valid)


def _binary_nckd_zero(student: Tensor) -> Tensor:
    global _NCKD_BINARY_WARNED
    if not _NCKD_BINARY_WARNED:
        _NCKD_BINARY_WARNED = True
        warnings.warn(
            "NCKD is identically zero with 2 classes (a single non-target class): the non-target term "
            "contributes nothing, so DKD/DMD reduce to their target-class (TCKD) part.",
            UserWarning,
            stacklevel=3,
        )
    s = _as_float(student)
    return s.sum() * 0.0


def nckd_loss(
    student: Tensor, teacher: Tensor, target: Tensor, T: float = 4.0, *, ignore_index: int = 255
) -> Tensor:
    """Non-target-class KD: ``T² KL(q_t || q_s)``, ``q = softmax`` over the C-1 non-target classes of ``z/T``.

    student, teacher (N, C, *spatial); target (N, *spatial) int; averaged over non-ignored pixels. Scalar.
    With C == 2 the term is identically zero: warns once per process and returns a graph-connected zero.
    """
    _check_pair(student, teacher)
    if student.shape[1] < 2:
        raise ValueError(f"NCKD needs at least 2 classes, got C={student.shape[1]}")
    if student.shape[1] == 2:
        _check_target(student, target)
        return _binary_nckd_zero(student)
    s, t, valid, mask = _prepare(student, teacher, target, ignore_index)
    return _masked_mean(_nckd_map(s, t, mask, T), valid)


def dkd_loss(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    T: float = 4.0,
    *,
    ignore_index: int = 255,
) -> Tensor:
    """Decoupled KD: ``alpha * TCKD + beta * NCKD`` (shapes as :func:`tckd_loss`). Scalar."""
    tckd = tckd_loss(student, teacher, target, T, ignore_index=ignore_index)
    nckd = nckd_loss(student, teacher, target, T, ignore_index=ignore_index)
    return alpha * tckd + beta * nckd


# ----------------------------------------------------------------------------------- multi-scale terms
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


def _part_loss(part: str, student: Tensor, teacher: Tensor, target: Tensor | None, T: float,
               ignore_index: int) -> Tensor:
    """One scale's MFD term: KD, TCKD or NCKD of ``student`` against ``teacher`` on the same grid."""
    if part == "kd":
        return kd_loss(student, teacher, T, valid=None if target is None else target != ignore_index)
    if part == "tckd":
        return tckd_loss(student, teacher, target, T, ignore_index=ignore_index)
    return nckd_loss(student, teacher, target, T, ignore_index=ignore_index)  # binary: zero, warns once


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


def mfd_loss(
    student_scales: Sequence[Tensor],
    teacher: Tensor,
    target: Tensor | None,
    T: float = 4.0,
    *,
    part: str = "kd",
    weights: Sequence[float] | None = None,
    ignore_index: int = 255,
    resample: str = "up",
) -> Tensor:
    """Multi-scale distillation: ``Σ_k w_k · part(upsample(z_s^k), z_t)``.

    student_scales: list of (N, C, *spatial_k) logits (deepest to finest), each interpolated up to the
    teacher's (N, C, *spatial) grid; part in {"kd", "tckd", "nckd"}; target (N, *spatial) int (may be None
    for part="kd": every pixel counts; otherwise ignore_index pixels are excluded). Scalar.
    ``resample="pool"`` instead brings the teacher's logits and the labels down to each scale
    (:func:`pool_to_scale`: block mean, majority vote): ``Σ_k w_k · part(z_s^k, pool_k(z_t))``.
    """
    if part not in _MFD_PARTS:
        raise ValueError(f"unknown MFD part {part!r}; expected one of {_MFD_PARTS}")
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"unknown resample mode {resample!r}; expected one of {RESAMPLE_MODES}")
    scales = _check_scales(student_scales)
    w = _scale_weights(len(scales), weights)
    _check_logits("teacher", teacher)
    teacher = teacher.detach()
    size = teacher.shape[2:]
    valid = None
    if target is not None:
        target = _check_target(teacher, target)
        valid = target != ignore_index
    elif part != "kd":
        raise ValueError(f"MFD part {part!r} needs a target (class ids); only part='kd' works without one")
    if resample == "pool":
        return _mfd_pooled(scales, w, teacher, target, T, part, ignore_index)
    shared = mask = None
    if part == "kd" or (part == "nckd" and teacher.shape[1] > 2):
        # the teacher's side is the same for every scale: computed once
        mask = None if part == "kd" else _target_mask(_valid_and_safe(target, ignore_index)[1], teacher.shape[1])
        shared = _teacher_side(_as_float(teacher), mask, T)
    total: Tensor | None = None
    for wk, zk in zip(w, scales):
        up = upsample_like(zk, size)
        _check_pair(up, teacher)
        if shared is not None:
            term = _masked_mean(_cross_map(_as_float(up), *shared, mask, T), valid)
        else:  # tckd, or nckd with two classes
            term = _part_loss(part, up, teacher, target, T, ignore_index)
        total = wk * term if total is None else total + wk * term
    assert total is not None
    return total


def _mfd_pooled(scales: list[Tensor], w: list[float], teacher: Tensor, target: Tensor | None, T: float,
                part: str, ignore_index: int) -> Tensor:
    """:func:`mfd_loss` with the teacher and labels pooled down to every scale."""
    teacher_f = _as_float(teacher)
    votes = None if target is None else _votes(target, teacher.shape[1], ignore_index)
    total: Tensor | None = None
    for wk, zk in zip(w, scales):
        if zk.dim() != teacher.dim() or zk.shape[:2] != teacher.shape[:2] or any(
                m > n for m, n in zip(zk.shape[2:], teacher.shape[2:])):
            raise ValueError(f"student scale logits {tuple(zk.shape)} cannot be pooled to from the teacher's "
                             f"{tuple(teacher.shape)}")
        tk, yk = _pool_down(teacher_f, votes, zk.shape[2:], ignore_index)
        term = _part_loss(part, zk, tk, yk, T, ignore_index)
        total = wk * term if total is None else total + wk * term
    assert total is not None
    return total


def _teacher_side(teacher: Tensor, mask: Tensor | None, T: float) -> tuple[Tensor, Tensor]:
    """Teacher probabilities ``p`` (over all classes, or over the non-target ones when ``mask`` is given, 0 at
    the target) and ``Σ p log p`` per pixel, for :func:`_cross_map`."""
    z = teacher / T
    log_p = F.log_softmax(z if mask is None else _fill_masked(z, mask), dim=1)
    p = log_p.exp()
    plogp = p * log_p
    if mask is not None:
        zero = torch.zeros((), dtype=p.dtype, device=p.device)
        p, plogp = torch.where(mask, zero, p), torch.where(mask, zero, plogp)
    return p, plogp.sum(dim=1)


def _cross_map(student: Tensor, p_t: Tensor, plogp_t: Tensor, mask: Tensor | None, T: float) -> Tensor:
    """Per-pixel ``T² KL(p_t||p_s)`` written as ``Σ p_t log p_t - Σ p_t z_s/T + logsumexp(z_s/T)``.

    Equal to :func:`_kd_map` (``mask`` None) or :func:`_nckd_map` (logsumexp over the non-target classes), since
    ``log p_s = z_s/T - logsumexp(z_s/T)`` and ``Σ p_t = 1``; cheaper: no student softmax over the full tensor.
    """
    z = student / T
    # -inf at the target: logsumexp gives it weight exp(-inf) = 0 in value and gradient (C >= 3 leaves >= 2
    # finite entries), and the -inf never meets a multiplication
    lse = torch.logsumexp(z if mask is None else z.masked_fill(mask, float("-inf")), dim=1)
    return (T * T) * (plogp_t - (p_t.to(z.dtype) * z).sum(dim=1) + lse)


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


def dmd_loss(
    student: Tensor,
    student_scales: Sequence[Tensor],
    teacher: Tensor,
    target: Tensor,
    T: float = 4.0,
    lambda_logit: float = 1.0,
    lambda_feat: float = 2 / 3,
    *,
    weights: Sequence[float] | None = None,
    ignore_index: int = 255,
    pixel_weight: Tensor | None = None,
    resample: str = "up",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Decoupled Multi-scale Distillation.

    ``total = task(z_s, y) + lambda_logit · TCKD(z_s, z_t) + lambda_feat · Σ_k w_k · NCKD(up(z_s^k), z_t)``.
    student, teacher (N, C, *spatial); student_scales list of (N, C, *spatial_k); target (N, *spatial) int.
    Returns ``(total, parts)`` with detached, unweighted parts "task", "tckd", "nckd" (= Σ_k w_k NCKD_k)
    and "total".
    """
    task = task_loss(student, target, ignore_index=ignore_index, pixel_weight=pixel_weight)
    tckd = tckd_loss(student, teacher, target, T, ignore_index=ignore_index)
    nckd = mfd_loss(
        student_scales, teacher, target, T, part="nckd", weights=weights, ignore_index=ignore_index,
        resample=resample,
    )
    total = task + lambda_logit * tckd + lambda_feat * nckd
    parts = {"task": task.detach(), "tckd": tckd.detach(), "nckd": nckd.detach(), "total": total.detach()}
    return total, parts


# ------------------------------------------------------------------------------------------- dispatcher
def distill_loss(
    method: str,
    student: Tensor,
    student_scales: Sequence[Tensor] | None,
    teacher: Tensor | None,
    target: Tensor,
    *,
    T: float,
    alpha: float,
    beta: float,
    lambda_logit: float,
    lambda_feat: float,
    kd_weight: float = 1.0,
    ds_weight: float = 1.0,
    weights: Sequence[float] | None = None,
    ignore_index: int = 255,
    pixel_weight: Tensor | None = None,
    distill_scale: float = 1.0,
    head_supervision: float = 0.0,
    resample: str = "up",
) -> tuple[Tensor, dict[str, Tensor]]:
    """One entry point for the training engine: task loss plus the method's extra terms.

    method in {"none", "ds", "kd", "dkd", "mfd", "dmd"}:
    none = task; ds = task + ds_weight·deep supervision (control, no teacher needed);
    kd = task + kd_weight·KD; dkd = task + alpha·TCKD + beta·NCKD; mfd = task + lambda_feat·MFD(part="kd");
    dmd = task + lambda_logit·TCKD + lambda_feat·Σ_k w_k NCKD_k. ``distill_scale`` (linear warm-up, in [0, 1])
    multiplies every term beyond the task loss (the deep-supervision control too, so it is warmed up like
    MFD/DMD). ``head_supervision`` > 0 adds ``head_supervision · deep supervision`` (the task loss at every
    scale head, part "ds") to MFD and DMD (an extension: 0 is the method as specified). Shapes as in
    :func:`dmd_loss`. Returns ``(total, parts)``; parts are detached and always hold "task" and "total" plus
    the method's unweighted parts ("kd"; "tckd", "nckd"; "mfd"; "ds").
    """
    if method not in METHODS:
        raise ValueError(f"unknown distillation method {method!r}; expected one of {', '.join(METHODS)}")
    if not 0.0 <= float(distill_scale) <= 1.0:
        raise ValueError(f"distill_scale must be in [0, 1], got {distill_scale}")
    if method in ("kd", "dkd", "mfd", "dmd") and teacher is None:
        raise ValueError(f"method {method!r} needs teacher logits, got None")

    task = task_loss(student, target, ignore_index=ignore_index, pixel_weight=pixel_weight)
    parts: dict[str, Tensor] = {}
    if method == "none":
        extra = None
    elif method == "ds":
        ds = deep_supervision_loss(student_scales, target, weights=weights, ignore_index=ignore_index)
        parts["ds"] = ds
        extra = ds_weight * ds
    elif method == "kd":
        kd = kd_loss(student, teacher, T, valid=_check_target(student, target) != ignore_index)
        parts["kd"] = kd
        extra = kd_weight * kd
    elif method == "dkd":
        tckd = tckd_loss(student, teacher, target, T, ignore_index=ignore_index)
        nckd = nckd_loss(student, teacher, target, T, ignore_index=ignore_index)
        parts.update(tckd=tckd, nckd=nckd)
        extra = alpha * tckd + beta * nckd
    elif method == "mfd":
        mfd = mfd_loss(
            student_scales, teacher, target, T, part="kd", weights=weights, ignore_index=ignore_index,
            resample=resample,
        )
        parts["mfd"] = mfd
        extra = lambda_feat * mfd
    else:  # dmd
        tckd = tckd_loss(student, teacher, target, T, ignore_index=ignore_index)
        nckd = mfd_loss(
            student_scales, teacher, target, T, part="nckd", weights=weights, ignore_index=ignore_index,
            resample=resample,
        )
        parts.update(tckd=tckd, nckd=nckd)
        extra = lambda_logit * tckd + lambda_feat * nckd
    if head_supervision and method in ("mfd", "dmd"):
        ds = deep_supervision_loss(student_scales, target, weights=weights, ignore_index=ignore_index)
        parts["ds"] = ds
        extra = extra + head_supervision * ds

    total = task if extra is None else task + float(distill_scale) * extra
    out = {"task": task.detach(), **{k: v.detach() for k, v in parts.items()}, "total": total.detach()}
    return total, out
