"""Batch segmentation core (napari_dmd.batch): files and arrays into a folder, one line per bad input, cancel."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dmd.batch import BatchArray, folder_inputs, label_name, segment_batch
from napari_dmd.data.io import DataError, read_image, write_image
from napari_dmd.inference import InferenceCancelled

AFFINE = np.array([[0.0, 0.0, -2.0, 30.0], [0.0, 0.8, 0.0, -5.0], [0.7, 0.0, 0.0, 12.0], [0, 0, 0, 1]])


class FakeSegmenter:
    """Labels = voxels above the mean; reports two windows; honours should_stop like the real one."""

    spatial_dims = 2

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image, *, progress=None, should_stop=None, source="image"):
        if image.ndim not in (2, 3):
            raise DataError(f"{source}: {image.ndim}D data; expected a 2D image or 3D volume")
        self.calls += 1
        for done in (1, 2):
            if should_stop is not None and should_stop():
                raise InferenceCancelled("cancelled")
            if progress is not None:
                progress(done, 2)
        return (image > image.mean()).astype(np.uint8)


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    write_image(src / "a.nii.gz", rng.random((6, 16, 16)).astype(np.float32), affine=AFFINE)
    write_image(src / "b.tif", rng.random((16, 16)).astype(np.float32))
    (src / "c.nii.gz").write_bytes(b"not a nifti file")
    (src / "notes.txt").write_text("ignored")
    return src


def test_folder_batch_keeps_affine_reports_bad_files_and_goes_on(folder, tmp_path):
    seen = []
    out = tmp_path / "labels"
    res = segment_batch(FakeSegmenter(), folder_inputs(folder), out, progress=seen.append)
    assert [p.name for p in folder_inputs(folder)] == ["a.nii.gz", "b.tif", "c.nii.gz"]
    assert [i.output.name for i in res.done] == ["a.nii.gz", "b.tif"] and not res.cancelled
    assert len(res.failed) == 1 and "c.nii.gz" in res.failed[0].error and "\n" not in res.failed[0].error
    written = read_image(out / "a.nii.gz")
    np.testing.assert_allclose(written.affine, AFFINE)  # the scan's world geometry is kept
    assert written.array.dtype.kind in "ui" and written.array.shape == (6, 16, 16)
    assert seen[-1].fraction == 1.0 and {p.index for p in seen} == {0, 1, 2, 3}
    assert res.summary().splitlines()[0] == f"2 of 3 image(s) segmented into {out}; 1 failed:"


def test_batch_never_replaces_files_unless_asked(folder, tmp_path):
    out = tmp_path / "labels"
    out.mkdir()
    (out / "b.tif").write_bytes(b"user's own file")
    res = segment_batch(FakeSegmenter(), [folder / "b.tif"], out)
    assert res.done == [] and "tick 'overwrite'" in res.failed[0].error
    assert (out / "b.tif").read_bytes() == b"user's own file"
    assert segment_batch(FakeSegmenter(), [folder / "b.tif"], out, overwrite=True).failed == []
    res = segment_batch(FakeSegmenter(), [folder / "b.tif"], folder, overwrite=True)  # into its own folder
    assert "would replace the input image" in res.failed[0].error
    assert read_image(folder / "b.tif").array.dtype == np.float32  # the input is untouched


def test_arrays_and_cancel(tmp_path):
    arrays = [BatchArray("scan 1/axial", np.ones((8, 8)) * np.arange(8), (2.0, 0.5), None),
              BatchArray("flat", np.zeros(5)), BatchArray("scan 2", np.random.default_rng(1).random((8, 8)))]
    assert label_name(arrays[0]) == "scan 1_axial.nii.gz"
    res = segment_batch(FakeSegmenter(), arrays, tmp_path / "o")
    assert [i.source for i in res.done] == ["scan 1/axial", "scan 2"] and "layer 'flat'" in res.failed[0].error
    assert read_image(tmp_path / "o" / "scan 1_axial.nii.gz").spacing == pytest.approx((2.0, 0.5))
    calls = []

    def stop_after_first() -> bool:
        return len(calls) >= 1

    seg = FakeSegmenter()
    res = segment_batch(seg, arrays[::2], tmp_path / "c", should_stop=stop_after_first,
                        progress=lambda p: calls.append(p) if p.windows_done == 2 else None)
    assert res.cancelled and len(res.done) == 1 and not (tmp_path / "c" / "scan 2.nii.gz").exists()
    assert "cancelled, 1 not done" in res.summary()


def test_output_must_be_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        segment_batch(FakeSegmenter(), [], tmp_path / "f")
    with pytest.raises(DataError, match="not a folder"):
        folder_inputs(tmp_path / "nope")
