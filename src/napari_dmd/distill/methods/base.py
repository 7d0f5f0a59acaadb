"""What a distillation method is: its name, how the UI shows it, what it needs, reports and is weighted by.

Torch-free at import: the CLI, the config and the widgets read the table at start-up. A method's ``terms``
imports the loss primitives of :mod:`napari_dmd.distill.losses` when it is called (the import goes one way:
``losses`` never imports this package).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["Inputs", "Method", "TermsFn"]


@dataclass(frozen=True)
class Inputs:
    """What a method's terms are computed from (shapes as in :mod:`napari_dmd.distill.losses`)."""

    student: Tensor  # (N, C, *spatial) final logits
    student_scales: Sequence[Tensor] | None  # per-scale head logits (N, C, *spatial_k), deepest first
    teacher: Tensor | None  # (N, C, *spatial) logits; None only for methods that need no teacher
    target: Tensor  # (N, *spatial) class ids
    T: float  # temperature
    weights: Sequence[float] | None = None  # w_k per scale (None: 1 each)
    ignore_index: int = 255
    resample: str = "up"  # how a coarse scale meets the teacher: "up" or "pool"
    T_target: float | None = None  # temperature of the target-class terms (KD, TCKD); None: T
    balance: bool = False  # the target-class terms averaged per class, not per pixel

    @property
    def t_target(self) -> float:
        """The temperature of the target-class terms (KD, TCKD): ``T_target``, else ``T``."""
        return self.T if self.T_target is None else self.T_target


#: ``terms(inputs, settings) -> (extra, parts)``: ``extra`` is the method's weighted terms beyond the task loss
#: (None: nothing beyond it), ``parts`` its unweighted terms by name, still attached to the graph.
TermsFn = Callable[[Inputs, Mapping[str, "float | None"]], "tuple[Tensor | None, dict[str, Tensor]]"]


@dataclass(frozen=True)
class Method:
    """One distillation method, the single place that says what it is."""

    name: str  # as written in configs and on the command line
    label: str  # as shown in the Distill widget's menu
    tip: str  # one line for the widget's tooltip
    needs_teacher: bool  # refused without teacher logits
    needs_heads: bool  # the student gets per-scale class heads (``student_scales``)
    parts: tuple[str, ...]  # the loss parts it reports beside "task" and "total"
    settings: Mapping[str, float | None]  # TrainConfig settings that weight it -> their defaults
    terms: TermsFn  # computes its terms; reads only ``settings``' names
    menu_rank: int | None = None  # position in the Distill widget's menu; None: not offered there

    @property
    def takes_head_supervision(self) -> bool:
        """Whether ``head_supervision`` adds the task loss at its scale heads: methods with heads and a teacher
        (MFD, DMD); the control (``ds``) has that loss already."""
        return self.needs_heads and self.needs_teacher

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))
        object.__setattr__(self, "parts", tuple(self.parts))
