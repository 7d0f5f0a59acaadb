"""Export a student: TorchScript and ONNX files that reproduce PyTorch, and a model card (JSON + Markdown).

``export_student(checkpoint, out_dir, cases=..., teacher=...)`` writes, into ``out_dir``:

* ``student.torchscript.pt``: ``torch.jit.script`` of the U-Net without its training-only scale heads, with
  ``napari_dmd.json`` (classes, normalization, patch size, spacing) as an extra file;
* ``student.onnx``: the same network (opset 17, dynamic batch and spatial size), metadata property
  ``napari_dmd``, with instance/group-norm statistics computed in float64 inside the graph (onnxruntime's float32
  reductions drifted up to 3e-4 from PyTorch on a trained 3D student); its outputs are checked against PyTorch
  with onnxruntime (max abs difference <= 1e-4);
* ``model_card.json`` and ``model_card.md``: classes, normalization, patch size, spacing, parameters, FLOPs,
  latency on this machine, and Dice retention vs the teacher on the checkpoint's validation split.

Both exported models take ``(N, 1, *spatial)`` float32 images normalized as the card says, any spatial size
(padded to the network stride inside and cropped back), and return ``(N, C, *spatial)`` logits.
Safety: an ONNX file carries no code; a TorchScript file is a program (load it only from a source you trust).

The network wrapper lives in :mod:`napari_dmd.exportable`, the card in :mod:`napari_dmd.model_card`; their public
names are importable from here too. The ``napari-dmd export`` verb is :mod:`napari_dmd.cli.export`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import jsonsafe
from .checkpoint import load_checkpoint, model_from_checkpoint
from .choices import EXPORT_FORMATS
from .exportable import ExportableUNet, ExportError, onnx_ready
from .model_card import (
    NORMALIZATION_TEXT,
    card_markdown,
    count_flops,
    measure_latency,
    model_card,
    student_metadata,
)
from .models.fold import fold_batchnorm
from .models.unet import UNet
from .safe_paths import atomic_write_text, publish, temp_file

__all__ = ["ATOL", "CARD_JSON", "CARD_MD", "FORMATS", "METADATA_KEY", "NORMALIZATION_TEXT", "ONNX_NAME",
           "TORCHSCRIPT_NAME", "ExportError", "ExportableUNet", "card_markdown", "count_flops", "export_onnx",
           "export_student", "export_torchscript", "measure_latency", "model_card", "onnx_ready", "student_metadata",
           "verify"]

TORCHSCRIPT_NAME = "student.torchscript.pt"
ONNX_NAME = "student.onnx"
CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
FORMATS = EXPORT_FORMATS
ATOL = 1e-4
METADATA_KEY = "napari_dmd"


def _test_shapes(model: UNet, patch: Sequence[int] | None) -> list[tuple[int, ...]]:
    """Random-input shapes for the checks: the patch size and an odd size that needs padding."""
    dims = model.spatial_dims
    patch = list(patch or [64 if dims == 2 else 32] * dims)
    odd = [max(5, int(p) - 3) | 1 for p in patch]
    return [(1, 1, *[int(p) for p in patch]), (2, 1, *odd)]


def _atomic_target(path: Path, overwrite: bool) -> Path:
    if path.exists() and not overwrite:
        raise ExportError(f"{path}: exists; pass overwrite=True (CLI --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path)  # random name, created exclusively; publish() gives it the umask's mode
    os.close(fd)
    return tmp


def _max_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor) -> float:
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).float()
    if tuple(a.shape) != tuple(b.shape):
        return float("inf")
    return float((a - b.float()).abs().max())


# ------------------------------------------------------------------------------------------- exporters
def export_torchscript(model: UNet, path: str | Path, *, metadata: dict[str, Any] | None = None,
                       patch_size: Sequence[int] | None = None, atol: float = ATOL,
                       overwrite: bool = False) -> float:
    """Script the student (no heads) to ``path``; returns the max |TorchScript - PyTorch| on random inputs."""
    path = Path(path)
    model = model.eval().cpu()
    folded = fold_batchnorm(model)  # conv + batch norm fused, as Segmenter runs it; checked against the original
    tmp = _atomic_target(path, overwrite)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(ExportableUNet(folded).eval())
            torch.jit.save(scripted, str(tmp), _extra_files={"napari_dmd.json": json.dumps(metadata or {})})
            loaded = torch.jit.load(str(tmp), map_location="cpu")
        diff = verify(lambda x: loaded(x), model, _test_shapes(model, patch_size))
        if diff > atol:
            raise ExportError(f"{path}: TorchScript output differs from PyTorch by {diff:.3g} (> {atol:g})")
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return diff


def export_onnx(model: UNet, path: str | Path, *, metadata: dict[str, Any] | None = None,
                patch_size: Sequence[int] | None = None, opset: int = 17, atol: float = ATOL,
                overwrite: bool = False) -> float | None:
    """Export the student (no heads) to ONNX with dynamic batch and spatial axes; check it with onnxruntime.

    Returns the max |onnxruntime - PyTorch| on random inputs (None when onnxruntime is not installed).
    """
    try:
        import onnx
    except ImportError as e:
        raise ExportError("ONNX export needs the onnx package: pip install 'napari-dmd[onnx]'") from e
    path = Path(path)
    model = model.eval().cpu()
    folded = fold_batchnorm(model)  # conv + batch norm fused, as Segmenter runs it; checked against the original
    dims = model.spatial_dims
    axes = {0: "batch", **{2 + i: f"{'zyx'[3 - dims + i]}" for i in range(dims)}}
    example = torch.randn(*_test_shapes(model, patch_size)[0])
    tmp = _atomic_target(path, overwrite)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(onnx_ready(folded), (example,), str(tmp), dynamo=False,
                              input_names=["image"], output_names=["logits"], opset_version=int(opset),
                              dynamic_axes={"image": axes, "logits": axes}, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        meta = proto.metadata_props.add()
        meta.key, meta.value = METADATA_KEY, json.dumps(metadata or {})
        proto.producer_name = "napari-dmd"
        proto.doc_string = "napari-dmd student: (N, 1, *spatial) normalized image -> (N, C, *spatial) logits"
        onnx.save(proto, str(tmp))
        diff = None
        try:
            import onnxruntime as ort
        except ImportError:
            ort = None
        if ort is not None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, torch.get_num_threads())
            sess = ort.InferenceSession(str(tmp), sess_options=opts, providers=["CPUExecutionProvider"])
            diff = verify(lambda x: torch.from_numpy(sess.run(None, {"image": x.numpy()})[0]), model,
                          _test_shapes(model, patch_size))
            if diff > atol:
                raise ExportError(f"{path}: ONNX output differs from PyTorch by {diff:.3g} (> {atol:g})")
        publish(tmp, path)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - reported with the file name
        raise ExportError(f"{path}: ONNX export failed ({str(e).strip().splitlines()[0][:200]})") from e
    finally:
        tmp.unlink(missing_ok=True)
    return diff


def verify(run: Callable[[torch.Tensor], Any], model: nn.Module, shapes: Sequence[Sequence[int]],
           seed: int = 0) -> float:
    """Max |run(x) - model(x)| over random normal inputs of the given shapes."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.inference_mode():
            worst = max(worst, _max_diff(run(x.clone()), model(x)))
    return worst


