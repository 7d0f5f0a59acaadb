"""bioimage.io model packages of a student (``napari-dmd export --format bioimageio``).

:func:`export_bioimageio` exports a student checkpoint (TorchScript + ONNX + model card, via
:func:`napari_dmd.export.export_student`) and packs them, with a test input/output pair from a real forward pass and a
cover image, into ``<out>/<name>.bioimageio.zip``: a bioimage.io model description (format 0.5) that
``bioimageio.spec`` validates (``pip install 'napari-dmd[bioimageio]'``; the package is optional).

Inputs: one tensor ``image`` with axes batch, channel (1), then z/y/x (any size from :data:`MIN_SIZE`, step 1: the
networks pad to their stride inside). Preprocessing is the student's normalization where bioimage.io can express it:
``zscore`` -> ``zero_mean_unit_variance`` over each sample (napari-dmd also clips extreme outliers first, which
bioimage.io cannot say; real scans are unchanged by it), ``ct`` -> ``clip`` at the 0.5/99.5 percentiles then
``zero_mean_unit_variance``, ``none`` -> none, ``zscore-fg`` (mean/std of the voxels above the 10th percentile) ->
not expressible: ``zero_mean_unit_variance`` is declared as the closest, and the description says so.
Outputs: ``logits`` with one channel per class (softmax over the channel axis, argmax gives the label).

A package reloads as a teacher: :func:`package_weights` finds its ONNX (safe without trust) or TorchScript weights,
and ``load_teacher`` accepts the ``.bioimageio.zip`` itself.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .exportable import ExportError
from .teachers.bioimageio import package_weights

__all__ = ["MIN_SIZE", "PACKAGE_SUFFIX", "bioimageio_normalize", "export_bioimageio", "package_weights",
           "preprocessing_for", "validate_bioimageio", "write_bioimageio"]

PACKAGE_SUFFIX = ".bioimageio.zip"
MIN_SIZE = 8  # smallest spatial size declared per axis (any size >= 1 runs; 8 keeps instance norms meaningful)
EPS = 1e-6  # bioimage.io's zero_mean_unit_variance epsilon: (x - mean) / (std + eps)
CT_CLIP = (0.5, 99.5)
NOT_EXPRESSIBLE = {
    "zscore": "napari-dmd clips extreme outliers (far outside the 0.1-99.9 % range) before the z-score; "
              "bioimage.io's zero_mean_unit_variance does not (real scans are unchanged by the clipping)",
    "zscore-fg": "napari-dmd takes mean/std from the voxels above the image's 10th percentile; bioimage.io cannot "
                 "express that, so zero_mean_unit_variance over all voxels is declared instead (an approximation)",
    "ct": "bioimage.io's percentiles may interpolate differently from numpy's by a fraction of a grey value",
}


def _require_spec() -> Any:
    try:
        import bioimageio.spec as spec
    except ImportError as e:
        raise ExportError("bioimage.io export needs bioimageio.spec: pip install 'napari-dmd[bioimageio]'") from e
    return spec


def bioimageio_normalize(image: np.ndarray, scheme: str) -> np.ndarray:
    """What the package's declared preprocessing computes on one sample (numpy), float32."""
    x = np.asarray(image, dtype=np.float32)
    if scheme == "none":
        return x.copy()
    if scheme == "ct":
        lo, hi = np.percentile(x, CT_CLIP)
        x = np.clip(x, lo, hi)
    mean, std = float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64))
    return ((x - mean) / (std + EPS)).astype(np.float32)


def preprocessing_for(scheme: str) -> list[Any]:
    """bioimage.io v0.5 preprocessing descriptions for a napari-dmd normalization scheme (see the module doc)."""
    from bioimageio.spec.model.v0_5 import (
        ClipDescr,
        ClipKwargs,
        ZeroMeanUnitVarianceDescr,
        ZeroMeanUnitVarianceKwargs,
    )

    if scheme == "none":
        return []
    zmuv = ZeroMeanUnitVarianceDescr(kwargs=ZeroMeanUnitVarianceKwargs(axes=None, eps=EPS))
    if scheme == "ct":
        return [ClipDescr(kwargs=ClipKwargs(min_percentile=CT_CLIP[0], max_percentile=CT_CLIP[1],
                                            axes=None)), zmuv]
    return [zmuv]


