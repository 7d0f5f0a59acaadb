"""Batch segmentation from the Segment widget in a real viewer: all open images, a folder, progress, cancel."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_dmd.data.io import read_image, write_image
from napari_dmd.registry import REGISTRY, ModelEntry
from napari_dmd.segment import Segmenter

pytestmark = pytest.mark.gui


def _threshold(delay: float = 0.0):
    def model(x: torch.Tensor) -> torch.Tensor:  # class 1 where the (raw) intensity is positive
        if delay:
            time.sleep(delay)
        return torch.cat([-x, x], 1)
    return model


@pytest.fixture
def fake_model():
    REGISTRY.clear()
    seg = Segmenter(_threshold(), num_classes=2, spatial_dims=2, patch_size=[32, 32], normalization="none")
    REGISTRY.add(ModelEntry("student: threshold", "student", seg))
    yield REGISTRY.get("student: threshold")
    REGISTRY.clear()


def _wait(qtbot, box, timeout=60_000) -> None:
    qtbot.waitUntil(lambda: box.worker is None, timeout=timeout)


def test_segment_all_open_images_into_a_folder(make_napari_viewer, qtbot, tmp_path, fake_model):
    from napari_dmd._widgets._geometry import layer_affine
    from napari_dmd._widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    flat = viewer.add_image(np.linspace(-1, 1, 48 * 40).reshape(48, 40), name="slice")
    vol = viewer.add_image(np.linspace(-1, 1, 4 * 40 * 36).reshape(4, 40, 36), name="vol/1", scale=(3, 0.5, 0.5),
                           translate=(10, 0, -7))
    viewer.add_image(np.ones((40, 36)), name="vol features energy", metadata={"napari_dmd": {"features": "e"}})
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), name="photo", rgb=True)
    w = SegmentWidget(viewer)
    box = w.batch
    assert box.segment_open() is None and "choose an output folder" in box.status.text()
    box.out_edit.setText(str(tmp_path / "out"))
    assert box.segment_open() is not None
    assert not box.open_button.isEnabled() and box.cancel_button.isEnabled()
    _wait(qtbot, box)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["slice.nii.gz", "vol_1.nii.gz"]  # the Features map is no input; the RGB layer is skipped
    out = read_image(tmp_path / "out" / "vol_1.nii.gz")
    np.testing.assert_allclose(out.affine, layer_affine(vol))  # where the volume sits in the viewer
    np.testing.assert_array_equal(out.array, (np.asarray(vol.data) > 0).astype(np.uint8))
    assert read_image(tmp_path / "out" / "slice.nii.gz").array.shape == flat.data.shape
    lines = box.status.text().splitlines()
    assert lines[0] == f"2 of 2 image(s) segmented into {tmp_path / 'out'}"
    assert any("layer 'photo': an RGB image; skipped" in line for line in lines)
    assert box.bar.value() == box.bar.maximum() and box.open_button.isEnabled()
    box.segment_open()  # again: the files exist and are kept
    _wait(qtbot, box)
    assert box.status.text().startswith("0 of 2 image(s)") and "tick 'overwrite'" in box.status.text()


def test_segment_a_folder_reports_bad_files_and_goes_on(make_napari_viewer, qtbot, tmp_path, fake_model):
    from napari_dmd._widgets.segment import SegmentWidget

    src = tmp_path / "scans"
    src.mkdir()
    write_image(src / "a.nii.gz", np.linspace(-1, 1, 3 * 20 * 20).reshape(3, 20, 20).astype(np.float32),
                affine=np.diag([0.5, 0.7, 2.0, 1.0]))
    (src / "broken.nii.gz").write_bytes(b"nope")
    write_image(src / "c.tif", np.ones((20, 20), np.float32))
    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)  # kept: the box lives in it
    box = w.batch
    assert box.segment_folder(src) is not None
    _wait(qtbot, box)
    assert box.out_edit.text() == str(src / "labels")  # a new folder beside the images
    assert sorted(p.name for p in (src / "labels").iterdir()) == ["a.nii.gz", "c.tif"]
    np.testing.assert_allclose(read_image(src / "labels" / "a.nii.gz").affine, np.diag([0.5, 0.7, 2.0, 1.0]))
    lines = box.status.text().splitlines()
    assert lines[0].startswith("2 of 3 image(s) segmented") and lines[0].endswith("1 failed:")
    assert len(lines) == 2 and "broken.nii.gz" in lines[1]


def test_batch_cancel_keeps_finished_files_and_writes_no_partial_one(make_napari_viewer, qtbot, tmp_path):
    from napari_dmd._widgets.segment import SegmentWidget

    REGISTRY.clear()
    seg = Segmenter(_threshold(0.05), num_classes=2, spatial_dims=2, patch_size=[16, 16], normalization="none",
                    batch_size=1)
    REGISTRY.add(ModelEntry("student: slow", "student", seg))
    try:
        viewer = make_napari_viewer()
        viewer.add_image(np.ones((16, 16)), name="small")
        viewer.add_image(np.ones((20, 160, 160)), name="big")  # hundreds of windows at 0.05 s
        w = SegmentWidget(viewer)  # kept: the box lives in it
        box = w.batch
        box.out_edit.setText(str(tmp_path))
        box.segment_open()
        qtbot.waitUntil(lambda: "big, window" in box.status.text(), timeout=30_000)
        box.cancel()
        _wait(qtbot, box, 30_000)
        assert box.result.cancelled and [p.name for p in tmp_path.iterdir()] == ["small.nii.gz"]
        assert "cancelled, 1 not done" in box.status.text() and box.open_button.isEnabled()
    finally:
        REGISTRY.clear()
