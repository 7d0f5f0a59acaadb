"""Convolutions routed to oneDNN at CPU inference: same outputs, same labels, really on oneDNN, training untouched."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.profiler import profile

from napari_dmd.models.onednn import OneDNNConv3d, inference_copy, onednn_usable, route_convs_to_onednn
from napari_dmd.models.presets import build_model
from napari_dmd.segment import Segmenter

pytestmark = pytest.mark.skipif(not onednn_usable(), reason="this PyTorch build has no oneDNN")

SHAPES = {2: (1, 1, 48, 40), 3: (1, 1, 24, 40, 32)}


def _trained_like(preset: str, dims: int) -> nn.Module:
    torch.manual_seed(0)
    net = build_model(preset, dims, 3)
    net.train()
    with torch.no_grad():  # running statistics other than the defaults
        net(torch.randn(2, *SHAPES[dims][1:]))
    return net.eval()


def _ops(fn) -> set[str]:
    with profile() as p:
        fn()
    return {e.key for e in p.key_averages()}


@pytest.mark.parametrize("preset", ["student-fast", "student", "student-tiny"])
@pytest.mark.parametrize("dims", [2, 3])
def test_routed_copy_gives_the_same_logits(preset, dims):
    net = _trained_like(preset, dims)
    routed = inference_copy(net, cpu=True)
    assert any(isinstance(m, OneDNNConv3d) for m in routed.modules()) == (dims == 3)
    assert not any(type(m).__name__.startswith("OneDNN") for m in net.modules())  # the original is untouched
    x = torch.randn(*SHAPES[dims])
    with torch.inference_mode():
        np.testing.assert_allclose(routed(x).numpy(), net(x).numpy(), atol=1e-5, rtol=0)


def test_batch_one_small_3d_conv_runs_on_onednn_not_the_slow_kernel():
    conv = nn.Conv3d(16, 8, 3, padding=1)
    x = torch.randn(1, 16, 12, 16, 12)
    with torch.inference_mode():
        plain = _ops(lambda: conv(x))
        assert "aten::slow_conv3d_forward" in plain  # PyTorch's own choice for this shape: why routing exists
        assert route_convs_to_onednn(conv) == 1
        routed = _ops(lambda: conv(x))
        batch2 = _ops(lambda: conv(torch.cat([x, x])))  # PyTorch picks oneDNN itself for a larger batch
    assert "aten::mkldnn_convolution" in routed and "aten::slow_conv3d_forward" not in routed
    assert "aten::mkldnn_convolution" in batch2


def test_strided_and_grouped_convs_match():
    for conv in (nn.Conv3d(4, 8, 3, stride=2, padding=1), nn.Conv3d(8, 8, 3, padding=1, groups=8, bias=False),
                 nn.Conv3d(3, 5, 3, padding=2, dilation=2)):
        torch.manual_seed(1)
        x = torch.randn(1, conv.in_channels, 11, 9, 10)
        with torch.no_grad():
            ref = conv(x)
            assert route_convs_to_onednn(conv) == 1
            assert "aten::mkldnn_convolution" in _ops(lambda c=conv, v=x: c(v))
            np.testing.assert_allclose(conv(x).numpy(), ref.numpy(), atol=1e-5, rtol=0)
    assert route_convs_to_onednn(nn.Conv2d(3, 5, 3)) == 0  # 2D keeps PyTorch's choice (no gain measured)


def test_training_keeps_pytorchs_path_and_gradients():
    torch.manual_seed(2)
    plain = nn.Conv3d(4, 4, 3, padding=1)
    routed = nn.Conv3d(4, 4, 3, padding=1)
    routed.load_state_dict(plain.state_dict())
    route_convs_to_onednn(routed)
    x = torch.randn(1, 4, 8, 8, 8)
    assert "aten::mkldnn_convolution" not in _ops(lambda: routed(x).sum().backward())
    plain(x).sum().backward()
    np.testing.assert_allclose(routed.weight.grad.numpy(), plain.weight.grad.numpy(), atol=1e-5)
    assert set(routed.state_dict()) == set(plain.state_dict())


@pytest.mark.parametrize("dims", [2, 3])
def test_segmenter_labels_equal_with_and_without_routing(dims, monkeypatch):
    net = _trained_like("student", dims)  # instance norm: Segmenter copies it only for the routing
    shape = (30, 44) if dims == 2 else (20, 30, 26)
    image = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    routed = Segmenter(net, 3, dims, [32] * dims)
    fast = routed.probabilities(image)
    assert (routed._inference_model() is not net) == (dims == 3)  # copied for the routing (3D only)
    monkeypatch.setattr("napari_dmd.segment.onednn_usable", lambda: False)
    plain = Segmenter(net, 3, dims, [32] * dims)
    assert plain._inference_model() is net  # nothing to fold, nothing routed: the model itself
    ref = plain.probabilities(image)
    np.testing.assert_allclose(fast, ref, atol=1e-5)
    np.testing.assert_array_equal(fast.argmax(0), ref.argmax(0))
