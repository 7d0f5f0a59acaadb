"""Painted corrections feed the next round of distillation.

A *corrections* map is a label map that holds the user's labels where they painted and :data:`IGNORE` (255, "no
label here") elsewhere. :func:`start_round` starts a new run (a *round*) from a student checkpoint with the
corrections as ground truth: the engine takes the teacher's prediction wherever a voxel is IGNORE (see
``Distiller._step``), so the painted voxels override the teacher and the teacher teaches everywhere else. A share
of the training patches (``focus_fraction``: 0.9 for a 2D model, else half) is centred on painted voxels
(``PatchSampler(focus=...)``), so a few painted slices are seen often in a few hundred steps. Each round folder
holds ``round.json`` (parent checkpoint, round number, the corrections files, painted voxel count, cases) and the
corrections files, so the round can be run again from the command line (``napari-dmd distill --resume PARENT
--corrections FILES --data ...``). No Qt, no napari; torch only inside the functions that train.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ConfigError
from .data.case import Case
from .data.io import DataError

if TYPE_CHECKING:
    from .distill.engine import Distiller

__all__ = ["IGNORE", "LR_SCALE", "ROUND_FILE", "ROUND_HEAD_SUPERVISION", "corrections_labels", "load_corrections",
           "match_files", "merge_labels", "painted_mask", "recorded_teacher", "resume_round", "round_info",
           "save_corrections", "split_by_record", "start_round"]

IGNORE = 255
ROUND_FILE = "round.json"
LR_SCALE = 0.2  # a round fine-tunes: the parent's learning rate / 5 (override with lr=...)
ROUND_HEAD_SUPERVISION = 0.0  # rounds train without head supervision unless asked: on CHAOS with a new scanner (3 seeds
# from a round-0 student distilled with it) 72.97 after 3 rounds, all 3 above the teacher, left kidney 66.4, against
# 73.08, 2 of 3, 63.1 with it (docs/results.md, the correction loop)
ROUND_AUGMENT_2D = False  # round_augment's default. On: a 2D round augments (intensity, zoom, rotation). Measured
# both ways: on CHAOS with a new scanner, from a round-0 student distilled without augmentation, 75.3-77.7 after 3
# rounds against 72.9-73.1 and the lost left kidney back (77-81, teacher 77.1); on the phantom demo (student distilled
# with augmentation, one 150-step round) 0.711 against 0.781 without. So off by default; the Review dock's box and
# round_augment=True turn it on (docs/results.md)


# ------------------------------------------------------------------------------------------- arrays
def corrections_labels(labels: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """uint8 corrections: ``labels`` where ``painted`` is True, :data:`IGNORE` elsewhere."""
    labels, painted = np.asarray(labels), np.asarray(painted, dtype=bool)
    if labels.shape != painted.shape:
        raise ValueError(f"labels of shape {labels.shape} and painted mask of shape {painted.shape} differ")
    values = labels[painted]
    if values.size and (values.min() < 0 or values.max() >= IGNORE):
        raise ValueError(f"painted label values must be 0..{IGNORE - 1}, got {int(values.min())}..{int(values.max())}")
    out = np.full(labels.shape, IGNORE, np.uint8)
    out[painted] = values.astype(np.uint8)
    return out


def painted_mask(corrections: np.ndarray) -> np.ndarray:
    """Where a corrections map holds a label (not :data:`IGNORE`)."""
    return np.asarray(corrections) != IGNORE


def merge_labels(label: np.ndarray | None, corrections: np.ndarray | None) -> np.ndarray | None:
    """A case's training labels: its corrections where painted, else its own label (else :data:`IGNORE`, i.e. the
    teacher's prediction); None when it has neither."""
    if corrections is None:
        return label
    corr = np.asarray(corrections)
    base = np.full(corr.shape, IGNORE, np.uint8) if label is None else np.asarray(label).astype(np.uint8)
    if base.shape != corr.shape:
        raise ValueError(f"corrections of shape {corr.shape} differ from the label map's {base.shape}")
    painted = painted_mask(corr)
    return np.where(painted, corr.astype(np.uint8), base)