def _identifier(name: str, i: int) -> str:
    out = "".join(c if c.isalnum() or c in "_-" else "_" for c in str(name)).strip("_-")
    return out if out and out[0].isalpha() else f"class{i}_{out}".rstrip("_")


def _sample(card: dict[str, Any], sample: np.ndarray | None) -> np.ndarray:
    """A spatial test image: the centre crop of ``sample`` at the patch size, or smooth synthetic noise."""
    dims = int(card["spatial_dims"])
    patch = [int(p) for p in (card.get("patch_size") or [32 if dims == 3 else 64] * dims)]
    if sample is not None:
        img = np.asarray(sample, dtype=np.float32)
        if img.ndim == dims + 1 and img.shape[0] == 1:
            img = img[0]
        if img.ndim != dims:
            raise ExportError(f"sample image: shape {img.shape} is not {dims}D")
        starts = [max(0, (s - p) // 2) for s, p in zip(img.shape, patch, strict=True)]
        return np.ascontiguousarray(img[tuple(slice(a, a + p) for a, p in zip(starts, patch, strict=True))])
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    return (100 + 50 * gaussian_filter(rng.normal(size=patch), 2.0)).astype(np.float32)


def _cover(path: Path, image: np.ndarray, logits: np.ndarray, class_names: list[str]) -> None:
    """A 2:1 PNG: the test image's middle slice and its predicted labels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    mid = (lambda a: a[a.shape[0] // 2]) if image.ndim == 3 else (lambda a: a)
    labels = np.argmax(logits, axis=0)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), dpi=64)
    try:
        axes[0].imshow(mid(image), cmap="gray")
        axes[0].set_title("input")
        axes[1].imshow(mid(image), cmap="gray")
        shown = np.ma.masked_equal(mid(labels), 0)
        axes[1].imshow(shown, cmap="tab10", vmin=0, vmax=9, alpha=0.6, interpolation="nearest")
        axes[1].set_title("predicted: " + ", ".join(class_names[1:])[:60])
        for a in axes:
            a.axis("off")
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _validation_section(card: dict[str, Any]) -> str:
    """The '# Validation' section bioimage.io asks of a model's documentation."""
    ev = card.get("evaluation") or {}
    lines = ["", "## Validation", "",
             "The test input/output pair in this package is a forward pass of the TorchScript weights on the "
             "input after the declared preprocessing; the ONNX weights reproduce it (max |difference| "
             f"{((card.get('exports') or {}).get('onnx') or {}).get('max_abs_diff')}).", ""]
    if ev.get("student"):
        t = (ev.get("teacher") or {}).get("mean_dice")
        lines += [f"Mean Dice on {len(ev.get('cases') or [])} {ev.get('split', 'val')} cases: student "
                  f"{ev['student']['mean_dice']:.4f}" + (f", teacher {t:.4f}" if t else "") + ".", ""]
    else:
        lines += ["No labelled cases were given at export, so no Dice is reported here.", ""]
    return "\n".join(lines)


def write_bioimageio(card: dict[str, Any], out_dir: str | Path, *, sample: np.ndarray | None = None,
                     name: str | None = None, overwrite: bool = False, validate: bool = True) -> dict[str, Any]:
    """Pack an exported student (``card`` from ``export_student`` with both TorchScript and ONNX) as a bioimage.io zip.

    Returns ``{"path", "validation": {...}, "not_expressible": str | None}``.
    """
    _require_spec()
    import torch
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model.v0_5 import (
        Author,
        AxisId,
        BatchAxis,
        ChannelAxis,
        CiteEntry,
        FileDescr,
        Identifier,
        InputTensorDescr,
        LicenseId,
        ModelDescr,
        OnnxWeightsDescr,
        OutputTensorDescr,
        ParameterizedSize,
        SizeReference,
        SpaceInputAxis,
        SpaceOutputAxis,
        TensorId,
        TorchscriptWeightsDescr,
        Version,
        WeightsDescr,
    )

    from . import __version__

    out = Path(out_dir)
    files = card.get("files") or {}
    missing = [k for k in ("torchscript", "onnx", "card_markdown") if not files.get(k)]
    if missing:
        raise ExportError(f"{out}: the bioimage.io package needs the {', '.join(missing)} export(s) first")
    dims = int(card["spatial_dims"])
    axes = "zyx"[3 - dims:]
    scheme = str((card.get("input") or {}).get("normalization", "zscore"))
    classes = [_identifier(n, i) for i, n in enumerate(card.get("classes") or
                                                       [f"class{i}" for i in range(int(card["num_classes"]))])]
    stem = name or f"napari-dmd-{Path(str(card.get('checkpoint', 'student'))).stem}"
    target = out / f"{_identifier(stem, 0)}{PACKAGE_SUFFIX}"
    if target.exists() and not overwrite:
        raise ExportError(f"{target}: exists; pass overwrite=True (CLI --overwrite) to replace it")

    image = _sample(card, sample)
    if scheme == "ct":  # test input inside its own clip band: bioimage.io runtimes differ in clip/statistics order
        image = np.clip(image, *np.percentile(image, CT_CLIP)).astype(np.float32)
    net = torch.jit.load(str(files["torchscript"]), map_location="cpu").eval()
    x = bioimageio_normalize(image, scheme)[None, None]
    with torch.inference_mode():
        logits = net(torch.from_numpy(np.ascontiguousarray(x))).numpy().astype(np.float32)

    with tempfile.TemporaryDirectory(prefix="napari-dmd-bioimageio-") as tmp_name:
        tmp = Path(tmp_name)
        np.save(tmp / "test_input.npy", image[None, None].astype(np.float32))
        np.save(tmp / "test_output.npy", logits)
        _cover(tmp / "cover.png", image, logits[0], classes)
        import tifffile

        tifffile.imwrite(tmp / "sample_input.tif", image[None, None].astype(np.float32), photometric="minisblack")
        tifffile.imwrite(tmp / "sample_output.tif", logits, photometric="minisblack")
        for key, fname in (("torchscript", "student.torchscript.pt"), ("onnx", "student.onnx")):
            shutil.copyfile(files[key], tmp / fname)
        (tmp / "model_card.md").write_text(Path(files["card_markdown"]).read_text(encoding="utf-8")
                                           + _validation_section(card), encoding="utf-8")
        note = NOT_EXPRESSIBLE.get(scheme)
        in_axes = [BatchAxis(), ChannelAxis(channel_names=[Identifier("image")]),
                   *[SpaceInputAxis(id=AxisId(a), size=ParameterizedSize(min=MIN_SIZE, step=1)) for a in axes]]
        out_axes = [BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in classes]),
                    *[SpaceOutputAxis(id=AxisId(a), size=SizeReference(tensor_id=TensorId("image"),
                                                                         axis_id=AxisId(a))) for a in axes]]
        ev = card.get("evaluation") or {}
        retention = ev.get("dice_retention")
        descr = ModelDescr(
            name=f"napari-dmd student {stem}"[:128],
            description=(f"{dims}D U-Net student distilled by napari-dmd (Decoupled Multi-scale Distillation): "
                         f"{len(classes)} classes ({', '.join(classes)}); {card['parameters']:,} parameters"
                         + (f"; Dice retention {100 * retention:.1f} % of its teacher" if retention else "")
                         + ". " + (f"Normalization: {note}." if note else ""))[:1024],
            authors=[Author(name="napari-dmd developers")],
            cite=[CiteEntry(text="napari-dmd: compress medical segmentation U-Nets by Decoupled Multi-scale "
                                 "Distillation", url="https://github.com/napari-dmd/napari-dmd")],
            license=LicenseId("BSD-3-Clause"),
            tags=["napari-dmd", "knowledge-distillation", "segmentation", "medical-imaging", "unet",
                  f"{dims}d", "pytorch", "onnx"],
            documentation=FileDescr(source=tmp / "model_card.md"),
            covers=[FileDescr(source=tmp / "cover.png")],
            git_repo="https://github.com/napari-dmd/napari-dmd",
            inputs=[InputTensorDescr(id=TensorId("image"), axes=in_axes, preprocessing=preprocessing_for(scheme),
                                     description=f"single-channel image, normalized as: {scheme}"[:128],
                                     test_tensor=FileDescr(source=tmp / "test_input.npy"),
                                     sample_tensor=FileDescr(source=tmp / "sample_input.tif"))],
            outputs=[OutputTensorDescr(id=TensorId("logits"), axes=out_axes,
                                       description="per-pixel class logits; argmax over channel is the label",
                                       test_tensor=FileDescr(source=tmp / "test_output.npy"),
                                       sample_tensor=FileDescr(source=tmp / "sample_output.tif"))],
            weights=WeightsDescr(
                torchscript=TorchscriptWeightsDescr(source=tmp / "student.torchscript.pt",
                                                    pytorch_version=Version(torch.__version__.split("+")[0])),
                onnx=OnnxWeightsDescr(source=tmp / "student.onnx", parent="torchscript",
                                      opset_version=int((card.get("exports") or {}).get("onnx", {}).get("opset", 17)),
                                      comment="exported from the same PyTorch network; norms in float64")),
            config={"napari_dmd": {"version": __version__, "normalization": scheme,
                                   "patch_size": card.get("patch_size"), "spacing": card.get("spacing"),
                                   "class_names": card.get("classes")}},
        )
        out.mkdir(parents=True, exist_ok=True)
        part = out / f".{target.name}.part"
        save_bioimageio_package(descr, output_path=part)
        part.replace(target)
    result: dict[str, Any] = {"path": str(target), "not_expressible": NOT_EXPRESSIBLE.get(scheme)}
    if validate:
        result["validation"] = validate_bioimageio(target)
    return result


