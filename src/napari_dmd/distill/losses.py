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

Every loss is imported from here. The task loss lives in :mod:`.task`, resampling between scales and deep
supervision in :mod:`.scales`, the shared checks and per-pixel maps in :mod:`._common`; this module holds the
KL family, MFD and DMD. The methods built from these terms (and the dispatcher) are in :mod:`.methods`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import (
    _as_float,
    _check_logits,
    _check_pair,
    _check_target,
    _fill_masked,
    _kd_map,
    _masked_mean,
    _nckd_map,
    _prepare,
    _target_mask,
    _tckd_map,
    _valid_and_safe,
)
from .scales import (
    RESAMPLE_MODES,
    _check_scales,
    _pool_down,
    _scale_weights,
    _votes,
    deep_supervision_loss,
    pool_to_scale,
    upsample_like,
)
from .task import soft_dice_loss, task_loss

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
    "default_lambda_feat",
    "dmd_terms",
    "dmd_loss",
    "RESAMPLE_MODES",
    "class_balanced_mean",
]

_MFD_PARTS = ("kd", "tckd", "nckd")
_NCKD_BINARY_WARNED = False


# ------------------------------------------------------------------------------------ logit distillation
def kd_loss(student: Tensor, teacher: Tensor, T: float = 4.0, *, valid: Tensor | None = None,
            classes: Tensor | None = None, ignore_index: int = 255) -> Tensor:
    """Classic KD: ``T² KL(softmax(z_t/T) || softmax(z_s/T))`` per pixel, averaged over ``valid`` pixels.

    student, teacher (N, C, *spatial); valid optional bool (N, *spatial) (None: every pixel). Scalar.
    ``classes`` (N, *spatial) int, optional: the average is then class-balanced (:func:`class_balanced_mean`
    over the pixels' classes, ``ignore_index`` pixels left out) instead of the plain pixel mean.
    """
    _check_pair(student, teacher)
    s = _as_float(student)
    t = _as_float(teacher.detach()).to(s.dtype)
    if classes is not None:
        return class_balanced_mean(_kd_map(s, t, T), _check_target(s, classes), s.shape[1], ignore_index)
    if valid is not None:
        expected = (s.shape[0], *s.shape[2:])
        if tuple(valid.shape) != expected:
            raise ValueError(f"valid must have shape {expected}, got {tuple(valid.shape)}")
        valid = valid.to(torch.bool)
    return _masked_mean(_kd_map(s, t, T), valid)


