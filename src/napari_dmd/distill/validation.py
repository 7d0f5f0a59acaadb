"""Validation of a run: which cases validate, their reference labels, the student's Dice per class and the
teacher's (what the lost-class guard of :mod:`.collapse` compares it with).

A validation case's reference is its label map, or for a case without one the teacher's prediction (computed
once and kept in the checkpoint). Voxels labelled :data:`IGNORE` (255) are left out of the Dice, as they are
left out of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data.cases import Case
from ..data.sampling import split_cases
from ..inference import sliding_window_predict
from ..metrics import dice_per_class
from . import collapse
from .distributed import all_reduce_sum
from .events import Event

IGNORE = 255  # label value of voxels without a loss (and left out of validation)


def split_train_val(cases: Sequence[Case], val_cases: Sequence[Case] | None, *, has_teacher: bool,
                    val_fraction: float, max_val_cases: int, seed: int) -> tuple[list[Case], list[Case]]:
    """(training cases, validation cases).

    Given ``val_cases``, every case trains and at most ``max_val_cases`` of them validate. Otherwise a seeded
    split of the labelled cases; with a teacher, unlabelled cases train too, and when no case is labelled the
    split is of all cases (validated against the teacher). Without a teacher only labelled cases train.
    """
    cases = list(cases)
    labelled = [c for c in cases if c.has_label]
    if val_cases is None:
        pool, unl = labelled, ([c for c in cases if not c.has_label] if has_teacher else [])
        if not pool:  # teacher + only unlabelled scans: validate against the teacher on a split
            pool, unl = cases, []
        tr, va = split_cases(len(pool), val_fraction, seed)
        val = [pool[i] for i in va][:max_val_cases]
        train = [pool[i] for i in tr] + unl
        if not train:
            train, val = pool, []
    else:
        train, val = cases, list(val_cases)[:max_val_cases]
    if not has_teacher:
        train = [c for c in train if c.has_label]
    return train, list(val)


def reference(d: Any, i: int) -> np.ndarray:
    """The reference labels of validation case ``i`` of the run ``d`` (a Distiller): its label, else the
    teacher's prediction (kept in ``d.val_references``)."""
    case = d.val_cases[i]
    if case.label is not None:
        return case.label
    if case.name not in d.val_references:  # no label: agreement with the teacher
        probs = sliding_window_predict(d.teacher, d._val_images[i], d.patch_size, num_classes=d.num_classes,
                                       device=str(d.device))
        d.val_references[case.name] = probs.argmax(0).astype(np.uint8)
    return d.val_references[case.name]


def case_dice(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice per foreground class of ``pred`` against ``ref``, the :data:`IGNORE` voxels of ``ref`` left out."""
    keep = np.asarray(ref) != IGNORE
    if not keep.all():
        pred, ref = np.asarray(pred)[keep], np.asarray(ref)[keep]
    return dice_per_class(pred, ref, num_classes)


def _per_class(d: Any, dice_of: Any) -> tuple[list[float], float]:
    """(Dice per foreground class, mean over the classes present) of ``dice_of(i)`` (case ``i``'s per-class Dice)
    over the validation cases; under DDP each rank takes its share and the sums are reduced."""
    sums = torch.zeros(2, d.num_classes - 1, dtype=torch.float64)
    for i in range(len(d._val_images)):
        if i % d.dist.world_size != d.dist.rank:
            continue
        dice = dice_of(i)
        sums[0] += torch.from_numpy(np.nan_to_num(dice, nan=0.0))
        sums[1] += torch.from_numpy((~np.isnan(dice)).astype(np.float64))
    if d.dist.enabled:
        sums = all_reduce_sum(sums.to(d.device), d.dist).cpu()
    per_class = (sums[0] / sums[1]).numpy()
    mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return [float(v) for v in per_class], mean


def mean_dice(d: Any) -> tuple[list[float], float]:
    """(Dice per foreground class, mean over the classes present) of the run ``d`` (a Distiller) over its
    validation cases. Under DDP each rank validates its share and the sums are reduced."""
    return _per_class(d, lambda i: case_dice(d.predict(d._val_images[i]).argmax(0), reference(d, i),
                                             d.num_classes))


def teacher_dice(d: Any) -> list[float]:
    """The teacher's Dice per foreground class on the run's validation cases (against each case's reference:
    its label, else the teacher's own prediction, where the teacher scores 1 on every class it predicts)."""
    def dice_of(i: int) -> np.ndarray:
        ref = reference(d, i)
        if d.val_cases[i].label is None:
            return case_dice(ref, ref, d.num_classes)
        probs = sliding_window_predict(d.teacher, d._val_images[i], d.patch_size, num_classes=d.num_classes,
                                       device=str(d.device))
        return case_dice(probs.argmax(0), ref, d.num_classes)
    return _per_class(d, dice_of)[0]


def reference_dice(d: Any) -> list[float]:
    """What the student's per-class Dice is compared with by the lost-class guard (:mod:`.collapse`): the
    teacher's (:func:`teacher_dice`), else 1.0 for every class the validation references hold (NaN for the
    others). Computed at the first validation and kept on ``d._reference_dice`` for the rest of the run."""
    cached = getattr(d, "_reference_dice", None)
    if cached is not None:
        return cached
    if d.teacher is not None:
        ref = teacher_dice(d)
    else:  # a class is "present" where some reference holds it: Dice of the reference with itself is 1, else NaN
        ref = _per_class(d, lambda i: case_dice(reference(d, i), reference(d, i), d.num_classes))[0]
    d._reference_dice = ref
    return ref


def validate(d: Any) -> Event:
    """Validate the run ``d`` (a Distiller); write best.pt by the lost-class guard's key (:mod:`.collapse`); queue
    a warning event in ``d._warnings`` for each class newly lost."""
    per_class, mean = mean_dice(d)
    ref = reference_dice(d)
    lost = collapse.lost_classes(per_class, ref)
    names = [collapse.class_name(i, d.config.class_names) for i in lost]
    d.history.append({"iteration": d.iteration, "dice": per_class, "mean_dice": mean,
                      "reference_dice": ref, "lost": names})
    d._warnings = []
    new = collapse.newly_lost(lost, d._lost_before)
    if d.iteration >= collapse.WARN_AFTER * d.total:  # before: still learning, not yet lost
        names_of = dict(zip(lost, names))
        d._warnings = [Event("warning", d.iteration, d.total, lost=[names_of[i]], message=collapse.lost_message(
            i, d.iteration, per_class, ref, d.config.class_names, teacher=d.teacher is not None)) for i in new]
        d._lost_before = lost
    path = None
    key = collapse.selection_key(len(lost), mean)
    if collapse.is_better(key, best_key(d)):
        d.best_dice, d.best_lost = mean, len(lost)
        if d.dist.is_main:
            path = str(d._write(d.best_path, with_state=False))
    return Event("validation", d.iteration, d.total, dice=per_class, mean_dice=mean, path=path,
                 teacher_dice=ref if d.teacher is not None else None, lost=names,
                 message=f"validation mean Dice {mean:.4f}" + (" (best)" if path else "")
                 + (f"; lost: {', '.join(names)}" if names else ""))


def best_key(d: Any) -> tuple[int, float] | None:
    """The key of best.pt (None: none written); after a resume its lost count is read from the history."""
    if d.best_dice < 0:
        return None
    if d.best_lost is None:
        same = [h for h in d.history if h.get("mean_dice") == d.best_dice]
        d.best_lost = len(same[-1].get("lost", [])) if same else 0
    return collapse.selection_key(d.best_lost, d.best_dice)