def save_corrections(path: str | Path, corrections: np.ndarray, *, affine: np.ndarray | None = None,
                     overwrite: bool = False) -> Path:
    """Write a corrections map: NIfTI (``.nii``/``.nii.gz``, with ``affine``) or ``.npz``; IGNORE kept as 255.
    An existing file is refused unless ``overwrite``."""
    path = Path(path)
    data = np.asarray(corrections)
    if data.dtype != np.uint8:
        if data.size and (data.min() < 0 or data.max() > IGNORE):
            raise ValueError(f"{path}: corrections hold values outside 0..{IGNORE}")
        data = data.astype(np.uint8)
    if path.name.endswith(".npz"):
        if path.exists() and not overwrite:
            raise DataError(f"{path}: file already exists; choose another name")
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if affine is None else {"affine": np.asarray(affine, np.float64)}
        with open(path, "wb") as fh:
            np.savez_compressed(fh, corrections=data, **extra)
        return path
    from .data.io import write_image

    return write_image(path, data, affine=affine, overwrite=overwrite)


def load_corrections(path: str | Path) -> np.ndarray:
    """A corrections map (uint8, array order ``(z, y, x)``/``(y, x)``) from NIfTI, ``.npz`` or another image file."""
    path = Path(path)
    if path.name.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                key = "corrections" if "corrections" in z.files else z.files[0]
                data = np.asarray(z[key])
        except (OSError, ValueError, IndexError) as e:
            raise DataError(f"{path}: cannot read corrections ({e})") from e
    else:
        from .data.io import read_image

        data = read_image(path).array
    if not np.issubdtype(data.dtype, np.integer) or (data.size and (data.min() < 0 or data.max() > IGNORE)):
        raise DataError(f"{path}: corrections must be integer labels 0..{IGNORE - 1} with {IGNORE} for unpainted "
                        f"voxels")
    return data.astype(np.uint8)


