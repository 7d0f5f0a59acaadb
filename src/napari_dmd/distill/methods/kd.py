"""kd: classic knowledge distillation (Hinton et al.) on the final logits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .base import Inputs, Method

if TYPE_CHECKING:
    from torch import Tensor


def terms(x: Inputs, w: Mapping[str, float | None]) -> tuple[Tensor | None, dict[str, Tensor]]:
    """``kd_weight · KD(z_s, z_t)`` over the labelled (non-ignored) pixels, at the target temperature
    (``target_temperature``, default T; the whole of KD is "target-class" in that its gradient pushes every class's
    logit toward the teacher's on every pixel, see docs/method.md)."""
    from .._common import _check_target
    from ..losses import kd_loss

    kd = kd_loss(x.student, x.teacher, x.t_target, valid=_check_target(x.student, x.target) != x.ignore_index,
                 classes=x.target if x.balance else None, ignore_index=x.ignore_index)
    return w["kd_weight"] * kd, {"kd": kd}


METHOD = Method(
    name="kd",
    label="KD",
    tip="KD: task + KL divergence to the teacher's softened probabilities",
    needs_teacher=True,
    needs_heads=False,
    parts=("kd",),
    settings={"kd_weight": 1.0},
    terms=terms,
    menu_rank=1,
)
