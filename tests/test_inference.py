"""Sliding-window inference: exactness on pointwise predictors, slice-wise 2D, progress, cancel, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_dmd.inference import (
    InferenceCancelled,
    count_windows,
    predict_labels,
    sliding_window_predict,
)


def _pointwise(ndim: int, n_classes: int = 3) -> torch.nn.Module:
    """Fixed 1x1 conv: logits_c = w_c * intensity + b_c, so every window agrees with the whole image."""
    conv = (torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d)(1, n_classes, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-2.0, 2.0, n_classes).reshape(n_classes, 1, *([1] * ndim)))
        conv.bias.copy_(torch.linspace(0.5, -0.5, n_classes))
    return conv.eval()


def _contextual(ndim: int, n_classes: int = 3) -> torch.nn.Module:
    """Seeded 3x3(x3) conv net: output depends on neighbours, so tiling and batching matter."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(
        conv(1, 4, 3, padding=1), torch.nn.ReLU(), conv(4, n_classes, 3, padding=1)
    ).eval()


def _full_image_probs(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = net(torch.from_numpy(image)[None, None])
    return torch.softmax(logits, dim=1)[0].numpy()


@pytest.mark.parametrize(
    ("shape", "patch"),
    [
        ((13, 17), (8, 8)),  # not a multiple of the patch
        ((5, 6), (8, 8)),  # smaller than the patch
        ((9, 13, 7), (4, 8, 8)),  # 3D, last axis smaller than the patch
        ((3, 5, 6), (8, 8, 8)),  # 3D, smaller than the patch
    ],
)
def test_pointwise_predictor_matches_full_image(shape: tuple[int, ...], patch: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=shape).astype(np.float32)
    net = _pointwise(len(shape))
    probs = sliding_window_predict(net, image, patch, num_classes=3, overlap=0.5, batch_size=2)
    assert probs.shape == (3, *shape) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, _full_image_probs(net, image), atol=1e-5, rtol=0)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_gaussian_blending_favours_window_centres() -> None:
    # 4 x 12 image, patch 4 x 8, overlap 0.5: two windows, x in [0, 8) and [4, 12), overlapping on x = 4..7.
    # The image is 0 left of x = 6 and 1 from x = 6, so the left window has mean 0.25 and the right 0.75;
    # each window votes hard for its own class. With Gaussian weights the voxel nearer a window's centre
    # follows that window (constant weights would give 0.5 everywhere in the overlap).
    image = np.zeros((4, 12), dtype=np.float32)
    image[:, 6:] = 1.0

    def vote(x: torch.Tensor) -> torch.Tensor:
        right = (x.mean(dim=(1, 2, 3)) > 0.5).float()[:, None, None, None]
        return 10.0 * torch.cat([1 - right, right], dim=1).expand(-1, -1, *x.shape[2:])

    p0 = sliding_window_predict(vote, image, (4, 8), overlap=0.5, batch_size=1)[0]
    np.testing.assert_allclose(p0[:, :4], 1 / (1 + np.exp(-10.0)), atol=1e-6)  # left window only
    np.testing.assert_allclose(p0[:, 8:], 1 / (1 + np.exp(10.0)), atol=1e-6)  # right window only
    assert (p0[:, 4] > 0.99).all() and (p0[:, 7] < 0.01).all()
    assert (np.diff(p0[:, 3:9], axis=1) < 0).all()


