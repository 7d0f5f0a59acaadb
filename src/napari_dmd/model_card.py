"""The model card of an exported student: classes, input, size, FLOPs, latency, Dice vs the teacher.

:func:`model_card` builds it (a JSON-serializable dict) and :func:`card_markdown` writes it as Markdown; Dice and
time per case come from the one evaluator (:func:`napari_dmd.evaluation.evaluate_cases`), the machine from
:func:`napari_dmd.runtime.machine_info`. :mod:`napari_dmd.export` writes both next to the exported files.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_checkpoint, model_from_checkpoint
from .exportable import ExportableUNet, ExportError
from .models.unet import UNet

NORMALIZATION_TEXT = {
    "zscore": "per image: subtract the mean and divide by the standard deviation of all voxels",
    "zscore-fg": "per image: z-score with the mean/std of the voxels above the image's 10th percentile",
    "ct": "per image: clip to the 0.5 / 99.5 percentiles, then z-score",
    "none": "raw intensities (float32), no normalization",
}


def student_metadata(ckpt: dict[str, Any], model: UNet) -> dict[str, Any]:
    """What a user of the exported model must know: classes, input layout, normalization, patch, spacing."""
    from . import __version__

    names = ckpt.get("class_names")
    return {"format": "napari-dmd student", "napari_dmd_version": __version__,
            "spatial_dims": model.spatial_dims, "in_channels": model.in_channels, "num_classes": model.num_classes,
            "class_names": list(names) if names else None, "normalization": ckpt.get("normalization", "zscore"),
            "patch_size": ckpt.get("patch_size"), "spacing": ckpt.get("spacing"),
            "axes": "zyx" if model.spatial_dims == 3 else "yx", "architecture": model.config()}


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


def _dice_and_time(seg: Any, cases: Sequence[Any]) -> dict[str, Any]:
    """The card's evaluation of one model (:func:`napari_dmd.evaluation.evaluate_cases`, no HD95)."""
    from .evaluation import evaluate_cases

    ev = evaluate_cases(seg, cases, hd95=False)
    return {k: ev[k] for k in ("dice_per_class", "mean_dice", "seconds_per_case")}


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
    from .evaluation import teacher_segmenter
    from .models.presets import count_parameters
    from .runtime import machine_info, resolve_device
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
                              "student": _dice_and_time(student, chosen)}
        if teacher is not None:
            if teacher.num_classes != model.num_classes:
                raise ExportError(f"{teacher.source}: the teacher predicts {teacher.num_classes} classes, the "
                                  f"student {model.num_classes}")
            tseg = teacher_segmenter(teacher, fallback_patch=patch, device=str(dev), name=str(teacher.source))
            ev["teacher"] = _dice_and_time(tseg, chosen)
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
