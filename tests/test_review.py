"""Where to look: slices and tiles ranked by teacher-student disagreement and student entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_dmd.review import class_balanced_weights, entropy_map, rank_slices, region_slices


def test_entropy_map_is_normalized():
    probs = np.zeros((4, 2, 3), np.float32)
    probs[0, 0] = 1.0  # certain
    probs[:, 1] = 0.25  # uniform
    h = entropy_map(probs)
    assert h.shape == (2, 3) and np.allclose(h[0], 0.0) and np.allclose(h[1], 1.0)
    p = np.array([[0.5], [0.5], [0.0]], np.float32)
    assert entropy_map(p)[0] == pytest.approx(math.log(2) / math.log(3))


def test_most_disagreeing_slice_first_with_its_centre():
    teacher = np.zeros((5, 10, 10), np.uint8)
    student = teacher.copy()
    student[3, 2:6, 4:8] = 1  # 16 voxels
    student[1, 0, 0] = 2  # 1 voxel
    ranked = rank_slices(teacher, student)
    assert [r.index for r in ranked[:2]] == [3, 1]
    assert ranked[0].disagreement == pytest.approx(16 / 100) and ranked[0].disagreeing == 16
    assert ranked[0].center == pytest.approx((3.0, 3.5, 5.5))
    assert region_slices(ranked[0], teacher.shape)[0] == slice(3, 4)
    assert [r.index for r in rank_slices(teacher, student, top_k=1)] == [3]
    along_x = rank_slices(teacher, student, axis=2)  # columns 4..7 hold the disagreement
    assert along_x[0].axis == 2 and along_x[0].index in (4, 5, 6, 7)


def test_entropy_orders_slices_when_labels_agree():
    labels = np.zeros((3, 8, 8), np.uint8)
    probs = np.zeros((2, 3, 8, 8), np.float32)
    probs[0] = 1.0
    probs[:, 2, :4, :4] = 0.5  # slice 2: a quarter of it uncertain
    probs[:, 0, 0, :2] = 0.5  # slice 0: 2 voxels uncertain
    ranked = rank_slices(labels, labels, probs)
    assert [r.index for r in ranked] == [2, 0, 1]
    assert ranked[0].disagreement == 0 and ranked[0].uncertainty == pytest.approx(0.25)
    assert ranked[0].center == pytest.approx((2.0, 1.5, 1.5))  # the centroid of the uncertain voxels
    assert ranked[-1].center == pytest.approx((1.0, 3.5, 3.5))  # neither: the slice centre


def test_2d_images_rank_tiles():
    teacher = np.zeros((100, 130), np.uint8)
    student = teacher.copy()
    student[70:80, 66:70] = 1  # in tile row 1, column 1 (of 2 x 3 tiles of 64)
    ranked = rank_slices(teacher, student)
    assert len(ranked) == 6 and ranked[0].axis == -1 and ranked[0].index == 1 * 3 + 1
    assert ranked[0].bounds == ((64, 100), (64, 128))
    assert ranked[0].center == pytest.approx((74.5, 67.5))
    assert region_slices(ranked[0], teacher.shape) == (slice(64, 100), slice(64, 128))
    with pytest.raises(ValueError, match="do not match"):
        rank_slices(teacher, student, np.zeros((2, 10, 10)))


def _organ_and_speck() -> tuple[np.ndarray, np.ndarray]:
    """4 slices of 4x4: class 1 in rows 0-2 of slices 0-2 and a 2x2 of slice 3 (40 voxels), class 2 in two voxels
    of slice 2; the student misses 3 voxels of class 1 in slice 0 and all of class 2."""
    teacher = np.zeros((4, 4, 4), np.uint8)
    teacher[:3, :3, :] = 1
    teacher[3, 1:3, :2] = 1
    teacher[2, 3, :2] = 2
    student = teacher.copy()
    student[0, 0, :3] = 0  # 3 border voxels of class 1
    student[student == 2] = 0  # the speck of class 2 lost
    return teacher, student


def test_class_balanced_weights_by_hand():
    teacher, student = _organ_and_speck()
    assert int((teacher == 1).sum()) == 40 and int((teacher == 2).sum()) == 2
    w = class_balanced_weights(teacher, student)
    assert w.dtype == np.float32 and w.shape == teacher.shape
    assert w[0].sum() == pytest.approx(3 * (1 / 40) / 2)  # 0.0375: 3 voxels of a 40-voxel class, 2 classes
    assert w[2].sum() == pytest.approx(2 * (1 / 2) / 2)  # 0.5: the whole small class
    assert w[1].sum() == w[3].sum() == 0
    iou = [37 / 40, 0.0]  # the whole image sums to the mean over classes of 1 - IoU
    assert w.sum() == pytest.approx(np.mean([1 - v for v in iou]))
    # a voxel where the two name different foreground classes weighs for both
    a, b = np.array([[1, 1, 2, 2]]), np.array([[1, 2, 2, 2]])
    assert class_balanced_weights(a, b)[0, 1] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert not class_balanced_weights(a, a).any()


def test_balance_classes_puts_the_lost_small_class_first():
    teacher, student = _organ_and_speck()
    plain = rank_slices(teacher, student)
    assert [r.index for r in plain[:2]] == [0, 2]  # 3/16 of slice 0 disagree, 2/16 of slice 2
    assert plain[0].score == pytest.approx(3 / 16)
    balanced = rank_slices(teacher, student, balance_classes=True)
    assert [r.index for r in balanced[:2]] == [2, 0]
    assert balanced[0].score == pytest.approx(0.5 * 4)  # the region's weights times the 4 regions
    assert balanced[1].score == pytest.approx(0.0375 * 4)
    assert balanced[0].disagreement == pytest.approx(2 / 16)  # the fraction itself is unchanged
    probs = np.full((3, 4, 4, 4), 1 / 3, np.float32)  # uniform: entropy 1 everywhere
    mixed = rank_slices(teacher, student, probs, uncertainty_weight=0.5, balance_classes=True)
    assert mixed[0].index == 2 and mixed[0].score == pytest.approx(0.5 * 2.0 + 0.5 * 1.0)
