"""dmd: Decoupled Multi-scale Distillation: TCKD on the final logits, NCKD at every decoder scale's head.

The combination itself is :func:`napari_dmd.distill.losses.dmd_terms` (also the core of ``dmd_loss``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .base import Inputs, Method

if TYPE_CHECKING:
    from torch import Tensor


def terms(x: Inputs, w: Mapping[str, float | None]) -> tuple[Tensor | None, dict[str, Tensor]]:
    """``lambda_logit · TCKD(z_s, z_t) + lambda_feat · Σ_k w_k · NCKD(z_s^k, z_t)`` (lambda_feat None: 2/S);
    TCKD at the target temperature (``target_temperature``, default 1), NCKD at T."""
    from ..losses import dmd_terms

    return dmd_terms(x.student, x.student_scales, x.teacher, x.target, x.T, w["lambda_logit"], w["lambda_feat"],
                     weights=x.weights, ignore_index=x.ignore_index, resample=x.resample, T_target=x.t_target,
                     balance=x.balance)


METHOD = Method(
    name="dmd",
    label="DMD",
    tip="DMD: task + TCKD on the logits + NCKD on every decoder scale (the paper's method)",
    needs_teacher=True,
    needs_heads=True,
    parts=("tckd", "nckd"),
    settings={"lambda_logit": 1.0, "lambda_feat": None, "head_supervision": None},
    terms=terms,
    menu_rank=0,
)
