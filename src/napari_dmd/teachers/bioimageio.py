"""Reload a bioimage.io model package (``.bioimageio.zip`` or a folder with rdf.yaml) as a teacher.

:func:`package_weights` finds the package's ONNX (default; safe without trust) or TorchScript weights (a program:
needs trust) and extracts them from a zip; ``load_teacher`` then loads that file. Nothing in the package is run.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from .base import TeacherError

__all__ = ["package_weights"]


def package_weights(path: str | Path, *, prefer: str = "onnx", into: str | Path | None = None) -> Path:
    """The ONNX (default) or TorchScript weights of a bioimage.io package (a ``.zip`` or a folder with rdf.yaml).

    A zip's weights file is extracted into ``into`` (default: a new temporary folder); no code is run.
    """
    import yaml

    path = Path(path)
    kinds = [prefer] + [k for k in ("onnx", "torchscript") if k != prefer]
    if path.is_dir():
        rdf = next((path / n for n in ("rdf.yaml", "bioimageio.yaml") if (path / n).is_file()), None)
        if rdf is None:
            raise TeacherError(f"{path}: no rdf.yaml or bioimageio.yaml; not a bioimage.io package")
        weights = (yaml.safe_load(rdf.read_text(encoding="utf-8")) or {}).get("weights") or {}
        for k in kinds:
            if k in weights:
                return path / str(weights[k]["source"])
        raise TeacherError(f"{path}: the package has no ONNX or TorchScript weights ({', '.join(weights)})")
    if not zipfile.is_zipfile(path):
        raise TeacherError(f"{path}: not a bioimage.io package (neither a zip nor a folder)")
    with zipfile.ZipFile(path) as zf:
        rdf_name = next((n for n in ("rdf.yaml", "bioimageio.yaml") if n in zf.namelist()), None)
        if rdf_name is None:
            raise TeacherError(f"{path}: the zip holds no rdf.yaml or bioimageio.yaml; not a bioimage.io package")
        weights = (yaml.safe_load(zf.read(rdf_name)) or {}).get("weights") or {}
        for k in kinds:
            if k in weights:
                member = str(weights[k]["source"])
                if "/" in member or "\\" in member or member.startswith("."):
                    raise TeacherError(f"{path}: weights file name {member!r} is not a plain file name")
                dest = Path(into) if into is not None else Path(tempfile.mkdtemp(prefix="napari-dmd-bioimageio-"))
                dest.mkdir(parents=True, exist_ok=True)
                (dest / member).write_bytes(zf.read(member))
                return dest / member
        raise TeacherError(f"{path}: the package has no ONNX or TorchScript weights ({', '.join(weights)})")
