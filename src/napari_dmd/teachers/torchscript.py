"""TorchScript teachers: a ``torch.jit.save`` file whose forward returns per-pixel class logits.

A TorchScript file carries a program (its ``code/`` folder), which runs in TorchScript's interpreter each time
the teacher is called. Loading does not unpickle Python objects, but the program is the author's code, so
napari-dmd runs it only when the caller says the file is trusted (``trust=True``, CLI ``--trust-teacher``).

Metadata: files written by :func:`napari_dmd.export.export_torchscript` hold ``napari_dmd.json`` (classes,
normalization, patch size, spacing) as an extra file; for other files the number of classes is read from a
test call and the dimensionality from the caller or from which of a 2D or 3D test call works.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .base import FirstTensor, ModelTeacher, TeacherError, apply_overrides, probe_teacher

METADATA_FILE = "napari_dmd.json"


def is_torchscript_file(path: str | Path) -> bool:
    """True for a TorchScript archive (a zip with a ``code/`` folder or ``constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``napari_dmd.json`` extra file of a TorchScript archive ({} if absent); reads no code."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith(f"/extra/{METADATA_FILE}"):
                    return json.loads(z.read(name).decode("utf-8"))
    except (OSError, zipfile.BadZipFile, ValueError):
        return {}
    return {}


def load_torchscript_teacher(path: str | Path, *, trust: bool = False, spatial_dims: int | None = None,
                             num_classes: int | None = None, class_names: Sequence[str] | None = None,
                             normalization: str | None = None, patch_size: Sequence[int] | None = None,
                             probe: bool = True) -> ModelTeacher:
    """Load a TorchScript logits model as a teacher (needs ``trust=True``: the file is a program)."""
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"{path}: no such TorchScript file")
    if not is_torchscript_file(path):
        raise TeacherError(f"{path}: not a TorchScript archive (saved with torch.jit.save)")
    if not trust:
        raise TeacherError(
            f"{path}: a TorchScript file carries a program that runs every time the teacher is called; "
            "napari-dmd runs it only if you trust the file and its author: pass trust=True "
            "(CLI: --trust-teacher), or export the model to ONNX, which carries no code")
    meta = read_metadata(path)
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated upstream; the format is still what users have
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001 - reported with the file name
        raise TeacherError(f"{path}: cannot load this TorchScript file ({str(e).strip()[:200]})") from e
    model = FirstTensor(module)
    dims = spatial_dims or meta.get("spatial_dims")
    classes = num_classes or meta.get("num_classes")
    candidates = [int(dims)] if dims else [2, 3]
    errors = []
    teacher = None
    for d in candidates:
        t = ModelTeacher(model, int(classes or 2), d, source=str(path),
                         info={"format": "TorchScript", "trusted": True})
        t.patch_size = [int(p) for p in patch_size or meta.get("patch_size") or []] or None
        if t.patch_size and len(t.patch_size) != d:
            t.patch_size = None
        try:
            shape = t.patch_size or ([32, 32] if d == 2 else [16, 16, 16])
            with torch.inference_mode():  # batch 2: an unbatched reading of the input cannot pass
                out = model(torch.zeros(2, 1, *shape))
            if out.ndim != d + 2 or out.shape[0] != 2 or tuple(out.shape[2:]) != tuple(shape):
                raise TeacherError(f"maps {(2, 1, *shape)} to {tuple(out.shape)}")
        except Exception as e:  # noqa: BLE001 - try the other dimensionality
            errors.append(f"{d}D: {str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__}")
            continue
        if classes is None:
            t.num_classes = int(out.shape[1])
        teacher = t
        break
    if teacher is None:
        raise TeacherError(f"{path}: the TorchScript model does not map a one-channel image batch to per-pixel "
                           f"logits ({'; '.join(errors)})")
    teacher.class_names = meta.get("class_names")
    teacher.normalization = meta.get("normalization", "zscore")
    teacher.spacing = meta.get("spacing")
    apply_overrides(teacher, class_names=class_names, normalization=normalization, patch_size=patch_size)
    if probe:
        probe_teacher(teacher)
    return teacher