def class_balanced_mean(per_pixel: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """``(1/|P|) Σ_{c∈P} mean_{i: y_i=c} per_pixel_i``: the mean over the classes ``P`` present in ``target``
    (``ignore_index`` pixels left out) of each class's pixel mean, so that every class present weighs the
    same whatever its pixel count (background does not outweigh a small class). No class present: 0.

    per_pixel (N, *spatial) float; target (N, *spatial) int. Scalar.
    """
    valid, safe = _valid_and_safe(target, ignore_index)
    onehot = _target_mask(safe, num_classes) & valid.unsqueeze(1)  # (N, C, *spatial)
    w = onehot.to(per_pixel.dtype)
    dims = [0, *range(2, w.dim())]
    count = w.sum(dim=dims)  # pixels per class (C,)
    sums = (w * per_pixel.unsqueeze(1)).sum(dim=dims)
    present = count > 0
    per_class = sums / count.clamp_min(1)
    return per_class.sum() / present.sum().clamp_min(1).to(per_pixel.dtype)


def tckd_loss(
    student: Tensor, teacher: Tensor, target: Tensor, T: float = 4.0, *, ignore_index: int = 255,
    balance: bool = False,
) -> Tensor:
    """Target-class KD: ``T² KL(b_t || b_s)``, ``b = [p_y, 1 - p_y]``, averaged over non-ignored pixels.

    student, teacher (N, C, *spatial); target (N, *spatial) int. Scalar. ``balance``: the class-balanced
    average (:func:`class_balanced_mean` over the target classes) instead of the pixel mean.
    """
    s, t, valid, mask = _prepare(student, teacher, target, ignore_index)
    per_pixel = _tckd_map(s, t, mask, T)
    if balance:
        return class_balanced_mean(per_pixel, _check_target(s, target), s.shape[1], ignore_index)
    return _masked_mean(per_pixel, valid)


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
def _part_loss(part: str, student: Tensor, teacher: Tensor, target: Tensor | None, T: float,
               ignore_index: int) -> Tensor:
    """One scale's MFD term: KD, TCKD or NCKD of ``student`` against ``teacher`` on the same grid."""
    if part == "kd":
        return kd_loss(student, teacher, T, valid=None if target is None else target != ignore_index)
    if part == "tckd":
        return tckd_loss(student, teacher, target, T, ignore_index=ignore_index)
    return nckd_loss(student, teacher, target, T, ignore_index=ignore_index)  # binary: zero, warns once


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


def default_lambda_feat(num_scales: int) -> float:
    """The default weight of the per-scale terms of MFD and DMD: ``2 / number of scales`` (2/3 for three)."""
    if num_scales < 1:
        raise ValueError(f"the per-scale weight needs at least one student scale, got {num_scales}")
    return 2.0 / num_scales


def dmd_terms(
    student: Tensor,
    student_scales: Sequence[Tensor],
    teacher: Tensor,
    target: Tensor,
    T: float = 4.0,
    lambda_logit: float = 1.0,
    lambda_feat: float | None = None,
    *,
    weights: Sequence[float] | None = None,
    ignore_index: int = 255,
    resample: str = "up",
    T_target: float | None = None,
    balance: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DMD's distillation terms (everything but the task loss): the one place the DMD combination is written.

    ``extra = lambda_logit · TCKD(z_s, z_t) + lambda_feat · Σ_k w_k · NCKD(z_s^k, z_t)`` (NCKD at every scale as in
    :func:`mfd_loss` with ``part="nckd"``); ``lambda_feat=None`` is :func:`default_lambda_feat` of the number of
    scales. TCKD is taken at ``T_target`` (None: ``T``; the engine uses ``TrainConfig.target_temperature``,
    see docs/method.md), NCKD at ``T``; ``balance``: TCKD class-balanced (:func:`tckd_loss`). Returns
    ``(extra, {"tckd": ..., "nckd": ...})``, the parts unweighted and still attached.
    """
    scales = _check_scales(student_scales)
    if lambda_feat is None:
        lambda_feat = default_lambda_feat(len(scales))
    tckd = tckd_loss(student, teacher, target, T if T_target is None else T_target, ignore_index=ignore_index,
                     balance=balance)
    nckd = mfd_loss(scales, teacher, target, T, part="nckd", weights=weights, ignore_index=ignore_index,
                    resample=resample)
    return lambda_logit * tckd + lambda_feat * nckd, {"tckd": tckd, "nckd": nckd}


def dmd_loss(
    student: Tensor,
    student_scales: Sequence[Tensor],
    teacher: Tensor,
    target: Tensor,
    T: float = 4.0,
    lambda_logit: float = 1.0,
    lambda_feat: float | None = None,
    *,
    weights: Sequence[float] | None = None,
    ignore_index: int = 255,
    pixel_weight: Tensor | None = None,
    resample: str = "up",
    T_target: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Decoupled Multi-scale Distillation.

    ``total = task(z_s, y) + lambda_logit · TCKD(z_s, z_t) + lambda_feat · Σ_k w_k · NCKD(up(z_s^k), z_t)``
    (the distillation part is :func:`dmd_terms`). ``lambda_feat=None`` (the default) means
    ``2 / len(student_scales)`` (:func:`default_lambda_feat`; 2/3 for three scales).
    student, teacher (N, C, *spatial); student_scales list of (N, C, *spatial_k); target (N, *spatial) int.
    Returns ``(total, parts)`` with detached, unweighted parts "task", "tckd", "nckd" (= Σ_k w_k NCKD_k)
    and "total". ``T_target``: the temperature of TCKD (None: ``T``), as in :func:`dmd_terms`.
    """
    task = task_loss(student, target, ignore_index=ignore_index, pixel_weight=pixel_weight)
    extra, terms = dmd_terms(student, student_scales, teacher, target, T, lambda_logit, lambda_feat,
                             weights=weights, ignore_index=ignore_index, resample=resample, T_target=T_target)
    total = task + extra
    parts = {"task": task.detach(), **{k: v.detach() for k, v in terms.items()}, "total": total.detach()}
    return total, parts
