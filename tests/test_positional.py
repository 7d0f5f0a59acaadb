"""Positional class pairs (data.positional) and the flip warning of a run that would swap them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dmd.data.case import Case
from napari_dmd.data.positional import flip_warning, positional_pairs


def _cases(n: int = 5, *, swap_every: int = 0, bright_b: bool = False, small_b: bool = False,
           labelled: bool = True) -> list[Case]:
    """3D cases (z, y, x) = (8, 16, 32): class 1 a box on the left (low x), class 2 one on the right, both of
    intensity 1 (``bright_b``: class 2 at 3); ``swap_every``: every k-th case has them the other way round;
    ``small_b``: class 2 one voxel wide instead of six."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = rng.normal(0.0, 0.1, (8, 16, 32)).astype(np.float32)
        lab = np.zeros(img.shape, np.uint8)
        left, right = slice(2, 8), slice(22, 28)
        if swap_every and i % swap_every == 0:
            left, right = right, left
        lab[2:6, 4:12, left] = 1
        lab[2:6, 4:12, right] = 2 if not small_b else 0
        if small_b:
            lab[2:6, 4:12, right.start] = 2
        img[lab == 1] += 1.0
        img[lab == 2] += 3.0 if bright_b else 1.0
        out.append(Case(image=img, label=lab if labelled else None, spacing=(1.0, 1.0, 1.0), affine=np.eye(4),
                        name=f"c{i}"))
    return out


def test_left_right_pair_alike_in_look_is_found_along_x():
    pairs = positional_pairs(_cases(), 3)
    assert len(pairs) == 1
    p = pairs[0]
    assert (p.a, p.b, p.axis, p.agree, p.cases) == (1, 2, 2, 5, 5)
    assert p.separation == pytest.approx(20.0)  # box centres at x = 4.5 and 24.5
    assert p.intensity_gap < 0.25


def test_pairs_that_look_different_or_have_no_fixed_order_or_differ_in_size_are_not():
    assert positional_pairs(_cases(bright_b=True), 3) == []
    assert positional_pairs(_cases(6, swap_every=2), 3) == []  # the order flips in half of the cases
    assert positional_pairs(_cases(small_b=True), 3) == []  # 6x smaller: a class beside, not a mirror image
    assert positional_pairs(_cases(2), 3) == []  # too few cases to say
    assert positional_pairs(_cases(labelled=False), 3) == []  # no labels, nothing to say


def test_flip_warning_names_the_classes_and_the_way_out():
    msg = flip_warning(_cases(), 3, ["background", "left kidney", "right kidney"])
    assert msg is not None
    assert "'left kidney' and 'right kidney'" in msg and "x axis" in msg and "5 of 5" in msg
    assert "--no-flips" in msg and "flip and rotate patches" in msg
    assert flip_warning(_cases(bright_b=True), 3) is None
    assert "'class 1' and 'class 2'" in flip_warning(_cases(), 3)  # no names: numbered


def test_prepare_run_warns_only_when_the_run_flips(tmp_path):
    from napari_dmd.config import TrainConfig
    from napari_dmd.runner import prepare_run

    cases = _cases()

    def warnings(**kw):
        cfg = TrainConfig(method="none", model="4,8", spatial_dims=3, patch_size=[8, 16, 16], batch_size=1,
                          iterations=1, num_classes=3, device="cpu", **kw)
        _, said = prepare_run(cfg, cases, output_dir=tmp_path / str(len(list(tmp_path.iterdir()))), role="teacher")
        return [w for w in said if "differ by position" in w]

    assert len(warnings()) == 1  # flips are on by default
    assert warnings(flips=False) == []
    assert warnings(augment=False) == []
