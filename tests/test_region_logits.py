"""A U-Net asked for part of its logits (``forward(region=...)``) gives exactly that crop, and one-window
inference, which now asks for the image's part of a padded window, gives the same probabilities as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_dmd.inference as inference
from napari_dmd.models.linear_upsample import linear_upsample, linear_weights
from napari_dmd.models.unet import UNet
from napari_dmd.segment import Segmenter


@pytest.mark.parametrize("opts", [dict(), dict(stem=2), dict(stem=4), dict(stem=2, upsample="learned"),
                                  dict(stem=2, upsample="shuffle"), dict(stem=2, upsample="refine")])
@pytest.mark.parametrize("dims,shape,region", [(2, (32, 40), [(3, 29), (0, 37)]),
                                               (2, (30, 41), [(1, 30), (5, 6)]),
                                               (3, (16, 24, 20), [(2, 15), (0, 24), (7, 19)])])
def test_region_logits_equal_the_crop(opts, dims, shape, region):
    torch.manual_seed(0)
    net = UNet(dims, 1, 3, (4, 8, 8), norm="batch", **opts).eval()
    if net.logit_upsampler.refine:  # start as plain interpolation: give the refining conv weights
        torch.nn.init.normal_(net.logit_upsampler.up.weight, std=0.1)
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        full = net(x)
        part = net(x, region=region)
    crop = full[(..., *[slice(a, b) for a, b in region])]
    assert part.shape == crop.shape
    assert torch.allclose(part, crop, atol=1e-6, rtol=0)


def test_linear_weights_by_hand():
    # factor 2 over 3 samples: outputs sit at sources -0.25 (clamped to 0), 0.25, 0.75, 1.25, 1.75, 2.25 (the last
    # sample repeated)
    expected = [[1, 0, 0], [0.75, 0.25, 0], [0.25, 0.75, 0], [0, 0.75, 0.25], [0, 0.25, 0.75], [0, 0, 1]]
    assert linear_weights(3, 2).tolist() == expected
    assert linear_weights(3, 2, 2, 4).tolist() == expected[2:4]
    # factor 4: output 5 sits at source 0.875, output 10 at 2.125
    w = linear_weights(8, 4)
    assert w[5, :2].tolist() == [0.125, 0.875] and w[10, 2:4].tolist() == [0.875, 0.125]
    with pytest.raises(ValueError, match="outside"):
        linear_weights(3, 2, 4, 7)


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 3, 6, 5)])
def test_linear_upsample_equals_interpolate_with_its_gradient(factor, shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    mode = "trilinear" if len(shape) == 5 else "bilinear"
    ref = torch.nn.functional.interpolate(x, scale_factor=float(factor), mode=mode, align_corners=False)
    out = linear_upsample(x, factor)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    g = torch.randn_like(ref)
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    (gx,) = torch.autograd.grad(out, x, g)
    assert torch.allclose(gx, gx_ref, atol=1e-12, rtol=0)
    region = [(1, n * factor - 2) for n in shape[2:]]
    part = linear_upsample(x, factor, region)
    assert torch.allclose(part, ref[(..., *[slice(a, b) for a, b in region])], atol=1e-12, rtol=0)


def test_weights_made_in_inference_mode_serve_a_training_step():
    with torch.inference_mode():
        linear_upsample(torch.randn(1, 2, 9, 11), 2)  # caches the weights of these sizes
    x = torch.randn(1, 2, 9, 11, requires_grad=True)
    linear_upsample(x, 2).sum().backward()  # an inference tensor saved for backward would raise here
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("region", [[(0, 9)], [(0, 4), (3, 3)], [(-1, 4), (0, 4)], [(0, 4), (0, 40)]])
def test_a_region_outside_the_input_is_refused(region):
    net = UNet(2, 1, 2, (4, 8), stem=2).eval()
    with pytest.raises(ValueError, match="region"):
        net(torch.zeros(1, 1, 16, 16), region=region)


@pytest.mark.parametrize("dims,patch,shape", [(3, [32, 32, 32], (21, 30, 17)), (2, [64, 64], (3, 50, 61))])
def test_one_window_inference_asks_for_the_image_part_and_matches(dims, patch, shape, monkeypatch):
    torch.manual_seed(0)
    net = UNet(dims, 1, 3, (4, 8, 8), norm="batch", stem=2).eval()
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    seg = Segmenter(net, 3, dims, patch, normalization="none")
    asked = []
    real_forward = UNet.forward

    def spy(self, x, return_features=False, region=None):
        asked.append(region)
        return real_forward(self, x, return_features, region)

    monkeypatch.setattr(UNet, "forward", spy)
    with_region = seg.probabilities(image)
    assert asked and all(r is not None for r in asked)
    asked.clear()
    monkeypatch.setattr(inference, "takes_region", lambda predictor: False)
    whole = seg.probabilities(image)
    assert asked and all(r is None for r in asked)
    np.testing.assert_allclose(with_region, whole, atol=1e-6, rtol=0)
    assert np.array_equal(with_region.argmax(0), whole.argmax(0))


def test_full_resolution_and_foreign_predictors_are_not_asked_for_a_region():
    assert not inference.takes_region(UNet(2, 1, 2, (4, 8)))
    assert inference.takes_region(UNet(2, 1, 2, (4, 8), stem=2))
    assert not inference.takes_region(lambda x: x)
