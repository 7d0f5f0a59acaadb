"""dkd: decoupled knowledge distillation (Zhao et al.): target and non-target parts on the final logits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .base import Inputs, Method

if TYPE_CHECKING:
    from torch import Tensor


def terms(x: Inputs, w: Mapping[str, float | None]) -> tuple[Tensor | None, dict[str, Tensor]]:
    """``alpha · TCKD(z_s, z_t) + beta · NCKD(z_s, z_t)``: TCKD at the target temperature, NCKD at T."""
    from ..losses import nckd_loss, tckd_loss

    tckd = tckd_loss(x.student, x.teacher, x.target, x.t_target, ignore_index=x.ignore_index, balance=x.balance)
    nckd = nckd_loss(x.student, x.teacher, x.target, x.T, ignore_index=x.ignore_index)
    return w["alpha"] * tckd + w["beta"] * nckd, {"tckd": tckd, "nckd": nckd}


METHOD = Method(
    name="dkd",
    label="DKD",
    tip="DKD: task + target (TCKD) and non-target (NCKD) parts on the final logits",
    needs_teacher=True,
    needs_heads=False,
    parts=("tckd", "nckd"),
    settings={"alpha": 1.0, "beta": 2.0},
    terms=terms,
    menu_rank=2,
)
