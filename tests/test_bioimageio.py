"""bioimage.io packages: ``export --format bioimageio`` writes a zip bioimageio.spec accepts; reloads as teacher."""

from __future__ import annotations

import argparse
import zipfile

import numpy as np
import pytest
import torch

from napari_dmd.checkpoint import save_checkpoint
from napari_dmd.choices import EXPORT_CHOICES, EXPORT_FORMATS
from napari_dmd.cli.export import add_export_parser
from napari_dmd.models.unet import UNet

pytest.importorskip("bioimageio.spec")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*torch.jit.*deprecated:DeprecationWarning", "ignore:You are using the legacy TorchScript-based ONNX",
    "ignore:The feature will be removed:DeprecationWarning", "ignore:Detected pickle protocol:UserWarning")

CLASSES = ["background", "anterior", "posterior"]


def _student(tmp_path, dims: int, normalization: str):
    torch.manual_seed(dims)
    model = UNet(dims, 1, 3, (4, 8, 16)).eval()
    patch = [16, 24, 16][:dims] if dims == 3 else [32, 24]
    path = save_checkpoint(tmp_path / "student.pt", {"model": model.config(), "state_dict": model.state_dict(),
                                                      "class_names": CLASSES, "normalization": normalization,
                                                      "patch_size": patch})
    return model, path


def test_format_choice_and_alias():
    assert EXPORT_FORMATS == ("torchscript", "onnx") and "bioimageio" in EXPORT_CHOICES
    sub = argparse.ArgumentParser().add_subparsers()
    p = add_export_parser(sub)
    assert p.parse_args(["--model", "m.pt", "--out", "o"]).formats == ["torchscript", "onnx"]
    assert p.parse_args(["--model", "m.pt", "--out", "o", "--format", "bioimageio"]).formats == ["bioimageio"]


@pytest.mark.parametrize("dims, normalization", [(3, "zscore"), (2, "ct")])
def test_package_validates_and_reloads_as_teacher(dims, normalization, tmp_path):
    from bioimageio.spec import load_description

    from napari_dmd.bioimageio_export import bioimageio_normalize, export_bioimageio, package_weights
    from napari_dmd.teachers import load_teacher

    torch.set_num_threads(1)
    model, ckpt = _student(tmp_path, dims, normalization)
    card = export_bioimageio(ckpt, tmp_path / "out", latency_runs=1)
    zpath = tmp_path / "out" / card["files"]["bioimageio"]
    v = card["bioimageio"]["validation"]
    assert v["status"] == "valid-format" and v["errors"] == [], v
    rd = load_description(str(zpath), perform_io_checks=True)  # independent of our summary
    assert rd.validation_summary.status == "valid-format"
    assert [str(c) for c in rd.outputs[0].axes[1].channel_names] == CLASSES
    steps = [p.id for p in rd.inputs[0].preprocessing if p.id != "ensure_dtype"]  # the spec adds ensure_dtype
    assert steps == (["clip", "zero_mean_unit_variance"] if normalization == "ct" else ["zero_mean_unit_variance"])
    assert rd.weights.torchscript is not None and rd.weights.onnx is not None
    with zipfile.ZipFile(zpath) as zf:
        names = set(zf.namelist())
        assert {"rdf.yaml", "test_input.npy", "test_output.npy", "cover.png", "model_card.md"} <= names
        x = np.load(zf.open("test_input.npy"))
        y = np.load(zf.open("test_output.npy"))
    # the test output is the student's logits on the declared preprocessing of the test input
    with torch.inference_mode():
        ref = model(torch.from_numpy(bioimageio_normalize(x[0, 0], normalization)[None, None])).numpy()
    assert y.shape == (1, 3, *x.shape[2:]) and np.abs(y - ref).max() < 1e-4
    # reloads as a teacher: the package's ONNX weights (no trust needed), and the zip itself
    for source in (package_weights(zpath, into=tmp_path / "w"), zpath):
        t = load_teacher(source)
        assert t.class_names == CLASSES and t.spatial_dims == dims
        got = t(torch.from_numpy(bioimageio_normalize(x[0, 0], normalization)[None, None]))
        assert np.abs(np.asarray(got) - ref).max() < 1e-4


def test_cli_export_bioimageio(tmp_path, capsys):
    from napari_dmd.cli import main

    _, ckpt = _student(tmp_path, 2, "zscore")
    assert main(["export", "--model", str(ckpt), "--out", str(tmp_path / "o"), "--format", "bioimageio",
                 "--latency-runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "bioimageio:" in out and "valid-format, 0 errors" in out
    assert (tmp_path / "o" / "student.onnx").is_file() and list((tmp_path / "o").glob("*.bioimageio.zip"))
    # nothing is overwritten without --overwrite: one line, status 2
    assert main(["export", "--model", str(ckpt), "--out", str(tmp_path / "o"), "--format", "bioimageio"]) == 2
