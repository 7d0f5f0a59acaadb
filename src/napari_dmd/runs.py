"""Run folders: one output folder belongs to one run.

* A run started without a folder gets a new one under :func:`runs_root` (:func:`default_output_dir`).
* A new run refuses a folder that already holds run files (``last.pt``, ``best.pt``, ``config.yaml``,
  ``events.jsonl``, ``tensorboard``), whether another run's or the user's own: nothing there is replaced.
* A run is resumed in its own folder (the folder of the ``last.pt`` it resumes from); another output folder is
  refused, so that no other run's files are replaced or mixed in.
* A resume must keep what defines the run: every setting but :data:`SAFE_TO_CHANGE`, the teacher (a digest of its
  weights, else of its file) and the data (a digest of each case's image and label). Each checkpoint records them
  under ``"run"``; a refusal names each setting that changed, with the old and the new value.
* On resume, ``events.jsonl`` is cut back to the resumed iteration (the steps after the checkpoint are run again)
  and tensorboard purges its later steps, so no step is logged twice.
* A failed write of a run file names the file, the reason (full disk, file size limit) and the way out.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import jsonsafe
from .config import ConfigError
from .safe_paths import atomic_write_text, resolve_inside

if TYPE_CHECKING:  # numpy and torch are imported where used: the CLI imports this module for RUN_FILES
    import numpy as np

    from .data.cases import Case

RUN_FILES = ("last.pt", "best.pt", "config.yaml", "events.jsonl", "tensorboard")
# settings that change how fast, where and for how long a run trains, not what it learns from
SAFE_TO_CHANGE = ("iterations", "val_interval", "checkpoint_interval", "log_interval", "device", "amp", "cpu_bf16",
                  "channels_last", "compile", "num_workers", "num_threads", "tensorboard", "class_names")
_RESOLVED = ("spatial_dims", "num_classes", "patch_size", "feature_scales")  # None in a config: chosen by the run
_SAMPLE = 1 << 20  # values per array that enter a case's digest (evenly strided)


class TrainingError(Exception):
    """Training cannot go on; the message says why and what to change (also ``distill.engine.TrainingError``)."""


# ------------------------------------------------------------------------------------------- folders
def output_folder(output_dir: str | Path | None, resume: str | Path | None) -> Path | None:
    """The run folder: ``output_dir``, else the folder of the checkpoint resumed, else None (a default)."""
    if output_dir:
        return Path(output_dir)
    return Path(resume).parent if resume else None


def run_files_in(folder: str | Path) -> list[str]:
    """The run files present in ``folder`` (a dangling link counts)."""
    folder = Path(folder)
    return [n for n in RUN_FILES if (folder / n).exists() or (folder / n).is_symlink()]


def runs_root() -> Path:
    """Where new runs go unless a folder is given: ``$NAPARI_DMD_RUNS``, else ``~/napari-dmd-runs``."""
    env = os.environ.get("NAPARI_DMD_RUNS")
    return Path(env).expanduser() if env else Path.home() / "napari-dmd-runs"


def free_folder(path: str | Path) -> Path:
    """``path`` if it holds no run file, else the first ``path-2``, ``path-3``, ... that holds none."""
    path = Path(path)
    candidate, i = path, 2
    while run_files_in(candidate):
        candidate, i = path.with_name(f"{path.name}-{i}"), i + 1
    return candidate


def default_output_dir(kind: str, root: str | Path | None = None) -> Path:
    """A new run folder ``<root>/<kind>-<date>-<time>`` (``root``: :func:`runs_root`), never one in use."""
    base = Path(root) if root is not None else runs_root()
    return free_folder(base / f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")


def check_new_run_folder(folder: str | Path) -> None:
    """Refuse to start a new run where run files exist (another run's, or the user's own config.yaml)."""
    folder = Path(folder)
    found = run_files_in(folder)
    if "last.pt" in found:
        raise ConfigError(f"{folder} already holds a run (last.pt); resume it with resume={folder / 'last.pt'} "
                          f"or choose another output folder")
    if found:
        raise ConfigError(f"{folder} already holds {', '.join(found)} (another run's files or your own), which a "
                          f"new run would replace; choose an empty or new output folder, or move them away")


def check_resume_folder(resume: str | Path, folder: str | Path) -> None:
    """A run is resumed in its own folder: refuse another output folder (its files would be replaced or mixed)."""
    own = Path(resume).parent
    if own.resolve() != Path(folder).resolve():
        raise ConfigError(f"{folder}: not the folder of the run being resumed ({resume} belongs to {own}); a run "
                          f"continues in its own folder: give --out {own} or leave --out out")


# -------------------------------------------------------------------------------------- fingerprints
def _digest_array(a: np.ndarray | None) -> str:
    import numpy as np

    if a is None:
        return "none"
    flat = np.ascontiguousarray(a).reshape(-1)
    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
    h.update(np.ascontiguousarray(flat[:: max(1, flat.size // _SAMPLE)]).tobytes())
    return h.hexdigest()[:16]


def data_fingerprint(train: Sequence[Case], val: Sequence[Case]) -> dict[str, list[list[str]]]:
    """[name, digest of image and label] per training and validation case (label-free cases say so)."""
    def rows(cases: Sequence[Case]) -> list[list[str]]:
        return [[c.name, f"{_digest_array(c.image)}/{_digest_array(c.label)}"] for c in cases]
    return {"train": rows(train), "val": rows(val)}


def teacher_fingerprint(teacher: Any) -> dict[str, str] | None:
    """Source and digest of a teacher: of its weights where it has them, else of its file (or folder listing)."""
    if teacher is None:
        return None
    import torch

    h = hashlib.sha256(f"{teacher.num_classes}/{teacher.spatial_dims}/{teacher.normalization}".encode())
    params = getattr(teacher, "parameters", None)
    tensors = [t for t in (params() if callable(params) else []) if not t.is_meta]  # ONNX: shapes only
    src = Path(str(teacher.source))
    if tensors:
        for t in tensors:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif src.is_file():
        with open(src, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    elif src.is_dir():
        for p in sorted(q for q in src.rglob("*") if q.is_file()):
            h.update(f"{p.relative_to(src)}:{p.stat().st_size};".encode())
    else:
        h.update(str(teacher.source).encode())
    return {"source": str(teacher.source), "digest": h.hexdigest()[:32]}


def effective_settings(config: dict[str, Any], model: dict[str, Any], **resolved: Any) -> dict[str, Any]:
    """The settings that define a run, with the values chosen at run time (patch size, scales, ...) filled in."""
    out = {k: v for k, v in config.items() if k not in SAFE_TO_CHANGE and k != "model"}
    out["model"] = {k: model.get(k) for k in ("channels", "norm", "dropout", "in_channels")}
    out.update({k: v for k, v in resolved.items() if v is not None})
    return json.loads(json.dumps(out, default=str))  # tuples -> lists, numbers as saved


def run_record(d: Any) -> dict[str, Any]:
    """What a checkpoint records about its run (checked on resume); ``d`` is a Distiller."""
    settings = effective_settings(d.config.to_dict(), d.model.config(), spatial_dims=d.spatial_dims,
                                  num_classes=d.num_classes, patch_size=list(d.patch_size),
                                  feature_scales=d.feature_scales, normalization=d.normalization)
    return {"settings": settings, "teacher": teacher_fingerprint(d.teacher),
            "data": data_fingerprint(d.train_cases, d.val_cases)}


def _saved_settings(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The recorded settings, or for a checkpoint written before they were recorded, those it implies."""
    run = ckpt.get("run")
    if isinstance(run, dict) and isinstance(run.get("settings"), dict):
        return run["settings"]
    model = ckpt.get("model") or {}
    heads = ckpt.get("heads") or {}
    return effective_settings(ckpt.get("config") or {}, model, spatial_dims=model.get("spatial_dims"),
                              num_classes=model.get("num_classes"), patch_size=ckpt.get("patch_size"),
                              feature_scales=heads.get("feature_scales"), normalization=ckpt.get("normalization"))


