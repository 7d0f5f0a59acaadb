"""The fast students: preset shapes and feature scales, architecture round trips, batch-norm folding and
inference paths that must give the same labels (speed itself is a benchmark: docs/benchmarks.md B2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_dmd.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import Distiller
from napari_dmd.inference import fold_batchnorm, predict_labels, sliding_window_predict
from napari_dmd.models.blocks import pixel_shuffle
from napari_dmd.models.heads import ScaleHeads
from napari_dmd.models.presets import PRESET_INFO, PRESETS, build_model, count_parameters
from napari_dmd.models.unet import UNet
from napari_dmd.segment import Segmenter
from napari_dmd.teachers import ModelTeacher


def _trained_bn(net: torch.nn.Module, shape: tuple[int, ...]) -> torch.nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters, then eval mode."""
    torch.manual_seed(1)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, 1, *shape) * 3 + 1)
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        for p in net.logit_upsampler.parameters():  # a refine conv starts at zero
            p.normal_(0, 0.1)
    return net.eval()


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("dims,shape", [(2, (37, 50)), (3, (19, 33, 24))])
def test_every_preset_shapes_and_feature_scales(name, dims, shape):
    net = build_model(name, dims, 3).eval()
    with torch.no_grad():
        logits, feats = net(torch.randn(2, 1, *shape), return_features=True)
    assert logits.shape == (2, 3, *shape)
    least = 2 if (name, dims) == ("student-tiny", 3) else 3  # 3D tiny: one head scale (1/4) + the output stage
    assert len(feats) == len(net.feature_strides) == len(net.feature_channels) >= least
    for f, stride, ch in zip(feats, net.feature_strides, net.feature_channels):
        assert f.shape[1] == ch
        assert tuple(f.shape[2:]) == tuple(-(-n // stride) for n in shape)
    assert net.feature_strides[-1] == net.stem  # the finest decoder stage runs at the stem's resolution
    stem = {"student-tiny": 4 if dims == 2 else 2, "student": 2, "student-fast": 2, "student-fast-deep": 2,
            "student-fast-tiny": 2}
    assert net.stem == stem.get(name, 1)
    assert PRESET_INFO[name]["params"][f"{dims}d"] == count_parameters(net)


def test_pixel_shuffle_puts_each_channel_in_its_sub_voxel():
    x = torch.randn(2, 3 * 8, 3, 4, 5)
    y = pixel_shuffle(x, 2, 3)
    assert y.shape == (2, 3, 6, 8, 10)
    for c, a, b, e in [(0, 0, 0, 0), (1, 1, 0, 1), (2, 1, 1, 1), (2, 0, 1, 0)]:  # y[c, 2z+a, 2h+b, 2w+e]
        assert torch.equal(y[:, c, a::2, b::2, e::2], x[:, c * 8 + a * 4 + b * 2 + e])
    flat = torch.randn(1, 3 * 4, 5, 7)
    assert torch.equal(pixel_shuffle(flat, 2, 3), torch.nn.functional.pixel_shuffle(flat, 2))


@pytest.mark.parametrize("dims,shape", [(2, (30, 42)), (3, (12, 20, 16))])
def test_shuffle_starts_as_nearest_copies_and_refine_as_interpolation(dims, shape):
    torch.manual_seed(0)
    shuffle = UNet(dims, 1, 3, (8, 12, 16), norm="batch", stem=2, upsample="shuffle").eval()
    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        y = shuffle(x)
    coarse = y[(..., *[slice(0, None, 2)] * dims)]
    assert torch.equal(y, torch.nn.functional.interpolate(coarse, scale_factor=2.0, mode="nearest"))
    plain = UNet(dims, 1, 3, (8, 12, 16), norm="batch", stem=2).eval()
    refine = UNet(dims, 1, 3, (8, 12, 16), norm="batch", stem=2, upsample="refine").eval()
    missing = refine.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["logit_upsampler.up.bias", "logit_upsampler.up.weight"]
    with torch.no_grad():
        assert torch.equal(refine(x), plain(x))
        refine.logit_upsampler.up.bias.fill_(0.5)  # the residual is added on top of the interpolation
        assert torch.allclose(refine(x), plain(x) + 0.5)


def test_fast_students_use_batch_norm_unless_overridden():
    assert build_model("student-fast", 2, 3).norm == "batch"
    assert build_model("student-fast", 2, 3, norm="auto").norm == "batch"
    assert build_model("student-fast", 2, 3, norm="instance").norm == "instance"
    assert build_model("student-classic", 2, 3).norm == "instance"
    assert build_model("student-tiny", 2, 3).norm == "batch"
    assert build_model("student-tiny-classic", 2, 3).norm == "instance"
    assert build_model((4, 8, 16), 2, 3).norm == "instance"
    assert build_model("student-fast", 2, 3, stem=1).total_stride == 8


def test_the_tiny_student_runs_at_half_resolution_in_3d_and_quarter_in_2d():
    three, two = build_model("student-tiny", 3, 3), build_model("student-tiny", 2, 3)
    assert (three.stem, two.stem) == (2, 4)
    assert (three.channels, three.norm, three.feature_strides) == ((8, 16, 24), "batch", [4, 2])  # 3 levels
    assert three.eval()(torch.randn(1, 1, 24, 32, 24)).shape == (1, 3, 24, 32, 24)
    assert count_parameters(three) < count_parameters(build_model("student", 3, 3)) / 2
    assert build_model("student-tiny", 2, 3, stem=2).stem == 2  # an explicit option still wins
    x = torch.randn(1, 1, 70, 50)
    logits, feats = two.eval()(x, return_features=True)
    assert logits.shape == (1, 3, 70, 50) and len(feats) == 3  # heads on 3 scales (MFD/DMD apply)
    assert two.feature_strides == [16, 8, 4]


@pytest.mark.parametrize("opts", [dict(stem=2, norm="batch"), dict(stem=2, upsample="learned", block="dsconv"),
                                  dict(stem=4, norm="group"), dict(stem=2, upsample="shuffle"),
                                  dict(stem=2, upsample="refine")])
def test_architecture_round_trips_through_checkpoint(opts, tmp_path):
    net = UNet(3, 1, 3, (8, 16, 24), **opts).eval()
    path = save_checkpoint(tmp_path / "m.pt", {"model": net.config(), "state_dict": net.state_dict()})
    again = model_from_checkpoint(load_checkpoint(path), path)
    assert again.config() == net.config()
    x = torch.randn(1, 1, 12, 20, 16)
    with torch.no_grad():
        assert torch.equal(net(x), again(x))


def test_old_config_without_speed_options_builds_the_classic_net():
    old = {"spatial_dims": 2, "in_channels": 1, "num_classes": 3, "channels": [4, 8, 16], "norm": "instance",
           "dropout": 0.0}
    net = UNet.from_config(old)
    assert (net.stem, net.block, net.total_stride) == (1, "conv", 4)
    assert net.config() == old  # what an old checkpoint wrote
    assert set(net.state_dict()) == set(UNet(2, 1, 3, (4, 8, 16)).state_dict())


@pytest.mark.parametrize("opts", [dict(), dict(stem=2, upsample="learned"), dict(block="dsconv", stem=2),
                                  dict(stem=2, upsample="shuffle"), dict(stem=2, upsample="refine")])
@pytest.mark.parametrize("dims,shape", [(2, (30, 41)), (3, (12, 20, 17))])
def test_fold_batchnorm_is_equivalent(opts, dims, shape):
    net = _trained_bn(UNet(dims, 1, 4, (8, 12, 16), norm="batch", **opts), shape)
    folded = fold_batchnorm(net)
    bn = (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    assert not any(isinstance(m, bn) for m in folded.modules())
    assert any(isinstance(m, bn) for m in net.modules()), "the original is left untouched"
    x = torch.randn(2, 1, *shape) * 2
    with torch.no_grad():
        a, fa = net(x, return_features=True)
        b, fb = folded(x, return_features=True)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert all(torch.allclose(u, v, atol=1e-5, rtol=1e-5) for u, v in zip(fa, fb))


def test_every_inference_path_gives_the_same_labels():
    net = _trained_bn(build_model("student-fast", 2, 3), (64, 64))
    image = np.random.default_rng(0).standard_normal((3, 70, 90)).astype(np.float32)
    ref = sliding_window_predict(net, image, (48, 48), batch_size=1).argmax(0)
    folded = fold_batchnorm(net)
    for model, bs in ((folded, 1), (folded, 4), (net, 7)):
        assert np.array_equal(predict_labels(model, image, (48, 48), batch_size=bs), ref)
    seg = Segmenter(net, 3, 2, [48, 48], normalization="none")
    assert np.array_equal(seg(image), ref)
    assert seg.model is net and net.norm == "batch", "Segmenter folds a copy, never the user's model"


@pytest.mark.parametrize("model", ["student-fast", "student-fast-tiny"])
def test_dmd_trains_a_half_resolution_student(model, tmp_path):
    cases = phantom_cases(4, 2)
    cfg = TrainConfig(method="dmd", model=model, iterations=2, batch_size=2, patch_size=[32, 32],
                      val_interval=2, checkpoint_interval=10, num_threads=1)
    teacher = ModelTeacher(UNet(2, 1, 6, (4, 8, 16)).eval(), 6, 2)
    d = Distiller(cfg, cases, teacher=teacher, output_dir=tmp_path)
    assert d.model.norm == "batch" and d.model.feature_strides[-1] == 2
    assert isinstance(d.heads, ScaleHeads)
    steps = [e for e in d.run() if e.kind == "step"]
    assert len(steps) == 2 and all(np.isfinite(v) for e in steps for v in e.parts.values())
    again = model_from_checkpoint(load_checkpoint(d.last_path), d.last_path)
    assert again.config() == d.model.config()


def test_bench_presets_quick_lists_every_model(capsys):
    from napari_dmd.bench.inference import bench_presets

    res = bench_presets("student-fast,student-fast-tiny", repeats=1, quick=True, threads=[1])
    three, two = res["setups"]["3d"]["models"], res["setups"]["2d"]["models"]
    assert list(three) == ["teacher", "student-fast", "student-fast-tiny", "nnunet-3d-hippocampus"]
    assert list(two) == ["teacher", "student-fast", "student-fast-tiny"]
    assert three["teacher"]["speedup_1t"] == 1.0 and three["student-fast"]["median_s_1t"] > 0
    assert three["nnunet-3d-hippocampus"]["params"] > three["teacher"]["params"] * 0.9
    assert "speed-up (1 thr)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown preset"):
        bench_presets("student-huge", quick=True)


def test_default_student_is_the_fast_deep_design_in_2d_and_the_fast_design_in_3d():
    two, deep2 = build_model("student", 2, 3), build_model("student-fast-deep", 2, 3)
    assert two.config() == deep2.config()
    assert (two.norm, two.stem, two.channels) == ("batch", 2, (8, 16, 24, 40, 64))
    three, fast3 = build_model("student", 3, 3), build_model("student-fast", 3, 3)
    assert three.config() == fast3.config()
    assert (three.norm, three.stem, three.channels) == ("batch", 2, (8, 16, 24, 40))
    assert build_model("student-fast-deep", 3, 3).channels == (8, 16, 24, 40, 64)  # kept for comparison
    old = build_model("student-classic", 3, 3)
    assert (old.norm, old.stem, old.channels) == ("instance", 1, (8, 16, 24, 40, 64))
    assert len(two.feature_strides) == 4 and two.feature_strides[-1] == 2  # heads at 4 scales, finest at 1/2
    assert three.feature_strides == [8, 4, 2]


def test_as_trained_rebuilds_a_renamed_presets_architecture():
    from napari_dmd.models.presets import as_trained

    classic = build_model("student-classic", 2, 4)
    now = build_model("student", 2, 4)
    back = as_trained(now, classic.config())
    assert back.config() == classic.config()
    back.load_state_dict(classic.state_dict())  # the old weights fit
    assert as_trained(now, now.config()) is now
    assert as_trained(now, None) is now
    other = build_model("student-fast", 2, 4)  # other channels: left to the caller's check
    assert as_trained(now, other.config()) is now
