"""Teachers from elsewhere: own checkpoints, TorchScript, nnU-Net v2 folders, MONAI bundles/state dicts, ONNX.

Each kind is built offline, loaded through ``load_teacher`` and distils a student for a few steps on real
hippocampus MRI. Safe loading: a pickle that would run code is refused and runs nothing.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from napari_dmd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from napari_dmd.cli.flags import add_teacher_flags
from napari_dmd.config import ConfigError, TrainConfig
from napari_dmd.data.cases import Case, load_case
from napari_dmd.distill.engine import Distiller
from napari_dmd.models.unet import UNet
from napari_dmd.teachers import (
    ModelTeacher,
    Teacher,
    TeacherError,
    check_teacher,
    detect_kind,
    load_teacher,
    teacher_from_args,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*torch.jit.*deprecated:DeprecationWarning", "ignore:You are using the legacy TorchScript-based ONNX",
    "ignore:The feature will be removed:DeprecationWarning", "ignore:Detected pickle protocol:UserWarning")

CLASSES = ["background", "anterior", "posterior"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: tiny networks on a shared 2-core machine run far faster without thread contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def hippo_cases() -> list[Case]:
    from conftest import data_dir

    root = data_dir("msd_hippocampus")
    images = sorted((root / "imagesTr").glob("*.nii.gz"))[:4]
    return [load_case(p, root / "labelsTr" / p.name) for p in images]


def distill_few_steps(teacher, cases, out: Path, patch=(16, 16, 16)) -> list:
    """A 2-step DMD distillation of a tiny student; returns the events."""
    cfg = TrainConfig(method="dmd", model="4,8,16", iterations=2, batch_size=1, patch_size=list(patch),
                      val_interval=2, checkpoint_interval=2, num_threads=1, max_val_cases=1, augment=False)
    d = Distiller(cfg, cases[:3], val_cases=cases[3:4], teacher=teacher, output_dir=out)
    events = list(d.run())
    steps = [e for e in events if e.kind == "step"]
    assert [e.iteration for e in steps] == [1, 2]
    assert all(np.isfinite(v) for e in steps for v in e.parts.values())
    assert {"task", "tckd", "nckd"} <= set(steps[0].parts)
    assert any(e.kind == "validation" and e.mean_dice is not None for e in events)
    ckpt = load_checkpoint(d.last_path)
    assert ckpt["teacher_source"] == teacher.source and ckpt["normalization"] == teacher.normalization
    return events


class TinyNet(nn.Module):
    """A small fully convolutional logits model (any size in, same size out)."""

    def __init__(self, dims: int = 3, classes: int = 3, in_channels: int = 1) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.a = conv(in_channels, 6, 3, padding=1)
        self.b = conv(6, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class Pointwise(nn.Module):
    """1x1 convolutions only: tiling it changes nothing (for fixed-size ONNX inputs)."""

    def __init__(self, dims: int = 2, classes: int = 3) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.a, self.b = conv(1, 5, 1), conv(5, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


# --------------------------------------------------------------------------------- nnU-Net v2 folders
def nnunet_plans(*, features=(4, 8, 16), normalization="ZScoreNormalization", network=None,
                 conv_op=None) -> dict:
    """plans.json of an nnU-Net v2 hippocampus-like dataset, with a tiny PlainConvUNet per configuration."""
    def config(dims: int) -> dict:
        n = len(features)
        return {
            "data_identifier": f"nnUNetPlans_{dims}d", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [24, 32, 24] if dims == 3 else [56, 40],
            "median_image_size_in_voxels": [36, 50, 35][-dims:], "spacing": [1.0] * dims,
            "normalization_schemes": [normalization], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {
                "network_class_name": network or "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": n, "features_per_stage": list(features),
                    "conv_op": conv_op or f"torch.nn.modules.conv.Conv{dims}d",
                    "kernel_sizes": [[3] * dims] * n, "strides": [[1] * dims] + [[2] * dims] * (n - 1),
                    "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
                    "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                    "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True,
        }

    return {
        "dataset_name": "Dataset004_Hippocampus", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [36, 50, 35], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"2d": config(2), "3d_fullres": config(3)},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 600.0, "mean": 120.0, "median": 110.0, "min": 0.0, "percentile_00_5": 10.0,
            "percentile_99_5": 400.0, "std": 50.0}},
    }


def nnunet_dataset_json(classes=CLASSES, channels=("MRI",)) -> dict:
    return {"channel_names": {str(i): c for i, c in enumerate(channels)},
            "labels": {name: i for i, name in enumerate(classes)}, "numTraining": 260, "file_ending": ".nii.gz"}


def build_plans_network(plans: dict, configuration: str, n_classes: int, seed: int = 0) -> nn.Module:
    """The network the plans describe, built the way nnU-Net builds it."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(plans).get_configuration(configuration)
    torch.manual_seed(seed)
    return get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                  cm.network_arch_init_kwargs_req_import, 1, n_classes, allow_init=True,
                                  deep_supervision=False).eval()


