"""``load_teacher``: one entry point for every teacher format, and the CLI flags that choose one.

Formats (``kind``):
* ``"checkpoint"``: a napari-dmd checkpoint (weights-only torch file) - carries no code;
* ``"torchscript"``: a ``torch.jit.save`` file - carries a program, needs ``trust=True``;
* ``"nnunet"``: an nnU-Net v2 model folder or one of its ``fold_k/checkpoint_*.pth`` - pickled checkpoints read
  weights-only (NumPy metrics allowed), anything more needs ``trust=True``;
* ``"monai-bundle"``: a MONAI bundle folder - its config is read as data; code in it needs ``trust=True``;
* ``"monai"``: a state dict file plus ``network`` (a ``monai.networks.nets`` class) and ``network_args``;
* ``"onnx"``: an ONNX file run by onnxruntime - carries no code; a graph that may loop without end needs
  ``trust=True``.
``"auto"`` tells them apart by suffix, archive layout, folder contents and (for torch files) the keys of a
weights-only load; a file that holds more than weights is never unpickled to tell its kind, even when trusted
(its pickle's strings are read instead), so only the adapter of its kind reads it, once.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..choices import TEACHER_KINDS
from .base import TeacherError, checkpoint_teacher, load_torch_file

KINDS = TEACHER_KINDS


def detect_kind(path: str | Path, *, network: str | None = None, trust: bool = False) -> str:
    """Which adapter reads ``path`` (one of :data:`KINDS` but "auto"); TeacherError if none does."""
    from .monai import is_monai_bundle
    from .nnunet import is_nnunet_folder
    from .torchscript import is_torchscript_file

    p = Path(path)
    if not p.exists():
        raise TeacherError(f"{p}: no such checkpoint file or teacher folder")
    if p.is_dir():
        if is_nnunet_folder(p):
            return "nnunet"
        if is_monai_bundle(p):
            return "monai-bundle"
        raise TeacherError(f"{p}: not a teacher folder: expected an nnU-Net v2 model folder (plans.json, "
                           "dataset.json, fold_k/) or a MONAI bundle (configs/, models/)")
    if p.suffix.lower() == ".onnx":
        return "onnx"
    if p.suffix.lower() == ".safetensors":
        if network:
            return "monai"
        raise TeacherError(f"{p}: a safetensors file holds weights only; give the network's name and arguments "
                           "(network=, network_args=; CLI --monai-network, --monai-args)")
    if is_torchscript_file(p):
        return "torchscript"
    if p.name.startswith("checkpoint_") and p.suffix == ".pth" and p.parent.name.startswith("fold_") and \
            (p.parent.parent / "plans.json").is_file():
        return "nnunet"
    try:  # never unpickled here, trusted or not: weights-only, else the pickle's strings, read without running it
        data = load_torch_file(p, trust=False, allow_numpy=True, what="teacher file")
    except TeacherError as e:
        if not trust or "refused to load" not in str(e):
            raise
        return _kind_from_pickle_strings(p, network)
    if isinstance(data, Mapping):
        if data.get("format") == "napari-dmd-checkpoint":
            return "checkpoint"
        if "network_weights" in data and "init_args" in data:
            return "nnunet"
    if network:
        return "monai"
    keys = ", ".join(list(map(str, data))[:6]) if isinstance(data, Mapping) else type(data).__name__
    raise TeacherError(f"{p}: a PyTorch file without napari-dmd or nnU-Net metadata (holds {keys}); if it is the "
                       "state dict of a MONAI network, give network= and network_args= (CLI --monai-network, "
                       "--monai-args)")


def _kind_from_pickle_strings(path: Path, network: str | None) -> str:
    """The kind of a trusted torch file that holds more than weights, from its pickle's strings (nothing runs).

    The adapter chosen then reads the file once, as its kind allows: a napari-dmd checkpoint never unpickles.
    """
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                data = b"".join(z.read(n) for n in z.namelist() if n.endswith("data.pkl"))
        else:
            data = path.read_bytes()
    except OSError as e:
        raise TeacherError(f"{path}: not readable ({e})") from e
    strings: set[str] = set()
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8") and len(arg) < 64:
                strings.add(str(arg))
    except Exception:  # noqa: BLE001 - end of the first pickle or trailing tensor data
        pass
    if "napari-dmd-checkpoint" in strings:
        return "checkpoint"
    if {"network_weights", "init_args"} <= strings:
        return "nnunet"
    if network:
        return "monai"
    raise TeacherError(f"{path}: a PyTorch file that holds more than weights, without napari-dmd or nnU-Net "
                       "metadata; if it is the state dict of a MONAI network, give network= and network_args= "
                       "(CLI --monai-network, --monai-args)")


def load_teacher(path: str | Path, *, kind: str = "auto", trust: bool = False, configuration: str | None = None,
                 folds: Sequence[int | str] | None = None, network: str | None = None,
                 network_args: Mapping[str, Any] | None = None, checkpoint: str | None = None,
                 num_classes: int | None = None, spatial_dims: int | None = None,
                 class_names: Sequence[str] | None = None, normalization: str | None = None,
                 patch_size: Sequence[int] | None = None, probe: bool = True) -> Any:
    """Load a teacher of any supported format; it satisfies :class:`~napari_dmd.teachers.Teacher`.

    ``trust``: allow formats or files that carry code (TorchScript, pickles beyond weights, bundle expressions).
    ``configuration``, ``folds``, ``checkpoint`` ("final" / "best"): nnU-Net only. ``network``, ``network_args``:
    a MONAI state dict's network. ``num_classes`` ... ``patch_size`` fill in what a file does not state (and
    must agree with what it does). ``probe``: check the model with one test call before training.
    Every failure raises :class:`TeacherError` (a ``CheckpointError``) naming the file and the problem.
    """
    if kind not in KINDS:
        raise TeacherError(f"teacher kind {kind!r} is unknown; choose one of {', '.join(KINDS)}")
    path = Path(path)
    if kind in ("auto", "onnx", "torchscript") and path.name.lower().endswith(".bioimageio.zip"):
        from .bioimageio import package_weights  # its ONNX (or TorchScript) weights, extracted

        path = package_weights(path, prefer="torchscript" if kind == "torchscript" else "onnx")
    if kind == "auto":
        kind = detect_kind(path, network=network, trust=trust)
    common = dict(class_names=class_names, normalization=normalization, patch_size=patch_size, probe=probe)
    if kind == "checkpoint":
        from .base import apply_overrides

        teacher = checkpoint_teacher(path)
        return apply_overrides(teacher, num_classes=num_classes, spatial_dims=spatial_dims, **{
            k: v for k, v in common.items() if k != "probe"})
    if kind == "torchscript":
        from .torchscript import load_torchscript_teacher

        return load_torchscript_teacher(path, trust=trust, spatial_dims=spatial_dims, num_classes=num_classes,
                                        **common)
    if kind == "nnunet":
        from .base import apply_overrides
        from .nnunet import load_nnunet_teacher

        teacher = load_nnunet_teacher(path, configuration=configuration, folds=folds, checkpoint=checkpoint,
                                      trust=trust, **common)
        return apply_overrides(teacher, num_classes=num_classes, spatial_dims=spatial_dims)
    if kind == "monai-bundle":
        from .monai import load_monai_bundle_teacher

        return load_monai_bundle_teacher(path, trust=trust, num_classes=num_classes, spatial_dims=spatial_dims,
                                         **common)
    if kind == "monai":
        if not network:
            raise TeacherError(f"{path}: a MONAI state dict needs the network's name (network=, CLI "
                               "--monai-network) and arguments (network_args=, CLI --monai-args)")
        from .monai import load_monai_state_dict_teacher

        return load_monai_state_dict_teacher(path, network=network, network_args=network_args, trust=trust,
                                             num_classes=num_classes, spatial_dims=spatial_dims, **common)
    from .onnx import load_onnx_teacher

    return load_onnx_teacher(path, num_classes=num_classes, spatial_dims=spatial_dims, trust=trust, **common)


# ------------------------------------------------------------------------------------------------- CLI
def teacher_from_args(args: argparse.Namespace) -> Any:
    """Load the teacher the flags of :func:`add_teacher_flags` describe."""
    network_args = None
    raw = getattr(args, "monai_args", None)
    if raw:
        text = Path(raw).read_text(encoding="utf-8") if raw.endswith(".json") and Path(raw).is_file() else raw
        try:
            network_args = json.loads(text)
        except ValueError as e:
            raise TeacherError(f"--monai-args: not valid JSON ({e})") from e
        if not isinstance(network_args, dict):
            raise TeacherError("--monai-args: expected a JSON object of keyword arguments")
    folds = getattr(args, "nnunet_folds", None)
    return load_teacher(args.teacher, kind=getattr(args, "teacher_kind", "auto"),
                        trust=bool(getattr(args, "trust_teacher", False)),
                        configuration=getattr(args, "nnunet_configuration", None),
                        folds=[int(f) if str(f).isdigit() else f for f in folds] if folds else None,
                        checkpoint=getattr(args, "nnunet_checkpoint", None),
                        network=getattr(args, "monai_network", None), network_args=network_args,
                        normalization=getattr(args, "teacher_normalization", None))
