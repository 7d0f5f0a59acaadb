"""Tests for the synthetic phantom."""

import time

import numpy as np
import pytest

from napari_dmd.phantom import PHANTOM_CLASS_NAMES, make_phantom, make_phantom_dataset


@pytest.mark.parametrize("shape", [(24, 48, 48), (64, 64), (40, 56)])
def test_shape_dtype_and_all_classes_present(shape):
    image, label = make_phantom(shape, seed=3)
    assert image.shape == shape and label.shape == shape
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert np.isfinite(image).all()
    assert set(np.unique(label).tolist()) == set(range(6))
    assert len(PHANTOM_CLASS_NAMES) == 6


@pytest.mark.parametrize("num_classes", [2, 4, 9])
def test_other_class_counts(num_classes):
    _, label = make_phantom((16, 40, 40), num_classes=num_classes, seed=1)
    assert set(np.unique(label).tolist()) == set(range(num_classes))


@pytest.mark.parametrize("shape, num_classes", [((8, 8), 6), ((4, 5), 6), ((3, 4, 4), 6), ((6, 6), 12)])
def test_tiny_grid_still_has_every_class(shape, num_classes):
    _, label = make_phantom(shape, num_classes=num_classes, seed=0)
    assert set(np.unique(label).tolist()) == set(range(num_classes))


def test_deterministic_per_seed_and_different_across_seeds():
    a_img, a_lab = make_phantom((16, 48, 48), seed=5)
    b_img, b_lab = make_phantom((16, 48, 48), seed=5)
    c_img, c_lab = make_phantom((16, 48, 48), seed=6)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert (a_lab != c_lab).mean() > 0.01  # anatomy differs, not just the noise
    assert not np.array_equal(a_img, c_img)


def test_classes_have_distinct_but_overlapping_intensities():
    image, label = make_phantom((32, 64, 64), seed=0)
    means = [float(image[label == c].mean()) for c in range(6)]
    stds = [float(image[label == c].std()) for c in range(6)]
    assert means[0] < min(means[1:])  # background darkest
    assert means[5] < means[2]  # the lesion is hypo-intense inside the liver
    assert means[3] > means[1]  # kidney brighter than body
    # overlapping: liver and body means are within ~2 standard deviations
    assert abs(means[2] - means[1]) < 2 * max(stds[1], stds[2])


def test_noise_and_bias_parameters_take_effect():
    clean, lab = make_phantom((48, 48), seed=2, noise=0.0, bias=0.0)
    noisy, lab2 = make_phantom((48, 48), seed=2, noise=0.2, bias=0.0)
    np.testing.assert_array_equal(lab, lab2)
    assert np.std(noisy[lab == 0]) > 5 * np.std(clean[lab == 0]) + 1e-3


def test_default_volume_is_fast():
    make_phantom((8, 16, 16))  # warm-up
    times = []
    for _ in range(2):  # best of two: robust to a busy machine
        t0 = time.perf_counter()
        make_phantom()
        times.append(time.perf_counter() - t0)
    assert min(times) < 3.0  # opening the sample must not take long (about 0.2 s here when quiet)


def test_dataset_cases_differ():
    cases = make_phantom_dataset(3, (32, 32), seed=0)
    assert len(cases) == 3
    assert all(img.shape == (32, 32) and lab.shape == (32, 32) for img, lab in cases)
    assert not np.array_equal(cases[0][1], cases[1][1])
    again = make_phantom_dataset(3, (32, 32), seed=0)
    np.testing.assert_array_equal(cases[2][0], again[2][0])
    other = make_phantom_dataset(3, (32, 32), seed=1)
    assert not np.array_equal(cases[0][1], other[0][1])


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_phantom((4, 4, 4, 4))
    with pytest.raises(ValueError):
        make_phantom((32, 32), num_classes=1)
