"""none: the task loss alone (teacher training, or a student trained without distillation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .base import Inputs, Method

if TYPE_CHECKING:
    from torch import Tensor


def terms(x: Inputs, w: Mapping[str, float | None]) -> tuple[Tensor | None, dict[str, Tensor]]:
    """Nothing beyond the task loss."""
    return None, {}


METHOD = Method(
    name="none",
    label="none (student alone)",
    tip="none: the student alone (teacher's prediction only as target where there is no label)",
    needs_teacher=False,
    needs_heads=False,
    parts=(),
    settings={},
    terms=terms,
    menu_rank=4,
)
