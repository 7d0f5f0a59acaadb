"""The teacher protocol, the adapter for the project's own checkpoints, and what every adapter shares.

A teacher maps a batch of normalized single-channel images ``(N, 1, *spatial)`` to per-pixel class logits
``(N, num_classes, *spatial)`` and states what it expects: number and names of classes, 2D or 3D, the
intensity normalization (a scheme of :func:`napari_dmd.data.transforms.normalize`), patch size and spacing.

Safe loading: nothing here unpickles arbitrary objects. Torch files are read with ``weights_only=True``;
a file that needs more is refused with a message naming it, unless the caller passed ``trust=True``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

IGNORE_INDEX = 255


class TeacherError(CheckpointError):
    """A teacher cannot be loaded or does not fit the data; the message names the file and the mismatch."""


@runtime_checkable
class Teacher(Protocol):
    """Maps (N, 1, *spatial) normalized images to (N, num_classes, *spatial) logits."""

    num_classes: int
    spatial_dims: int
    class_names: list[str] | None
    normalization: str
    patch_size: list[int] | None
    spacing: list[float] | None
    source: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device | str) -> Teacher: ...


class ModelTeacher:
    """A teacher backed by a torch module (our U-Net, a TorchScript program, an nnU-Net or MONAI network).

    ``info`` records where the teacher came from (format, folds, whether the file was trusted).
    """

    def __init__(self, model: nn.Module, num_classes: int, spatial_dims: int, *,
                 class_names: list[str] | None = None, normalization: str = "zscore",
                 patch_size: Sequence[int] | None = None, source: str = "in-memory model",
                 spacing: Sequence[float] | None = None, info: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.num_classes = int(num_classes)
        self.spatial_dims = int(spatial_dims)
        self.class_names = list(class_names) if class_names else None
        self.normalization = normalization
        self.patch_size = [int(p) for p in patch_size] if patch_size else None
        self.spacing = [float(s) for s in spacing] if spacing else None
        self.source = source
        self.info = dict(info or {})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def to(self, device: torch.device | str) -> ModelTeacher:
        self.model.to(device)
        return self

    def parameters(self) -> Iterable[torch.Tensor]:
        return self.model.parameters()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, {self.spatial_dims}D, {self.num_classes} classes, "
                f"normalization={self.normalization!r})")


# ------------------------------------------------------------------------------------------- wrappers
class PadToMultiple(nn.Module):
    """Zero-pads the input's spatial axes to multiples of ``multiples`` and crops the logits back.

    Networks with strided downsampling (nnU-Net, MONAI) need sizes divisible by their total stride; the
    engine's patches and the sliding window's windows need not be.
    """

    def __init__(self, module: nn.Module, multiples: Sequence[int]) -> None:
        super().__init__()
        self.module = module
        self.multiples = [int(m) for m in multiples]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = list(x.shape[2:])
        pad = [(-n) % m for n, m in zip(size, self.multiples)]
        if not any(pad):
            return self.module(x)
        flat: list[int] = []
        for p in reversed(pad):
            flat += [0, p]
        out = self.module(F.pad(x, flat))
        return out[(..., *[slice(0, n) for n in size])]


class IntensityTransform(nn.Module):
    """A fixed per-voxel intensity map applied inside the teacher: clip to [low, high], then (x - shift) / scale.

    Used where a model expects a dataset-wide fixed normalization (nnU-Net's CTNormalization, MONAI's
    ScaleIntensityRange): the teacher then takes raw intensities (``normalization="none"``) and is exact.
    """

    def __init__(self, module: nn.Module, *, low: float = -math.inf, high: float = math.inf,
                 shift: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        self.module = module
        self.low, self.high, self.shift, self.scale = float(low), float(high), float(shift), float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(self.low, self.high) if math.isfinite(self.low) or math.isfinite(self.high) else x
        return self.module((x - self.shift) / self.scale)


class LogitsEnsemble(nn.Module):
    """Averages the logits of several networks (nnU-Net folds)."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.members[0](x)
        for m in self.members[1:]:
            out = out + m(x)
        return out / len(self.members)


class FirstTensor(nn.Module):
    """Keeps the full-resolution logits of a network that returns a list/tuple (deep supervision)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return first_tensor(self.module(x))


def first_tensor(out: Any) -> torch.Tensor:
    """The logits tensor of a model output: the tensor itself, or the first of a list/tuple."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"the model returned {type(out).__name__}, not a logits tensor")


