"""The lost-class guard: which classes a student has lost, the warning that says so, and how ``best.pt`` is chosen.

Pure functions (no torch, no files). A foreground class is *lost* when its reference Dice is at least
:data:`FOUND_AT` (0.70: the teacher finds it) and the student's is below :data:`LOST_BELOW` (0.50), both measured
on the same validation cases. The reference is the teacher's per-class Dice against the validation labels
(computed once per run); without a teacher it is the labels themselves (Dice 1 for every class the validation
labels hold). A warning is given once per collapse (a class lost again after recovering is warned about again),
and only from :data:`WARN_AFTER` of the iterations on: an untrained student misses every class at first, which is
not yet a loss. The count of lost classes enters the ``best.pt`` key at every validation, the same rule throughout.

``best.pt`` is the validation with the largest :func:`selection_key` ``(-number of lost classes, mean Dice)``:
fewer lost classes first, then the higher mean Dice; a validation whose mean Dice is NaN (no class in the
references) is never best. So a student that lost a class never replaces one that did not, however high its mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["FOUND_AT", "LOST_BELOW", "WARN_AFTER", "class_name", "is_better", "label_reference",
           "lost_classes", "lost_message", "newly_lost", "selection_key"]

FOUND_AT = 0.70  # the reference (teacher) finds the class: its Dice is at least this
LOST_BELOW = 0.50  # the student has lost it: its Dice is below this
WARN_AFTER = 0.25  # warn only from this fraction of the iterations on (before: still learning)


def _ok(v: float | None) -> bool:
    return v is not None and not math.isnan(float(v))


def lost_classes(student: Sequence[float], reference: Sequence[float], *, found_at: float = FOUND_AT,
                 lost_below: float = LOST_BELOW) -> list[int]:
    """Indices ``i`` (foreground class ``i + 1``) with ``reference[i] >= found_at`` and ``student[i] < lost_below``.

    Both lists hold one Dice per foreground class; a NaN on either side (class absent from the references) is
    never lost. A length mismatch is a ValueError.
    """
    if len(student) != len(reference):
        raise ValueError(f"per-class Dice lists differ in length: student {len(student)}, reference "
                         f"{len(reference)}")
    return [i for i, (s, r) in enumerate(zip(student, reference))
            if _ok(s) and _ok(r) and float(r) >= found_at and float(s) < lost_below]


def label_reference(present: Sequence[bool]) -> list[float]:
    """The reference without a teacher: Dice 1.0 for each foreground class the validation labels hold, NaN else."""
    return [1.0 if p else float("nan") for p in present]


def newly_lost(lost: Sequence[int], previous: Sequence[int]) -> list[int]:
    """The classes of ``lost`` not lost at the previous validation (each is warned about once per collapse)."""
    before = set(previous)
    return [i for i in lost if i not in before]


def selection_key(n_lost: int, mean_dice: float) -> tuple[int, float]:
    """``(-n_lost, mean_dice)``: larger is better (fewer lost classes first, then higher mean Dice); NaN -> -inf."""
    mean = float(mean_dice) if _ok(mean_dice) else -math.inf
    return -int(n_lost), mean


def is_better(candidate: tuple[int, float], best: tuple[int, float] | None) -> bool:
    """Whether a validation with key ``candidate`` replaces ``best.pt`` (key ``best``; None: none written yet).
    A candidate with a NaN mean (-inf) is never written."""
    if candidate[1] == -math.inf:
        return False
    return best is None or candidate > best


def class_name(i: int, class_names: Sequence[str] | None) -> str:
    """The name of foreground class ``i + 1`` (``class_names`` includes the background at 0), else "class i+1"."""
    if class_names is not None and i + 1 < len(class_names) and str(class_names[i + 1]).strip():
        return str(class_names[i + 1])
    return f"class {i + 1}"


def lost_message(i: int, iteration: int, student: Sequence[float], reference: Sequence[float],
                 class_names: Sequence[str] | None, *, teacher: bool) -> str:
    """One line naming the lost class, the iteration and both Dice values, and what best.pt does about it."""
    against = f"the teacher's {float(reference[i]):.2f}" if teacher else "the validation labels hold it"
    return (f"class '{class_name(i, class_names)}' lost at iteration {iteration}: validation Dice "
            f"{float(student[i]):.2f} < {LOST_BELOW:.2f} ({against}); best.pt keeps the best student without a "
            f"lost class")
