"""One checkpoint format: a torch file of plain containers and tensors, written atomically, loaded weights-only.

Loading never unpickles arbitrary objects (``torch.load(weights_only=True)``), so a checkpoint picked by a
user cannot run code.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .models.heads import ScaleHeads
from .models.unet import UNet
from .safe_paths import atomic_write

FORMAT = "napari-dmd-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the reason."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (random temp file in the same folder, fsync, umask mode, rename).

    A failed write (full disk, file size limit) raises ``OSError`` with its errno and ``path`` as file name and
    leaves the previous file at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "napari_dmd_version": __version__, **payload}
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    return atomic_write(path, lambda f: _torch_save(data, f))


class _WriteRecorder:
    """A file wrapper that keeps the ``OSError`` of a failed write: torch reports it only as "unexpected pos"."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, b: Any) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def _torch_save(data: dict[str, Any], f: Any) -> None:
    rec = _WriteRecorder(f)
    try:
        torch.save(data, rec)
    except RuntimeError as e:  # "[enforce fail at inline_container.cc] unexpected pos": the real error is below
        if rec.error is not None:
            raise rec.error from e
        raise


def load_error_reason(path: str | Path, exc: BaseException) -> str:
    """Why ``torch.load`` failed on ``path``, in a few words (torch's own messages run to paragraphs)."""
    text = str(exc)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot read the file: {e.strerror or e}"
    if head.startswith(b"PK"):
        if "zip archive" in text or "central directory" in text:
            return "the file is truncated or corrupt: incomplete zip archive"
    elif not head.startswith(b"\x80"):
        return "not a PyTorch file: neither a zip archive nor a pickle; it may be another kind of file"
    if "Unsupported global" in text:
        name = text.split("Unsupported global:", 1)[1].split("was not an allowed", 1)[0].strip()
        return f"it holds objects other than weights ({name.removeprefix('GLOBAL ')}) and is refused unread"
    if "Weights only load failed" in text:
        return "not a weights-only PyTorch file; it may be corrupt, or pickled by another program"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a napari-dmd checkpoint safely (weights only), checking its format and version."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says what matters
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle is reported, never executed
        raise CheckpointError(f"{path}: not a readable napari-dmd checkpoint ({load_error_reason(path, e)})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-dmd checkpoint (no '{FORMAT}' marker)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        hint = (f"; it was written by napari-dmd {data.get('napari_dmd_version', '?')}: update napari-dmd to read "
                "it") if newer else ""
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is not supported by this napari-dmd "
            f"(reads version {FORMAT_VERSION}){hint}")
    for key in ("model", "state_dict"):
        if key not in data:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    check_values(path, data)
    return data


MAX_PATCH_VOXELS = 512 ** 3  # a training patch beyond this cannot be a real one (and would exhaust memory)