# ------------------------------------------------------------------------------------------- loading
#: Harmless NumPy types that nnU-Net and others pickle as metrics (np.float64 scalars, small arrays).
def numpy_safe_globals() -> list[Any]:
    """NumPy scalar/dtype/array reconstructors allowed in ``weights_only`` loads (they run no code)."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    allowed: list[Any] = [
        core.multiarray.scalar, (core.multiarray.scalar, "numpy.core.multiarray.scalar"),
        core.multiarray._reconstruct, (core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray, np.dtype,
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
                     "Int16DType", "Int8DType", "UInt8DType", "BoolDType"):
            if hasattr(dtypes, name):
                allowed.append(getattr(dtypes, name))
    return allowed


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def pickle_globals(data: bytes, limit: int = 8) -> list[str]:
    """The ``module.name`` globals a pickle stream references, read opcode by opcode (nothing is executed)."""
    import io
    import pickletools

    found: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(limit):  # legacy torch files are several pickles in a row
        strings: list[str] = []
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    strings.append(str(arg))
                elif op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
        except Exception:  # noqa: BLE001 - end of data or not a pickle
            break
        if stream.tell() >= len(data):
            break
    return [("builtins." + g[len("__builtin__."):]) if g.startswith("__builtin__.") else g for g in found]


def _unsafe_globals(path: Path, allow_numpy: bool = False) -> list[str]:
    """Names of the Python objects a torch file would build beyond weights (read without unpickling)."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                data = b"".join(z.read(n) for n in z.namelist() if n.endswith("data.pkl"))
        else:
            data = path.read_bytes()
    except OSError:
        return []
    safe = ("torch.", "collections.OrderedDict") + (("numpy.",) if allow_numpy else ())
    names = [g for g in pickle_globals(data) if not g.startswith(safe)]
    return list(dict.fromkeys(names))


def load_torch_file(path: str | Path, *, trust: bool = False, allow_numpy: bool = False,
                    what: str = "file") -> Any:
    """``torch.load`` that never executes code unless ``trust`` is set.

    Reads with ``weights_only=True`` (tensors and plain containers; ``allow_numpy`` also admits NumPy scalars,
    dtypes and arrays). If the file needs more, raises :class:`TeacherError` naming the objects it would
    build, unless ``trust=True``: then it is loaded with full unpickling (which can run code in the file).
    """
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"{path}: no such {what}" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise TeacherError(f"{path}: the {what} is empty")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the load below says what matters
            warnings.simplefilter("ignore", UserWarning)
            if allow_numpy:
                with torch.serialization.safe_globals(numpy_safe_globals()):
                    return torch.load(path, map_location="cpu", weights_only=True)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - refused, never executed
        if trust:
            try:
                return torch.load(path, map_location="cpu", weights_only=False)
            except Exception as e2:  # noqa: BLE001
                raise TeacherError(f"{path}: cannot read this {what} even as a trusted file "
                                   f"({_first_line(e2)})") from e2
        unsafe = _unsafe_globals(path, allow_numpy) or [g for g in [_global_from_message(str(e))] if g]
        if unsafe:
            raise TeacherError(
                f"{path}: refused to load: this {what} holds more than weights ({', '.join(unsafe[:5])}); "
                "unpickling it could run code from the file. napari-dmd reads weights only. If you trust the file "
                "and its author, load it with trust=True (CLI: --trust-teacher).") from e
        raise TeacherError(f"{path}: not a readable PyTorch {what} ({_load_reason(e, path)})") from e


def _load_reason(e: BaseException, path: Path) -> str:
    """The useful part of a torch.load error (torch's weights-only message buries it)."""
    from ..checkpoint import load_error_reason

    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(b"\x80"):  # not a pickle: a zip archive torch cannot open, or no torch file at all
        return load_error_reason(path, e)
    text = str(e)
    if "WeightsUnpickler error:" in text:
        tail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        if tail and tail[0].strip():
            reason = tail[0].strip()[:200]
            code = reason.rsplit(" ", 1)[-1]
            if code.isdigit():
                return f"unexpected pickle opcode {code}: not a file written by torch.save"
            return reason
    return _first_line(e)


def _global_from_message(message: str) -> str:
    for line in message.splitlines():
        if "GLOBAL" in line:
            return line.split("GLOBAL", 1)[1].strip().split(" ")[0]
    return ""


