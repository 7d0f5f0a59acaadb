"""Tests for normalization, augmentation, case split and patch sampling."""

import json
import multiprocessing
import sys

import numpy as np
import pytest
from torch.utils.data import DataLoader

from napari_dmd.data.sampling import PatchSampler, PatchStream, split_cases, worker_seed
from napari_dmd.data.transforms import augment, normalize

# ------------------------------------------------------------------ normalize


@pytest.mark.parametrize("scheme", ["zscore", "zscore-fg", "ct"])
def test_normalize_stats(scheme):
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 20.0, size=(8, 32, 32)).astype(np.int16)
    out = normalize(image, scheme)
    assert out.dtype == np.float32 and out.shape == image.shape
    if scheme == "zscore-fg":
        fg = out[image > np.percentile(image, 10)]
        assert abs(fg.mean()) < 1e-3 and abs(fg.std() - 1) < 1e-3
    else:
        assert abs(out.mean()) < 1e-3 and abs(out.std() - 1) < 1e-3


def test_normalize_ct_clips_outliers():
    image = np.zeros((64, 64), np.float32)
    image[:32] = 1.0
    image[0, 0] = 1e6
    out = normalize(image, "ct", clip=(0.5, 99.5))
    assert out.max() < 2.0  # outlier clipped before the z-score
    plain = normalize(image, "zscore")  # zscore only clips far outliers (to the band 4 widths out)
    assert plain.max() > 5.0 > out.max()


def test_normalize_fg_ignores_dark_background():
    image = np.zeros((40, 40), np.float32)
    image[10:30, 10:30] = np.linspace(10, 20, 400).reshape(20, 20)
    out = normalize(image, "zscore-fg")
    assert abs(out[10:30, 10:30].mean()) < 1e-3
    assert out[0, 0] < -3  # background far below the foreground mean


@pytest.mark.parametrize("scheme", ["zscore", "zscore-fg", "ct", "none"])
def test_normalize_constant_image(scheme):
    out = normalize(np.full((4, 5, 6), 7.0), scheme)
    assert np.isfinite(out).all()
    if scheme == "none":
        assert np.all(out == 7.0)
    else:
        assert np.all(out == 0.0)


def test_normalize_does_not_modify_input_and_rejects_unknown():
    image = np.arange(20, dtype=np.float32)
    before = image.copy()
    normalize(image, "ct")
    np.testing.assert_array_equal(image, before)
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize(image, "minmax")


# ------------------------------------------------------------------ augment


@pytest.mark.parametrize("shape", [(16, 16), (6, 12, 12), (5, 8, 11)])
def test_augment_keeps_image_and_label_aligned(shape):
    rng = np.random.default_rng(1)
    image = rng.random(shape).astype(np.float32)
    label = (image > 0.3).astype(np.int64) + (image > 0.7)
    seen_change = False
    for _ in range(20):
        img, lab = augment(image, label, rng, intensity=False)
        assert img.shape == shape and lab.shape == shape and img.dtype == np.float32
        np.testing.assert_array_equal(lab, (img > 0.3).astype(np.int64) + (img > 0.7))
        seen_change |= not np.array_equal(img, image)
    assert seen_change


def test_augment_intensity_keeps_order_and_label():
    rng = np.random.default_rng(2)
    image = np.linspace(-1, 1, 256, dtype=np.float32).reshape(16, 16)
    label = (image > 0).astype(np.uint8)
    for _ in range(10):
        img, lab = augment(image, label, rng, flip=False, rot90=False)
        np.testing.assert_array_equal(lab, label)
        assert 0.85 < np.std(img) / np.std(image) < 1.15
        assert not np.array_equal(img, image)


def test_augment_unlabelled_deterministic_and_input_untouched():
    image = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    before = image.copy()
    a, la = augment(image, None, np.random.default_rng(7))
    b, _ = augment(image, None, np.random.default_rng(7))
    assert la is None
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(image, before)


# ------------------------------------------------------------------ split


def test_split_cases_deterministic_disjoint_covering():
    train, val = split_cases(10, 0.2, seed=3)
    assert (train, val) == split_cases(10, 0.2, seed=3)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(10))
    assert len(val) == 2
    others = {tuple(split_cases(10, 0.2, seed=s)[1]) for s in range(10)}
    assert len(others) > 1  # the seed matters


def test_split_cases_small_n():
    assert split_cases(1) == ([0], [])
    assert split_cases(0) == ([], [])
    train, val = split_cases(2, 0.2)
    assert len(val) == 1 and len(train) == 1
    train, val = split_cases(3, 0.01, min_val=2)
    assert len(val) == 2 and len(train) == 1
    assert len(split_cases(5, 0.0, min_val=0)[1]) == 0


# ------------------------------------------------------------------ sampler


