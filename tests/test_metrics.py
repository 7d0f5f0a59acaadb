"""Metrics against hand-computed cases (expected values are worked out by hand, not by the module)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_dmd.metrics import (
    HD95_CONVENTIONS,
    dice_per_class,
    evaluate,
    hd95_label,
    hd95_per_class,
    iou_per_class,
    summarize,
    surface_distances,
    surface_mask,
)


def _boxes() -> tuple[np.ndarray, np.ndarray]:
    """4 x 10 image, 4 classes (class 3 absent from both).

    class 1: pred row 0 cols 0..5 (6 px), target row 0 cols 3..9 (7 px), overlap cols 3..5 (3 px)
    class 2: pred row 3 cols 0..3 (4 px), target row 3 cols 2..5 (4 px), overlap cols 2..3 (2 px)
    """
    pred = np.zeros((4, 10), dtype=np.uint8)
    target = np.zeros((4, 10), dtype=np.uint8)
    pred[0, 0:6] = 1
    target[0, 3:10] = 1
    pred[3, 0:4] = 2
    target[3, 2:6] = 2
    return pred, target


def test_dice_iou_hand_computed() -> None:
    pred, target = _boxes()
    dice = dice_per_class(pred, target, 4)
    iou = iou_per_class(pred, target, 4)
    assert dice.shape == (3,) and dice.dtype == np.float64
    # class 1: 2*3/(6+7) = 6/13 ; IoU 3/(6+7-3) = 3/10
    # class 2: 2*2/(4+4) = 1/2  ; IoU 2/(4+4-2) = 1/3
    np.testing.assert_allclose(dice[:2], [6 / 13, 0.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(iou[:2], [0.3, 1 / 3], rtol=0, atol=1e-12)
    # class 3 absent from both -> NaN
    assert np.isnan(dice[2]) and np.isnan(iou[2])


def test_dice_iou_with_background() -> None:
    pred, target = _boxes()
    # background: pred 40-10 = 30 px, target 40-11 = 29 px; both background: rows 1-2 (20) +
    # row 0: pred bg cols 6..9 vs target bg cols 0..2 -> 0 ; row 3: pred bg 4..9 vs target bg {0,1,6..9} -> 4
    # |∩| = 24 -> Dice 48/59, IoU 24/(30+29-24) = 24/35
    dice = dice_per_class(pred, target, 4, include_background=True)
    iou = iou_per_class(pred, target, 4, include_background=True)
    assert dice.shape == (4,)
    np.testing.assert_allclose(dice[:3], [48 / 59, 6 / 13, 0.5], atol=1e-12)
    np.testing.assert_allclose(iou[:3], [24 / 35, 0.3, 1 / 3], atol=1e-12)


def test_class_in_one_map_only_scores_zero_and_inf() -> None:
    pred = np.zeros((6, 6), dtype=np.uint8)
    target = np.zeros((6, 6), dtype=np.uint8)
    pred[1:3, 1:3] = 1  # class 1 only predicted
    target[3:5, 3:5] = 2  # class 2 only in the reference
    assert dice_per_class(pred, target, 3).tolist() == [0.0, 0.0]
    assert iou_per_class(pred, target, 3).tolist() == [0.0, 0.0]
    assert np.isinf(hd95_per_class(pred, target, 3)).all()


def test_surface_mask_excludes_interior_and_counts_border() -> None:
    m = np.zeros((5, 6), dtype=bool)
    m[1:4, 1:4] = True  # 3x3 square: its centre (2, 2) has all 4 neighbours inside
    m[0:2, 5] = True  # a strip touching the top and right border
    s = surface_mask(m)
    expected = m.copy()
    expected[2, 2] = False
    np.testing.assert_array_equal(s, expected)
    # the centre of a plus sign has only diagonal neighbours outside: interior with 4-connectivity
    plus = np.zeros((5, 5), dtype=bool)
    plus[2, 1:4] = True
    plus[1:4, 2] = True
    s = surface_mask(plus)
    assert not s[2, 2] and s.sum() == 4
    # a mask filling the array: only the array border is surface (12 of 16 voxels in 4 x 4)
    full = surface_mask(np.ones((4, 4), dtype=bool))
    assert full.sum() == 12 and not full[1:3, 1:3].any()


def test_surface_distances_hand_computed() -> None:
    # a = 3x3 square rows 4..6, cols 4..6 (surface: the 8-voxel ring); b = its centre voxel (5, 5)
    # spacing (2, 1): a -> b: (4,5),(6,5) -> 2 ; (5,4),(5,6) -> 1 ; corners -> sqrt(4+1) = sqrt(5)
    # b -> a: nearest ring voxel is (5,4) or (5,6) -> 1  (would be 0 if the interior counted as surface)
    a = np.zeros((11, 11), dtype=bool)
    a[4:7, 4:7] = True
    b = np.zeros_like(a)
    b[5, 5] = True
    d_ab, d_ba = surface_distances(a, b, (2.0, 1.0))
    np.testing.assert_allclose(sorted(d_ab), [1, 1, 2, 2] + [math.sqrt(5)] * 4)
    np.testing.assert_allclose(d_ba, [1.0])


def test_hd95_shifted_squares_anisotropic() -> None:
    # A: 5x5 square rows 5..9, cols 5..9. B: A shifted by 3 rows (rows 8..12). Spacing (2.0, 1.0),
    # so one row step is 2 mm, one column step 1 mm.
    # Surface of A: rows 5 and 9 (cols 5..9) + cols 5 and 9 at rows 6..8; B likewise (rows 8, 12; 9..11).
    # A -> B distances:
    #   row 5 (5 voxels): nearest is B's row 8, same column: 3 rows * 2 = 6         -> 6,6,6,6,6
    #   row 9: (9,5),(9,9) are on B's side columns -> 0; (9,6),(9,8) one column away -> 1;
    #          (9,7): one row (2) or two columns (2)                                -> 0,1,2,1,0
    #   cols 5 and 9, rows 6,7,8: to B's (8, c): 2 rows -> 4, 1 row -> 2, same -> 0  -> 4,2,0,4,2,0
    # B -> A is the mirror image, same 16 values. Pooled 32 sorted values: 8x0, 4x1, 6x2, 4x4, 10x6.
    # 95th percentile (linear): position 0.95*31 = 29.45 -> between sorted[29] = 6 and sorted[30] = 6 -> 6.0
    pred = np.zeros((20, 20), dtype=np.uint8)
    target = np.zeros((20, 20), dtype=np.uint8)
    pred[5:10, 5:10] = 1
    target[8:13, 5:10] = 1
    hd = hd95_per_class(pred, target, 2, spacing=(2.0, 1.0))
    np.testing.assert_allclose(hd, [6.0])
    # the same shift along columns (1 mm per step) with the same spacing: worst distance 3 -> 3.0
    target_c = np.zeros_like(target)
    target_c[5:10, 8:13] = 1
    np.testing.assert_allclose(hd95_per_class(pred, target_c, 2, spacing=(2.0, 1.0)), [3.0])


def test_hd95_percentile_conventions_interpolated() -> None:
    # pred = {(5,5)}, target = {(5,5), (8,5)}; spacing (2, 1): (8,5) is 3 rows = 6 mm from (5,5).
    # pred -> target: [0]; target -> pred: [0, 6].
    # MONAI: max(p95([0]), p95([0, 6])) ; p95([0, 6]): position 0.95*1 = 0.95 -> 0.95 * 6 = 5.7
    # pooled [0, 0, 6]: position 0.95*2 = 1.9 -> 0 + 0.9 * (6 - 0) = 5.4. (The plain maximum would be 6.)
    pred = np.zeros((12, 12), dtype=np.uint8)
    target = np.zeros((12, 12), dtype=np.uint8)
    pred[5, 5] = 1
    target[5, 5] = 1
    target[8, 5] = 1
    np.testing.assert_allclose(hd95_per_class(pred, target, 2, spacing=(2.0, 1.0)), [5.7])
    np.testing.assert_allclose(hd95_per_class(pred, target, 2, spacing=(2.0, 1.0), convention="monai"), [5.7])
    np.testing.assert_allclose(hd95_per_class(pred, target, 2, spacing=(2.0, 1.0), convention="pooled"), [5.4])


def _false_island() -> tuple[np.ndarray, np.ndarray]:
    """Reference: 20 x 20 square (rows 5..24, cols 5..24; 76 surface voxels). Prediction: the same square
    plus a 2 x 3 false island (rows 10..11, cols 70..72; all 6 voxels are surface) far to the right."""
    target = np.zeros((30, 80), dtype=np.uint8)
    target[5:25, 5:25] = 1
    pred = target.copy()
    pred[10:12, 70:73] = 1
    return pred, target


def test_hd95_false_island_monai_large_pooled_small() -> None:
    # spacing (2.0, 1.25): the island's nearest reference surface voxel is on the square's right edge
    # (col 24, same row): island cols 70, 71, 72 -> 46, 47, 48 columns -> 57.5, 58.75, 60.0 mm, two each.
    # pred -> reference: 76 zeros (the square's own surface) + [57.5, 57.5, 58.75, 58.75, 60, 60], n = 82;
    #   position 0.95*81 = 76.95 -> sorted[76] = sorted[77] = 57.5 -> 57.5
    # reference -> pred: 76 zeros -> 0.        MONAI: max(57.5, 0) = 57.5
    # pooled: 152 zeros + the 6 island distances, n = 158; position 0.95*157 = 149.15 -> sorted[149] =
    #   sorted[150] = 0 -> 0.0: the island is invisible in the pooled HD95
    pred, target = _false_island()
    sp = (2.0, 1.25)
    np.testing.assert_allclose(hd95_per_class(pred, target, 2, sp), [57.5])
    np.testing.assert_allclose(hd95_per_class(pred, target, 2, sp, convention="pooled"), [0.0])
    res = evaluate(pred, target, 2, sp)
    assert res["hd95_convention"] == "monai" and res["hd95"] == [57.5]
    res_p = evaluate(pred, target, 2, sp, hd95_convention="pooled")
    assert res_p["hd95_convention"] == "pooled" and res_p["hd95"] == [0.0]
    assert summarize([res])["hd95_convention"] == "monai"
    with pytest.raises(ValueError, match="conventions"):
        summarize([res, res_p])
    assert hd95_label() == "HD95 (MONAI: max of directed 95th percentiles)"
    assert set(HD95_CONVENTIONS) == {"monai", "pooled"}
    with pytest.raises(ValueError, match="convention"):
        hd95_per_class(pred, target, 2, convention="medpy")


def _monai_hd95(pred: np.ndarray, target: np.ndarray, num_classes: int, spacing: tuple[float, ...]) -> np.ndarray:
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")

    def onehot(lab: np.ndarray) -> object:
        return torch.nn.functional.one_hot(torch.from_numpy(lab.astype(np.int64)), num_classes).movedim(-1, 0)[None]

    import warnings

    with warnings.catch_warnings():  # MONAI warns about empty classes; those are not compared here
        warnings.simplefilter("ignore")
        hd = monai_metrics.compute_hausdorff_distance(onehot(pred), onehot(target), percentile=95,
                                                      spacing=list(spacing))
    return hd[0].double().numpy()


def test_hd95_matches_monai() -> None:
    # the false island and blobs in 2D and 3D with anisotropic spacing: the same numbers as MONAI's
    # compute_hausdorff_distance(percentile=95) (float32 there), and different from the pooled convention
    pred, target = _false_island()
    np.testing.assert_allclose(hd95_per_class(pred, target, 2, (2.0, 1.25)),
                               _monai_hd95(pred, target, 2, (2.0, 1.25)), rtol=1e-5)
    rng = np.random.default_rng(3)
    from scipy import ndimage

    differs = 0
    for shape, sp in (((40, 48), (1.0, 0.7)), ((14, 24, 20), (3.0, 0.8, 0.8))):
        for _ in range(3):
            noise = [ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) for _ in range(2)]
            pred = np.digitize(noise[0], [-0.05, 0.08]).astype(np.uint8)  # classes 0, 1, 2: blobby regions
            target = np.digitize(noise[0] + 0.6 * noise[1], [-0.05, 0.08]).astype(np.uint8)
            ours = hd95_per_class(pred, target, 3, sp)
            assert np.isfinite(ours).all()
            np.testing.assert_allclose(ours, _monai_hd95(pred, target, 3, sp), rtol=1e-5, atol=1e-5)
            differs += int(not np.allclose(ours, hd95_per_class(pred, target, 3, sp, convention="pooled")))
    assert differs > 0


def test_hd95_identical_absent_and_3d() -> None:
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, size=(6, 7, 8)).astype(np.uint8)
    hd = hd95_per_class(lab, lab, 4, spacing=(3.0, 0.5, 0.5))
    np.testing.assert_array_equal(hd[:2], [0.0, 0.0])
    assert np.isnan(hd[2])  # class 3 absent from both
    # 3D: single voxels 2 slices apart with slice spacing 3 -> pooled [6, 6] -> 6
    a = np.zeros((6, 4, 4), dtype=np.uint8)
    b = np.zeros_like(a)
    a[1, 2, 2] = 1
    b[3, 2, 2] = 1
    np.testing.assert_allclose(hd95_per_class(a, b, 2, spacing=(3.0, 0.5, 0.5)), [6.0])


def test_evaluate_and_summarize() -> None:
    pred, target = _boxes()
    res = evaluate(pred, target, 4, spacing=(1.0, 1.0), class_names=["bg", "liver", "kidney", "spleen"])
    assert res["classes"] == [1, 2, 3]
    assert res["class_names"] == ["liver", "kidney", "spleen"]
    np.testing.assert_allclose(res["dice"][:2], [6 / 13, 0.5])
    assert math.isnan(res["dice"][2]) and math.isnan(res["hd95"][2])
    assert res["mean_dice"] == pytest.approx((6 / 13 + 0.5) / 2)
    # class 1 boxes: pred cols 0..5, target cols 3..9 on row 0 (1-row masks: every voxel is surface).
    # pred -> target: cols 0,1,2 -> 3,2,1 ; cols 3..5 -> 0  => [3,2,1,0,0,0]
    # target -> pred: cols 3..5 -> 0 ; cols 6..9 -> 1,2,3,4    => [0,0,0,1,2,3,4]
    # MONAI: p95 of [0,0,0,1,2,3] at 0.95*5 = 4.75 -> 2.75 ; of [0,0,0,1,2,3,4] at 0.95*6 = 5.7 -> 3.7 ; max 3.7
    # pooled sorted (13): 0x6, 1x2, 2x2, 3x2, 4 ; position 0.95*12 = 11.4 -> 3 + 0.4*(4-3) = 3.4
    # class 2: pred cols 0..3, target cols 2..5 on row 3: [2,1,0,0] and [0,0,1,2]
    # MONAI: each sorted [0,0,1,2] at 0.95*3 = 2.85 -> 1.85 ; pooled 0x4, 1x2, 2x2 at 0.95*7 = 6.65 -> 2
    np.testing.assert_allclose(res["hd95"][:2], [3.7, 1.85])
    assert res["mean_hd95"] == pytest.approx(2.775)
    assert res["hd95_convention"] == "monai"
    pooled = evaluate(pred, target, 4, spacing=(1.0, 1.0), hd95_convention="pooled")
    np.testing.assert_allclose(pooled["hd95"][:2], [3.4, 2.0])
    assert pooled["mean_hd95"] == pytest.approx(2.7)

    perfect = evaluate(target, target, 4)
    missed = target.copy()
    missed[missed == 2] = 0
    res_missed = evaluate(missed, target, 4)
    assert res_missed["dice"][1] == 0.0 and math.isinf(res_missed["hd95"][1])
    assert res_missed["mean_hd95"] == 0.0  # mean over finite values: class 1 only (class 2 inf, 3 NaN)
    summ = summarize([res, perfect, res_missed])
    assert summ["n_cases"] == 3 and summ["classes"] == [1, 2, 3]
    # class 1 Dice over cases: 6/13, 1, 1 ; class 2: 0.5, 1, 0
    np.testing.assert_allclose(summ["dice_mean"][:2], [(6 / 13 + 2) / 3, 0.5])
    np.testing.assert_allclose(summ["dice_std"][1], math.sqrt(((0.5 - 0.5) ** 2 + 0.5**2 + 0.5**2) / 3))
    assert math.isnan(summ["dice_mean"][2]) and math.isnan(summ["dice_std"][2])
    # hd95 class 2: finite values 1.85 and 0.0 -> mean 0.925 ; one inf case
    assert summ["hd95_mean"][1] == pytest.approx(0.925)
    assert summ["hd95_convention"] == "monai"
    assert summ["hd95_n_inf"] == [0, 1, 0]
    # case mean Dice: (6/13+0.5)/2, 1, (1+0)/2
    assert summ["mean_dice"] == pytest.approx(((6 / 13 + 0.5) / 2 + 1 + 0.5) / 3)


def test_bad_inputs_raise() -> None:
    pred, target = _boxes()
    with pytest.raises(ValueError, match="shape"):
        dice_per_class(pred, target[:, :5], 4)
    with pytest.raises(ValueError, match="out of range"):
        dice_per_class(pred, target, 2)
    with pytest.raises(ValueError, match="spacing"):
        hd95_per_class(pred, target, 4, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="class_names"):
        evaluate(pred, target, 4, class_names=["a", "b"])
