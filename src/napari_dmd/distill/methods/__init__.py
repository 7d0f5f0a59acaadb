"""The distillation methods: one module per method (as mdistiller's one file per distiller), one table here.

Each module (:mod:`.none`, :mod:`.ds`, :mod:`.kd`, :mod:`.dkd`, :mod:`.mfd`, :mod:`.dmd`) holds its
:class:`~.base.Method`: name, label and tip for the UI, whether it needs a teacher and per-scale heads, the parts
it reports, the settings that weight it, and the function computing its terms from the loss primitives of
:mod:`napari_dmd.distill.losses`. :data:`TABLE` lists them in order; the config, the CLI, the engine and the
widgets read it. :func:`distill_loss` is the one entry point of the training engine.

Importing this package does not import torch (the CLI reads the names at start-up).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import dkd, dmd, ds, kd, mfd, none
from .base import Inputs, Method

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["TABLE", "NAMES", "Inputs", "Method", "get_method", "menu_methods", "distill_loss"]

#: Every method, in order.
TABLE: tuple[Method, ...] = (none.METHOD, ds.METHOD, kd.METHOD, dkd.METHOD, mfd.METHOD, dmd.METHOD)
#: Their names, as accepted by ``TrainConfig.method`` and ``--method``.
NAMES: tuple[str, ...] = tuple(m.name for m in TABLE)
_BY_NAME = {m.name: m for m in TABLE}


def get_method(name: str) -> Method:
    """The method called ``name``; ValueError naming the known ones otherwise."""
    method = _BY_NAME.get(name) if isinstance(name, str) else None
    if method is None:
        raise ValueError(f"unknown distillation method {name!r}; expected one of {', '.join(NAMES)}")
    return method


def menu_methods() -> tuple[Method, ...]:
    """The methods the Distill widget offers, in its menu's order (those with a ``menu_rank``)."""
    offered = [m for m in TABLE if m.menu_rank is not None]
    return tuple(sorted(offered, key=lambda m: m.menu_rank))


# the target-class terms' defaults per method (balance per class, temperature; None: T); every method is
# class-balanced; DMD's TCKD at T = 1: at four times the CPU budget (GPU, 3 seeds) it beat the deep-supervision control
# on hippocampus 3D (87.3 vs 86.5) where DMD at T = 4 trailed it (85.3), tied on CHAOS, and at the CPU budgets it
# scored higher than T = 4 on every dataset measured (docs/method.md, docs/ablation_gpu)
TARGET_DEFAULTS: dict[str, tuple[bool, float | None]] = {"dmd": (True, 1.0)}

# head supervision's default per method (None in the config: this; 0: the method as published). DMD supervises its
# scale heads with the task loss as well: at or above DMD alone on every dataset, budget and label setting measured,
# and no class lost on CHAOS where DMD alone lost one in 3 of 6 table jobs (docs/method.md)
HEAD_DEFAULTS: dict[str, float] = {"dmd": 1.0}


def head_weight(method: str, head_supervision: float | None) -> float:
    """The weight of the task loss at ``method``'s scale heads: the given one, else the method's default; 0 for a
    method that does not take it (:attr:`Method.takes_head_supervision`)."""
    if not get_method(method).takes_head_supervision:
        return 0.0
    return HEAD_DEFAULTS.get(method, 0.0) if head_supervision is None else float(head_supervision)


def target_settings(method: str, balance: bool | None, target_T: float | None) -> tuple[bool, float | None]:
    """(balance, target temperature) of ``method``: the given values, else the method's defaults."""
    default = TARGET_DEFAULTS.get(method, (True, None))
    return (default[0] if balance is None else bool(balance)), (default[1] if target_T is None else target_T)


def distill_loss(
    method: str,
    student: Tensor,
    student_scales: Sequence[Tensor] | None,
    teacher: Tensor | None,
    target: Tensor,
    *,
    T: float,
    alpha: float,
    beta: float,
    lambda_logit: float,
    lambda_feat: float | None,
    kd_weight: float = 1.0,
    ds_weight: float = 1.0,
    weights: Sequence[float] | None = None,
    ignore_index: int = 255,
    pixel_weight: Tensor | None = None,
    distill_scale: float = 1.0,
    head_supervision: float = 0.0,
    resample: str = "up",
    target_T: float | None = None,
    target_balance: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One entry point for the training engine: task loss plus the method's extra terms.

    method in :data:`NAMES`: none = task; ds = task + ds_weight·deep supervision (control, no teacher needed);
    kd = task + kd_weight·KD; dkd = task + alpha·TCKD + beta·NCKD; mfd = task + lambda_feat·MFD(part="kd");
    dmd = task + lambda_logit·TCKD + lambda_feat·Σ_k w_k NCKD_k (``lambda_feat`` None: 2 / number of scales).
    ``distill_scale`` (linear warm-up, in [0, 1]) multiplies every term beyond the task loss (the
    deep-supervision control too, so it is warmed up like MFD/DMD). ``head_supervision`` > 0 adds
    ``head_supervision · deep supervision`` (the task loss at every scale head, part "ds") to the methods with
    heads that distil (MFD and DMD; an extension: 0 is the method as specified). Shapes as in
    :func:`napari_dmd.distill.losses.dmd_loss`. ``target_T`` is the temperature of the target-class terms (KD;
    TCKD of DKD and DMD), None: ``T`` (the engine passes ``TrainConfig.target_temperature``); ``target_balance``
    averages those terms per class (:func:`~napari_dmd.distill.losses.class_balanced_mean`).
    Returns ``(total, parts)``; parts are detached and always hold "task" and "total" plus the method's
    unweighted parts (its ``Method.parts``; "ds" with head supervision).
    """
    m = get_method(method)
    if not 0.0 <= float(distill_scale) <= 1.0:
        raise ValueError(f"distill_scale must be in [0, 1], got {distill_scale}")
    if m.needs_teacher and teacher is None:
        raise ValueError(f"method {method!r} needs teacher logits, got None")
    from ..losses import deep_supervision_loss, task_loss

    given = {"alpha": alpha, "beta": beta, "kd_weight": kd_weight, "ds_weight": ds_weight,
             "lambda_logit": lambda_logit, "lambda_feat": lambda_feat, "head_supervision": head_supervision}
    task = task_loss(student, target, ignore_index=ignore_index, pixel_weight=pixel_weight)
    inputs = Inputs(student, student_scales, teacher, target, T, weights, ignore_index, resample, target_T,
                    bool(target_balance))
    extra, parts = m.terms(inputs, {k: given[k] for k in m.settings})
    if head_supervision and m.takes_head_supervision:
        ds_term = deep_supervision_loss(student_scales, target, weights=weights, ignore_index=ignore_index)
        parts["ds"] = ds_term
        extra = extra + head_supervision * ds_term

    total = task if extra is None else task + float(distill_scale) * extra
    out = {"task": task.detach(), **{k: v.detach() for k, v in parts.items()}, "total": total.detach()}
    return total, out
