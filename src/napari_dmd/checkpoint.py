"""One checkpoint format: a torch file of plain containers and tensors, written atomically, loaded weights-only.

Loading never unpickles arbitrary objects (``torch.load(weights_only=True)``), so a checkpoint picked by a
user cannot run code.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .models.heads import ScaleHeads
from .models.unet import UNet

FORMAT = "napari-dmd-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the reason."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "napari_dmd_version": __version__, **payload}
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    return data


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> UNet:
    """Rebuild the U-Net a checkpoint describes and load its weights (in eval mode)."""
    cfg = ckpt["model"]
    try:
        model = UNet(int(cfg["spatial_dims"]), int(cfg["in_channels"]), int(cfg["num_classes"]),
                     tuple(cfg["channels"]), norm=cfg.get("norm", "instance"),
                     dropout=float(cfg.get("dropout", 0.0)))
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        useful = [ln for ln in lines if ln.startswith(("Missing key", "Unexpected key", "size mismatch"))]
        first = (useful or lines)[0][:200]
        raise CheckpointError(f"{path}: weights do not fit the architecture it describes ({first})") from e
    return model.eval()


def heads_from_checkpoint(ckpt: dict[str, Any], model: UNet) -> ScaleHeads | None:
    """Rebuild the per-scale heads saved with a student, if any."""
    heads = ckpt.get("heads")
    if not heads:
        return None
    module = ScaleHeads(model.spatial_dims, heads["in_channels"], model.num_classes)
    module.load_state_dict(heads["state_dict"])
    return module.eval()
