"""features.py: feature maps -> layer arrays (shapes, placement, PCA, energy, heads, snapshots). No Qt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_dmd.features import (
    StudentSnapshot,
    _slab,
    compute_features,
    energy_map,
    pca_rgb,
    placement,
)
from napari_dmd.models.heads import ScaleHeads
from napari_dmd.models.unet import UNet


@pytest.fixture(scope="module")
def model2d() -> UNet:
    torch.manual_seed(0)
    return UNet(2, 1, 3, (4, 8, 16)).eval()  # decoder strides 2, 1


@pytest.fixture(scope="module")
def image2d() -> np.ndarray:
    rng = np.random.default_rng(1)
    img = rng.normal(size=(40, 36)).astype(np.float32)
    img[10:30, 8:20] += 3.0
    return img


def test_placement_centres_coarse_voxels_over_the_fine_ones():
    scale, translate = placement((2.0, 0.5), (10.0, -3.0), (4, 4), (0, 0))
    assert scale == (8.0, 2.0)
    assert translate == pytest.approx((10.0 + 2.0 * 1.5, -3.0 + 0.5 * 1.5))
    # generic: coarse voxel j (stride k, offset o) sits at the mean of the fine voxel centres it covers
    sp, org, k, off = 0.7, 4.0, 8, 16
    (s,), (t,) = placement((sp,), (org,), (k,), (off,))
    for j in range(3):
        fine = [org + sp * (off + j * k + i) for i in range(k)]
        assert t + j * s == pytest.approx(np.mean(fine))
    # stride 1, offset 0 is the image's own placement
    assert placement((1.5, 2.5), (1.0, 2.0), (1, 1), (0, 0)) == ((1.5, 2.5), (1.0, 2.0))


def test_2d_shapes_scale_and_translate(model2d, image2d):
    spacing, origin = (0.5, 2.0), (3.0, -1.0)
    out = compute_features(model2d, image2d, spacing=spacing, origin=origin)
    assert [f.stride for f in out] == [2, 1]
    deep, fine = out
    assert deep.shape == (20, 18) and fine.shape == (40, 36)
    assert deep.features.shape == (8, 20, 18) and fine.features.shape == (4, 40, 36)
    assert deep.pca_rgb.shape == (20, 18, 3) and deep.energy.shape == (20, 18)
    assert deep.scale == (1.0, 4.0) and deep.translate == pytest.approx((3.25, 0.0))
    assert fine.scale == spacing and fine.translate == origin
    # the coarse grid's outer edge coincides with the image's outer edge
    for f in out:
        lo = np.array(f.translate) - np.array(f.scale) / 2
        assert lo == pytest.approx(np.array(origin) - np.array(spacing) / 2)
        hi = lo + np.array(f.scale) * np.array(f.shape)
        assert hi == pytest.approx(np.array(origin) + np.array(spacing) * (np.array(image2d.shape) - 0.5))
    assert deep.channel(7).shape == (20, 18)
    np.testing.assert_array_equal(deep.channel(2), deep.features[2])
    with pytest.raises(IndexError, match="0..7"):
        deep.channel(8)
    assert deep.head_labels is None


def test_odd_sizes_follow_the_models_ceil_grid(model2d):
    img = np.random.default_rng(0).normal(size=(33, 17)).astype(np.float32)
    deep = compute_features(model2d, img, feature_scales=[0])[0]
    assert deep.shape == (17, 9)


def test_energy_is_mean_squared_activation(model2d, image2d):
    f = compute_features(model2d, image2d, feature_scales=[1])[0]
    np.testing.assert_allclose(f.energy, (f.features.astype(np.float64) ** 2).mean(0), rtol=1e-5)
    assert energy_map(np.full((3, 2, 2), 2.0)).tolist() == [[4.0, 4.0], [4.0, 4.0]]


def test_pca_range_and_structure():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    # 6 channels driven by one strong pattern (x) and one weaker (y), plus noise
    base = np.stack([xx, -xx, 2 * xx, yy * 0.3, -yy * 0.3, rng.normal(size=(32, 32))]).astype(np.float32)
    rgb, ratios = pca_rgb(base + 0.01 * rng.normal(size=base.shape).astype(np.float32))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert ratios[0] > ratios[1] > ratios[2] and sum(ratios) <= 1.0 + 1e-6
    # the first component follows x, with a fixed sign (largest loading positive -> increases with x)
    assert np.corrcoef(rgb[..., 0].ravel(), xx.ravel())[0, 1] > 0.95
    # fewer than three channels: the missing colours stay 0; constant features give black
    two, _ = pca_rgb(base[:2])
    assert np.all(two[..., 1:] == 0) and two[..., 0].max() == pytest.approx(1.0)
    flat, r = pca_rgb(np.ones((4, 8, 8), np.float32))
    assert np.all(flat == 0) and r == []


def test_pca_matches_an_svd_of_the_centred_features():
    """The basis is the right singular vectors of the centred (N, C) matrix, written here with NumPy's SVD."""
    rng = np.random.default_rng(5)
    f = (rng.normal(size=(7, 5)) @ rng.normal(size=(5, 40 * 30))).reshape(7, 40, 30).astype(np.float32)
    rgb, ratios = pca_rgb(f)
    x = f.reshape(7, -1).T.astype(np.float64)
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(ratios, (s[:3] ** 2) / np.sum(s ** 2), rtol=1e-6)
    for k in range(3):
        comp = vt[k] * np.sign(vt[k][np.argmax(np.abs(vt[k]))])
        proj = centred @ comp
        lo, hi = np.percentile(proj, 1.0), np.percentile(proj, 99.0)
        np.testing.assert_allclose(rgb[..., k].ravel(), np.clip((proj - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_pca_subsample_is_deterministic():
    f = np.random.default_rng(3).normal(size=(8, 300, 300)).astype(np.float32)
    a, _ = pca_rgb(f, max_samples=5000)
    b, _ = pca_rgb(f, max_samples=5000)
    np.testing.assert_array_equal(a, b)


def test_compute_is_deterministic(model2d, image2d):
    a = compute_features(model2d, image2d)
    b = compute_features(model2d, image2d)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.pca_rgb, fb.pca_rgb)
        np.testing.assert_array_equal(fa.energy, fb.energy)


def test_heads_give_per_scale_labels(model2d, image2d):
    torch.manual_seed(0)
    heads = ScaleHeads(2, [model2d.feature_channels[0]], 3).eval()
    out = compute_features(model2d, image2d, heads=heads, head_stages=[0])
    deep, fine = out
    assert deep.head_labels is not None and fine.head_labels is None
    assert deep.head_labels.shape == deep.shape and deep.head_labels.dtype == np.uint8
    with torch.no_grad():
        x = torch.from_numpy((image2d - image2d.mean()) / image2d.std())[None, None]
        _, feats = model2d(x, return_features=True)
        expect = heads(feats[:1])[0][0].argmax(0).numpy()
    np.testing.assert_array_equal(deep.head_labels, expect)


def test_2d_model_on_a_volume_uses_and_places_the_slice(model2d):
    vol = np.random.default_rng(2).normal(size=(7, 24, 20)).astype(np.float32)
    out = compute_features(model2d, vol, spacing=(3.0, 1.0, 1.0), origin=(5.0, 0.0, 0.0), slice_index=4)
    deep = out[0]
    assert deep.features.shape == (8, 1, 12, 10) and deep.pca_rgb.shape == (1, 12, 10, 3)
    assert deep.energy.shape == (1, 12, 10)
    assert deep.scale == (3.0, 2.0, 2.0)
    assert deep.translate == pytest.approx((5.0 + 3.0 * 4, 0.5, 0.5))
    # same numbers as running the model on that slice (normalized with the whole volume's statistics)
    with torch.no_grad():
        x = torch.from_numpy((vol[4] - vol.mean()) / vol.std())[None, None]
        _, feats = model2d(x, return_features=True)
    np.testing.assert_allclose(deep.features[:, 0], feats[0][0].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="outside the volume"):
        compute_features(model2d, vol, slice_index=7)


def test_3d_model_slab_on_big_volume():
    torch.manual_seed(0)
    model = UNet(3, 1, 2, (2, 4, 8)).eval()  # total stride 4, decoder strides 2, 1
    vol = np.random.default_rng(0).normal(size=(40, 12, 12)).astype(np.float32)
    out = compute_features(model, vol, spacing=(2.0, 1.0, 1.0), slice_index=30, max_voxels=8 * 144)
    deep = out[0]
    start = 24  # slab of 8 slices around slice 30, its start aligned to the total stride (4)
    assert deep.features.shape[1:] == (4, 6, 6)
    assert deep.translate == pytest.approx((2.0 * (start + 0.5), 0.5, 0.5))
    assert out[1].translate[0] == pytest.approx(2.0 * start)
    # a small volume runs whole
    whole = compute_features(model, vol[:8], feature_scales=[1])[0]
    assert whole.shape == (8, 12, 12) and whole.translate == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("depth,centre,n_max", [(40, 0, 8), (40, 39, 8), (41, 39, 8), (41, 20, 4), (9, 5, 4)])
def test_slab_holds_the_slice_and_stays_aligned(depth, centre, n_max):
    start, stop = _slab(depth, 1, n_max, centre, 4)
    assert start % 4 == 0 and start <= centre < stop <= depth
    assert stop - start <= n_max + 3


def test_bad_inputs_raise_clear_errors(model2d):
    model3d = UNet(3, 1, 2, (2, 4)).eval()
    with pytest.raises(ValueError, match="3D model cannot run on a 2D image"):
        compute_features(model3d, np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match=r"stages 0..1"):
        compute_features(model2d, np.zeros((8, 8), np.float32), feature_scales=[2])
    with pytest.raises(ValueError, match="NaN"):
        compute_features(model2d, np.full((8, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="one channel"):
        compute_features(model2d, np.zeros((2, 2, 8, 8), np.float32))


def test_snapshot_is_an_independent_copy(model2d, image2d):
    model = UNet(2, 1, 3, (4, 8, 16))
    heads = ScaleHeads(2, [8], 3)
    snap = StudentSnapshot.take(model, heads=heads, feature_scales=[0], normalization="zscore", iteration=7)
    before = compute_features(*snap.build()[:1], image2d)[0].energy
    with torch.no_grad():  # training goes on: the snapshot must not change
        for p in model.parameters():
            p.add_(1.0)
    rebuilt, rheads = snap.build()
    assert snap.iteration == 7 and snap.feature_scales == [0] and rheads is not None
    np.testing.assert_array_equal(compute_features(rebuilt, image2d)[0].energy, before)
    assert not rebuilt.training
    # reuse recycles the modules when the architecture matches
    again, again_heads = snap.build(reuse=(rebuilt, rheads))
    assert again is rebuilt and again_heads is rheads
