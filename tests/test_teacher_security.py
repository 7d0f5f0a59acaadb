"""Teacher files that try to run code, fetch files or run for ever are refused quickly, and nothing of theirs runs.

Each test writes its own payload: a command or a ``hubconf.py`` that would create a marker file, a URL of a local
port that records connections, a reference bomb, an endless ONNX ``Loop``, a pickle that writes a marker.
"""

from __future__ import annotations

import builtins
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from napari_dmd.checkpoint import CheckpointError
from napari_dmd.teachers import TeacherError, detect_kind, load_teacher
from napari_dmd.teachers.safety import resolve_class

MARKER = "PWNED"
LAYERS = ("torch.nn", "dynamic_network_architectures.building_blocks")


# ----------------------------------------------------------------------------------- names from files
@pytest.mark.parametrize("name", [
    "torch.nn.parallel.distributed.os.system",  # pydoc.locate walks into os through a module torch imports
    "torch.nn.modules.conv.Tensor",  # a class of that module's namespace, not a layer
    "torch.nn.functional.relu",  # a function
    "builtins.exec", "os.system", "torch.hub.load", "torch.nn", "torch.nn.LeakyReLU()", 42,
])
def test_resolve_class_refuses_what_locate_would_reach(name):
    with pytest.raises(TeacherError, match=r"^plans\.json: 'nonlin' = .* is not an allowed layer class \(must be a "
                                           r"torch\.nn\.Module subclass defined in torch\.nn, "):
        resolve_class(name, packages=LAYERS, where="plans.json", key="nonlin", what="layer class")


def test_resolve_class_accepts_layers_by_either_path():
    for name in ("torch.nn.LeakyReLU", "torch.nn.modules.activation.LeakyReLU"):
        assert resolve_class(name, packages=LAYERS, where="p", key="nonlin") is nn.LeakyReLU
    assert resolve_class("torch.nn.modules.conv.Conv3d", packages=LAYERS, where="p", key="conv_op") is nn.Conv3d


def _plans(conv_nonlin: str = "torch.nn.LeakyReLU", nonlin_kwargs: dict | None = None,
           network: str = "dynamic_network_architectures.architectures.unet.PlainConvUNet",
           extra_kwargs: dict | None = None) -> dict:
    arch = {"network_class_name": network, "arch_kwargs": {
        "n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 2, "strides": [[1, 1, 1], [2, 2, 2]], "n_conv_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": conv_nonlin,
        "nonlin_kwargs": nonlin_kwargs or {"inplace": True}, **(extra_kwargs or {})},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    return {"dataset_name": "Dataset004_Hippocampus", "plans_name": "nnUNetPlans",
            "configurations": {"3d_fullres": {
                "data_identifier": "d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                "patch_size": [24, 32, 24], "spacing": [1.0] * 3, "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False], "architecture": arch}}}


