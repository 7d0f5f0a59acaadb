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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_checkpoint, model_from_checkpoint
from .models.unet import UNet
from .safe_paths import atomic_write_text, publish, temp_file

TORCHSCRIPT_NAME = "student.torchscript.pt"
ONNX_NAME = "student.onnx"
CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
FORMATS = ("torchscript", "onnx")
ATOL = 1e-4
METADATA_KEY = "napari_dmd"

NORMALIZATION_TEXT = {
    "zscore": "per image: subtract the mean and divide by the standard deviation of all voxels",
    "zscore-fg": "per image: z-score with the mean/std of the voxels above the image's 10th percentile",
    "ct": "per image: clip to the 0.5 / 99.5 percentiles, then z-score",
    "none": "raw intensities (float32), no normalization",
}


class ExportError(ValueError):
    """An export failed or does not reproduce PyTorch; the message names the file and the problem."""


# ------------------------------------------------------------------------------------------- network
class ExportableUNet(nn.Module):
    """The logits path of a :class:`UNet`, written so that ``torch.jit.script`` and ONNX keep any input size.

    Shares the U-Net's modules (no copy). Pads the spatial axes to a multiple of the total stride and crops the
    logits back, with sizes taken from the input at run time (never baked in at export).
    """

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.encoder = unet.encoder
        self.upsamplers = unet.upsamplers
        self.decoder = unet.decoder
        self.out = unet.out
        self.stride = int(unet.total_stride)
        self.three_d = unet.spatial_dims == 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        h, w = x.shape[-2], x.shape[-1]
        d = x.shape[-3]
        ph, pw, pd = (s - h % s) % s, (s - w % s) % s, (s - d % s) % s
        if self.three_d:
            x = F.pad(x, [0, pw, 0, ph, 0, pd])
        else:
            x = F.pad(x, [0, pw, 0, ph])
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.upsamplers, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        logits = self.out(x)
        if self.three_d:
            return logits[:, :, :d, :h, :w]
        return logits[:, :, :h, :w]


