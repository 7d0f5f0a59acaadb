"""The own crop/pad kept instead of MONAI's (it measured faster) gives exactly what MONAI's would."""

import numpy as np
import pytest

from napari_dmd.data.sampling import PatchSampler, crop_pad


@pytest.mark.parametrize("shape, patch", [((20, 9), (12, 12)), ((5, 14, 11), (8, 10, 10))])
def test_crop_pad_matches_monai_spatial_crop_and_pad(shape, patch):
    """Cropped along the long axes, padded (symmetrically, zeros) along the short ones, like SpatialCrop+SpatialPad."""
    from monai.transforms import SpatialCrop, SpatialPad

    rng = np.random.default_rng(0)
    image = rng.standard_normal(shape).astype(np.float32) + 3.0  # no zeros, so the padding shows
    label = rng.integers(1, 4, shape).astype(np.uint8)
    for _ in range(5):
        src, dst = [], []
        for size, p in zip(shape, patch):
            start = int(rng.integers(size - p + 1)) if size >= p else 0
            src.append(slice(start, start + min(size, p)))
            before = max(p - size, 0) // 2
            dst.append(slice(before, before + min(size, p)))
        img, lab = crop_pad(image, label, tuple(src), tuple(dst), patch)
        pad = SpatialPad(patch, method="symmetric")
        ref_img = np.asarray(pad(SpatialCrop(roi_slices=src)(image[None])))[0]
        ref_lab = np.asarray(pad(SpatialCrop(roi_slices=src)(label[None])))[0]
        assert img.dtype == np.float32 and lab.dtype == np.int64 and img.shape == lab.shape == patch
        np.testing.assert_array_equal(img, ref_img)
        np.testing.assert_array_equal(lab, ref_lab)
        assert (img == 0).any() and ((img == 0) == (lab == 0)).all()  # padding: image 0 where label 0


def test_crop_pad_unlabelled_gives_no_label():
    img, lab = crop_pad(np.ones((4, 4), np.float32), None, (slice(0, 4), slice(1, 3)), (slice(0, 4), slice(0, 2)),
                        (4, 2))
    assert lab is None and img.shape == (4, 2) and img.sum() == 8


def test_sampler_patches_come_from_crop_pad(monkeypatch):
    """The sampler cuts its patches with crop_pad (the function the benchmark swaps for MONAI's)."""
    import napari_dmd.data.sampling as sampling

    calls = []

    def spy(*args):
        calls.append(args[2:])
        return crop_pad(*args)

    monkeypatch.setattr(sampling, "crop_pad", spy)
    image = np.arange(6 * 20, dtype=np.float32).reshape(6, 20)
    x, _, _ = PatchSampler([image], [None], (8, 8), batch_size=3, augment=False).sample()
    assert len(calls) == 3
    for (src, dst, patch), got in zip(calls, x[:, 0]):
        assert patch == (8, 8) and dst[0] == slice(1, 7)  # 6 rows padded to 8: one zero row each side
        np.testing.assert_array_equal(got[dst], image[src])