def nnunet_checkpoint(net: nn.Module, plans: dict, dataset_json: dict, configuration: str, fold: int) -> dict:
    """A checkpoint dict with the keys and value types nnUNetTrainer.save_checkpoint writes."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    logging = {"mean_fg_dice": [np.float64(0.41), np.float64(0.62)], "ema_fg_dice": [np.float64(0.41)],
               "dice_per_class_or_region": [[np.float64(0.4), np.float64(0.42)]],
               "train_losses": [np.float64(-0.2)], "val_losses": [np.float64(-0.3)], "lrs": [0.01],
               "epoch_start_timestamps": [1.7e9], "epoch_end_timestamps": [1.7e9 + 30]}
    return {"network_weights": net.state_dict(), "optimizer_state": opt.state_dict(), "grad_scaler_state": None,
            "logging": logging, "_best_ema": np.float64(0.62), "current_epoch": 2,
            "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset_json,
                          "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)}


def make_nnunet_folder(root: Path, *, configuration="3d_fullres", folds=(0,), plans=None, dataset_json=None,
                       checkpoint_name="checkpoint_final.pth") -> tuple[Path, dict[int, nn.Module]]:
    """An nnU-Net v2 results folder: Dataset/Trainer__Plans__config/{plans,dataset}.json + fold_k/checkpoint."""
    plans = plans or nnunet_plans()
    dataset_json = dataset_json or nnunet_dataset_json()
    n_classes = len([k for k in dataset_json["labels"] if k != "ignore"])
    folder = root / "Dataset004_Hippocampus" / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    nets = {}
    for f in folds:
        net = build_plans_network(plans, configuration, n_classes, seed=f)
        (folder / f"fold_{f}").mkdir()
        torch.save(nnunet_checkpoint(net, plans, dataset_json, configuration, f),
                   folder / f"fold_{f}" / checkpoint_name)
        nets[f] = net
    return folder, nets


@pytest.fixture(scope="module")
def nnunet_env():
    pytest.importorskip("nnunetv2")


def test_nnunet_folder_teaches(nnunet_env, hippo_cases, tmp_path):
    folder, nets = make_nnunet_folder(tmp_path)
    assert detect_kind(folder) == "nnunet" and detect_kind(folder.parent) == "nnunet"
    teacher = load_teacher(folder)
    assert isinstance(teacher, Teacher)
    assert (teacher.num_classes, teacher.spatial_dims, teacher.class_names) == (3, 3, CLASSES)
    assert teacher.normalization == "zscore" and teacher.patch_size == [24, 32, 24] and teacher.spacing == [1.0] * 3
    assert teacher.info["configuration"] == "3d_fullres" and teacher.info["folds"] == ["0"]
    x = torch.randn(2, 1, 16, 24, 16)
    with torch.no_grad():
        assert torch.allclose(teacher(x), nets[0](x), atol=1e-5)
        odd = torch.randn(1, 1, 13, 21, 18)  # not a multiple of the stride: padded and cropped back
        assert teacher(odd).shape == (1, 3, 13, 21, 18)
    assert check_teacher(teacher, hippo_cases) == []
    distill_few_steps(teacher, hippo_cases, tmp_path / "run")


def test_nnunet_folds_average_logits_and_choices(nnunet_env, tmp_path):
    folder, nets = make_nnunet_folder(tmp_path, folds=(0, 1))
    both = load_teacher(folder.parent, configuration="3d_fullres")
    one = load_teacher(folder / "fold_1" / "checkpoint_final.pth")  # a checkpoint file picks its fold
    assert both.info["folds"] == ["0", "1"] and one.info["folds"] == ["1"]
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(both(x), (nets[0](x) + nets[1](x)) / 2, atol=1e-5)
        assert torch.allclose(one(x), nets[1](x), atol=1e-5)
    assert load_teacher(folder, folds=[1]).info["folds"] == ["1"]
    with pytest.raises(TeacherError, match="fold_4"):
        load_teacher(folder, folds=[4])
    with pytest.raises(TeacherError, match="3d_lowres.*3d_fullres"):
        load_teacher(folder.parent, configuration="3d_lowres")
    with pytest.raises(TeacherError, match="trained with configuration '3d_fullres'"):
        load_teacher(folder, configuration="2d")
    with pytest.raises(TeacherError, match="checkpoint_best.pth"):
        load_teacher(folder, checkpoint="best")


def test_nnunet_2d_configuration_and_best_checkpoint(nnunet_env, tmp_path):
    folder, nets = make_nnunet_folder(tmp_path, configuration="2d", checkpoint_name="checkpoint_best.pth")
    teacher = load_teacher(folder)
    assert teacher.spatial_dims == 2 and teacher.patch_size == [56, 40]
    x = torch.randn(3, 1, 32, 24)
    with torch.no_grad():
        assert torch.allclose(teacher(x), nets[0](x), atol=1e-5)


def test_nnunet_ct_normalization_is_exact_inside_the_teacher(nnunet_env, tmp_path):
    folder, nets = make_nnunet_folder(tmp_path, plans=nnunet_plans(normalization="CTNormalization"))
    teacher = load_teacher(folder)
    assert teacher.normalization == "none"  # raw intensities in, nnU-Net's own CT normalization inside
    raw = torch.rand(1, 1, 16, 16, 16) * 800 - 100
    with torch.no_grad():
        expected = nets[0]((raw.clamp(10.0, 400.0) - 120.0) / 50.0)
        assert torch.allclose(teacher(raw), expected, atol=1e-4)


def test_nnunet_mismatches_name_the_file(nnunet_env, hippo_cases, tmp_path):
    two, _ = make_nnunet_folder(tmp_path / "a", dataset_json=nnunet_dataset_json(classes=CLASSES[:2]))
    teacher = load_teacher(two)
    with pytest.raises(TeacherError, match=r"predicts 2 classes.*hippocampus_\d+\.nii\.gz holds label 2"):
        check_teacher(teacher, hippo_cases)
    with pytest.raises(ConfigError, match="predicts 2 classes"):  # the engine's own check agrees
        Distiller(TrainConfig(method="dmd", model="4,8,16", num_classes=3), hippo_cases, teacher=teacher,
                  output_dir=tmp_path / "x")
    flat = Case(image=np.zeros((40, 40), np.float32), label=None, spacing=(1.0, 1.0), affine=np.eye(4),
                name="slice", image_path="slice.png")
    with pytest.raises(TeacherError, match="3D but slice.png is a 2D image"):
        check_teacher(teacher, [flat])

    two_channel = nnunet_dataset_json(channels=("T2", "ADC"))
    folder, _ = make_nnunet_folder(tmp_path / "b", dataset_json=two_channel)
    with pytest.raises(TeacherError, match=r"dataset\.json: the model takes 2 input channels \(T2, ADC\)"):
        load_teacher(folder)

    regions = nnunet_dataset_json()
    regions["labels"] = {"background": 0, "whole": [1, 2], "posterior": 2}
    (folder / "dataset.json").write_text(json.dumps(regions))
    with pytest.raises(TeacherError, match="region-based"):
        load_teacher(folder)


def test_nnunet_plans_cannot_import_arbitrary_code(nnunet_env, tmp_path):
    folder, _ = make_nnunet_folder(tmp_path)
    for bad in (nnunet_plans(network="os.system"), nnunet_plans(conv_op="builtins.exec")):
        (folder / "plans.json").write_text(json.dumps(bad))
        with pytest.raises(TeacherError, match=r"plans\.json: '(network_class_name|conv_op)' = .* is not an allowed "
                                               r"(network|layer) class"):
            load_teacher(folder)


def test_nnunet_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir()
    (folder / "plans.json").write_text("{}")
    (folder / "dataset.json").write_text("{}")
    monkeypatch.setitem(__import__("sys").modules, "nnunetv2", None)
    with pytest.raises(TeacherError, match=r"pip install 'napari-dmd\[nnunet\]'"):
        load_teacher(folder)


# ------------------------------------------------------------------------------------- malicious pickles
MARKER = "PWNED"


class Payload:
    """Unpickling this runs code: it writes a marker file (a harmless stand-in for an attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write({MARKER!r})",))


def test_malicious_pickle_runs_nothing_and_is_refused(tmp_path):
    marker = tmp_path / "marker.txt"
    payload = pickle.dumps(Payload(marker))
    pickle.loads(payload)  # control: the payload is live ...
    assert marker.read_text(encoding="utf-8") == MARKER
    marker.unlink()

    raw = tmp_path / "evil.pt"  # ... a plain pickle named like a checkpoint
    raw.write_bytes(payload)
    zipped = tmp_path / "evil_zip.pt"  # ... and inside a torch zip file
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload(marker)}, zipped)
    for path in (raw, zipped):
        with pytest.raises(TeacherError) as err:
            load_teacher(path)
        msg = str(err.value)
        assert str(path) in msg and "refused" in msg and "builtins.exec" in msg and "trust" in msg
        with pytest.raises(CheckpointError, match="not a readable napari-dmd checkpoint"):
            load_checkpoint(path)
        with pytest.raises(TeacherError, match="refused"):
            load_teacher(path, kind="monai", network="UNet", network_args={"spatial_dims": 2})
    assert not marker.exists(), "loading a malicious file ran its code"
    junk = tmp_path / "junk.pt"  # a corrupt file is reported as unreadable, not as dangerous
    junk.write_text("not a checkpoint")
    with pytest.raises(TeacherError, match=r"junk\.pt: not a readable PyTorch teacher file \(not a PyTorch file"):
        load_teacher(junk)


