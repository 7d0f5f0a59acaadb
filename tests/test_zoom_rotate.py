"""Spatial augmentation (random in-plane zoom and rotation): geometry checked against hand-made cases."""

import numpy as np

from napari_dmd.config import TrainConfig
from napari_dmd.data.sampling import PatchSampler
from napari_dmd.data.transforms import zoom_rotate


def _disc(n: int, r: float, cy: float, cx: float) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.int64)


def test_identity_when_no_zoom_and_no_angle():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 17, 17)).astype(np.float32)
    lab = rng.integers(0, 4, size=img.shape)
    out, olab = zoom_rotate(img, lab, np.random.default_rng(1), zoom=(1.0, 1.0), max_angle_deg=0.0)
    np.testing.assert_allclose(out, img, atol=1e-5)
    np.testing.assert_array_equal(olab, lab)
    assert out.dtype == np.float32 and olab.dtype == lab.dtype


def test_zoom_two_magnifies_about_the_centre():
    """s = 2: output pixel c + 2k shows input pixel c + k (c the centre); a disc of radius 4 becomes radius 8."""
    n = 33
    lab = _disc(n, 4.0, 16, 16)
    img = lab.astype(np.float32)
    out, olab = zoom_rotate(img, lab, np.random.default_rng(0), zoom=(2.0, 2.0), max_angle_deg=0.0)
    ys, xs = np.nonzero(olab)
    for lo, hi in ((ys.min(), ys.max()), (xs.min(), xs.max())):  # 8 px each side, +-1 for rounding at .5
        assert 7 <= 16 - lo <= 9 and 7 <= hi - 16 <= 9
    assert abs(olab.sum() - np.pi * 8 * 8) < 0.1 * np.pi * 64
    assert out[16, 16] == 1.0 and out[0, 0] == 0.0


def test_rotation_moves_an_off_centre_disc_on_its_circle_and_keeps_labels_aligned():
    n = 41
    lab = _disc(n, 3.0, 20, 32)  # 12 px right of the centre
    img = lab.astype(np.float32)
    for seed in range(5):
        out, olab = zoom_rotate(img, lab, np.random.default_rng(seed), zoom=(1.0, 1.0), max_angle_deg=90.0)
        ys, xs = np.nonzero(olab)
        assert abs(np.hypot(ys.mean() - 20, xs.mean() - 20) - 12) < 0.6  # the same distance from the centre
        assert set(np.unique(olab)) <= {0, 1}  # nearest neighbour: no new label values
        assert abs(olab.sum() - lab.sum()) <= 6
        assert (out[olab == 1] > 0.3).mean() > 0.9  # image and label moved together


def test_3d_patch_every_slice_alike():
    lab2 = _disc(21, 4.0, 10, 14)
    lab = np.stack([lab2] * 4)
    out, olab = zoom_rotate(lab.astype(np.float32), lab, np.random.default_rng(2))
    assert olab.shape == lab.shape
    for z in range(1, 4):
        np.testing.assert_array_equal(olab[z], olab[0])


def test_sampler_applies_it_only_when_asked():
    img = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (32, 1))
    lab = _disc(32, 8.0, 16, 16)
    kw = dict(batch_size=4, augment=True, flips=False, seed=5, fg_fraction=0.0)
    plain = PatchSampler([img], [lab], (32, 32), **kw).sample()
    warped = PatchSampler([img], [lab], (32, 32), spatial=True, **kw).sample()
    # without it the label patch is the case's own (no flips, one window); with it the disc changes size/place
    assert all(np.array_equal(p, lab) for p in plain[1])
    assert not all(np.array_equal(p, lab) for p in warped[1])
    assert TrainConfig().spatial_augment is False  # off by default: every committed result was trained without
