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


def _ablation_check(folder: str, dataset: str, data: str | None, dims_classes: tuple[int, int], floor: float):
    """Load the committed teacher ``folder`` and segment the ablation's validation cases of ``dataset`` above
    ``floor`` mean Dice; skipped when the teacher or the real data (folder ``data`` under DATA) is missing."""
    import sys

    path = TEACHERS / folder / "teacher.pt"
    if not path.is_file():
        pytest.skip(f"{path} is not committed yet")
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from ablation_specs import DATA, load_dataset
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    if data is not None and not (DATA / data).is_dir():
        pytest.skip(f"{data} data not found")
    teacher = load_teacher(path)
    assert (teacher.spatial_dims, teacher.num_classes) == dims_classes
    _, val, _ = load_dataset(dataset)
    ev = evaluate_cases(teacher_segmenter(teacher, device="cpu"), val, hd95=False)
    assert ev["mean_dice"] > floor, ev["per_case"]
    return teacher


def test_chaos_teacher_segments_the_ablation_validation_patients():
    teacher = _ablation_check("chaos", "chaos", "chaos_mr_t2", (2, 5), 0.80)
    assert teacher.class_names == ["background", "liver", "right kidney", "left kidney", "spleen"]


def test_phantom_3d_teacher_segments_its_validation_volumes():
    _ablation_check("phantom3d", "phantom3d", None, (3, 6), 0.85)  # the ablation's 4 validation volumes


def test_hc18_teacher_segments_the_ablation_validation_images():
    _ablation_check("hc18", "hc18", "hc18_fetal_head", (2, 2), 0.95)