def validate_bioimageio(path: str | Path, *, perform_io_checks: bool = True) -> dict[str, Any]:
    """Validate a package offline with ``bioimageio.spec``: ``{"status", "errors", "warnings"}``.

    File checks (presence, SHA-256) run on the package's own files; nothing is downloaded.
    """
    _require_spec()
    from bioimageio.spec import load_description

    rd = load_description(str(path), perform_io_checks=perform_io_checks)
    summary = rd.validation_summary
    errors = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for d in summary.details for e in d.errors]
    warnings = [f"{'.'.join(map(str, w.loc))}: {w.msg}" for d in summary.details for w in d.warnings]
    return {"status": str(summary.status), "errors": errors, "warnings": warnings,
            "format_version": str(getattr(rd, "format_version", "?"))}


def export_bioimageio(checkpoint: str | Path, out_dir: str | Path, *, sample: np.ndarray | None = None,
                      name: str | None = None, validate: bool = True, **export_kwargs: Any) -> dict[str, Any]:
    """``export_student`` (TorchScript + ONNX + card) then :func:`write_bioimageio`; returns the card with
    ``card["bioimageio"]`` (path, validation) and ``card["files"]["bioimageio"]``."""
    from .export import export_student

    _require_spec()  # fail before the slow export
    export_kwargs["formats"] = ["torchscript", "onnx"]
    card = export_student(checkpoint, out_dir, **export_kwargs)
    card.setdefault("checkpoint", str(checkpoint))
    info = write_bioimageio(card, out_dir, sample=sample, name=name, validate=validate,
                            overwrite=bool(export_kwargs.get("overwrite", False)))
    card["bioimageio"] = info
    card["files"]["bioimageio"] = info["path"]
    return card
