"""3D convolutions routed to oneDNN at CPU inference: same outputs and labels, really on oneDNN, training untouched,
the model plain again after each sliding-window call."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.profiler import profile

from napari_dmd.inference import sliding_window_predict
from napari_dmd.models.fold import fold_batchnorm
from napari_dmd.models.onednn import OneDNNConv3d, onednn_convs, onednn_usable, route_convs_to_onednn
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


def _routed(net: nn.Module) -> list[str]:
    return [type(m).__name__ for m in net.modules() if isinstance(m, OneDNNConv3d)]


@pytest.mark.parametrize("preset", ["student-fast", "student", "student-tiny", "teacher"])
@pytest.mark.parametrize("dims", [2, 3])
def test_routed_model_gives_the_same_logits_and_is_restored(preset, dims):
    net = fold_batchnorm(_trained_like(preset, dims))
    x = torch.randn(*SHAPES[dims])
    with torch.inference_mode():
        ref = net(x)
        with onednn_convs(net) as n:
            assert (n > 0) == (dims == 3) and len(_routed(net)) == n  # 2D keeps PyTorch's choice
            out = net(x)
    assert not _routed(net)  # plain again: export and scripting see nn.Conv3d
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-5, rtol=0)


def test_batch_one_small_3d_conv_runs_on_onednn_not_the_slow_kernel():
    conv = nn.Conv3d(16, 8, 3, padding=1)
    x = torch.randn(1, 16, 12, 16, 12)
    with torch.inference_mode():
        plain = _ops(lambda: conv(x))
        assert "aten::slow_conv3d_forward" in plain  # PyTorch's own choice for this shape: why routing exists
        assert route_convs_to_onednn(conv) == [conv]
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
            assert route_convs_to_onednn(conv) == [conv]
            assert "aten::mkldnn_convolution" in _ops(lambda c=conv, v=x: c(v))
            np.testing.assert_allclose(conv(x).numpy(), ref.numpy(), atol=1e-5, rtol=0)
    assert route_convs_to_onednn(nn.Conv2d(3, 5, 3)) == []  # 2D keeps PyTorch's choice (no gain measured)


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


def test_sliding_window_prediction_runs_on_onednn_and_leaves_the_model_plain(monkeypatch):
    net = _trained_like("student", 3)  # instance norm: nothing folded, the model itself goes to the windows
    image = np.random.default_rng(3).standard_normal((20, 30, 26)).astype(np.float32)
    ops = _ops(lambda: sliding_window_predict(net, image, [24, 32, 32], num_classes=3))
    assert "aten::mkldnn_convolution" in ops and "aten::slow_conv3d_forward" not in ops
    assert not _routed(net)
    fast = sliding_window_predict(net, image, [24, 32, 32], num_classes=3)
    monkeypatch.setattr("napari_dmd.models.onednn.onednn_usable", lambda: False)
    assert "aten::slow_conv3d_forward" in _ops(lambda: sliding_window_predict(net, image, [24, 32, 32]))
    ref = sliding_window_predict(net, image, [24, 32, 32], num_classes=3)
    np.testing.assert_allclose(fast, ref, atol=1e-5)
    np.testing.assert_array_equal(fast.argmax(0), ref.argmax(0))


def test_segmenter_labels_equal_with_and_without_routing(monkeypatch):
    net = _trained_like("student-fast", 3)
    image = np.random.default_rng(4).standard_normal((20, 30, 26)).astype(np.float32)
    fast = Segmenter(net, 3, 3, [24, 32, 32])(image)
    monkeypatch.setattr("napari_dmd.models.onednn.onednn_usable", lambda: False)
    np.testing.assert_array_equal(fast, Segmenter(net, 3, 3, [24, 32, 32])(image))


def test_a_copy_made_during_a_routed_prediction_is_plain_and_scripts():
    net = _trained_like("student-fast", 3)
    with onednn_convs(net):  # e.g. an export clicked while Segment runs in a worker
        folded = fold_batchnorm(net)
    assert not _routed(folded)
    from napari_dmd.exportable import ExportableUNet

    scripted = torch.jit.script(ExportableUNet(folded).eval())
    x = torch.randn(*SHAPES[3])
    with torch.inference_mode():
        np.testing.assert_allclose(scripted(x).numpy(), folded(x).numpy(), atol=1e-5)