def _ints(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _int_list(value: Any, lo: int, hi: int, max_len: int = 16) -> bool:
    return isinstance(value, list | tuple) and 0 < len(value) <= max_len and all(_ints(v, lo, hi) for v in value)


def check_values(path: str | Path, data: dict[str, Any]) -> None:
    """Refuse values a real checkpoint cannot hold (one line: "<file>: invalid checkpoint: ..."). Only keys that
    are present are checked; what is missing is reported where it is needed."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: invalid checkpoint: {what}")

    model = data["model"]
    if not isinstance(model, dict):
        raise bad(f"'model' must be a mapping of architecture settings, not {type(model).__name__}")
    dims = model.get("spatial_dims")
    if dims is not None and dims not in (2, 3):
        raise bad(f"spatial_dims {dims!r} (must be 2 or 3)")
    for key, hi in (("in_channels", 64), ("num_classes", 1000)):
        if key in model and not _ints(model[key], 1, hi):
            raise bad(f"{key} {model[key]!r} (must be an integer from 1 to {hi})")
    if "channels" in model and not _int_list(model["channels"], 1, 4096):
        raise bad(f"channels {model['channels']!r} (must be a list of 1 to 16 integers from 1 to 4096)")
    patch = data.get("patch_size")
    if patch is not None:
        if not _int_list(patch, 1, 1 << 16, max_len=3):
            raise bad(f"patch_size {patch!r} (must be a list of 2 or 3 positive integers)")
        if dims in (2, 3) and len(patch) != dims:
            raise bad(f"patch_size {list(patch)} has {len(patch)} entries but the model is {dims}D")
        if math.prod(patch) > MAX_PATCH_VOXELS:
            raise bad(f"patch_size {list(patch)} is absurdly large ({math.prod(patch):,} voxels; a training patch "
                      f"has at most {MAX_PATCH_VOXELS:,})")
    spacing = data.get("spacing")
    if spacing is not None and not (isinstance(spacing, list | tuple) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in spacing)):
        raise bad(f"spacing {spacing!r} (must be a list of positive numbers)")
    names = data.get("class_names")
    if names is not None and not (isinstance(names, list | tuple) and all(isinstance(n, str) for n in names)):
        raise bad("class_names must be a list of strings")
    if not isinstance(data.get("normalization", ""), str | None):
        raise bad(f"normalization {data['normalization']!r} (must be a scheme name)")
    summary = data.get("train_data")
    if summary is not None and not _valid_summary(summary):
        raise bad("'train_data' must be a training-data summary (spatial_dims, spacing, 3 intensity "
                  "percentiles, cases)")
    heads = data.get("heads")
    if heads:
        if not isinstance(heads, dict) or not isinstance(heads.get("state_dict"), dict):
            raise bad("'heads' must be a mapping with 'in_channels', 'feature_scales' and 'state_dict'")
        if not _int_list(heads.get("in_channels"), 1, 4096):
            raise bad(f"heads in_channels {heads.get('in_channels')!r} (must be a list of channel counts)")
        scales = heads.get("feature_scales")
        if scales is not None and not (_int_list(scales, 0, 16) and len(scales) == len(heads["in_channels"])):
            raise bad(f"heads feature_scales {scales!r} (must list one decoder stage per head)")


def _numbers(value: Any, n: int | None = None) -> bool:
    return isinstance(value, list | tuple) and (n is None or len(value) == n) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)


def _valid_summary(summary: Any) -> bool:
    """A training-data summary as :func:`napari_dmd.guard.data_summary` writes it (every key optional)."""
    if not isinstance(summary, dict):
        return False
    p, sp = summary.get("intensity_percentiles"), summary.get("spacing")
    return (summary.get("spatial_dims") in (None, 2, 3) and (p is None or _numbers(p, 3))
            and (sp is None or (_numbers(sp) and all(v > 0 for v in sp)))
            and (summary.get("image_dims") is None or _int_list(summary.get("image_dims"), 2, 3, max_len=2))
            and (summary.get("cases") is None or _ints(summary.get("cases"), 0, 1 << 30)))


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> UNet:
    """Rebuild the U-Net a checkpoint describes and load its weights (in eval mode)."""
    cfg = ckpt["model"]
    try:
        model = UNet.from_config(cfg)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        useful = [ln for ln in lines if ln.startswith(("Missing key", "Unexpected key", "size mismatch"))]
        first = (useful or lines)[0][:200]
        raise CheckpointError(f"{path}: weights do not fit the architecture it describes ({first})") from e
    return model.eval()


def heads_from_checkpoint(ckpt: dict[str, Any], model: UNet, path: str | Path = "checkpoint") -> ScaleHeads | None:
    """Rebuild the per-scale heads saved with a student, if any (``path`` names the file in errors)."""
    heads = ckpt.get("heads")
    if not heads:
        return None
    try:
        module = ScaleHeads(model.spatial_dims, list(heads["in_channels"]), model.num_classes)
        module.load_state_dict(heads["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        first = ([ln for ln in lines if ln.startswith(("Missing key", "Unexpected key", "size mismatch"))]
                 or lines)[0][:200]
        raise CheckpointError(f"{path}: invalid checkpoint: its heads do not fit "
                              f"the model ({first})") from e
    return module.eval()