def test_2d_model_on_3d_equals_each_slice_alone() -> None:
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(3, 13, 11)).astype(np.float32)
    volume[1] += 2.0  # slices differ in distribution too
    net = _contextual(2)
    probs = sliding_window_predict(net, volume, (8, 8), batch_size=5)
    assert probs.shape == (3, 3, 13, 11)
    for z in range(volume.shape[0]):
        alone = sliding_window_predict(net, volume[z], (8, 8), batch_size=1)
        np.testing.assert_allclose(probs[:, z], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("shape", "patch"), [((19, 23), (8, 8)), ((10, 13, 9), (6, 8, 8)), ((4, 19, 23), (8, 8))]
)
def test_batch_size_does_not_change_output(shape: tuple[int, ...], patch: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(size=shape).astype(np.float32)
    net = _contextual(len(patch))
    ref = sliding_window_predict(net, image, patch, batch_size=1)
    for bs in (3, 7, 100):
        np.testing.assert_allclose(sliding_window_predict(net, image, patch, batch_size=bs), ref, atol=1e-6)
    labels = predict_labels(net, image, patch, batch_size=3)
    assert labels.dtype == np.uint8 and labels.shape == shape
    np.testing.assert_array_equal(labels, ref.argmax(axis=0))


@pytest.mark.parametrize(
    ("shape", "patch", "batch", "expected"),
    [
        # 10 x 10, patch 4, step int(4 * 0.5) = 2: starts 0, 2, 4, 6 per axis -> 16 windows
        ((10, 10), (4, 4), 3, [3, 6, 9, 12, 15, 16]),
        # 3 slices x 16 windows = 48
        ((3, 10, 10), (4, 4), 5, list(range(5, 48, 5)) + [48]),
        # smaller than the patch: one window
        ((3, 3), (4, 4), 4, [1]),
    ],
)
def test_progress_counts(
    shape: tuple[int, ...], patch: tuple[int, ...], batch: int, expected: list[int]
) -> None:
    calls: list[tuple[int, int]] = []
    image = np.zeros(shape, dtype=np.float32)
    sliding_window_predict(
        _pointwise(2), image, patch, batch_size=batch, progress=lambda d, t: calls.append((d, t))
    )
    assert [d for d, _ in calls] == expected
    assert {t for _, t in calls} == {expected[-1]}
    n_images = shape[0] if len(shape) > len(patch) else 1
    assert count_windows(shape[-len(patch) :], patch, 0.5) * n_images == expected[-1]


def test_should_stop_aborts() -> None:
    image = np.zeros((10, 10), dtype=np.float32)
    net = _pointwise(2)
    n_calls = 0

    def counting(x: torch.Tensor) -> torch.Tensor:
        nonlocal n_calls
        n_calls += 1
        return net(x)

    with pytest.raises(InferenceCancelled):
        sliding_window_predict(counting, image, (4, 4), batch_size=2, should_stop=lambda: n_calls >= 2)
    assert n_calls == 2  # polled before every call; 16 windows would need 8
    n_calls = 0
    with pytest.raises(InferenceCancelled):
        predict_labels(counting, image, (4, 4), should_stop=lambda: True)
    assert n_calls == 0


def test_module_in_training_mode_runs_in_eval_and_is_restored() -> None:
    net = torch.nn.Sequential(torch.nn.Dropout(0.5), _pointwise(2)).train()
    image = np.random.default_rng(4).normal(size=(12, 12)).astype(np.float32)
    probs = sliding_window_predict(net, image, (8, 8))
    assert net.training and net[0].training
    np.testing.assert_allclose(probs, _full_image_probs(net.eval(), image), atol=1e-5)


def test_predict_labels_dtype_for_many_classes() -> None:
    image = np.linspace(-1, 1, 36, dtype=np.float32).reshape(6, 6)
    labels = predict_labels(_pointwise(2, n_classes=300), image, (4, 4), num_classes=300)
    assert labels.dtype == np.int16
    np.testing.assert_array_equal(labels, _full_image_probs(_pointwise(2, 300), image).argmax(axis=0))


def test_bad_inputs_raise() -> None:
    net = _pointwise(2)
    img = np.zeros((8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="3D patch"):
        sliding_window_predict(net, img, (4, 4, 4))
    with pytest.raises(ValueError, match="num_classes"):
        sliding_window_predict(net, img, (4, 4), num_classes=2)
    with pytest.raises(ValueError, match="NaN"):
        sliding_window_predict(net, np.full((8, 8), np.nan, dtype=np.float32), (4, 4))
    with pytest.raises(ValueError, match="expected"):
        sliding_window_predict(lambda x: x[..., :2, :2], img, (4, 4))
    with pytest.raises(TypeError, match="unexpected"):
        predict_labels(net, img, (4, 4), overlapp=0.5)


@pytest.mark.parametrize(
    ("shape", "patch"),
    [
        ((4, 16, 16), (16, 16)),  # 2D model on a volume, each slice exactly one window
        ((3, 11, 6), (16, 16)),  # slices smaller than the patch: padded (odd difference), cropped back
        ((7, 14), (8, 12)),  # 2D: one axis larger than the patch is not one window -> MONAI, unchanged
        ((5, 9, 7), (6, 12, 8)),  # 3D, padded on every axis
    ],
)
def test_one_window_images_equal_monai_blending(shape: tuple[int, ...], patch: tuple[int, ...]) -> None:
    """Images that fit one window skip MONAI's sliding window: the same logits (to float rounding) and labels."""
    from monai.inferers import sliding_window_inference

    from napari_dmd.inference import SIGMA_SCALE

    image = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    net = _contextual(len(patch), n_classes=4)
    calls: list[int] = []

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls.append(int(x.shape[0]))
        return net(x)

    probs = sliding_window_predict(counted, image, patch, num_classes=4, batch_size=3)
    slicewise = len(patch) == 2 and len(shape) == 3
    x = torch.from_numpy(image)
    x = x[:, None] if slicewise else x[None, None]
    with torch.no_grad():
        ref = sliding_window_inference(x, patch, 3, net, overlap=0.5, mode="gaussian", sigma_scale=SIGMA_SCALE,
                                       padding_mode="constant", cval=0.0)
    ref = torch.softmax(ref.transpose(0, 1) if slicewise else ref[0], dim=0).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(predict_labels(net, image, patch, batch_size=3), ref.argmax(0))
    n_images = shape[0] if slicewise else 1
    assert sum(calls) == n_images * count_windows(shape[-len(patch):], patch, 0.5)


def test_class_argmax_equals_numpy_first_maximum_on_ties() -> None:
    from napari_dmd.inference import class_argmax

    scores = np.random.default_rng(3).normal(size=(6, 4, 5, 3)).astype(np.float32)
    scores[1, 0, 0, 0] = scores[4, 0, 0, 0] = 50.0  # a tie: the first class wins, as in NumPy
    scores[:, 1, 1, 1] = 0.0  # all equal: class 0
    view = np.moveaxis(np.ascontiguousarray(np.moveaxis(scores, 0, 1)), 0, 1)  # strided (C, N, ...) as inference has
    for arr in (scores, view):
        got = class_argmax(arr)
        assert got.dtype == np.uint8 and got[0, 0, 0] == 1 and got[1, 1, 1] == 0
        np.testing.assert_array_equal(got, arr.argmax(0))
    assert class_argmax(scores, np.int16).dtype == np.int16


@pytest.mark.parametrize(("shape", "patch"), [((5, 13, 11), (16, 16)), ((9, 13, 11), (16, 16, 16))])
@pytest.mark.parametrize("workers", [1, 2])
def test_one_window_labels_per_call_equal_the_argmax_of_the_probabilities(shape, patch, workers) -> None:
    # images that fit one window are labelled call by call in the worker that ran it: the same labels as the
    # argmax of the gathered probabilities, also for a U-Net asked for the image's region of a padded window
    from napari_dmd.models.unet import UNet

    image = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    torch.manual_seed(0)
    for net in (_contextual(len(patch), n_classes=4), UNet(len(patch), 1, 4, (4, 8), stem=2).eval()):
        probs = sliding_window_predict(net, image, patch, batch_size=2, workers=workers)
        labels = predict_labels(net, image, patch, batch_size=2, workers=workers)
        assert labels.dtype == np.uint8 and labels.shape == shape
        np.testing.assert_array_equal(labels, probs.argmax(0))


def test_one_window_labels_for_many_classes_are_int16() -> None:
    image = np.linspace(-1, 1, 3 * 6 * 6, dtype=np.float32).reshape(3, 6, 6)
    net = _pointwise(2, n_classes=300)
    labels = predict_labels(net, image, (8, 8), num_classes=300)
    assert labels.dtype == np.int16
    np.testing.assert_array_equal(labels, sliding_window_predict(net, image, (8, 8)).argmax(0))