def checkpoint_teacher(path: str | Path) -> ModelTeacher:
    """Load a teacher from a napari-dmd checkpoint (weights-only, never executes code)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    return ModelTeacher(model, model.num_classes, model.spatial_dims,
                        class_names=ckpt.get("class_names"),
                        normalization=ckpt.get("normalization", "zscore"),
                        patch_size=ckpt.get("patch_size"), spacing=ckpt.get("spacing"), source=str(path),
                        info={"format": "napari-dmd checkpoint", "trusted": False})


# ------------------------------------------------------------------------------------------- checks
def probe_shape(teacher: Any, default: int = 32) -> list[int]:
    """A small input size for a test call: the teacher's patch size (capped), else ``default`` per axis."""
    if teacher.patch_size:
        return [int(min(p, 64)) for p in teacher.patch_size]
    return [default if teacher.spatial_dims == 2 else default // 2] * teacher.spatial_dims


def probe_teacher(teacher: Any, shape: Sequence[int] | None = None) -> torch.Tensor:
    """Call the teacher on a zero batch (1, 1, *shape) and check it returns (1, num_classes, *shape).

    Raises TeacherError naming ``teacher.source`` and the mismatch.
    """
    shape = list(shape) if shape is not None else probe_shape(teacher)
    x = torch.zeros(1, 1, *shape)
    try:
        with torch.inference_mode():
            out = teacher(x)
    except TeacherError:
        raise
    except Exception as e:  # noqa: BLE001 - reported with the file name
        raise TeacherError(f"{teacher.source}: calling the model on a one-channel {teacher.spatial_dims}D batch "
                           f"of shape {tuple(x.shape)} failed ({_first_line(e)}); napari-dmd teachers take "
                           "(N, 1, *spatial) images and return (N, classes, *spatial) logits") from e
    if not isinstance(out, torch.Tensor):
        raise TeacherError(f"{teacher.source}: the model returned {type(out).__name__}, not a logits tensor")
    if out.ndim != x.ndim or tuple(out.shape[2:]) != tuple(shape) or out.shape[0] != 1:
        raise TeacherError(f"{teacher.source}: the model maps an input of shape {tuple(x.shape)} to "
                           f"{tuple(out.shape)}; expected (1, classes, {', '.join(map(str, shape))}) "
                           "per-pixel logits")
    if out.shape[1] != teacher.num_classes:
        raise TeacherError(f"{teacher.source}: the model returns {out.shape[1]} channels but the teacher "
                           f"declares {teacher.num_classes} classes")
    if out.shape[1] < 2:
        raise TeacherError(f"{teacher.source}: the model returns {out.shape[1]} output channel; DMD needs "
                           "per-class logits (background + at least one class), not a single sigmoid map")
    return out


def check_teacher(teacher: Any, cases: Sequence[Any], *, num_classes: int | None = None,
                  spacing_tolerance: float = 0.25) -> list[str]:
    """Check a teacher against the data before training; raise TeacherError on a hard mismatch.

    Hard errors (the message names the teacher file and the case file): the teacher is 3D but a case is 2D;
    a label holds a class the teacher does not predict; ``num_classes`` differs from the teacher's.
    Returns warnings (spacing differing by more than ``spacing_tolerance``) for the caller to show.
    """
    src = teacher.source
    if num_classes is not None and int(num_classes) != teacher.num_classes:
        raise TeacherError(f"{src}: the teacher predicts {teacher.num_classes} classes but {num_classes} "
                           "were asked for")
    warnings: list[str] = []
    for case in cases:
        where = getattr(case, "label_path", None) or getattr(case, "source", None) or case.name
        if case.image.ndim < teacher.spatial_dims:
            raise TeacherError(f"{src}: the teacher is {teacher.spatial_dims}D but {getattr(case, 'source', where)} "
                               f"is a {case.image.ndim}D image")
        if case.label is not None:
            values = np.unique(case.label)
            values = values[values != IGNORE_INDEX]
            if values.size and (values.max() >= teacher.num_classes or values.min() < 0):
                names = f" ({', '.join(teacher.class_names)})" if teacher.class_names else ""
                raise TeacherError(f"{src}: the teacher predicts {teacher.num_classes} classes{names} but "
                                   f"{where} holds label {int(values.max())}")
    if teacher.spacing and cases:
        dims = teacher.spatial_dims
        data = np.median(np.array([c.spacing[-dims:] for c in cases], dtype=float), axis=0)
        want = np.array(teacher.spacing[-dims:], dtype=float)
        if np.any(np.abs(data / want - 1) > spacing_tolerance):
            warnings.append(f"{src}: the teacher was trained at spacing {tuple(float(v) for v in want.round(3))} "
                            f"but the data's median spacing is {tuple(float(v) for v in data.round(3))}; resample "
                            "the images for best results")
    return warnings


def apply_overrides(teacher: ModelTeacher, *, num_classes: int | None = None, spatial_dims: int | None = None,
                    class_names: Sequence[str] | None = None, normalization: str | None = None,
                    patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None) -> ModelTeacher:
    """Fill in what a file does not say; a value contradicting the file raises TeacherError."""
    from ..data.transforms import NORMALIZATION_SCHEMES

    if num_classes is not None and int(num_classes) != teacher.num_classes:
        raise TeacherError(f"{teacher.source}: the model predicts {teacher.num_classes} classes, not "
                           f"{num_classes}")
    if spatial_dims is not None and int(spatial_dims) != teacher.spatial_dims:
        raise TeacherError(f"{teacher.source}: the model is {teacher.spatial_dims}D, not {spatial_dims}D")
    if class_names is not None:
        if len(class_names) != teacher.num_classes:
            raise TeacherError(f"{teacher.source}: {len(class_names)} class names given for "
                               f"{teacher.num_classes} classes")
        teacher.class_names = list(class_names)
    if normalization is not None:
        if normalization not in NORMALIZATION_SCHEMES:
            raise TeacherError(f"normalization {normalization!r} is unknown; choose one of "
                               f"{', '.join(NORMALIZATION_SCHEMES)}")
        teacher.normalization = normalization
    if patch_size is not None:
        if len(patch_size) != teacher.spatial_dims:
            raise TeacherError(f"{teacher.source}: patch size {list(patch_size)} does not fit a "
                               f"{teacher.spatial_dims}D model")
        teacher.patch_size = [int(p) for p in patch_size]
    if spacing is not None:
        teacher.spacing = [float(s) for s in spacing]
    return teacher
