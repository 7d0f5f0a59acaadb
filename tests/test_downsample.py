"""In-plane down-sampling of cases (as the committed CHAOS teacher saw them) and its use by bench corrections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_dmd.cli import main
from napari_dmd.data.case import Case
from napari_dmd.data.downsample import downsample_arrays, downsample_case

CHAOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "chaos_mr_t2"


def _case(shape: tuple[int, ...], spacing: tuple[float, ...]) -> Case:
    rng = np.random.default_rng(0)
    affine = np.diag([spacing[-1], spacing[-2], spacing[0] if len(shape) == 3 else 1.0, 1.0])
    affine[:3, 3] = [10.0, -5.0, 2.0]
    return Case(image=rng.normal(size=shape).astype(np.float32) * 100,
                label=rng.integers(0, 5, size=shape).astype(np.uint8), spacing=spacing, affine=affine, name="c")


def test_downsample_case_3d_shapes_spacing_values():
    case = _case((3, 9, 7), (7.7, 1.25, 1.25))
    down = downsample_case(case, 2)
    assert down.image.shape == down.label.shape == (3, 4, 3)  # odd edges cut, slices kept
    assert down.spacing == (7.7, 2.5, 2.5)
    assert down.image.dtype == np.float32 and down.label.dtype == np.uint8
    assert np.allclose(down.image[1, 2, 1], case.image[1, 4:6, 2:4].mean(), atol=1e-4)  # block mean
    assert np.array_equal(down.label, case.label[:, 1:8:2, 1:6:2])  # strided pick: values never mixed
    assert set(np.unique(down.label)) <= set(np.unique(case.label))
    assert case.image.shape == (3, 9, 7) and case.spacing == (7.7, 1.25, 1.25)  # the input is left alone
    # the new first voxel sits at the centre of the old first 2x2 block; steps double in-plane, not across slices
    old = case.affine @ np.array([0.5, 0.5, 0.0, 1.0])
    assert np.allclose(down.affine @ np.array([0, 0, 0, 1.0]), old)
    assert np.allclose(np.diag(down.affine)[:3], [2.5, 2.5, 7.7])


def test_downsample_2d_and_identity_and_bad_factor():
    case = _case((8, 6), (0.5, 0.5))
    down = downsample_case(case, 3)
    assert down.image.shape == (2, 2) and down.spacing == (1.5, 1.5)
    assert np.array_equal(down.label, case.label[1:6:3, 1:6:3])
    assert downsample_case(case, 1) is case
    image, label = downsample_arrays(case.image, None, 2)
    assert image.shape == (4, 3) and label is None
    with pytest.raises(ValueError, match="factor"):
        downsample_arrays(case.image, case.label, 0)
    with pytest.raises(ValueError, match="smaller than"):
        downsample_arrays(case.image, case.label, 7)


def test_bench_corrections_bad_downsample_one_line(tmp_path, capsys):
    assert main(["bench", "corrections", "--downsample", "0", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--downsample 0" in err[0] and "Traceback" not in err[0]


@pytest.mark.skipif(not CHAOS.is_dir(), reason="CHAOS data not on this machine")
def test_bench_chaos_defaults_match_the_committed_teacher():
    from napari_dmd.bench.corrections import DOWNSAMPLE, RECIPES, TEACHERS, _real
    from napari_dmd.checkpoint import load_checkpoint

    assert DOWNSAMPLE["chaos"] == 2
    # the teacher's augmentation (none, no flips) and the ablation's CHAOS student recipe
    assert RECIPES["chaos"] == {"augment": False, "flips": False, "lr": 1e-2, "batch_size": 4}
    train, val, teacher = _real("chaos", None, None, 40, DOWNSAMPLE["chaos"])
    ckpt = load_checkpoint(TEACHERS["chaos"])
    assert sorted(c.name for c in val) == sorted(ckpt["val_cases"])
    assert not {c.name for c in train} & {c.name for c in val} and len(train) == 8
    assert all(c.image.shape[1:] == (128, 128) for c in train + val)
    assert np.allclose(val[0].spacing[1:], ckpt["spacing"]) and teacher is not None
