"""Tests for napari_dmd.data.io: round trips, real files and every DataError path."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_dmd.data.io import DataError, ImageData, affine_from_spacing, read_image, write_image

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_DMD_DATA", REPO.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared data folder {DATA} not found (set NAPARI_DMD_DATA to its location)"
)

OBLIQUE = np.array(
    [
        [-1.2499858, 0.0, -0.03678009, 200.4043],
        [0.0, 1.25, 0.0, -181.17793],
        [-0.00597079, 0.0, 7.699912, -50.865967],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _asym(shape=(3, 4, 5), dtype=np.float32) -> np.ndarray:
    """An array whose every voxel is distinct, so any transposition or flip shows."""
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


# ------------------------------------------------------------------------------------------- NIfTI


def test_nifti_round_trip_transposes_and_keeps_affine(tmp_path):
    arr = _asym((3, 4, 5))  # (z, y, x)
    spacing = (7.7, 1.25, 0.5)
    path = write_image(tmp_path / "img.nii.gz", arr, spacing, OBLIQUE)
    assert path == tmp_path / "img.nii.gz"

    raw = nib.load(str(path))
    assert raw.shape == (5, 4, 3)  # stored x, y, z
    data = np.asarray(raw.dataobj)
    assert data[4, 1, 2] == arr[2, 1, 4]
    np.testing.assert_allclose(raw.header.get_zooms(), (0.5, 1.25, 7.7), rtol=1e-6)

    back = read_image(path)
    assert isinstance(back, ImageData)
    assert back.array.shape == (3, 4, 5)
    np.testing.assert_array_equal(back.array, arr)
    assert back.spacing == spacing  # float32 header values come back as the written decimals
    np.testing.assert_allclose(back.affine, OBLIQUE, atol=1e-5)
    assert back.affine.shape == (4, 4) and back.affine.dtype == np.float64
    assert back.path == str(path)


def test_nifti_without_affine_uses_spacing(tmp_path):
    arr = _asym((2, 3, 4))
    back = read_image(write_image(tmp_path / "a.nii", arr, (3.0, 2.0, 0.5)))
    np.testing.assert_array_equal(back.array, arr)
    assert back.spacing == (3.0, 2.0, 0.5)
    np.testing.assert_allclose(back.affine, np.diag([0.5, 2.0, 3.0, 1.0]))


def test_nifti_2d_round_trip(tmp_path):
    arr = _asym((4, 6))
    back = read_image(write_image(tmp_path / "slice.nii.gz", arr, (0.7, 0.3)))
    assert back.array.shape == (4, 6)
    np.testing.assert_array_equal(back.array, arr)
    assert back.spacing == (0.7, 0.3)


def test_nifti_trailing_singleton_is_squeezed(tmp_path):
    data = _asym((5, 4, 3, 1))  # x, y, z, t=1
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "t1.nii.gz"))
    back = read_image(tmp_path / "t1.nii.gz")
    assert back.array.shape == (3, 4, 5)
    np.testing.assert_array_equal(back.array, data[..., 0].T)


def test_label_written_with_image_affine_round_trips_exactly(tmp_path):
    img_path = tmp_path / "img.nii.gz"
    img = nib.Nifti1Image(_asym((6, 5, 4)), OBLIQUE)
    img.header.set_zooms((1.25, 1.25, 7.7))
    nib.save(img, str(img_path))
    image = read_image(img_path)
    label = (image.array.astype(np.int64) % 3).astype(np.int64)  # int64 in memory

    out = write_image(tmp_path / "lab.nii.gz", label, image.spacing, image.affine)
    back = read_image(out)
    np.testing.assert_array_equal(back.array, label)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.affine, image.affine)
    assert back.spacing == image.spacing
    src, dst = nib.load(str(img_path)), nib.load(str(out))
    assert src.header.get_zooms() == dst.header.get_zooms()
    np.testing.assert_array_equal(src.affine, dst.affine)


@pytest.mark.parametrize(
    ("top", "dtype"), [(3, np.uint8), (300, np.int16), (-2, np.int16), (70000, np.int32)]
)
def test_integer_arrays_keep_small_integer_dtype(tmp_path, top, dtype):
    label = np.zeros((3, 4, 5), dtype=np.int64)
    label[1, 2, 3] = top
    back = read_image(write_image(tmp_path / "l.nii.gz", label))
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, label)


# ------------------------------------------------------------------------------------------- real data


@needs_data
def test_real_msd_hippocampus_case():
    path = DATA / "msd_hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    ref = nib.load(str(path))
    img = read_image(path)
    assert img.array.shape == tuple(reversed(ref.shape))
    assert img.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(img.affine, ref.affine)
    np.testing.assert_array_equal(img.array, np.asarray(ref.dataobj).transpose(2, 1, 0))


@needs_data
def test_real_chaos_spacing_in_array_order():
    path = DATA / "chaos_mr_t2" / "imagesTr" / "chaos_mr_02_t2.nii.gz"
    img = read_image(path)
    assert img.spacing == (7.7, 1.25, 1.25)
    assert img.array.shape == (31, 256, 256)
    assert img.array.dtype == np.int16
    np.testing.assert_array_equal(img.affine, nib.load(str(path)).affine)


@needs_data
def test_real_hc18_png_is_2d_gray():
    img = read_image(DATA / "hc18_fetal_head" / "images" / "004_HC.png")
    assert img.array.ndim == 2 and img.array.shape == (540, 800)
    assert img.spacing == (1.0, 1.0)


# ------------------------------------------------------------------------------------- TIFF / NumPy / PNG


def test_tiff_round_trip_keeps_spacing(tmp_path):
    arr = _asym((3, 4, 5))
    path = write_image(tmp_path / "vol.tif", arr, (2.5, 0.3, 0.7))
    with tifffile.TiffFile(str(path)) as tif:
        assert tif.is_imagej
    back = read_image(path)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.spacing, (2.5, 0.3, 0.7), rtol=1e-6)
    np.testing.assert_allclose(back.affine, np.diag([0.7, 0.3, 2.5, 1.0]), rtol=1e-6)


def test_tiff_2d_and_int32_labels_round_trip(tmp_path):
    arr2 = _asym((4, 6), np.uint16)
    back = read_image(write_image(tmp_path / "s.tiff", arr2, (0.25, 0.5)))
    np.testing.assert_array_equal(back.array, arr2)
    np.testing.assert_allclose(back.spacing, (0.25, 0.5), rtol=1e-6)

    small_x = _asym((2, 5, 3), np.uint8)  # a last axis of 3 must not be taken for RGB
    back = read_image(write_image(tmp_path / "narrow.tif", small_x, (1.0, 1.0, 1.0)))
    np.testing.assert_array_equal(back.array, small_x)

    big = np.zeros((2, 3, 4), dtype=np.int64)
    big[1, 1, 1] = 70000  # does not fit ImageJ's types
    back = read_image(write_image(tmp_path / "big.tif", big, (4.0, 0.5, 0.5)))
    assert back.array.dtype == np.int32
    np.testing.assert_array_equal(back.array, big)
    np.testing.assert_allclose(back.spacing, (4.0, 0.5, 0.5), rtol=1e-6)


def test_imagej_micron_tiff_converted_to_mm(tmp_path):
    path = tmp_path / "micro.tif"
    tifffile.imwrite(
        str(path),
        _asym((2, 3, 4), np.uint8),
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.2),
        metadata={"spacing": 1.0, "unit": "micron", "axes": "ZYX"},
    )
    np.testing.assert_allclose(read_image(path).spacing, (1e-3, 2e-4, 2e-4), rtol=1e-6)


def test_plain_tiff_without_resolution_has_unit_spacing(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(str(path), _asym((4, 5), np.uint8))
    assert read_image(path).spacing == (1.0, 1.0)


def test_npy_round_trip(tmp_path):
    arr = _asym((3, 4, 5), np.float64)
    back = read_image(write_image(tmp_path / "a.npy", arr))
    np.testing.assert_array_equal(back.array, arr)
    assert back.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(back.affine, np.eye(4))


def test_png_gray_and_equal_rgb_accepted(tmp_path):
    gray = (np.arange(20, dtype=np.uint8) * 10).reshape(4, 5)
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "rgb_gray.png")
    for name in ("g.png", "rgb_gray.png"):
        img = read_image(tmp_path / name)
        assert img.array.shape == (4, 5)
        np.testing.assert_array_equal(img.array, gray)
        assert img.spacing == (1.0, 1.0)


def test_affine_from_spacing_order():
    np.testing.assert_array_equal(affine_from_spacing((3.0, 2.0, 1.0)), np.diag([1.0, 2.0, 3.0, 1.0]))
    np.testing.assert_array_equal(affine_from_spacing((2.0, 0.5)), np.diag([0.5, 2.0, 1.0, 1.0]))


# ------------------------------------------------------------------------------------------- errors


def _raises_naming(path, match: str) -> None:
    with pytest.raises(DataError) as info:
        read_image(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert match.lower() in msg.lower(), msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    _raises_naming(tmp_path / "nope.nii.gz", "not found")


def test_directory(tmp_path):
    folder = tmp_path / "scan.nii.gz"
    folder.mkdir()
    _raises_naming(folder, "folder")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    _raises_naming(path, "empty")


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00 this is not really gzip data" * 10)
    _raises_naming(path, "cannot read NIfTI")


def test_truncated_gzip_nifti(tmp_path):
    good = write_image(tmp_path / "good.nii.gz", np.random.default_rng(0).random((20, 20, 20)))
    blob = good.read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(blob[: len(blob) // 2])
    _raises_naming(path, "corrupt or truncated")


def test_truncated_plain_nifti(tmp_path):
    good = write_image(tmp_path / "good.nii", _asym((10, 10, 10)))
    path = tmp_path / "cut.nii"
    path.write_bytes(good.read_bytes()[:600])
    _raises_naming(path, "cannot read NIfTI")


def test_not_a_nifti_at_all(tmp_path):
    path = tmp_path / "text.nii.gz"
    path.write_bytes(gzip.compress(b"hello"))
    _raises_naming(path, "cannot read NIfTI")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "scan.mnc"
    path.write_bytes(b"ObjectType = Image\n")
    _raises_naming(path, "unsupported file type '.mnc'")


def test_4d_nifti_refused(tmp_path):
    path = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 4, 3, 2), np.float32), np.eye(4)), str(path))
    _raises_naming(path, "4D image with 2 channels/frames is not supported")


def test_4d_npy_refused(tmp_path):
    path = tmp_path / "multi.npy"
    np.save(path, np.zeros((2, 3, 4, 5), np.float32))
    _raises_naming(path, "4D image with 2 channels/frames is not supported")


def test_1d_refused(tmp_path):
    path = tmp_path / "line.npy"
    np.save(path, np.arange(10.0))
    _raises_naming(path, "1D data")


def test_rgb_colour_refused(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = tmp_path / "colour.png"
    Image.fromarray(rgb).save(path)
    _raises_naming(path, "colour (RGB) image is not supported")


def test_rgb_colour_tiff_refused(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 2] = 50
    path = tmp_path / "colour.tif"
    tifffile.imwrite(str(path), rgb, photometric="rgb")
    _raises_naming(path, "colour (RGB) image")


def test_truncated_png(tmp_path):
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(
        tmp_path / "ok.png"
    )
    path = tmp_path / "cut.png"
    path.write_bytes((tmp_path / "ok.png").read_bytes()[:200])
    _raises_naming(path, "cannot read")


def test_overwrite_refused_leaves_old_file_untouched(tmp_path):
    path = write_image(tmp_path / "lab.nii.gz", np.ones((3, 4, 5), np.uint8))
    before = path.read_bytes()
    with pytest.raises(DataError) as info:
        write_image(path, np.zeros((3, 4, 5), np.uint8))
    assert str(path) in str(info.value) and "exists" in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.nii.gz"]  # no temp file left behind

    write_image(path, np.full((3, 4, 5), 2, np.uint8), overwrite=True)
    assert read_image(path).array.max() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.nii.gz"]


def test_write_errors_name_the_file(tmp_path):
    for path, arr, match in [
        (tmp_path / "a.mnc", np.zeros((3, 3)), "cannot write file type"),
        (tmp_path / "a.nii.gz", np.zeros((2, 2, 2, 2)), "2D or 3D"),
        (tmp_path / "b.nii.gz", np.zeros(5), "2D or 3D"),
    ]:
        with pytest.raises(DataError, match=match) as info:
            write_image(path, arr)
        assert str(path) in str(info.value)
    with pytest.raises(DataError, match="spacing") as info:
        write_image(tmp_path / "c.tif", np.zeros((3, 3)), spacing=(1.0, 0.0))
    assert "c.tif" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_written_file_has_normal_permissions(tmp_path):
    path = write_image(tmp_path / "p.npy", np.zeros((2, 2)))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
