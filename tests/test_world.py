"""World geometry: a NIfTI layer sits where nibabel puts the scan (oblique, flipped, 2D), labels made over it
and saved from it keep that place, and a moved layer saves where it was moved to."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_dmd._reader import read_layers
from napari_dmd._widgets._geometry import labels_metadata, layer_affine, placement_kwargs
from napari_dmd._writer import write_labels
from napari_dmd.data.world import data_to_world, napari_affine, nifti_affine

OBLIQUE = np.array([[0.0, 0.0, -2.5, 40.25], [0.8, 0.1, 0.0, -12.5], [0.0, 0.8, 0.0, 7.0], [0, 0, 0, 1]])
FLIPPED = np.array([[-0.7, 0.0, 0.0, 91.0], [0.0, -0.9, 0.0, 120.5], [0.0, 0.0, 3.0, -60.0], [0, 0, 0, 1]])
ROT = np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]])
ROTATED = np.eye(4)
ROTATED[:3, :3] = ROT @ np.diag([1.2, 0.6, 2.0])
ROTATED[:3, 3] = (-5.0, 17.0, 3.5)


def _nifti(path: Path, array_xyz: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(array_xyz, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def _image_layer(path: Path) -> Image:
    ((data, kwargs, kind),) = read_layers(str(path))
    assert kind == "image"
    return Image(data, **kwargs)


def _voxels(shape_xyz: tuple[int, ...]) -> list[tuple[int, ...]]:
    """A few voxels (NIfTI i, j, k) including two corners."""
    last = tuple(s - 1 for s in shape_xyz)
    return [tuple(0 for _ in shape_xyz), last, tuple(s // 2 for s in shape_xyz), (1, 2, 3)[: len(shape_xyz)]]


@pytest.mark.parametrize(("affine", "file_axes"), [(OBLIQUE, [1, 2, 0]), (FLIPPED, None), (ROTATED, None)],
                         ids=["oblique", "flipped", "rotated"])
def test_world_point_lands_on_the_same_voxel_in_napari_nibabel_and_the_saved_file(tmp_path, affine, file_axes):
    shape = (9, 7, 5)
    source = np.random.default_rng(0).integers(0, 5, shape).astype(np.uint8)
    path = _nifti(tmp_path / "scan.nii.gz", source, affine)
    layer = _image_layer(path)
    assert [str(u) for u in layer.units] == ["millimeter"] * 3 and tuple(layer.axis_labels) == ("z", "y", "x")
    assert layer.metadata["napari_dmd"].get("file_axes") == file_axes
    labels = Labels(np.asarray(layer.data), metadata=labels_metadata(layer), **placement_kwargs(layer))
    out = tmp_path / "seg.nii.gz"
    write_labels(str(out), labels.data, labels._get_state())
    saved = nib.load(str(out)).affine
    assert np.array_equal(saved, nib.load(str(path)).affine)  # unmoved: the file's affine, bit-exact
    assert np.array_equal(np.asarray(nib.load(str(out)).dataobj), source)  # and its voxel order
    order = layer.metadata["napari_dmd"].get("file_axes", [0, 1, 2])  # the oblique scan is shown transposed
    assert layer.data.shape == tuple(shape[::-1][i] for i in order)
    for ijk in _voxels(shape):
        ras = affine @ np.array([*ijk, 1.0])
        world = ras[:3][::-1]  # napari world = RAS mm in (z, y, x) order
        zyx = np.array([ijk[::-1][i] for i in order], dtype=float)
        np.testing.assert_allclose(layer.world_to_data(world), zyx, atol=1e-6)
        np.testing.assert_allclose(labels.world_to_data(world), zyx, atol=1e-6)
        np.testing.assert_allclose((np.linalg.inv(nib.load(str(path)).affine) @ ras)[:3], ijk, atol=1e-6)
        np.testing.assert_allclose((np.linalg.inv(saved) @ ras)[:3], ijk, atol=1e-6)


def test_2d_flipped_scan_and_its_world_axes(tmp_path):
    affine = np.array([[-0.5, 0.0, 0.0, 30.0], [0.0, 0.25, 0.0, -4.0], [0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1]])
    path = _nifti(tmp_path / "us.nii", np.arange(24, dtype=np.float32).reshape(6, 4), affine)
    layer = _image_layer(path)
    assert layer.data.shape == (4, 6) and tuple(layer.axis_labels) == ("y", "x")
    ras = affine @ np.array([5.0, 3.0, 0.0, 1.0])  # voxel i=5, j=3
    np.testing.assert_allclose(layer.world_to_data(ras[:2][::-1]), (3.0, 5.0), atol=1e-9)
    np.testing.assert_array_equal(nifti_affine(napari_affine(affine, 2), 2), affine)


def test_a_moved_layer_saves_where_it_was_moved_to(tmp_path):
    path = _nifti(tmp_path / "scan.nii.gz", np.zeros((6, 5, 4), np.float32), FLIPPED)
    layer = _image_layer(path)
    layer.translate = (10.0, -2.0, 4.0)  # world mm, (z, y, x)
    labels = Labels(np.zeros(layer.data.shape, np.uint8), metadata=labels_metadata(layer),
                    **placement_kwargs(layer))
    out = tmp_path / "moved.nii.gz"
    write_labels(str(out), labels.data, labels._get_state())
    saved = nib.load(str(out)).affine
    np.testing.assert_allclose(saved, layer_affine(layer), atol=1e-6)
    ijk = np.array([2.0, 3.0, 1.0, 1.0])
    world = layer.data_to_world(ijk[:3][::-1])
    np.testing.assert_allclose((saved @ ijk)[:3], world[::-1], atol=1e-5)
    # napari's translate acts before the layer affine (x and y flipped here): RAS shift (-4, 2, 10)
    np.testing.assert_allclose((saved @ ijk)[:3] - (FLIPPED @ ijk)[:3], (-4.0, 2.0, 10.0), atol=1e-5)


def test_data_to_world_matches_napari():
    layer = Image(np.zeros((4, 5, 6)), scale=(2, 1, 3), rotate=30, shear=[0.1, 0.2, 0.3], translate=(1, 2, 3),
                  affine=np.diag([1.0, -1.0, 1.0, 1.0]))
    mine = data_to_world(layer._get_state(), 3)
    np.testing.assert_allclose(mine, layer._data_to_world.affine_matrix, atol=1e-12)


def test_world_kwargs_put_a_physical_space_layer_over_the_image(tmp_path):
    """The Features widget's maps are placed by scale/translate in the image's physical space; the image's
    world kwargs (affine with flips, units, axis labels) then overlay them on the image."""
    from napari_dmd._widgets._geometry import world_kwargs

    path = _nifti(tmp_path / "scan.nii.gz", np.zeros((8, 6, 4), np.float32), FLIPPED)
    image = _image_layer(path)
    coarse = Image(np.zeros((2, 3, 4)), scale=tuple(np.asarray(image.scale) * 2),
                   translate=tuple(np.asarray(image.scale) * 0.5), **world_kwargs(image))
    world = coarse.data_to_world((1.0, 2.0, 3.0))  # centre of a 2x2x2 block of image voxels
    np.testing.assert_allclose(image.world_to_data(world), (2.5, 4.5, 6.5), atol=1e-9)
    assert coarse.units == image.units and tuple(coarse.axis_labels) == ("z", "y", "x")
