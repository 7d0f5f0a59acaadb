"""Supervised task loss: cross-entropy + soft Dice (shapes and conventions as in :mod:`.losses`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import _as_float, _check_logits, _check_target, _masked_mean, _target_mask, _valid_and_safe

__all__ = ["soft_dice_loss", "task_loss"]

_DICE_EPS = 1e-5


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
