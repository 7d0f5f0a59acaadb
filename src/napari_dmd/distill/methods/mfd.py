"""mfd: multi-scale distillation: KD of every decoder scale's class head toward the teacher."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .base import Inputs, Method

if TYPE_CHECKING:
    from torch import Tensor


def terms(x: Inputs, w: Mapping[str, float | None]) -> tuple[Tensor | None, dict[str, Tensor]]:
    """``lambda_feat · Σ_k w_k · KD(z_s^k, z_t)``; ``lambda_feat`` None: 2 / number of scales."""
    from ..losses import default_lambda_feat, mfd_loss

    mfd = mfd_loss(x.student_scales, x.teacher, x.target, x.T, part="kd", weights=x.weights,
                   ignore_index=x.ignore_index, resample=x.resample)
    lam = w["lambda_feat"]
    if lam is None:
        lam = default_lambda_feat(len(x.student_scales or ()))
    return lam * mfd, {"mfd": mfd}


METHOD = Method(
    name="mfd",
    label="MFD",
    tip="MFD: task + KD of every decoder scale's head toward the teacher",
    needs_teacher=True,
    needs_heads=True,
    parts=("mfd",),
    settings={"lambda_feat": None, "head_supervision": None},
    terms=terms,
    menu_rank=3,
)
