"""Student export: TorchScript and ONNX reproduce PyTorch, the model card, ``napari-dmd export``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from napari_dmd import export as export_mod
from napari_dmd.checkpoint import save_checkpoint
from napari_dmd.cli.export import add_export_parser
from napari_dmd.config import TrainConfig
from napari_dmd.data.cases import load_case
from napari_dmd.distill.engine import Distiller
from napari_dmd.export import (
    ATOL,
    CARD_JSON,
    CARD_MD,
    ONNX_NAME,
    TORCHSCRIPT_NAME,
    ExportError,
    export_onnx,
    export_student,
    export_torchscript,
    verify,
)
from napari_dmd.models.heads import ScaleHeads
from napari_dmd.models.presets import count_parameters
from napari_dmd.models.unet import UNet
from napari_dmd.teachers import load_teacher

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*torch.jit.*deprecated:DeprecationWarning", "ignore:You are using the legacy TorchScript-based ONNX",
    "ignore:The feature will be removed:DeprecationWarning", "ignore:Detected pickle protocol:UserWarning")

CLASSES = ["background", "anterior", "posterior"]
N_CASES = 5
TINY = dict(model="4,8,16", iterations=2, batch_size=1, patch_size=[16, 16, 16], val_interval=2,
            checkpoint_interval=2, num_threads=1, augment=False)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: tiny networks on a shared 2-core machine run far faster without thread contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.fixture(scope="module")
def hippo():
    from conftest import data_dir

    root = data_dir("msd_hippocampus")
    images = sorted((root / "imagesTr").glob("*.nii.gz"))[:N_CASES]
    return root, [load_case(p, root / "labelsTr" / p.name) for p in images]


@pytest.fixture(scope="module")
def trained(hippo, tmp_path_factory):
    """A teacher (3 iterations) and a DMD student (2 iterations) on 5 hippocampus cases."""
    _, cases = hippo
    out = tmp_path_factory.mktemp("runs")
    t = Distiller(TrainConfig(method="none", class_names=CLASSES, **{**TINY, "model": "4,8,16,32",
                                                                     "iterations": 3}),
                  cases, output_dir=out / "teacher", role="teacher")
    t.run_to_end()
    s = Distiller(TrainConfig(method="dmd", class_names=CLASSES, **TINY), cases,
                  teacher=load_teacher(t.last_path), output_dir=out / "student")
    s.run_to_end()
    assert s.heads is not None  # the student was trained with scale heads; the export must drop them
    return t.last_path, s.last_path, s


def ort_run(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x.numpy()})[0]


@pytest.mark.parametrize("dims, norm", [(2, "instance"), (3, "instance"), (2, "group"), (3, "batch")])
def test_exports_reproduce_pytorch(dims, norm, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    torch.manual_seed(dims)
    model = UNet(dims, 1, 3, (4, 8, 16), norm=norm).eval()
    if norm == "batch":  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    patch = [32, 40] if dims == 2 else [16, 24, 16]
    meta = {"class_names": CLASSES, "normalization": "zscore-fg", "patch_size": patch, "spatial_dims": dims,
            "num_classes": 3}
    d_ts = export_torchscript(model, tmp_path / "m.pt", metadata=meta, patch_size=patch)
    d_onnx = export_onnx(model, tmp_path / "m.onnx", metadata=meta, patch_size=patch)
    assert d_ts <= ATOL and d_onnx is not None and d_onnx <= ATOL
    # independent check on another batch size and a size that is not a multiple of the stride
    x = torch.randn(3, 1, *([37, 29] if dims == 2 else [13, 19, 22]))
    with torch.no_grad():
        ref = model(x)
        scripted = torch.jit.load(str(tmp_path / "m.pt"))
        assert (scripted(x) - ref).abs().max() <= ATOL
        assert np.abs(ort_run(tmp_path / "m.onnx", x) - ref.numpy()).max() <= ATOL
    # normalization statistics are float64 inside the ONNX graph (onnxruntime's float32 ones drift, see export.py)
    nodes = onnx.load(str(tmp_path / "m.onnx")).graph.node
    assert "InstanceNormalization" not in {n.op_type for n in nodes}
    if norm != "batch":
        assert any(n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.DOUBLE for a in n.attribute)
                   for n in nodes)
    # the exported files carry the metadata and load back as teachers
    for path, kw in ((tmp_path / "m.onnx", {}), (tmp_path / "m.pt", {"trust": True})):
        t = load_teacher(path, **kw)
        assert (t.class_names, t.normalization, t.patch_size, t.spatial_dims) == (CLASSES, "zscore-fg", patch, dims)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("preset,opts", [("student-fast", {}), ("student-fast-tiny", {}),
                                         ("student-fast", {"upsample": "shuffle"}),
                                         ("student-fast", {"upsample": "refine"})])
def test_fast_students_export_at_full_resolution(preset, opts, dims, tmp_path):
    """Half-resolution students (strided stem, batch norm) export with their logit upsampling and folded norms."""
    pytest.importorskip("onnxruntime")
    from napari_dmd.models.presets import build_model

    torch.manual_seed(0)
    model = build_model(preset, dims, 3, **opts).eval()
    for m in model.modules():  # non-trivial running statistics, so folding matters
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # the refine conv starts at zero: give it weights, so its path is exported too
        for p in model.logit_upsampler.parameters():
            p.normal_(0, 0.1)
    patch = [48, 40] if dims == 2 else [16, 32, 24]
    assert export_torchscript(model, tmp_path / "m.pt", patch_size=patch) <= ATOL
    assert export_onnx(model, tmp_path / "m.onnx", patch_size=patch) <= ATOL
    x = torch.randn(2, 1, *([37, 29] if dims == 2 else [13, 19, 22]))
    with torch.no_grad():
        ref = model(x)
        out = torch.jit.load(str(tmp_path / "m.pt"))(x)
    assert out.shape == ref.shape == (2, 3, *x.shape[2:])
    assert (out - ref).abs().max() <= ATOL
    assert np.abs(ort_run(tmp_path / "m.onnx", x) - ref.numpy()).max() <= ATOL


def test_a_mismatch_is_caught_and_leaves_no_file(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    model = UNet(2, 1, 3, (4, 8)).eval()
    assert verify(lambda x: model(x) + 1e-3, model, [(1, 1, 16, 16)]) == pytest.approx(1e-3, rel=1e-3)
    monkeypatch.setattr(export_mod, "verify", lambda *a, **k: 0.5)
    with pytest.raises(ExportError, match=r"m\.onnx: ONNX output differs from PyTorch by 0\.5"):
        export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(ExportError, match=r"m\.pt: TorchScript output differs"):
        export_torchscript(model, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_export_student_and_model_card(trained, hippo, tmp_path):
    pytest.importorskip("onnxruntime")
    teacher_path, student_path, run = trained
    _, cases = hippo
    out = tmp_path / "export"
    card = export_student(student_path, out, cases=cases, teacher=load_teacher(teacher_path), device="cpu",
                          latency_runs=2)
    for name in (TORCHSCRIPT_NAME, ONNX_NAME, CARD_JSON, CARD_MD):
        assert (out / name).is_file()
    assert card["files"]["onnx"] == str(out / ONNX_NAME)
    saved = json.loads((out / CARD_JSON).read_text(encoding="utf-8"))
    assert saved["classes"] == CLASSES and saved["num_classes"] == 3
    assert saved["input"]["normalization"] == "zscore" and saved["patch_size"] == [16, 16, 16]
    assert saved["spacing"] == [1.0, 1.0, 1.0]
    assert saved["parameters"] == count_parameters(run.model)  # the scale heads are not exported
    assert saved["flops_per_patch"] > 0 and saved["teacher"]["flops_per_patch"] > saved["flops_per_patch"]
    assert saved["latency"]["pytorch"]["median_ms"] > 0 and saved["latency"]["onnxruntime_cpu"]["median_ms"] > 0
    assert saved["exports"]["onnx"]["max_abs_diff"] <= ATOL and saved["exports"]["torchscript"]["max_abs_diff"] <= ATOL
    ev = saved["evaluation"]
    assert ev["cases"] == [c.name for c in run.val_cases] and ev["split"].startswith("validation split")
    s, t = ev["student"]["mean_dice"], ev["teacher"]["mean_dice"]
    assert 0 <= s <= 1 and 0 < t <= 1 and ev["dice_retention"] == pytest.approx(s / t)
    assert len(ev["student"]["dice_per_class"]) == 2
    md = (out / CARD_MD).read_text(encoding="utf-8")
    assert "| 1 | anterior |" in md and "Dice retention" in md and "onnxruntime" in md and "GFLOPs" in md

    onnx_teacher = load_teacher(out / ONNX_NAME)  # an exported student can teach in turn
    assert (onnx_teacher.class_names, onnx_teacher.spatial_dims) == (CLASSES, 3)

    with pytest.raises(ExportError, match=r"model_card\.json: exists"):
        export_student(student_path, out, formats=["onnx"])
    card2 = export_student(student_path, out, formats=["torchscript"], overwrite=True, device="cpu",
                           latency_runs=1)
    assert card2["evaluation"] is None and "onnx" not in card2["exports"]
    assert card2["teacher"]["source"] == str(teacher_path)  # the checkpoint's own teacher, found by default


def test_cli_export(trained, hippo, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    teacher_path, student_path, _ = trained
    root, _ = hippo
    parser = argparse.ArgumentParser(prog="napari-dmd")
    add_export_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["export", "--model", str(student_path), "--out", str(tmp_path / "x"), "--teacher",
                              str(teacher_path), "--data", str(root), "--max-cases", str(N_CASES),
                              "--device", "cpu", "--latency-runs", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "onnx: " in out and "torchscript: " in out and "retention" in out and "model card:" in out
    card = json.loads((tmp_path / "x" / CARD_JSON).read_text(encoding="utf-8"))
    assert card["evaluation"]["teacher"]["mean_dice"] is not None


def test_export_of_a_bad_checkpoint_names_it(tmp_path):
    model = UNet(2, 1, 3, (4, 8))
    heads = ScaleHeads(2, [8], 3)
    path = save_checkpoint(tmp_path / "s.pt", {"model": model.config(), "state_dict": heads.state_dict()})
    with pytest.raises(ValueError, match=r"s\.pt: weights do not fit"):
        export_student(path, tmp_path / "out")
    with pytest.raises(ExportError, match="unknown export format"):
        export_student(path, tmp_path / "out", formats=["tflite"])
