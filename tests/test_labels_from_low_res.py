"""Labels of a strided U-Net from its logits before upsampling: the argmax of the upsampled logits, blended only
near class boundaries (``upsampled_labels``, ``UNet.labels``, the one-window inference path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_dmd.inference as inference
from napari_dmd.inference import predict_labels, sliding_window_predict
from napari_dmd.models import linear_upsample as lu
from napari_dmd.models.presets import build_model
from napari_dmd.models.unet import UNet


def _reference(x: torch.Tensor, factor, region) -> tuple[np.ndarray, np.ndarray]:
    """argmax of the upsampled logits (first class on ties) and the gap between the two best classes."""
    up = lu.linear_upsample(x, factor, region)
    top = up.topk(2, dim=1).values
    return up.argmax(1).numpy(), (top[:, 0] - top[:, 1]).numpy()


def _smooth(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Logits with regions of one class (a coarse random field), as a segmentation network makes them."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(shape[0], shape[1], *[max(2, s // 4) for s in shape[2:]], generator=g)
    mode = "bilinear" if len(shape) == 4 else "trilinear"
    return 3 * torch.nn.functional.interpolate(coarse, size=shape[2:], mode=mode, align_corners=False)


@pytest.mark.parametrize("shape, factor", [((3, 4, 9, 7), 2), ((2, 5, 8, 8), 4), ((2, 3, 6, 5), (2, 4)),
                                           ((1, 3, 5, 7, 6), 2), ((2, 2, 4, 3, 5), (2, 1, 2))])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_the_argmax_of_the_upsampled_logits(shape, factor, seed):
    rng = np.random.default_rng(seed)
    for x in (_smooth(shape, seed), torch.randn(*shape, generator=torch.Generator().manual_seed(seed))):
        factors = [factor] * (len(shape) - 2) if isinstance(factor, int) else list(factor)
        full = [(0, f * n) for f, n in zip(factors, shape[2:])]
        a = [int(rng.integers(0, b - 1)) for _, b in full]
        crop = [(lo, int(rng.integers(lo + 1, b + 1))) for lo, (_, b) in zip(a, full)]
        for region in (None, crop):
            want, gap = _reference(x, factor, region)
            got = lu.upsampled_labels(x, factor, region, torch.int64).numpy()
            assert got.shape == want.shape
            differ = got != want
            assert not differ.any() or gap[differ].max() < 1e-5, "only float-rounding ties may differ"


@pytest.mark.parametrize("shape, factor", [((2, 4, 6, 5), 4), ((1, 3, 4, 5, 3), 2)])
def test_ties_go_to_the_first_class(shape, factor):
    x = torch.randint(0, 3, shape, generator=torch.Generator().manual_seed(3)).float()  # exact blends, many ties
    assert np.array_equal(lu.upsampled_labels(x, factor, dtype=torch.int64).numpy(),
                          lu.linear_upsample(x, factor).argmax(1).numpy())


def test_only_blocks_whose_sources_disagree_are_blended(monkeypatch):
    blended = []
    original = lu._blended

    def counting(*args):
        where, values = original(*args)
        blended.append(where.size)
        return where, values

    monkeypatch.setattr(lu, "_blended", counting)
    x = torch.zeros(1, 3, 8, 8)
    x[:, 1] = 1.0  # class 1 everywhere
    assert (lu.upsampled_labels(x, 4) == 1).all() and blended == []
    x[:, 2, :, 5:] = 2.0  # class 2 in the last 3 columns: one column of blocks (8 of 64) disagrees
    labels = lu.upsampled_labels(x, 4)
    assert sum(blended) == 8 * 4 * 4, "the 8 blocks of 4 x 4 output pixels in front of column 5"
    assert (labels[0, :, :18] == 1).all() and (labels[0, :, 22:] == 2).all()
    assert np.array_equal(labels.numpy(), lu.linear_upsample(x, 4).argmax(1).numpy())


def test_first_argmax_is_numpys():
    x = np.random.default_rng(0).integers(0, 3, (4, 5, 6, 7)).astype(np.float32)
    assert np.array_equal(lu.first_argmax(x), x.argmax(1))
    assert lu.first_class(torch.from_numpy(x), torch.int16).dtype == torch.int16


@pytest.mark.parametrize("preset", ["student", "student-tiny"])
@pytest.mark.parametrize("size", [(128, 128), (45, 70)])
def test_unet_labels_equal_its_logits_argmax(preset, size):
    torch.manual_seed(0)
    net = build_model(preset, 2, 4).eval()
    assert net.labels_from_low_res
    x = torch.randn(3, 1, *size)
    region = [(3, size[0] - 2), (1, size[1])]
    with torch.inference_mode():
        for r in (None, region):
            want, gap = (v for v in _ref_net(net, x, r))
            got = net.labels(x, region=r).numpy()
            differ = got != want
            assert got.dtype == np.uint8 and (not differ.any() or gap[differ].max() < 1e-5)


def _ref_net(net: UNet, x: torch.Tensor, region) -> tuple[np.ndarray, np.ndarray]:
    logits = net(x, region=region)
    top = logits.topk(2, dim=1).values
    return logits.argmax(1).numpy(), (top[:, 0] - top[:, 1]).numpy()


@pytest.mark.parametrize("preset, dims", [("student", 3), ("teacher", 2), ("student-classic", 2)])
def test_other_networks_label_by_the_argmax_of_their_logits(preset, dims):
    net = build_model(preset, dims, 3).eval()
    assert not net.labels_from_low_res and not inference.takes_labels(net)
    x = torch.randn(1, 1, *[32] * dims)
    with torch.inference_mode():
        assert torch.equal(net.labels(x).long(), net(x).argmax(1))


@pytest.mark.parametrize("shape", [(5, 128, 128), (4, 100, 90)])
def test_predicted_labels_take_the_low_res_path_and_equal_the_probabilities_argmax(shape, monkeypatch):
    torch.manual_seed(1)
    net = build_model("student-tiny", 2, 3).eval()
    asked = []
    monkeypatch.setattr(UNet, "labels", lambda self, *a, **k: asked.append(1) or UNet_labels(self, *a, **k))
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    labels = predict_labels(net, image, [128, 128], num_classes=3, batch_size=2)
    probs = sliding_window_predict(net, image, [128, 128], num_classes=3, batch_size=2)
    assert asked and labels.dtype == np.uint8 and labels.shape == shape
    top = np.sort(probs, axis=0)
    differ = labels != probs.argmax(0)
    assert not differ.any() or (top[-1] - top[-2])[differ].max() < 1e-5


UNet_labels = UNet.labels


def test_many_classes_are_labelled_as_int16():
    net = build_model("student", 2, 300).eval()
    image = np.random.default_rng(0).standard_normal((2, 64, 64)).astype(np.float32)
    labels = predict_labels(net, image, [64, 64], num_classes=300, batch_size=2)
    with torch.inference_mode():
        want = net(torch.from_numpy(image)[:, None]).argmax(1).numpy()
    assert labels.dtype == np.int16 and np.array_equal(labels, want)


def test_window_workers_keep_the_argmax_of_the_upsampled_logits(monkeypatch):
    """Beside a second worker the low-resolution path's NumPy steps wait for the GIL: the pool takes the argmax."""
    torch.manual_seed(2)
    net = build_model("student", 2, 3).eval()
    asked = []
    monkeypatch.setattr(UNet, "labels", lambda self, *a, **k: asked.append(1) or UNet_labels(self, *a, **k))
    image = np.random.default_rng(1).standard_normal((6, 64, 64)).astype(np.float32)
    two = predict_labels(net, image, [64, 64], num_classes=3, batch_size=2, workers=2)
    assert not asked
    one = predict_labels(net, image, [64, 64], num_classes=3, batch_size=2)
    assert asked and np.array_equal(one, two)
