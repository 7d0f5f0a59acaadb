"""A run's checkpoints: what they hold, writing them atomically, and restoring a run from ``last.pt``.

``last.pt`` holds the training state (optimizer, sampler streams, RNG, loss scaler, teacher references) as
well as the weights; ``best.pt`` holds the weights of the best validation so far. On resume the best score is
the higher of the two files' (a ``best.pt`` written after the last ``last.pt`` before a kill is not then
replaced by a worse model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import runs
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..config import ConfigError
from ..guard import data_summary
from ..runs import TrainingError


def payload(d: Any, with_state: bool) -> dict[str, Any]:
    """The checkpoint of the run ``d`` (a Distiller): weights, heads, settings, history, run record; with the
    training state when ``with_state``."""
    spacing = np.median(np.array([c.spacing[-d.spatial_dims:] for c in d.train_cases]), axis=0)
    data: dict[str, Any] = {
        "kind": d.role,
        "model": d.model.config(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in d.model.state_dict().items()},
        "heads": None if d.heads is None else {
            "in_channels": d.heads.in_channels, "feature_scales": d.feature_scales,
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in d.heads.state_dict().items()}},
        "config": d.config.to_dict(),
        "class_names": d.config.class_names,
        "normalization": d.normalization,
        "spacing": [float(s) for s in spacing],
        "train_data": _data_summary(d),
        "patch_size": list(d.patch_size),
        "iteration": d.iteration,
        "best_dice": d.best_dice,
        "history": d.history,
        "val_cases": [c.name for c in d.val_cases],
        "teacher_source": None if d.teacher is None else str(d.teacher.source),
        "run": d.run_record,
    }
    if with_state:
        samplers = d._sampler_states if d._sampler_states else [d.sampler.state_dict()]
        data["train_state"] = {
            "optimizer": d.optimizer.state_dict(),
            "sampler": json.dumps(samplers[0]),
            "samplers": [json.dumps(s) for s in samplers],
            "torch_rng": torch.get_rng_state(),
            "scaler": d.scaler.state_dict(),
            "val_references": {k: torch.from_numpy(v.astype(np.int64)) for k, v in d.val_references.items()},
        }
    return data


def _data_summary(d: Any) -> dict[str, Any]:
    """The training data's summary (:func:`napari_dmd.guard.data_summary`), computed once per run."""
    summary = getattr(d, "_data_summary", None)
    if summary is None:
        summary = data_summary(d.train_cases, d.spatial_dims)
        d._data_summary = summary
    return summary


def write(d: Any, path: Path, with_state: bool) -> Path:
    """Write a checkpoint atomically; a failed write (full disk, read-only folder) keeps the old file."""
    try:
        return save_checkpoint(path, payload(d, with_state=with_state))
    except OSError as e:
        kept = f"the previous {path.name} is intact" if path.exists() else "no earlier checkpoint exists"
        raise TrainingError(runs.write_error(path, e, "the checkpoint", kept, d.last_path)) from e


def saved_best(path: Path) -> float | None:
    """The best score recorded in ``path`` (a ``best.pt``), or None when there is none or it is unreadable."""
    if not path.is_file():
        return None
    try:
        value = load_checkpoint(path).get("best_dice")
    except CheckpointError:
        return None
    return float(value) if isinstance(value, int | float) else None


def load_state(d: Any, path: str | Path, ckpt: dict[str, Any] | None = None) -> None:
    """Restore the run ``d`` (a Distiller) from ``path`` (its ``last.pt``; ``ckpt``: that file already loaded):
    weights, optimizer, samplers, RNG, iteration, history and best score; refused with the reason for another
    model, folder, settings or data."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    saved = ckpt["model"]
    if saved.get("channels") != list(d.model.channels) or saved.get("num_classes") != d.num_classes or \
            saved.get("spatial_dims") != d.spatial_dims:
        raise CheckpointError(f"{path}: the checkpoint's model {saved} does not match this run's "
                              f"({d.model.config()})")
    state = ckpt.get("train_state")
    if state is None:
        raise CheckpointError(f"{path}: holds no training state to resume from (use last.pt, not best.pt)")
    runs.check_resume(path, ckpt, d)  # its own folder; same settings, teacher and data
    d.model.load_state_dict(ckpt["state_dict"])
    if d.heads is not None and ckpt.get("heads"):
        d.heads.load_state_dict(ckpt["heads"]["state_dict"])
    d.optimizer.load_state_dict(state["optimizer"])
    samplers = state.get("samplers") or [state["sampler"]]
    if d.dist.rank < len(samplers):  # a rank without a saved stream keeps its own seeded one
        d.sampler.load_state_dict(json.loads(samplers[d.dist.rank]))
    torch.set_rng_state(state["torch_rng"])
    if state.get("scaler"):
        d.scaler.load_state_dict(state["scaler"])
    d.val_references = {k: v.numpy().astype(np.uint8) for k, v in state.get("val_references", {}).items()}
    d.iteration = int(ckpt.get("iteration", 0))
    best = float(ckpt.get("best_dice", -1.0))
    on_disk = saved_best(d.best_path)  # written after last.pt before a kill: its score is the one to beat
    d.best_dice = max(best, on_disk) if on_disk is not None and np.isfinite(on_disk) else best
    d.history = list(ckpt.get("history", []))
    if d.iteration > d.total:
        raise ConfigError(f"{path}: the run is already at iteration {d.iteration}, beyond iterations="
                          f"{d.total}; raise iterations to continue")