def test_malicious_nnunet_checkpoint_needs_trust(nnunet_env, tmp_path):
    folder, nets = make_nnunet_folder(tmp_path)
    marker = tmp_path / "marker.txt"
    ckpt = nnunet_checkpoint(nets[0], nnunet_plans(), nnunet_dataset_json(), "3d_fullres", 0)
    ckpt["logging"]["hook"] = Payload(marker)
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(TeacherError, match=r"checkpoint_final\.pth: refused .*builtins\.exec") as err:
        load_teacher(folder)
    assert "numpy" not in str(err.value)  # nnU-Net's NumPy metrics are allowed, only the payload is named
    assert not marker.exists()
    load_teacher(folder, trust=True)  # the explicit 'I trust this file' option unpickles (and runs) it
    assert marker.read_text(encoding="utf-8") == MARKER


# ------------------------------------------------------------------------------------------ TorchScript
def test_torchscript_teacher_needs_trust_and_teaches(hippo_cases, tmp_path):
    torch.manual_seed(0)
    net = TinyNet(3).eval()
    path = tmp_path / "teacher.ts"
    torch.jit.script(net).save(str(path))
    assert detect_kind(path) == "torchscript"
    with pytest.raises(TeacherError, match=r"teacher\.ts: a TorchScript file carries a program.*trust=True"):
        load_teacher(path)
    teacher = load_teacher(path, trust=True, class_names=CLASSES)
    assert (teacher.num_classes, teacher.spatial_dims, teacher.class_names) == (3, 3, CLASSES)
    x = torch.randn(2, 1, 12, 14, 10)
    with torch.no_grad():
        assert torch.allclose(teacher(x), net(x), atol=1e-6)
    distill_few_steps(teacher, hippo_cases, tmp_path / "run")

    flat = tmp_path / "flat.pt"
    torch.jit.script(TinyNet(2, classes=4)).save(str(flat))
    t2 = load_teacher(flat, trust=True)
    assert (t2.spatial_dims, t2.num_classes) == (2, 4)
    rgb = tmp_path / "rgb.pt"
    torch.jit.script(TinyNet(2, in_channels=3)).save(str(rgb))
    with pytest.raises(TeacherError, match=r"rgb\.pt: the TorchScript model does not map a one-channel"):
        load_teacher(rgb, trust=True)


