"""The teachers committed under benchmarks/teachers/ load as teachers and segment their validation cases as recorded."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO
from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.data.cases import load_msd_folder
from napari_dmd.evaluation import evaluate_cases, teacher_segmenter
from napari_dmd.teachers import load_teacher

TEACHERS = REPO / "benchmarks" / "teachers"


def test_hippocampus_3d_teacher_segments_its_validation_cases(hippocampus_dir):
    path = TEACHERS / "hippocampus3d" / "teacher.pt"
    if not path.is_file():
        pytest.skip(f"{path} is not committed yet")
    ckpt = load_checkpoint(path)
    assert all(v.dtype.is_floating_point is False or str(v.dtype) == "torch.float16"
               for v in ckpt["state_dict"].values())  # packed: half precision, no optimizer state
    teacher = load_teacher(path)
    assert (teacher.spatial_dims, teacher.num_classes) == (3, 3)
    assert teacher.class_names == ["background", "anterior", "posterior"]
    cases, _ = load_msd_folder(hippocampus_dir)
    val = [c for c in cases if c.name in set(ckpt["val_cases"][:4])]
    assert len(val) == 4
    ev = evaluate_cases(teacher_segmenter(teacher, device="cpu"), val, hd95=False)
    # the recorded validation Dice is over 16 cases; 4 of them stay well above the 0.80 of the old 2D teachers
    assert ev["mean_dice"] > 0.83, ev["per_case"]
    assert np.isfinite(ckpt["best_dice"]) and ckpt["best_dice"] >= 0.88


def test_chaos_teacher_segments_the_ablation_validation_patients():
    import sys

    path = TEACHERS / "chaos" / "teacher.pt"
    if not path.is_file():
        pytest.skip(f"{path} is not committed yet")
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from ablation_specs import DATA, load_dataset
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    if not (DATA / "chaos_mr_t2").is_dir():
        pytest.skip("CHAOS data not found")
    teacher = load_teacher(path)
    assert (teacher.spatial_dims, teacher.num_classes) == (2, 5)
    assert teacher.class_names == ["background", "liver", "right kidney", "left kidney", "spleen"]
    _, val, _ = load_dataset("chaos")
    ev = evaluate_cases(teacher_segmenter(teacher, device="cpu"), val, hd95=False)
    assert ev["mean_dice"] > 0.80, ev["per_case"]


def test_phantom_3d_teacher_segments_its_validation_volumes():
    from napari_dmd.phantom import make_phantom_dataset

    path = TEACHERS / "phantom3d" / "teacher.pt"
    if not path.is_file():
        pytest.skip(f"{path} is not committed yet")
    teacher = load_teacher(path)
    assert (teacher.spatial_dims, teacher.num_classes) == (3, 6)
    val = make_phantom_dataset(16, (24, 64, 64), seed=7)[:4]  # the ablation's validation volumes
    from napari_dmd.data.cases import Case

    cases = [Case(image=i, label=lab, spacing=(1.0, 1.0, 1.0), affine=np.eye(4), name=f"p{k}")
             for k, (i, lab) in enumerate(val)]
    ev = evaluate_cases(teacher_segmenter(teacher, device="cpu"), cases, hd95=False)
    assert ev["mean_dice"] > 0.85, ev["per_case"]


def test_hc18_teacher_segments_the_ablation_validation_images():
    import sys

    path = TEACHERS / "hc18" / "teacher.pt"
    if not path.is_file():
        pytest.skip(f"{path} is not committed yet")
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from ablation_specs import DATA, load_dataset
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    if not (DATA / "hc18_fetal_head").is_dir():
        pytest.skip("HC18 data not found")
    teacher = load_teacher(path)
    assert (teacher.spatial_dims, teacher.num_classes) == (2, 2)
    _, val, _ = load_dataset("hc18")
    ev = evaluate_cases(teacher_segmenter(teacher, device="cpu"), val, hd95=False)
    assert ev["mean_dice"] > 0.95, ev["per_case"]
