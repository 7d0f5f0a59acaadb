"""ds: deep supervision, the control for the multi-scale methods (class heads on the decoder stages, the task
loss at every head; no teacher)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .base import Inputs, Method

if TYPE_CHECKING:
    from torch import Tensor


def terms(x: Inputs, w: Mapping[str, float | None]) -> tuple[Tensor | None, dict[str, Tensor]]:
    """``ds_weight · Σ_k w_k · task(up(z_s^k), y)``."""
    from ..losses import deep_supervision_loss

    ds = deep_supervision_loss(x.student_scales, x.target, weights=x.weights, ignore_index=x.ignore_index)
    return w["ds_weight"] * ds, {"ds": ds}


METHOD = Method(
    name="ds",
    label="DS",
    tip="DS: task + the task loss at every decoder scale's head (deep supervision; a control, no teacher)",
    needs_teacher=False,
    needs_heads=True,
    parts=("ds",),
    settings={"ds_weight": 1.0},
    terms=terms,
)