# ------------------------------------------------------------------------------------------------ MONAI
MONAI_UNET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16], "strides": [2, 2],
              "num_res_units": 0}


def make_bundle(root: Path, network_def: dict, extra: dict | None = None) -> tuple[Path, nn.Module]:
    from monai.networks.nets import UNet as MonaiUNet

    folder = root / "hippocampus_bundle"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    torch.manual_seed(0)
    net = MonaiUNet(**MONAI_UNET).eval()
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    meta = {"name": "hippocampus", "version": "0.1.0", "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "magnitude", "num_channels": 1,
                             "spatial_shape": [32, 32, 32], "dtype": "float32"}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 3,
                             "channel_def": {"0": "background", "1": "anterior", "2": "posterior"}}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    config = {"bundle_root": ".", "device": "$torch.device('cpu')", "network_def": network_def,
              "network": "$@network_def.to(@device)",
              "preprocessing": {"_target_": "Compose", "transforms": [
                  {"_target_": "LoadImaged", "keys": "image"},
                  {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True}]}, **(extra or {})}
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    return folder, net


def test_monai_bundle_teaches(hippo_cases, tmp_path):
    folder, net = make_bundle(tmp_path, {"_target_": "UNet", **{k: v for k, v in MONAI_UNET.items()
                                                                if k != "channels"}, "channels": "@channels"},
                              extra={"channels": [4, 8, 16]})
    assert detect_kind(folder) == "monai-bundle"
    teacher = load_teacher(folder)
    assert (teacher.num_classes, teacher.spatial_dims, teacher.class_names) == (3, 3, CLASSES)
    assert teacher.normalization == "zscore-fg" and teacher.patch_size == [32, 32, 32]
    x = torch.randn(1, 1, 16, 20, 16)
    with torch.no_grad():
        assert torch.allclose(teacher(x), net(x), atol=1e-5)
        assert teacher(torch.randn(1, 1, 13, 17, 11)).shape == (1, 3, 13, 17, 11)
    distill_few_steps(teacher, hippo_cases, tmp_path / "run")