def _nnunet_folder(root: Path, plans: dict) -> Path:
    folder = root / "Dataset004_Hippocampus" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {
        "background": 0, "anterior": 1, "posterior": 2}, "file_ending": ".nii.gz"}))
    torch.save({"network_weights": {"w": torch.zeros(1)}, "init_args": {"configuration": "3d_fullres"},
                "trainer_name": "nnUNetTrainer"}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


@pytest.mark.parametrize("trust", [False, True])
def test_nnunet_plans_cannot_run_a_command(tmp_path, trust):
    """nonlin = os.system reached through torch.nn.parallel.distributed, nonlin_kwargs = the command."""
    marker = tmp_path / "marker.txt"
    folder = _nnunet_folder(tmp_path, _plans("torch.nn.parallel.distributed.os.system",
                                             {"command": f"echo {MARKER} > {marker}"}))
    with pytest.raises(TeacherError, match=r"plans\.json: 'nonlin' = 'torch\.nn\.parallel\.distributed\.os\.system' "
                                           r"is not an allowed layer class \(must be a torch\.nn\.Module subclass"):
        load_teacher(folder, trust=trust)
    assert not marker.exists(), "the plans ran a command"


def _hub_plans(folder_root: Path, marker: Path) -> tuple[dict, Path]:
    hub = folder_root / "hub"
    hub.mkdir()
    (hub / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').write({MARKER!r})\n"
                                    "def evil(*args, **kwargs):\n    import torch\n    return torch.nn.Identity()\n")
    return _plans(network="dynamic_network_architectures.architectures.unet.torch.hub.load",
                  extra_kwargs={"repo_or_dir": str(hub), "model": "evil", "source": "local",
                                "trust_repo": True}), hub


@pytest.mark.parametrize("trust", [False, True])
def test_nnunet_plans_cannot_import_a_hubconf(tmp_path, trust):
    """network_class_name = torch.hub.load reached through dynamic_network_architectures' unet module."""
    marker = tmp_path / "marker.txt"
    plans, _ = _hub_plans(tmp_path, marker)
    folder = _nnunet_folder(tmp_path, plans)
    with pytest.raises(TeacherError, match=r"plans\.json: 'network_class_name' = 'dynamic_network_architectures\."
                                           r"architectures\.unet\.torch\.hub\.load' is not an allowed network class"):
        load_teacher(folder, trust=trust)
    assert not marker.exists(), "the plans imported a hubconf.py"


def test_nnunet_network_class_must_be_the_modules_own(tmp_path):
    """With dynamic_network_architectures installed: a class name that passes every check needing no import but
    walks through another module is refused at the import (pydoc.locate would have returned torch.nn.Module)."""
    pytest.importorskip("dynamic_network_architectures")
    folder = _nnunet_folder(tmp_path, _plans(network="dynamic_network_architectures.architectures.unet.nn.Module"))
    with pytest.raises(TeacherError, match=r"'network_class_name' = .*unet\.nn\.Module' is not an allowed network "
                                           r"class .*no module dynamic_network_architectures\.architectures\.unet\.nn"):
        load_teacher(folder)


# ------------------------------------------------------------------------------------------- MONAI bundles
def _bundle(root: Path, config: dict | str, name: str = "inference.json") -> Path:
    folder = root / "bundle"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    torch.save({"w": torch.zeros(1)}, folder / "models" / "model.pt")
    (folder / "configs" / "metadata.json").write_text(json.dumps({"name": "x", "network_data_format": {}}))
    (folder / "configs" / name).write_text(config if isinstance(config, str) else json.dumps(config))
    return folder


def test_bundle_network_is_built_without_downloads(tmp_path, monkeypatch):
    """HoVerNet with pretrained_url: built with the download off (no connection, nothing written to TORCH_HOME)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    port, connections, stop = server.getsockname()[1], [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(1)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    torch_home = tmp_path / "torch_home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    folder = _bundle(tmp_path, {"network_def": {"_target_": "HoVerNet", "in_channels": 1, "out_classes": 3,
                                                "pretrained_url": f"http://127.0.0.1:{port}/preact-resnet50.pth"}})
    try:
        with pytest.raises(TeacherError, match=r"model\.pt: the weights do not fit the bundle's HoVerNet"):
            load_teacher(folder, probe=False)  # built (download off); then the bundle's own weights are refused
    finally:
        stop.set()
        thread.join(2)
        server.close()
    assert connections == [], "building the network made a network request"
    assert list(torch_home.rglob("*")) == [], "building the network wrote outside the bundle"


def _ref_bomb(levels: int = 9, fan: int = 10) -> dict:
    config = {"l0": [1] * fan}
    for i in range(1, levels):
        config[f"l{i}"] = [f"@l{i - 1}"] * fan
    return config


@pytest.mark.timeout(120)
def test_bundle_reference_bomb_is_refused_quickly(tmp_path):
    """10 references per list, 9 lists deep: 10^9 values if expanded; refused (trusted or not) in well under 1 s."""
    config = {**_ref_bomb(), "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1,
                                             "out_channels": 3, "channels": "@l8", "strides": [2, 2]}}
    folder = _bundle(tmp_path, config)
    for trust in (False, True):
        start = time.perf_counter()
        with pytest.raises(TeacherError, match=r"inference\.json: expands to more than 20000 values through '@' "
                                               r"references or YAML aliases"):
            load_teacher(folder, trust=trust)
        assert time.perf_counter() - start < 5


@pytest.mark.timeout(120)
def test_bundle_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines += ["network_def: {_target_: UNet, spatial_dims: 3, in_channels: 1, out_channels: 3, channels: *a8,"
              " strides: [2, 2]}"]
    folder = _bundle(tmp_path, "\n".join(lines) + "\n", name="inference.yaml")
    start = time.perf_counter()
    with pytest.raises(TeacherError, match=r"inference\.yaml: expands to more than 20000 values"):
        load_teacher(folder)
    assert time.perf_counter() - start < 5


# -------------------------------------------------------------------------------------------------- ONNX
def _endless_loop_onnx(path: Path) -> None:
    """logits = [image, image, image] + (a Loop whose condition stays true and has no trip count)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto
    from onnx import helper as h

    value = h.make_tensor_value_info
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]), h.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
        [value("i", TensorProto.INT64, []), value("cond_in", TensorProto.BOOL, []),
         value("v_in", TensorProto.FLOAT, [])],
        [value("cond_out", TensorProto.BOOL, []), value("v_out", TensorProto.FLOAT, [])],
        [h.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    nodes = [h.make_node("ReduceMean", ["image"], ["m"], keepdims=0),
             h.make_node("Loop", ["", "true", "m"], ["v"], body=body, name="forever"),
             h.make_node("Concat", ["image", "image", "image"], ["cat"], axis=1),
             h.make_node("Add", ["cat", "v"], ["logits"])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, "y", "x"])],
                         [h.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3, "y", "x"])],
                         [h.make_tensor("true", TensorProto.BOOL, [], [True])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.timeout(120)
def test_onnx_endless_loop_is_refused_or_stopped(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from napari_dmd.teachers import onnx as onnx_teacher

    path = tmp_path / "loop.onnx"
    _endless_loop_onnx(path)
    start = time.perf_counter()
    with pytest.raises(TeacherError, match=r"loop\.onnx: Loop node 'forever' has no constant trip count .*trust=True"):
        load_teacher(path)
    assert time.perf_counter() - start < 5
    monkeypatch.setattr(onnx_teacher, "LOAD_TIME_LIMIT_S", 1.0)  # trusted: the test call at load is stopped
    start = time.perf_counter()
    with pytest.raises(TeacherError, match=r"loop\.onnx: the test call at load ran longer than 1 s"):
        load_teacher(path, trust=True)
    assert time.perf_counter() - start < 10


# ------------------------------------------------------------------------------------ trusted detection
class Payload:
    """Unpickling this writes a marker file (a harmless stand-in for an attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write({MARKER!r})",))


def test_trusted_detection_never_unpickles(tmp_path):
    """--trust-teacher: the kind is told from the pickle's strings; a napari-dmd checkpoint is never unpickled."""
    marker = tmp_path / "marker.txt"
    own = tmp_path / "own.pt"
    torch.save({"format": "napari-dmd-checkpoint", "format_version": 1, "model": {}, "state_dict": {},
                "extra": Payload(marker)}, own)
    with pytest.raises(CheckpointError, match=r"own\.pt: not a readable napari-dmd checkpoint"):
        load_teacher(own, trust=True)
    assert not marker.exists(), "detection unpickled a napari-dmd checkpoint"
    nnunet = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "init_args": {}, "hook": Payload(marker)}, nnunet)
    assert detect_kind(nnunet, trust=True) == "nnunet"
    assert detect_kind(nnunet, network="UNet", trust=True) == "nnunet"
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}, "hook": Payload(marker)}, other)
    assert detect_kind(other, network="UNet", trust=True) == "monai"
    with pytest.raises(TeacherError, match=r"other\.pt: a PyTorch file that holds more than weights"):
        detect_kind(other, trust=True)
    assert not marker.exists(), "detection unpickled a file"
