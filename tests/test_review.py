"""Where to look: slices and tiles ranked by teacher-student disagreement and student entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_dmd.review import entropy_map, rank_slices, region_slices


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