# ------------------------------------------------------------------------------------------- measurements
def export_student(checkpoint: str | Path, out_dir: str | Path, *, formats: Sequence[str] = FORMATS,
                   cases: Sequence[Any] | None = None, teacher: Any | None = None, device: str = "auto",
                   opset: int = 17, overwrite: bool = False, latency_runs: int = 10,
                   split: str = "val") -> dict[str, Any]:
    """Export a student checkpoint (TorchScript and/or ONNX) and write its model card; returns the card."""
    checkpoint, out = Path(checkpoint), Path(out_dir)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ExportError(f"unknown export format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    targets = [out / n for n in (CARD_JSON, CARD_MD)] + \
              [out / (TORCHSCRIPT_NAME if f == "torchscript" else ONNX_NAME) for f in formats]
    clashes = [t for t in targets if t.exists()]
    if clashes and not overwrite:
        raise ExportError(f"{clashes[0]}: exists; pass overwrite=True (CLI --overwrite) to replace it")
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    meta = student_metadata(ckpt, model)
    patch = ckpt.get("patch_size")
    exports: dict[str, Any] = {}
    if "torchscript" in formats:
        path = out / TORCHSCRIPT_NAME
        diff = export_torchscript(model, path, metadata=meta, patch_size=patch, overwrite=overwrite)
        exports["torchscript"] = {"path": str(path), "max_abs_diff": diff}
    if "onnx" in formats:
        path = out / ONNX_NAME
        diff = export_onnx(model, path, metadata=meta, patch_size=patch, opset=opset, overwrite=overwrite)
        exports["onnx"] = {"path": str(path), "opset": int(opset), "max_abs_diff": diff,
                           "checked_with": "onnxruntime" if diff is not None else None}
    card = model_card(checkpoint, cases=cases, teacher=teacher, device=device, latency_runs=latency_runs,
                      split=split, exports=exports)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ((CARD_JSON, jsonsafe.dumps(card, indent=2)), (CARD_MD, card_markdown(card))):
        atomic_write_text(out / name, text)
    card["files"] = {"card_json": str(out / CARD_JSON), "card_markdown": str(out / CARD_MD),
                     **{k: v["path"] for k, v in exports.items()}}
    return card