# settings added after runs were already written, with the value every run written before them used
LEGACY_SETTINGS: dict[str, Any] = {"target_balance": False, "target_temperature": "temperature"}


def _legacy(key: str, saved: dict[str, Any]) -> Any:
    """What a run written before setting ``key`` existed used for it (None for other keys)."""
    value = LEGACY_SETTINGS.get(key)
    return saved.get("temperature") if value == "temperature" else value


def apply_legacy_settings(cfg: Any, ckpt: dict[str, Any]) -> list[str]:
    """Give ``cfg`` (a TrainConfig being resumed) the old value of each setting its checkpoint predates, so an older
    run resumes as it was trained instead of being refused; returns the names set."""
    saved = _saved_settings(ckpt)
    names = [k for k in LEGACY_SETTINGS if k not in saved]
    for key in names:
        value = LEGACY_SETTINGS[key]
        setattr(cfg, key, getattr(cfg, value) if value == "temperature" else value)
    return names


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."


def _data_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    parts, example = [], ""
    for part, word in (("train", "training"), ("val", "validation")):
        old = Counter(tuple(r) for r in saved.get(part, []))
        new = Counter(tuple(r) for r in now.get(part, []))
        if old != new:
            gone, came = sorted(old - new), sorted(new - old)
            parts.append(f"{word} cases: {len(gone)} gone or changed, {len(came)} new or changed")
            example = example or (came or gone)[0][0]
    return [f"data ({'; '.join(parts)}; e.g. {example})"] if parts else []


