"""Validation of a run: which cases validate, their reference labels, and the mean Dice of the student.

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
from .distributed import all_reduce_sum

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


def mean_dice(d: Any) -> tuple[list[float], float]:
    """(Dice per foreground class, mean over the classes present) of the run ``d`` (a Distiller) over its
    validation cases. Under DDP each rank validates its share and the sums are reduced."""
    sums = torch.zeros(2, d.num_classes - 1, dtype=torch.float64)
    for i, img in enumerate(d._val_images):
        if i % d.dist.world_size != d.dist.rank:
            continue
        dice = case_dice(d.predict(img).argmax(0), reference(d, i), d.num_classes)
        sums[0] += torch.from_numpy(np.nan_to_num(dice, nan=0.0))
        sums[1] += torch.from_numpy((~np.isnan(dice)).astype(np.float64))
    if d.dist.enabled:
        sums = all_reduce_sum(sums.to(d.device), d.dist).cpu()
    per_class = (sums[0] / sums[1]).numpy()
    mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return [float(v) for v in per_class], mean
