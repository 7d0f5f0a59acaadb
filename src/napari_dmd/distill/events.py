"""What a run reports: :class:`Event`, yielded by :meth:`napari_dmd.distill.engine.Distiller.run`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    """A progress report from :meth:`Distiller.run`."""

    kind: str  # start | step | validation | warning | checkpoint | done | stopped
    iteration: int
    total: int
    parts: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    samples_per_s: float = 0.0
    eta_s: float = float("nan")
    dice: list[float] | None = None
    mean_dice: float | None = None
    teacher_dice: list[float] | None = None  # validation: the teacher's Dice per class on the same cases
    lost: list[str] | None = None  # validation, warning: the classes lost (teacher >= 0.70, student < 0.50)
    path: str | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if v is not None and v != {} and v != ""}
        d["time"] = time.time()
        return d