def resume_changes(ckpt: dict[str, Any], record: dict[str, Any], teacher_source: str | None) -> list[str]:
    """What a resume would change that it must not: 'setting (was X, now Y)' phrases."""
    saved, now = _saved_settings(ckpt), record["settings"]
    changes = []
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key, _legacy(key, saved)), now.get(key)
        if old is None and key in _RESOLVED and "run" not in ckpt:
            continue  # an older checkpoint does not say what the run chose
        if old != new:
            changes.append(f"{key} (was {_short(old)}, now {_short(new)})")
    run = ckpt.get("run") if isinstance(ckpt.get("run"), dict) else {}
    old_t, new_t = run.get("teacher"), record["teacher"]
    if "run" not in ckpt:  # older checkpoint: compare the teacher's file name and the validation cases
        old_src = ckpt.get("teacher_source")
        if (old_src is None) != (teacher_source is None) or \
                (old_src and Path(old_src).resolve() != Path(str(teacher_source)).resolve()):
            changes.append(f"teacher (was {old_src}, now {teacher_source})")
        val_now = [r[0] for r in record["data"]["val"]]
        if ckpt.get("val_cases") is not None and list(ckpt["val_cases"]) != val_now:
            changes.append("data (other validation cases)")
        return changes
    if (old_t is None) != (new_t is None) or (old_t and old_t.get("digest") != new_t.get("digest")):
        was = old_t["source"] if old_t else "none"
        changes.append(f"teacher (was {was}, now {new_t['source'] if new_t else 'none'}"
                       + (": other weights" if old_t and new_t else "") + ")")
    return changes + _data_changes(run.get("data") or {}, record["data"])


def check_resume(path: str | Path, ckpt: dict[str, Any], d: Any) -> None:
    """Refuse a resume into another folder, or with other settings, teacher or data (each change named)."""
    check_resume_folder(path, d.output_dir)
    changes = resume_changes(ckpt, d.run_record, None if d.teacher is None else str(d.teacher.source))
    if changes:
        raise ConfigError(
            f"{path}: cannot resume with changes: {'; '.join(changes)}; a resumed run keeps its settings, teacher "
            f"and data (only {', '.join(SAFE_TO_CHANGE[:-1])} may change); repeat the run's settings (--config "
            f"{Path(path).parent / 'config.yaml'}) or start a new run in another folder")


# ---------------------------------------------------------------------------------------- writing
def write_error(path: str | Path, e: OSError, what: str, kept: str, last: Path | None) -> str:
    """One line for a failed write of a run file: the file, the reason, what is safe and how to go on."""
    code = getattr(e, "errno", None)
    if code == errno.ENOSPC:
        reason, fix = "No space left on device", "free space"
    elif code == getattr(errno, "EDQUOT", -1):
        reason, fix = "disk quota exceeded", "free space"
    elif code == errno.EFBIG:
        reason, fix = "file size limit reached (File too large)", "raise the file size limit (ulimit -f)"
    else:
        reason, fix = f"could not write ({e.strerror or e})", "free disk space or choose another output folder"
    then = f"resume from {last}" if last is not None and last.exists() else \
        f"start the run again in an empty folder (no last.pt to resume from in {Path(path).parent})"
    return f"{path}: {reason} while writing {what}; {kept}; {fix} and {then}"


class EventLog:
    """``events.jsonl``, appended to line by line; a failed write names the file (TrainingError)."""

    def __init__(self, path: Path, last: Path) -> None:
        self.path, self.last = path, last
        self._file = open(path, "a")  # noqa: SIM115 - closed by close()

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._file.write(jsonsafe.dumps(record) + "\n")  # NaN -> null: strict JSON
            self._file.flush()
        except OSError as e:
            raise TrainingError(write_error(self.path, e, "the event log", "the checkpoints are not affected",
                                            self.last)) from e

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:  # the write that failed was reported already
            pass


def trim_events(path: Path, iteration: int) -> int:
    """Drop the events after ``iteration`` (and a line cut by a kill) from ``path``; returns how many."""
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            ok = int(json.loads(line).get("iteration", 0)) <= iteration
        except (ValueError, TypeError, AttributeError):
            ok = False
        keep += [line] if ok else []
        dropped += 0 if ok else 1
    if dropped:
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))
    return dropped


def open_run_folder(d: Any, resumed: bool) -> EventLog:
    """Create the run folder, write config.yaml, cut events.jsonl back to a resumed iteration, open the log."""
    for name in RUN_FILES:
        resolve_inside(d.output_dir, name, what="run file")  # no symbolic link leads out of the folder
    d.output_dir.mkdir(parents=True, exist_ok=True)
    target = d.output_dir / "config.yaml"
    try:
        atomic_write_text(target, yaml.safe_dump(d.config.to_dict(), sort_keys=False))
        if resumed:
            target = d.output_dir / "events.jsonl"
            trim_events(target, d.iteration)
        return EventLog(d.output_dir / "events.jsonl", d.last_path)
    except OSError as e:
        raise TrainingError(write_error(target, e, f"the run folder {d.output_dir}", "no step was run",
                                        d.last_path if resumed else None)) from e


def open_tensorboard(d: Any, resumed: bool) -> Any:
    """A SummaryWriter in the run folder (None without tensorboard); on resume, later steps are purged."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(d.output_dir / "tensorboard"), purge_step=d.iteration if resumed else None)