def _volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal(shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    return img, lab, rng


@pytest.mark.parametrize(
    "shape, patch, dims",
    [((40, 48), (16, 24), None), ((20, 40, 40), (8, 16, 16), None), ((20, 40, 40), (24, 24), 2)],
)
def test_sampler_shapes_and_dtypes(shape, patch, dims):
    img, lab, _ = _volume(shape)
    lab[tuple(slice(s // 2, s // 2 + 3) for s in shape)] = 2
    sampler = PatchSampler([img, img], [lab, lab], patch, batch_size=3, spatial_dims=dims, seed=0)
    x, y, has = sampler.sample()
    assert x.shape == (3, 1, *patch) and x.dtype == np.float32
    assert y.shape == (3, *patch) and y.dtype == np.int64
    assert has.shape == (3,) and has.dtype == bool and has.all()
    assert set(np.unique(y).tolist()) <= {0, 2}


def test_sampler_patch_content_matches_source_without_augmentation():
    img = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    lab = (img.astype(np.int64) % 3).astype(np.uint8)
    sampler = PatchSampler([img], [lab], (10, 12), batch_size=4, augment=False, fg_fraction=0.5)
    x, y, _ = sampler.sample()
    for b in range(4):
        # image and label come from the same window: label is a function of the image value
        np.testing.assert_array_equal(y[b], x[b, 0].astype(np.int64) % 3)
        # a contiguous window of the source: rows differ by 40, columns by 1
        assert np.all(np.diff(x[b, 0], axis=0) == 40) and np.all(np.diff(x[b, 0], axis=1) == 1)


def test_sampler_2d_from_3d_takes_one_slice():
    img = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None], (12, 20, 20)).copy()
    lab = np.zeros(img.shape, np.uint8)
    lab[7, 5:10, 5:10] = 1  # foreground only in slice 7
    sampler = PatchSampler([img], [lab], (16, 16), spatial_dims=2, fg_fraction=1.0, augment=False, seed=1)
    for _ in range(5):
        x, y, _ = sampler.sample()
        assert np.all(x == 7.0)  # always the slice holding foreground
        assert (y == 1).any()
    sampler = PatchSampler([img], [lab], (16, 16), spatial_dims=2, fg_fraction=0.0, augment=False, seed=1)
    slices = {float(sampler.sample()[0][b, 0, 0, 0]) for _ in range(20) for b in range(2)}
    assert len(slices) > 3  # random slices otherwise


def test_sampler_pads_small_volumes():
    img = np.ones((3, 5, 6), np.float32)
    lab = np.full((3, 5, 6), 2, np.uint8)
    sampler = PatchSampler([img], [lab], (8, 8, 8), batch_size=2, augment=False, seed=0)
    x, y, has = sampler.sample()
    assert x.shape == (2, 1, 8, 8, 8) and y.shape == (2, 8, 8, 8)
    assert int(x.sum()) == 2 * 3 * 5 * 6  # image padded with 0
    assert int((y == 2).sum()) == 2 * 3 * 5 * 6 and int((y == 0).sum()) == 2 * (512 - 90)
    assert has.all()
    # partly small: only the z axis is padded
    img2 = np.ones((3, 20, 20), np.float32)
    x, _, _ = PatchSampler([img2], [None], (4, 8, 8), augment=False).sample()
    assert x.shape == (2, 1, 4, 8, 8) and int(x.sum()) == 2 * 3 * 64


def test_sampler_unlabelled_cases():
    img, lab, _ = _volume((10, 30, 30))
    lab[4:6, 10:20, 10:20] = 1
    sampler = PatchSampler([img, img], [lab, None], (8, 16, 16), batch_size=4, ignore_index=255, seed=0)
    seen = {True: 0, False: 0}
    for _ in range(10):
        _, y, has = sampler.sample()
        for b in range(4):
            seen[bool(has[b])] += 1
            if not has[b]:
                assert np.all(y[b] == 255)
            else:
                assert not np.any(y[b] == 255)
    assert seen[True] > 0 and seen[False] > 0


def test_sampler_foreground_oversampling():
    img, lab, _ = _volume((32, 64, 64))
    lab[30:32, 60:64, 0:4] = 1  # one tiny corner object: random patches rarely hit it
    lab[0:2, 0:3, 60:64] = 3
    n = 400

    def fg_rate(fraction):
        sampler = PatchSampler([img], [lab], (8, 16, 16), batch_size=4, fg_fraction=fraction, seed=0)
        hits = 0
        for _ in range(n // 4):
            _, y, _ = sampler.sample()
            hits += int(np.sum((y > 0).reshape(4, -1).any(axis=1)))
        return hits / n

    base = fg_rate(0.0)
    rate = fg_rate(0.33)
    assert base < 0.1
    assert rate >= 0.33 - 0.07  # at least fg_fraction, up to sampling noise
    assert fg_rate(1.0) == 1.0


def test_sampler_foreground_classes_balanced():
    img, lab, _ = _volume((40, 40))
    lab[:30, :30] = 1  # large class
    lab[38:40, 38:40] = 2  # tiny class
    sampler = PatchSampler([img], [lab], (4, 4), batch_size=8, fg_fraction=1.0, seed=0)
    hits2 = sum(int((sampler.sample()[1] == 2).reshape(8, -1).any(axis=1).sum()) for _ in range(25))
    assert hits2 > 0.3 * 200  # a random class, not a random foreground voxel


def test_sampler_resume_reproduces_batches():
    img, lab, _ = _volume((12, 30, 30))
    lab[3:9, 5:15, 5:15] = 1
    kwargs = dict(batch_size=3, fg_fraction=0.5, seed=42)
    a = PatchSampler([img, img], [lab, None], (8, 16, 16), **kwargs)
    for _ in range(3):
        a.sample()
    state = json.loads(json.dumps(a.state_dict()))
    expected = [a.sample() for _ in range(3)]
    b = PatchSampler([img, img], [lab, None], (8, 16, 16), **kwargs)
    fresh = b.sample()
    b.load_state_dict(state)
    for exp in expected:
        got = b.sample()
        for e, g in zip(exp, got):
            np.testing.assert_array_equal(e, g)
    assert not np.array_equal(fresh[0], expected[0][0])


def test_sampler_same_seed_same_batches_different_seed_differs():
    img, lab, _ = _volume((30, 30))
    lab[10:20, 10:20] = 1
    a = PatchSampler([img], [lab], (8, 8), seed=1).sample()
    b = PatchSampler([img], [lab], (8, 8), seed=1).sample()
    c = PatchSampler([img], [lab], (8, 8), seed=2).sample()
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_sampler_validation():
    img, lab, _ = _volume((10, 20, 20))
    with pytest.raises(ValueError, match="patch_size"):
        PatchSampler([img], [lab], (8, 8))
    with pytest.raises(ValueError, match="patch_size"):
        PatchSampler([img], [lab], (8, 0, 8))
    with pytest.raises(ValueError, match="batch_size"):
        PatchSampler([img], [lab], (8, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="label shape"):
        PatchSampler([img], [lab[:5]], (8, 8, 8))
    with pytest.raises(ValueError, match="labels"):
        PatchSampler([img], [], (8, 8, 8))
    bad = lab.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match="outside"):
        PatchSampler([img], [bad], (8, 8, 8), num_classes=3)
    with pytest.raises(ValueError, match="state"):
        PatchSampler([img], [lab], (8, 8, 8)).load_state_dict({"foo": 1})


# ------------------------------------------------------------------ worker stream


def _stream_batches(stream, n, workers=2):
    ctx = "fork" if sys.platform.startswith("linux") else "spawn"
    it = iter(DataLoader(stream, batch_size=None, num_workers=workers, multiprocessing_context=ctx))
    try:
        return [next(it)[0].numpy() for _ in range(n)]
    finally:
        it._shutdown_workers()


def test_patch_stream_seeds_workers_ranks_and_start_apart():
    img, lab, _ = _volume((40, 40))
    lab[10:30, 10:30] = 1
    sampler = PatchSampler([img], [lab], (16, 16), batch_size=2, seed=5)
    local = next(iter(PatchStream(sampler, seed=5)))  # no worker: worker id 0
    ref = PatchSampler([img], [lab], (16, 16), batch_size=2, seed=5)
    ref.reseed(worker_seed(5, 0, 0, 0))
    np.testing.assert_array_equal(local[0].numpy(), ref.sample()[0])
    assert sampler.state_dict() == PatchSampler([img], [lab], (16, 16), seed=5).state_dict(), "source untouched"

    a = _stream_batches(PatchStream(sampler, seed=5), 4)
    np.testing.assert_array_equal(a[0], local[0].numpy())  # batch 0 comes from worker 0
    assert not np.array_equal(a[0], a[1]), "workers 0 and 1 draw different patches"
    b = _stream_batches(PatchStream(sampler, seed=5), 4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # deterministic for a given worker count
    other_rank = _stream_batches(PatchStream(sampler, seed=5, rank=1), 1)
    resumed = _stream_batches(PatchStream(sampler, seed=5, start=4), 1)
    assert not np.array_equal(a[0], other_rank[0]) and not np.array_equal(a[0], resumed[0])
    assert multiprocessing.active_children() == []


def test_no_flips_keeps_left_and_right():
    """--no-flips: intensity augmentation only, so a 'right' class never appears left of a 'left' class."""
    img = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (32, 1))
    lab = np.where(np.arange(32) < 16, 1, 2).astype(np.uint8)[None, :].repeat(32, axis=0)

    def reversed_rows(flips: bool) -> int:
        sampler = PatchSampler([img], [lab], (16, 16), batch_size=8, augment=True, flips=flips, seed=3)
        n = 0
        for _ in range(10):
            _, labels, _ = sampler.sample()
            n += int((np.diff(labels, axis=-1) < 0).any(axis=-1).sum())  # class 2 before class 1 in a row
        return n

    assert reversed_rows(flips=True) > 0  # the default does flip (control)
    assert reversed_rows(flips=False) == 0
