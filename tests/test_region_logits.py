"""A U-Net asked for part of its logits (``forward(region=...)``) gives exactly that crop, and one-window
inference, which now asks for the image's part of a padded window, gives the same probabilities as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_dmd.inference as inference
from napari_dmd.models.blocks import interpolation_source
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


def test_interpolation_source_by_hand():
    # factor 2: output 0-1 read source 0-1 (0 clamped), outputs 4-7 read sources 1-4
    assert interpolation_source([(0, 2), (4, 8)], [10, 10], 2) == [(0, 2), (1, 5)]
    # the last outputs clamp at the source's end
    assert interpolation_source([(18, 20)], [10], 2) == [(8, 10)]
    # factor 4: output 5 sits at source 0.875 (reads 0 and 1), output 10 at 2.125 (2 and 3)
    assert interpolation_source([(5, 11)], [8], 4) == [(0, 4)]


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