def test_monai_bundle_code_is_refused_without_trust(tmp_path):
    marker = tmp_path / "marker.txt"
    evil = {"_target_": "UNet", **MONAI_UNET,
            "channels": f"$open({str(marker)!r}, 'w').write('x') and [4, 8, 16]"}
    folder, _ = make_bundle(tmp_path, evil)
    with pytest.raises(TeacherError, match=r"inference\.json: network_def holds code .*trust=True"):
        load_teacher(folder)
    assert not marker.exists()
    (folder / "configs" / "inference.json").write_text(json.dumps(
        {"network_def": {"_target_": "torch.nn.Identity"}}))
    with pytest.raises(TeacherError, match="not a monai.networks.nets class"):
        load_teacher(folder)


def test_monai_state_dict_with_network_name_and_args(hippo_cases, tmp_path):
    from monai.networks.nets import UNet as MonaiUNet

    torch.manual_seed(1)
    net = MonaiUNet(**MONAI_UNET).eval()
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, path)
    with pytest.raises(TeacherError, match="network="):
        load_teacher(path)
    teacher = load_teacher(path, network="UNet", network_args=MONAI_UNET, class_names=CLASSES)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(teacher(x), net(x), atol=1e-5)
    assert sum(p.numel() for p in teacher.parameters()) == sum(p.numel() for p in net.parameters())
    distill_few_steps(teacher, hippo_cases, tmp_path / "run")
    with pytest.raises(TeacherError, match=r"weights\.pth: the weights do not fit UNet"):
        load_teacher(path, network="UNet", network_args={**MONAI_UNET, "channels": [4, 8, 32]})
    with pytest.raises(TeacherError, match="takes 2 input channels"):
        load_teacher(path, network="UNet", network_args={**MONAI_UNET, "in_channels": 2}, probe=False)
    with pytest.raises(TeacherError, match="not a monai.networks.nets class"):
        load_teacher(path, network="os.system", network_args={})