# ------------------------------------------------------------------------------------------- records
def round_info(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``round.json`` of a run folder (or of a checkpoint's folder), or None when it is not a round."""
    p = Path(run_dir)
    p = p.parent if p.suffix == ".pt" else p
    try:
        info = json.loads((p / ROUND_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _record(ckpt: dict[str, Any]) -> dict[str, list[list[str]]]:
    data = (ckpt.get("run") or {}).get("data") or {}
    return {"train": list(data.get("train") or []), "val": list(data.get("val") or [])}


def split_by_record(ckpt: dict[str, Any], cases: Sequence[Case], where: str) -> tuple[list[Case], list[Case]]:
    """The (training, validation) cases of a checkpoint's run, picked by name from ``cases`` (e.g. all cases of
    ``--data``); a missing training case is refused with one line naming it."""
    rec = _record(ckpt)
    by_name = {c.name: c for c in cases}
    train_names = [r[0] for r in rec["train"]]
    missing = [n for n in train_names if n not in by_name]
    if missing or not train_names:
        what = f"its training case {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        raise DataError(f"{where}: the data given lacks {what}; give the run's own data (--data/--images)"
                        if missing else f"{where}: records no training cases; cannot match the data to it")
    val = [by_name[r[0]] for r in rec["val"] if r[0] in by_name]
    return [by_name[n] for n in train_names], val


def match_files(files: Sequence[str | Path], names: Sequence[str], others: Sequence[str] = ()) -> list[Path | None]:
    """One corrections file (or None) per case name: by the case name in the file name (the longest name that
    fits), else in order when there are exactly as many files as cases; refused with one line otherwise."""
    files = [Path(f) for f in files]
    out: list[Path | None] = [None] * len(names)
    unmatched = []
    for f in files:
        hits = [i for i, n in enumerate(names) if re.search(rf"(?<![0-9A-Za-z]){re.escape(n)}(?![0-9A-Za-z])", f.name)]
        if not hits:
            unmatched.append(f)
            continue
        i = max(hits, key=lambda j: len(names[j]))
        if out[i] is not None:
            raise DataError(f"{f}: names training case {names[i]}, already given by {out[i]}; one file per case")
        out[i] = f
    if not unmatched:
        return out
    if len(files) == len(names) and all(o is None for o in out):
        return list(files)
    f = unmatched[0]
    if any(re.search(rf"(?<![0-9A-Za-z]){re.escape(n)}(?![0-9A-Za-z])", f.name) for n in others):
        raise DataError(f"{f}: names a validation case of the parent run; corrections go to its training cases "
                        f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    raise DataError(f"{f}: names none of the parent run's {len(names)} training cases ({', '.join(names[:3])}"
                    f"{', ...' if len(names) > 3 else ''}); put the case name in the file name, or give one file "
                    f"per training case in their order")


def _check_corrections(case: Case, corr: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    corr = np.asarray(corr)
    if corr.shape != case.image.shape:
        raise DataError(f"{where}: corrections of shape {corr.shape} do not match the image {case.source} of "
                        f"shape {case.image.shape}")
    values = np.unique(corr[painted_mask(corr)])
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise DataError(f"{where}: painted label {int(values.max())} is not a class of this model (0.."
                        f"{num_classes - 1}; {IGNORE} = unpainted)")
    return corr.astype(np.uint8)


def _safe_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "_", name).strip("._") or "case"


def recorded_teacher(ckpt: dict[str, Any], where: str) -> Any:
    """The teacher a checkpoint's run was taught by (its recorded source), loaded; one line when it cannot be."""
    source = ckpt.get("teacher_source")
    if not source:
        raise ConfigError(f"{where}: records no teacher; give one (--teacher)")
    from .teachers import load_teacher

    try:
        return load_teacher(source)
    except Exception as e:  # noqa: BLE001 - one line naming the recorded teacher and the way out
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{where}: cannot load its teacher {source} ({first}); give the teacher with "
                          f"--teacher") from e


def _round_config(ckpt: dict[str, Any], iterations: int, overrides: dict[str, Any], base_lr: Any) -> Any:
    """The parent's settings for a round: ``iterations``, lr = the first run's lr x :data:`LR_SCALE` (not
    compounded over rounds), head supervision :data:`ROUND_HEAD_SUPERVISION`, the parent's resolved patch size,
    dims and classes; with ``round_augment`` (in ``overrides``; default :data:`ROUND_AUGMENT_2D`, off) a 2D
    model's round augments: intensity, zoom and rotation, flips only where the parent flipped (off: the parent's
    augmentation as it was); then the other ``overrides``."""
    from .config import TrainConfig

    cfg = TrainConfig.from_dict(dict(ckpt["config"]))
    cfg.iterations = int(iterations)
    base = float(base_lr) if isinstance(base_lr, int | float) else cfg.lr
    cfg.lr = float(overrides.pop("lr", base * LR_SCALE))
    cfg.head_supervision = overrides.pop("head_supervision", ROUND_HEAD_SUPERVISION)
    cfg.patch_size = [int(p) for p in ckpt.get("patch_size") or cfg.patch_size or []] or None
    cfg.spatial_dims = int(ckpt["model"]["spatial_dims"])
    cfg.num_classes = int(ckpt["model"]["num_classes"])
    cfg.class_names = ckpt.get("class_names") or cfg.class_names
    augment = bool(overrides.pop("round_augment", ROUND_AUGMENT_2D))
    if cfg.spatial_dims == 2 and augment:
        cfg.flips = cfg.flips and cfg.augment  # a parent without augmentation says nothing about flips: off is safe
        cfg.augment = cfg.spatial_augment = True
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise ConfigError(f"unknown setting {k!r} for a corrections round")
        setattr(cfg, k, v)
    return cfg


def _unlabelled(ckpt: dict[str, Any]) -> set[str]:
    """Names of the training cases a run trained without their label (its record's label digest is "none")."""
    return {r[0] for r in _record(ckpt)["train"] if str(r[1]).endswith("/none")}


def _training_cases(unlabelled: set[str], cases: Sequence[Case], corrections: Sequence[np.ndarray | None],
                    num_classes: int, where: Sequence[str]) -> tuple[list[Case], dict[str, np.ndarray]]:
    """Cases with corrections merged over their labels (the labels of ``unlabelled`` cases are dropped) and the
    painted masks by case name."""
    import dataclasses

    train, focus = [], {}
    for case, corr, w in zip(cases, corrections, where):
        label = None if case.name in unlabelled else case.label
        if corr is not None:
            corr = _check_corrections(case, corr, num_classes, w)
            painted = painted_mask(corr)
            if painted.any():
                focus[case.name] = painted
        train.append(dataclasses.replace(case, label=merge_labels(label, corr)))
    return train, focus


def _ensure_foreground(train: list[Case], focus: dict[str, np.ndarray], teacher: Any, cfg: Any) -> list[Case]:
    """Background-only paint (a false positive removed) and no other foreground label: the engine refuses label
    maps without foreground, so the corrected cases' unpainted voxels take the teacher's prediction now (the
    target the engine would give them anyway). Refused with one line when the teacher predicts none either."""
    import dataclasses

    labels = [np.asarray(c.label) for c in train if c.label is not None]
    if not labels or any(((lab > 0) & (lab != IGNORE)).any() for lab in labels):
        return train
    from .evaluation import teacher_segmenter
    from .runtime import resolve_device

    seg = teacher_segmenter(teacher, fallback_patch=cfg.patch_size, device=str(resolve_device(cfg.device)))
    out = []
    for c in train:
        if c.label is not None and c.name in focus:
            c = dataclasses.replace(c, label=np.where(c.label == IGNORE, seg(c.image), c.label).astype(np.uint8))
        out.append(c)
    if not any((np.asarray(c.label) > 0).any() for c in out if c.label is not None):
        raise DataError(f"the corrections of {', '.join(sorted(focus))[:200]} paint background only and the "
                        f"teacher finds no foreground there: nothing but background to learn; paint a foreground "
                        f"voxel too, or correct a case that has some")
    return out


def _distiller(cfg: Any, train: list[Case], val: Sequence[Case], teacher: Any, focus: dict[str, np.ndarray],
               **kw: Any) -> Distiller:
    from .distill.engine import Distiller

    train = _ensure_foreground(train, focus, teacher, cfg)
    with warnings.catch_warnings():  # 255 = unpainted is meant here: no "label 255 marks voxels" warning
        warnings.filterwarnings("ignore", message=".*marks voxels to ignore.*")
        return Distiller(cfg, train, val_cases=list(val), teacher=teacher, focus=focus or None, **kw)


def _carry_over(parent: Path, prior: dict[str, Any], cases: Sequence[Case],
                corrections: Sequence[np.ndarray | None]) -> list[np.ndarray | None]:
    """The parent round's corrections (files beside ``parent``, by case name) under the new ones."""
    files = dict(zip(prior.get("cases", []), prior.get("corrections", [])))
    out = []
    for case, corr in zip(cases, corrections):
        path = parent.parent / files[case.name] if case.name in files else None
        old = load_corrections(path) if path is not None and path.is_file() else None
        if old is not None and old.shape != case.image.shape:
            raise DataError(f"{path}: corrections of shape {old.shape} do not match the image {case.source}")
        if old is None or corr is None:
            out.append(corr if old is None else old)
        else:
            out.append(np.where(painted_mask(corr), np.asarray(corr, np.uint8), old))
    return out


# ------------------------------------------------------------------------------------------- rounds
def start_round(parent: str | Path, cases: Sequence[Case], corrections: Sequence[np.ndarray | None], *,
                teacher: Any = None, iterations: int = 300, out: str | Path | None = None,
                val_cases: Sequence[Case] | None = None, sources: Sequence[str] | None = None,
                carry: bool = True, **overrides: Any) -> Distiller:
    """A new round: a new run folder whose student starts from ``parent``'s weights (a student's ``last.pt`` or
    ``best.pt``) and trains ``iterations`` steps on ``cases`` with ``corrections`` (one per case, or None) as
    ground truth over the teacher's prediction elsewhere; a case's own label stays unless the parent trained
    without it. Settings: the parent's, ``lr`` = parent lr x :data:`LR_SCALE` (0.2), no head supervision
    (:data:`ROUND_HEAD_SUPERVISION`), ``round_augment=True``: a 2D round with intensity, zoom and rotation
    augmentation (default :data:`ROUND_AUGMENT_2D`, off), then ``overrides``
    (e.g. ``correct_teacher=True``: the teacher's logits at a painted voxel swapped so that the painted class is
    its top one; measured worse on CHAOS, so off by default, see docs/results.md).
    With ``carry`` a parent round's corrections stay (the new ones override them where both are painted), so a
    round's corrections files are cumulative. ``teacher``: the parent's recorded teacher unless given.
    ``val_cases`` validate (none by default). ``out``: default ``round-<n>-<date>-<time>`` beside the
    parent's run folder. Writes ``round.json`` and the corrections files there; returns the engine (drive it
    with :func:`napari_dmd.runner.drive`)."""
    from .checkpoint import load_checkpoint
    from .runs import default_output_dir

    parent = Path(parent)
    ckpt = load_checkpoint(parent)
    if ckpt.get("kind", "student") != "student":
        raise ConfigError(f"{parent}: a {ckpt.get('kind')} checkpoint; a round continues a student (its last.pt "
                          f"or best.pt)")
    cases, corrections = list(cases), list(corrections)
    if len(corrections) != len(cases):
        raise ValueError(f"{len(corrections)} corrections for {len(cases)} cases; give one (or None) per case")
    prior = round_info(parent) or {}
    cfg = _round_config(ckpt, iterations, dict(overrides), prior.get("base_lr"))
    if teacher is None:
        teacher = recorded_teacher(ckpt, str(parent))
    where = list(sources) if sources else [f"corrections of {c.name}" for c in cases]
    new_voxels = sum(int(painted_mask(c).sum()) for c in corrections if c is not None)
    if carry:
        corrections = _carry_over(parent, prior, cases, corrections)
    dropped = _unlabelled(ckpt) | set(prior.get("labels_dropped", []))
    train, focus = _training_cases(dropped, cases, corrections, cfg.num_classes, where)
    n = int(prior["round"]) + 1 if isinstance(prior.get("round"), int) else 1
    folder = Path(out) if out else default_output_dir(f"round-{n}", root=parent.resolve().parent.parent)
    d = _distiller(cfg, train, list(val_cases or []), teacher, focus, output_dir=folder,
                   architecture=ckpt["model"])  # as trained, also from a preset since renamed
    saved = ckpt["model"]
    if saved.get("channels") != list(d.model.channels):
        raise ConfigError(f"{parent}: its model {saved} does not match the round's ({d.model.config()})")
    d.model.load_state_dict(ckpt["state_dict"])
    if d.heads is not None and ckpt.get("heads"):
        d.heads.load_state_dict(ckpt["heads"]["state_dict"])
    files, named = [], []
    folder.mkdir(parents=True, exist_ok=True)
    for case, corr in zip(cases, corrections):
        if corr is None:
            continue
        name = f"corrections-{_safe_name(case.name)}.nii.gz"
        save_corrections(folder / name, corr, affine=case.affine)
        files.append(name)
        named.append(case.name)
    info = {"parent": str(parent), "round": n, "corrections": files, "cases": named,
            "painted_voxels": new_voxels, "painted_voxels_total": int(sum(int(m.sum()) for m in focus.values())),
            "train_cases": [c.name for c in train], "val_cases": [c.name for c in d.val_cases],
            "labels_dropped": sorted(dropped & {c.name for c in cases}),
            "iterations": cfg.iterations, "lr": cfg.lr, "correct_teacher": cfg.correct_teacher,
            "base_lr": prior.get("base_lr", float(ckpt["config"].get("lr", cfg.lr))),
            "teacher": None if teacher is None else str(getattr(teacher, "source", "")),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (folder / ROUND_FILE).write_text(json.dumps(info, indent=2))
    return d


def resume_round(last: str | Path, cases: Sequence[Case], *, teacher: Any = None, **safe: Any) -> Distiller:
    """Resume a round exactly, in its folder, from its ``last.pt``: its own corrections (from ``round.json``)
    merged over the same cases (picked by name from ``cases``), its settings (``safe``: e.g. iterations)."""
    from .checkpoint import load_checkpoint
    from .config import TrainConfig

    last = Path(last)
    info = round_info(last)
    if info is None:
        raise ConfigError(f"{last}: not a corrections round (no {ROUND_FILE} beside it)")
    ckpt = load_checkpoint(last)
    train, val = split_by_record(ckpt, cases, str(last))
    by_file = dict(zip(info.get("cases", []), info.get("corrections", [])))
    corrections = [load_corrections(last.parent / by_file[c.name]) if c.name in by_file else None for c in train]
    cfg = TrainConfig.from_dict(dict(ckpt["config"]))
    for k, v in safe.items():
        setattr(cfg, k, v)
    if teacher is None:
        teacher = recorded_teacher(ckpt, str(last))
    dropped = set(info.get("labels_dropped", []))
    train, focus = _training_cases(dropped, train, corrections, int(ckpt["model"]["num_classes"]),
                                   [str(last.parent / by_file.get(c.name, "")) for c in train])
    return _distiller(cfg, train, val, teacher, focus, output_dir=last.parent, resume=last)
