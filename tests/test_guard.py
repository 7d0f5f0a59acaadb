"""The model–data guard: training-data summary in checkpoints, and the warning for an image unlike it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dmd import guard, pretrained
from napari_dmd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from napari_dmd.config import TrainConfig
from napari_dmd.distill.engine import Distiller
from napari_dmd.phantom import PHANTOM_CLASS_NAMES, make_phantom
from napari_dmd.registry import entry_from_checkpoint

RECIPE = pretrained.DemoRecipe(teacher_model="4,8,16", student_model="2,4,8", n_2d=1, sizes_2d=(48,), n_3d=1,
                               shape_3d=(4, 48, 48), slice_step=2, num_threads=1)


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory) -> str:
    """A 2-iteration 2D phantom model fed raw intensities, as the demo student is."""
    cases, val = pretrained.phantom_cases_2d(RECIPE)
    cfg = TrainConfig(method="none", iterations=2, model="4,8,16", spatial_dims=2, patch_size=[32, 32],
                      batch_size=2, num_threads=1, device="cpu", normalization="none",
                      class_names=list(PHANTOM_CLASS_NAMES), num_classes=len(PHANTOM_CLASS_NAMES))
    d = Distiller(cfg, cases, val_cases=val, output_dir=tmp_path_factory.mktemp("g"), role="teacher")
    d.run_to_end()
    return str(d.last_path)


def _mri_like(shape=(12, 40, 40)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.gamma(2.0, 150.0, size=shape) + 20).astype(np.float32)  # an MR scanner's arbitrary units


def test_checkpoint_records_training_data(demo_like):
    summary = load_checkpoint(demo_like)["train_data"]
    assert summary["spatial_dims"] == 2 and summary["spacing"] == [1.0, 1.0] and summary["cases"] >= 2
    p1, p50, p99 = summary["intensity_percentiles"]
    assert p1 <= p50 <= p99 and p99 - p1 > 0


def test_mri_like_image_warns_phantom_does_not(demo_like):
    entry = entry_from_checkpoint(demo_like, device="cpu", name="phantom demo student")
    mri = guard.check_entry(entry, _mri_like(), image_name="hippocampus_001", image_spacing=(1.0, 1.0, 1.0))
    assert mri is not None
    assert mri.startswith("phantom demo student was trained on 2D images with spacing 1 x 1 and intensities ~")
    assert "'hippocampus_001' is a 3D image with spacing 1 x 1 x 1" in mri
    assert "very different range" in mri and mri.endswith("its labels may be meaningless")
    image, _ = make_phantom((64, 64), seed=5)
    assert guard.check_entry(entry, image, image_name="phantom", image_spacing=(1.0, 1.0)) is None
    vol, _ = make_phantom((6, 48, 48), seed=6)  # a 2D model slice by slice on a 3D phantom: as the demo intends
    assert guard.check_entry(entry, vol, image_name="phantom 3D", image_spacing=(1.0, 1.0, 1.0)) is None


def test_old_checkpoint_guarded_on_spacing_only(demo_like, tmp_path):
    ckpt = load_checkpoint(demo_like)
    del ckpt["train_data"]
    old = save_checkpoint(tmp_path / "old.pt", ckpt)
    entry = entry_from_checkpoint(old, device="cpu", name="old")
    assert guard.check_entry(entry, _mri_like(), image_name="mri", image_spacing=(1.0, 1.0, 1.0)) is None
    warn = guard.check_entry(entry, _mri_like(), image_name="mri", image_spacing=(5.0, 3.0, 3.0))
    assert warn is not None and "its spacing 3 x 3 differs from 1 x 1" in warn


def test_3d_model_on_2d_image_and_bad_summary(tmp_path, demo_like):
    warn = guard.check_image("m", np.zeros((8, 8)), image_name="x", image_spacing=None, spatial_dims=3)
    assert warn is not None and "it is 2D but the model is 3D" in warn
    ckpt = load_checkpoint(demo_like)
    ckpt["train_data"] = {"intensity_percentiles": [0.0, "a", 1.0]}
    bad = save_checkpoint(tmp_path / "bad.pt", ckpt)
    with pytest.raises(CheckpointError, match="'train_data' must be a training-data summary"):
        load_checkpoint(bad)