# ------------------------------------------------------------------------------------------------- ONNX
def export_plain_onnx(net: nn.Module, path: Path, shape, dynamic: bool = True) -> None:
    names = {i: f"d{i}" for i in [0, *range(2, len(shape))]} if dynamic else None
    torch.onnx.export(net, (torch.randn(*shape),), str(path), dynamo=False, input_names=["image"],
                      output_names=["logits"], opset_version=17,
                      dynamic_axes={"image": names, "logits": names} if dynamic else None)


def test_onnx_teacher_teaches(hippo_cases, tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = TinyNet(3).eval()
    path = tmp_path / "teacher.onnx"
    export_plain_onnx(net, path, (1, 1, 16, 16, 16))
    assert detect_kind(path) == "onnx"
    teacher = load_teacher(path, class_names=CLASSES)
    assert (teacher.num_classes, teacher.spatial_dims, teacher.class_names) == (3, 3, CLASSES)
    x = torch.randn(2, 1, 12, 14, 10)
    with torch.no_grad():
        assert (teacher(x) - net(x)).abs().max() < 1e-4
    assert sum(p.numel() for p in teacher.parameters()) == sum(p.numel() for p in net.parameters())
    distill_few_steps(teacher, hippo_cases, tmp_path / "run")


def test_evaluate_accepts_any_teacher_format(hippo_cases, tmp_path, capsys):
    """`napari-dmd evaluate --teacher` reads an ONNX teacher (any format) next to a napari-dmd student."""
    pytest.importorskip("onnxruntime")
    from napari_dmd.cli import main

    torch.manual_seed(0)
    net = TinyNet(3).eval()
    onnx_path = tmp_path / "teacher.onnx"
    export_plain_onnx(net, onnx_path, (1, 1, 16, 16, 16))
    teacher = load_teacher(onnx_path, class_names=CLASSES)
    distill_few_steps(teacher, hippo_cases, tmp_path / "run")
    images = [c.image_path for c in hippo_cases[:2]]
    labels = [c.label_path for c in hippo_cases[:2]]
    rc = main(["evaluate", "--model", str(tmp_path / "run" / "last.pt"), "--teacher", str(onnx_path),
               "--images", *images, "--labels", *labels, "--split", "all", "--device", "cpu",
               "--json", str(tmp_path / "eval.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "teacher (teacher.onnx)" in out and "compression:" in out
    report = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))
    assert report["teacher"]["parameters"] == sum(p.numel() for p in net.parameters())
    assert len(report["teacher"]["dice_mean"]) == 2 and report["cases"] == [c.name for c in hippo_cases[:2]]


def test_onnx_fixed_shapes_and_bad_channels(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = Pointwise(2).eval()
    fixed = tmp_path / "fixed.onnx"
    export_plain_onnx(net, fixed, (1, 1, 32, 32), dynamic=False)
    teacher = load_teacher(fixed)
    assert teacher.patch_size == [32, 32] and teacher.info["fixed_batch"] == 1
    x = torch.randn(3, 1, 50, 41)  # another batch size and a larger image: batched and tiled
    with torch.no_grad():
        assert (teacher(x) - net(x)).abs().max() < 1e-4
    rgb = tmp_path / "rgb.onnx"
    export_plain_onnx(TinyNet(2, in_channels=3).eval(), rgb, (1, 3, 16, 16))
    with pytest.raises(TeacherError, match=r"rgb\.onnx: input 'image' takes 3 channels"):
        load_teacher(rgb)
    with pytest.raises(TeacherError, match=r"fixed\.onnx: the model returns 3 channels, not 4 classes"):
        load_teacher(fixed, num_classes=4)


# ----------------------------------------------------------------------------------- own checkpoints, CLI
def test_own_checkpoint_loading_is_unchanged(tmp_path):
    torch.manual_seed(0)
    model = UNet(2, 1, 3, (4, 8)).eval()
    path = save_checkpoint(tmp_path / "t.pt", {
        "kind": "teacher", "model": model.config(), "state_dict": model.state_dict(), "class_names": CLASSES,
        "normalization": "zscore-fg", "patch_size": [32, 32], "spacing": [0.5, 0.5]})
    teacher = load_teacher(path)
    assert isinstance(teacher, ModelTeacher) and detect_kind(path) == "checkpoint"
    assert (teacher.num_classes, teacher.spatial_dims, teacher.class_names) == (3, 2, CLASSES)
    assert (teacher.normalization, teacher.patch_size, teacher.spacing) == ("zscore-fg", [32, 32], [0.5, 0.5])
    x = torch.randn(1, 1, 20, 24)
    with torch.no_grad():
        assert torch.equal(teacher(x), model(x))
    with pytest.raises(TeacherError, match="predicts 3 classes, not 4"):
        load_teacher(path, num_classes=4)
    coarse = Case(image=np.zeros((40, 40), np.float32), label=np.zeros((40, 40), np.uint8), spacing=(1.0, 1.0),
                  affine=np.eye(4), name="coarse")
    (warning,) = check_teacher(teacher, [coarse])
    assert "spacing (0.5, 0.5)" in warning and "(1.0, 1.0)" in warning
    assert check_teacher(teacher, [dataclasses.replace(coarse, spacing=(0.55, 0.5))]) == []
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_teacher(tmp_path / "missing.pt")
    with pytest.raises(TeacherError, match="not a teacher folder"):
        load_teacher(tmp_path)


def test_cli_flags_choose_the_teacher(tmp_path):
    import argparse

    from monai.networks.nets import UNet as MonaiUNet

    path = tmp_path / "w.pt"
    torch.save(MonaiUNet(**MONAI_UNET).state_dict(), path)
    parser = argparse.ArgumentParser()
    add_teacher_flags(parser)
    args = parser.parse_args(["--teacher", str(path), "--monai-network", "UNet", "--monai-args",
                              json.dumps(MONAI_UNET), "--teacher-normalization", "ct"])
    teacher = teacher_from_args(args)
    assert teacher.num_classes == 3 and teacher.normalization == "ct" and teacher.info["network"] == "UNet"
    args = parser.parse_args(["--teacher", str(path), "--monai-network", "UNet", "--monai-args", "{bad"])
    with pytest.raises(TeacherError, match="--monai-args: not valid JSON"):
        teacher_from_args(args)
