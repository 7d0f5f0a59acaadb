"""U-Net shapes, decoder features, presets and checkpoint round trips."""

from __future__ import annotations

import pytest
import torch

from napari_dmd.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from napari_dmd.models.heads import ScaleHeads
from napari_dmd.models.presets import PRESETS, build_model, count_parameters
from napari_dmd.models.unet import UNet


@pytest.mark.parametrize("dims,shape", [(2, (37, 50)), (3, (19, 33, 24)), (3, (32, 32, 32))])
def test_unet_logits_and_features_any_size(dims, shape):
    net = UNet(dims, 1, 4, channels=(4, 8, 16, 32))
    x = torch.randn(2, 1, *shape)
    logits, feats = net(x, return_features=True)
    assert logits.shape == (2, 4, *shape)
    assert len(feats) == len(net.feature_strides) == 3
    for f, stride, ch in zip(feats, net.feature_strides, net.feature_channels):
        assert f.shape[1] == ch
        assert tuple(f.shape[2:]) == tuple(-(-n // stride) for n in shape)
    assert torch.equal(net(x), logits)


def test_presets_compression_ratios():
    for dims in (2, 3):
        t = count_parameters(build_model("teacher", dims, 3))
        s = count_parameters(build_model("student", dims, 3))
        tiny = count_parameters(build_model("student-tiny", dims, 3))
        assert t / s >= 10, (dims, t, s)
        assert t / tiny >= 29, (dims, t, tiny)  # 1/29 in 2D (student-fast's network), 1/82 in 3D (3 levels)
    assert count_parameters(build_model("teacher", 3, 3)) > 3_000_000
    assert count_parameters(build_model("teacher", 3, 3)) / count_parameters(build_model("student-tiny", 3, 3)) > 80
    assert set(PRESETS) == {"teacher", "student", "student-tiny", "student-fast", "student-fast-deep",
                            "student-fast-tiny", "student-classic", "student-tiny-classic"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="spatial_dims"):
        UNet(4, 1, 3)
    with pytest.raises(ValueError, match="num_classes"):
        UNet(2, 1, 1)
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("huge", 2, 3)


def test_scale_heads():
    net = UNet(2, 1, 3, channels=(4, 8, 16))
    heads = ScaleHeads(2, net.feature_channels, 3)
    _, feats = net(torch.randn(1, 1, 16, 16), return_features=True)
    outs = heads(feats)
    assert [o.shape[1] for o in outs] == [3, 3]
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 8), (16, 16)]


def test_checkpoint_roundtrip_and_errors(tmp_path):
    net = UNet(3, 1, 3, channels=(4, 8, 16))
    path = save_checkpoint(tmp_path / "m.pt", {"model": net.config(), "state_dict": net.state_dict()})
    ckpt = load_checkpoint(path)
    net2 = model_from_checkpoint(ckpt, path)
    x = torch.randn(1, 1, 8, 8, 8)
    net.eval()
    assert torch.allclose(net(x), net2(x))
    assert not list(tmp_path.glob(".*tmp")), "no temp file may be left behind"
    # another architecture's weights
    ckpt["model"]["channels"] = [4, 8, 32]
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(ckpt, path)
    # other format version
    save_checkpoint(tmp_path / "v.pt", {"model": net.config(), "state_dict": net.state_dict()})
    data = torch.load(tmp_path / "v.pt", weights_only=True)
    data["format_version"] = 99
    torch.save(data, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "v.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned_by_pickle",))


def test_malicious_pickle_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "napari-dmd-checkpoint", "x": _Boom()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned_by_pickle").exists()