class _PreciseInstanceNorm(nn.Module):
    """Instance normalization with float64 statistics, for ONNX.

    onnxruntime sums a ReduceMean / InstanceNormalization naively in float32; over a 3D patch that drifted up to
    3e-4 from PyTorch on a trained student. Statistics in float64 keep it within ~1e-5 at no measurable cost.
    """

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, float(norm.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = list(range(2, x.dim()))
        xd = x.double()
        dev = xd - xd.mean(dim=dims, keepdim=True)
        var = (dev * dev).mean(dim=dims, keepdim=True)
        y = (dev / torch.sqrt(var + self.eps)).to(x.dtype)
        if self.weight is not None:
            shape = [1, -1] + [1] * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


class _PreciseGroupNorm(nn.Module):
    """Group normalization with float64 statistics, for ONNX (see :class:`_PreciseInstanceNorm`)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.groups, self.eps = int(norm.num_groups), float(norm.eps)
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xd = x.double().reshape(x.shape[0], self.groups, -1)
        dev = xd - xd.mean(dim=-1, keepdim=True)
        var = (dev * dev).mean(dim=-1, keepdim=True)
        y = (dev / torch.sqrt(var + self.eps)).reshape(x.shape).to(x.dtype)
        if self.weight is not None:
            shape = [1, -1] + [1] * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def onnx_ready(model: UNet) -> ExportableUNet:
    """A copy of the student for ONNX export, with float64 normalization statistics (the original is untouched)."""
    import copy

    clone = copy.deepcopy(model).eval().cpu()

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, (nn.InstanceNorm2d, nn.InstanceNorm3d)) and not child.track_running_stats:
                setattr(module, name, _PreciseInstanceNorm(child))
            elif isinstance(child, nn.GroupNorm):
                setattr(module, name, _PreciseGroupNorm(child))
            else:
                swap(child)

    swap(clone)
    return ExportableUNet(clone).eval()


def student_metadata(ckpt: dict[str, Any], model: UNet) -> dict[str, Any]:
    """What a user of the exported model must know: classes, input layout, normalization, patch, spacing."""
    from . import __version__

    names = ckpt.get("class_names")
    return {"format": "napari-dmd student", "napari_dmd_version": __version__,
            "spatial_dims": model.spatial_dims, "in_channels": model.in_channels, "num_classes": model.num_classes,
            "class_names": list(names) if names else None, "normalization": ckpt.get("normalization", "zscore"),
            "patch_size": ckpt.get("patch_size"), "spacing": ckpt.get("spacing"),
            "axes": "zyx" if model.spatial_dims == 3 else "yx", "architecture": model.config()}


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
    tmp = _atomic_target(path, overwrite)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(ExportableUNet(model).eval())
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
    dims = model.spatial_dims
    axes = {0: "batch", **{2 + i: f"{'zyx'[3 - dims + i]}" for i in range(dims)}}
    example = torch.randn(*_test_shapes(model, patch_size)[0])
    tmp = _atomic_target(path, overwrite)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(onnx_ready(model), (example,), str(tmp), dynamo=False,
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
def count_flops(fn: Callable[[torch.Tensor], Any], shape: Sequence[int]) -> int | None:
    """Floating-point operations of one call on a zero input of ``shape`` (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            fn(torch.zeros(*shape))
        return int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - e.g. an ONNX teacher: not countable
        return None


def measure_latency(fn: Callable[[torch.Tensor], Any], shape: Sequence[int], *, device: str | torch.device = "cpu",
                    runs: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median / mean / min milliseconds of one call on a random input of ``shape`` on ``device``."""
    dev = torch.device(device)
    x = torch.randn(*shape, device=dev)
    times = []
    with torch.inference_mode():
        for i in range(warmup + max(1, runs)):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            fn(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - t0))
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times), "min_ms": min(times),
            "runs": len(times)}


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Where latencies were measured."""
    dev = torch.device(device)
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": str(dev)}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def _evaluate(seg: Any, cases: Sequence[Any], num_classes: int) -> dict[str, Any]:
    from .metrics import dice_per_class

    dices, secs = [], []
    for c in cases:
        pred, dt = seg.timed(c.image, source=c.image_path or c.name)
        secs.append(dt)
        dices.append(dice_per_class(pred, c.label, num_classes))
    per_class = np.nanmean(np.stack(dices), axis=0) if dices else np.array([])
    return {"dice_per_class": [float(v) for v in per_class],
            "mean_dice": float(np.nanmean(per_class)) if per_class.size else None,
            "seconds_per_case": float(np.mean(secs)) if secs else None}


def _teacher_summary(teacher: Any, patch: Sequence[int]) -> dict[str, Any]:
    params = None
    if hasattr(teacher, "parameters"):
        try:
            params = int(sum(p.numel() for p in teacher.parameters()))
        except Exception:  # noqa: BLE001
            params = None
    dims = teacher.spatial_dims
    shape = (1, 1, *[int(p) for p in (teacher.patch_size or patch)][-dims:])
    info = getattr(teacher, "info", {}) or {}
    return {"source": str(teacher.source), "format": info.get("format", type(teacher).__name__),
            "num_classes": teacher.num_classes, "class_names": teacher.class_names,
            "normalization": teacher.normalization, "patch_size": teacher.patch_size, "parameters": params,
            "flops_per_patch": count_flops(teacher, shape) if isinstance(getattr(teacher, "model", None),
                                                                          nn.Module) else None,
            "flops_input_shape": list(shape)}


def _default_teacher(ckpt: dict[str, Any]) -> Any | None:
    """The checkpoint's teacher when it is a napari-dmd checkpoint still on disk (loaded weights-only)."""
    src = ckpt.get("teacher_source")
    if not src or not Path(src).is_file():
        return None
    from .teachers import load_teacher

    try:
        return load_teacher(src, kind="checkpoint")
    except Exception:  # noqa: BLE001 - the card then says the teacher was not available
        return None


def model_card(checkpoint: str | Path, *, cases: Sequence[Any] | None = None, teacher: Any | None = None,
               device: str = "auto", latency_runs: int = 10, split: str = "val",
               exports: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model card of a student checkpoint (a JSON-serializable dict).

    ``cases``: labelled data; the checkpoint's validation cases among them are evaluated (``split="all"``: all
    of them). ``teacher``: any Teacher (default: the checkpoint's teacher, if it is a napari-dmd checkpoint on
    disk); with both, the card reports Dice retention = student mean Dice / teacher mean Dice.
    """
    from . import __version__
    from .distill.engine import resolve_device
    from .models.presets import count_parameters
    from .segment import Segmenter

    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    meta = student_metadata(ckpt, model)
    dev = resolve_device(device)
    dims = model.spatial_dims
    patch = [int(p) for p in (ckpt.get("patch_size") or [64 if dims == 2 else 32] * dims)]
    shape = (1, 1, *patch)
    export_model = ExportableUNet(model).eval()
    cfg = ckpt.get("config") or {}
    card: dict[str, Any] = {
        "name": f"napari-dmd student ({checkpoint.parent.name}/{checkpoint.name})",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "napari_dmd_version": __version__, "checkpoint": str(checkpoint),
        "method": cfg.get("method"), "iterations": ckpt.get("iteration"),
        "classes": meta["class_names"] or [f"class {i}" for i in range(model.num_classes)],
        "num_classes": model.num_classes, "spatial_dims": dims, "axes": meta["axes"],
        "input": {"layout": f"(N, 1, {', '.join(meta['axes'])})", "dtype": "float32",
                  "normalization": meta["normalization"],
                  "normalization_description": NORMALIZATION_TEXT.get(meta["normalization"], meta["normalization"]),
                  "any_size": True},
        "output": {"layout": f"(N, {model.num_classes}, {', '.join(meta['axes'])})",
                   "meaning": "per-pixel class logits; softmax over the class axis, argmax gives the label"},
        "patch_size": patch, "spacing": meta["spacing"], "architecture": model.config(),
        "parameters": count_parameters(model),
        "flops_per_patch": count_flops(export_model, shape), "flops_input_shape": list(shape),
        "latency": {"pytorch": measure_latency(export_model.to(dev), shape, device=dev, runs=latency_runs),
                    "input_shape": list(shape), "machine": machine_info(dev)},
        "training_validation_dice": ckpt.get("best_dice"),
        "teacher_source": ckpt.get("teacher_source"),
        "exports": exports or {},
        "safety": "ONNX carries no code. TorchScript is a program: load it only from a source you trust "
                  "(napari-dmd: trust=True / --trust-teacher).",
    }
    export_model.cpu()
    onnx_path = (exports or {}).get("onnx", {}).get("path")
    if onnx_path:
        try:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, torch.get_num_threads())
            sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
            card["latency"]["onnxruntime_cpu"] = measure_latency(
                lambda x: sess.run(None, {"image": x.numpy()}), shape, runs=latency_runs)
        except ImportError:
            pass
    if teacher is None:
        teacher = _default_teacher(ckpt)
    card["teacher"] = _teacher_summary(teacher, patch) if teacher is not None else None
    if card["teacher"] and card["teacher"]["flops_per_patch"] and card["flops_per_patch"]:
        card["teacher"]["flops_ratio"] = card["teacher"]["flops_per_patch"] / card["flops_per_patch"]
    if card["teacher"] and card["teacher"]["parameters"]:
        card["teacher"]["parameter_ratio"] = card["teacher"]["parameters"] / card["parameters"]
    card["evaluation"] = None
    labelled = [c for c in (cases or []) if c.label is not None]
    if labelled:
        names = set(ckpt.get("val_cases") or [])
        chosen = [c for c in labelled if c.name in names] if split == "val" else labelled
        split_text = "validation split recorded in the checkpoint" if split == "val" else "all given cases"
        if split == "val" and not chosen:
            chosen, split_text = labelled, "all given cases (none of the checkpoint's validation cases was given)"
        student = Segmenter(model.to(dev), model.num_classes, dims, patch, meta["normalization"],
                            meta["class_names"], str(dev), name=checkpoint.name)
        ev: dict[str, Any] = {"split": split_text, "cases": [c.name for c in chosen],
                              "student": _evaluate(student, chosen, model.num_classes)}
        if teacher is not None:
            if teacher.num_classes != model.num_classes:
                raise ExportError(f"{teacher.source}: the teacher predicts {teacher.num_classes} classes, the "
                                  f"student {model.num_classes}")
            teacher.to(dev)
            tseg = Segmenter(teacher, teacher.num_classes, teacher.spatial_dims,
                             list(teacher.patch_size or patch)[-teacher.spatial_dims:], teacher.normalization,
                             teacher.class_names, str(dev), name=str(teacher.source))
            ev["teacher"] = _evaluate(tseg, chosen, teacher.num_classes)
            s, t = ev["student"]["mean_dice"], ev["teacher"]["mean_dice"]
            ev["dice_retention"] = (s / t) if s is not None and t else None
            if ev["teacher"]["seconds_per_case"] and ev["student"]["seconds_per_case"]:
                ev["speedup_per_case"] = ev["teacher"]["seconds_per_case"] / ev["student"]["seconds_per_case"]
        card["evaluation"] = ev
        model.cpu()
    return card


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int) and abs(v) >= 10000:
        return f"{v:,}"
    return str(v)


def _gflops(v: int | None) -> str:
    return f"{v / 1e9:.3f}" if v else "n/a"


def card_markdown(card: dict[str, Any]) -> str:
    """The model card as Markdown."""
    lines = [f"# {card['name']}", "", f"Created {card['created']} by napari-dmd {card['napari_dmd_version']} "
             f"from `{card['checkpoint']}` (method {card['method']}, {card['iterations']} iterations).", "",
             "## Use", "",
             f"* Input: {card['input']['layout']} {card['input']['dtype']}, any spatial size.",
             f"* Normalization: `{card['input']['normalization']}` — {card['input']['normalization_description']}.",
             f"* Output: {card['output']['layout']} — {card['output']['meaning']}.",
             f"* Patch size (training / tiling): {card['patch_size']}; spacing: {card['spacing']} (axes "
             f"{card['axes']}).", "", "## Classes", "", "| value | class |", "|---|---|"]
    lines += [f"| {i} | {name} |" for i, name in enumerate(card["classes"])]
    lat = card["latency"]
    lines += ["", "## Size and speed", "", "| | student | teacher |", "|---|---|---|"]
    t = card.get("teacher") or {}
    lines.append(f"| parameters | {_fmt(card['parameters'])} | {_fmt(t.get('parameters'))} |")
    lines.append(f"| GFLOPs per patch {tuple(card['flops_input_shape'][2:])} | {_gflops(card['flops_per_patch'])} | "
                 f"{_gflops(t.get('flops_per_patch'))} |")
    lines += ["", f"Latency on this machine ({lat['machine']['processor']}, {lat['machine']['device']}, "
              f"{lat['machine']['torch_threads']} torch threads), one patch {tuple(lat['input_shape'])}:", ""]
    lines.append(f"* PyTorch: {lat['pytorch']['median_ms']:.2f} ms (median of {lat['pytorch']['runs']})")
    if "onnxruntime_cpu" in lat:
        lines.append(f"* onnxruntime (CPU): {lat['onnxruntime_cpu']['median_ms']:.2f} ms")
    ev = card.get("evaluation")
    lines += ["", "## Dice", ""]
    if not ev:
        lines.append("Not evaluated (no labelled data given).")
    else:
        lines += [f"Split: {ev['split']} ({len(ev['cases'])} cases).", "", "| class | student | teacher |",
                  "|---|---|---|"]
        sd = ev["student"]["dice_per_class"]
        td = (ev.get("teacher") or {}).get("dice_per_class") or [None] * len(sd)
        for i, (s, tt) in enumerate(zip(sd, td)):
            lines.append(f"| {card['classes'][i + 1] if i + 1 < len(card['classes']) else i + 1} | {_fmt(s)} | "
                         f"{_fmt(tt)} |")
        lines.append(f"| **mean** | **{_fmt(ev['student']['mean_dice'])}** | "
                     f"**{_fmt((ev.get('teacher') or {}).get('mean_dice'))}** |")
        if ev.get("dice_retention") is not None:
            lines += ["", f"Dice retention (student / teacher): **{100 * ev['dice_retention']:.1f} %**"]
        secs = [ev["student"].get("seconds_per_case"), (ev.get("teacher") or {}).get("seconds_per_case")]
        if secs[0]:
            lines += ["", f"Seconds per case (sliding window, {card['latency']['machine']['device']}): student "
                      f"{secs[0]:.2f}" + (f", teacher {secs[1]:.2f}" if secs[1] else "")]
    if card.get("teacher"):
        lines += ["", f"Teacher: `{card['teacher']['source']}` ({card['teacher']['format']})."]
    if card.get("exports"):
        lines += ["", "## Exported files", ""]
        for fmt, e in card["exports"].items():
            diff = e.get("max_abs_diff")
            lines.append(f"* {fmt}: `{Path(e['path']).name}` — max |difference| to PyTorch on random input "
                         f"{'not checked' if diff is None else f'{diff:.2e}'}")
    lines += ["", "## Safety", "", card["safety"], ""]
    return "\n".join(lines)


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
    for name, text in ((CARD_JSON, json.dumps(card, indent=2, default=float)), (CARD_MD, card_markdown(card))):
        atomic_write_text(out / name, text)
    card["files"] = {"card_json": str(out / CARD_JSON), "card_markdown": str(out / CARD_MD),
                     **{k: v["path"] for k, v in exports.items()}}
    return card


# ------------------------------------------------------------------------------------------------- CLI
def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``napari-dmd export`` to the CLI's subparsers (sets ``func=cmd_export``)."""
    from .cli import _add_data_flags
    from .teachers import add_teacher_flags

    p = subparsers.add_parser("export", help="export a student to TorchScript / ONNX with a model card")
    p.add_argument("--model", required=True, help="student checkpoint (.pt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    p.add_argument("--device", default="auto", help="where latency and Dice are measured")
    p.add_argument("--latency-runs", type=int, default=10)
    p.add_argument("--split", choices=["val", "all"], default="val",
                   help="Dice on the checkpoint's validation cases (default) or on all given cases")
    add_teacher_flags(p, required=False)
    _add_data_flags(p)
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``napari-dmd export``."""
    cases = None
    if getattr(args, "data", None) or getattr(args, "images", None):
        from .cli import _load_cases

        cases, _ = _load_cases(args)
    teacher = None
    if getattr(args, "teacher", None):
        from .teachers import teacher_from_args

        teacher = teacher_from_args(args)
    card = export_student(args.model, args.out, formats=args.formats, cases=cases, teacher=teacher,
                          device=args.device, opset=args.opset, overwrite=args.overwrite,
                          latency_runs=args.latency_runs, split=args.split)
    for fmt, e in card["exports"].items():
        diff = e.get("max_abs_diff")
        print(f"{fmt}: {e['path']}  (max |difference| to PyTorch {'not checked' if diff is None else f'{diff:.2e}'})")
    lat = card["latency"]["pytorch"]["median_ms"]
    print(f"student: {card['parameters']:,} parameters, "
          f"{(card['flops_per_patch'] or 0) / 1e9:.3f} GFLOPs and {lat:.1f} ms per patch {card['patch_size']}")
    ev = card.get("evaluation")
    if ev:
        t = (ev.get("teacher") or {}).get("mean_dice")
        print(f"mean Dice on {len(ev['cases'])} cases ({ev['split']}): student {ev['student']['mean_dice']:.4f}"
              + (f", teacher {t:.4f}, retention {100 * ev['dice_retention']:.1f} %" if t else ""))
    print(f"model card: {card['files']['card_json']}  {card['files']['card_markdown']}")
    return 0
