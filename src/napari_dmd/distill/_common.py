"""Shared pieces of the distillation losses: input checks, dtype handling, masks and per-pixel KL maps.

Private to :mod:`napari_dmd.distill` (the public losses are in :mod:`napari_dmd.distill.losses`). Conventions
(shapes, ``ignore_index``, float32/float64 computation, log-space masking) are described there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Masked entries are pushed this far below the smallest entry of their vector: exp(-1e4) == 0 exactly in
# float32 and float64, and the value stays finite, so no inf (and no 0 * inf) appears in forward or backward.
_MASK_GAP = 1.0e4


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


# ------------------------------------------------------------------------------------ labels over the teacher
def label_corrected_teacher(teacher: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Teacher logits (N, C, *spatial) with each labelled voxel's label made the teacher's top class, and the
    teacher's own argmax (N, *spatial).

    Where ``target`` holds a class (not ``ignore_index``) other than the teacher's argmax, the logits of that
    argmax class and of the labelled class are swapped: the label takes the teacher's top logit (its confidence),
    the other classes keep theirs (the "dark knowledge"). Elsewhere the logits are unchanged.
    """
    top = teacher.argmax(1)
    fix = (target != ignore_index) & (target != top)
    label = torch.where(fix, target.long(), top).unsqueeze(1)  # == top where nothing is fixed: a no-op swap
    first = top.unsqueeze(1)
    z_top, z_label = teacher.gather(1, first), teacher.gather(1, label)
    return teacher.scatter(1, first, z_label).scatter(1, label, z_top), top
