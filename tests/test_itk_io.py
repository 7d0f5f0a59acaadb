"""NRRD / MetaImage through SimpleITK: ITK's LPS geometry becomes the same RAS affine as NIfTI's."""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest

from napari_dmd._reader import get_reader, read_layers
from napari_dmd.data.io import DataError, read_image, write_image

sitk = pytest.importorskip("SimpleITK")

ROT = np.array([[np.cos(0.4), 0.0, np.sin(0.4)], [0.0, 1.0, 0.0], [-np.sin(0.4), 0.0, np.cos(0.4)]])
AFFINE = np.eye(4)
AFFINE[:3, :3] = ROT @ np.diag([-0.9, 0.7, 2.5])  # rotated, x flipped, anisotropic
AFFINE[:3, 3] = (31.0, -12.5, 7.25)


def _nifti(path, affine=AFFINE, shape=(7, 6, 5)):
    arr = np.random.default_rng(0).integers(0, 200, shape).astype(np.int16)
    img = nib.Nifti1Image(arr, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".mhd"])
def test_itk_file_converted_by_itk_itself_gives_the_nifti_affine_and_layer(tmp_path, suffix):
    nii = _nifti(tmp_path / "scan.nii.gz")
    other = tmp_path / f"scan{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(nii)), str(other))  # ITK's own NIfTI (RAS) -> LPS conversion
    a, b = read_image(nii), read_image(other)
    assert np.array_equal(a.array, b.array) and b.array.shape == (5, 6, 7)
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-5)
    np.testing.assert_allclose(b.spacing, a.spacing, rtol=1e-6)
    assert get_reader(str(other)) is read_layers
    ((_, kn, _),), ((_, ko, _),) = read_layers(str(nii)), read_layers(str(other))
    np.testing.assert_allclose(ko["affine"], kn["affine"], atol=1e-5)
    np.testing.assert_allclose(ko["scale"], kn["scale"], rtol=1e-6)
    assert ko["units"] == kn["units"] and ko["axis_labels"] == kn["axis_labels"]


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_write_itk_round_trip_and_itk_agrees_on_world_points(tmp_path, suffix):
    labels = np.random.default_rng(1).integers(0, 4, (5, 6, 7)).astype(np.uint8)
    out = write_image(tmp_path / f"seg{suffix}", labels, None, AFFINE)
    back = read_image(out)
    assert np.array_equal(back.array, labels)
    np.testing.assert_allclose(back.affine, AFFINE, atol=1e-9)
    image = sitk.ReadImage(str(out))
    for ijk in [(0, 0, 0), (6, 5, 4), (3, 1, 2)]:
        ras = (AFFINE @ np.array([*ijk, 1.0]))[:3]
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose(lps, ras * (-1, -1, 1), atol=1e-6)
    with pytest.raises(DataError, match="already exists"):
        write_image(out, labels, None, AFFINE)


def test_2d_mha_geometry_with_and_without_affine(tmp_path):
    out = write_image(tmp_path / "slice.mha", np.ones((4, 6), np.float32), (0.5, 0.25))
    back = read_image(out)
    assert back.array.shape == (4, 6) and back.spacing == (0.5, 0.25)
    np.testing.assert_array_equal(back.affine, np.diag([0.25, 0.5, 1.0, 1.0]))  # as NIfTI without an affine
    assert sitk.ReadImage(str(out)).GetDirection() == (-1.0, 0.0, 0.0, -1.0)  # that is x, y flipped in LPS
    ident = tmp_path / "ident.mha"  # identity direction in ITK (LPS) = x and y flipped in RAS
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 6), np.float32)), str(ident))
    np.testing.assert_array_equal(read_image(ident).affine, np.diag([-1.0, -1.0, 1.0, 1.0]))


def test_vector_and_corrupt_files_and_missing_simpleitk_one_line(tmp_path, monkeypatch):
    rgb = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True), str(rgb))
    with pytest.raises(DataError, match=r"rgb\.mha: image with 3 components"):
        read_image(rgb)
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\nnot a header\n")
    with pytest.raises(DataError, match=r"bad\.nrrd: cannot read NRRD file") as err:
        read_image(bad)
    assert "\n" not in str(err.value)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(DataError, match=r"rgb\.mha: .*needs SimpleITK.*napari-dmd\[itk\]"):
        read_image(rgb)


def test_truncated_mha_and_unknown_header_give_one_line(tmp_path, capfd):
    data = np.random.default_rng(2).random((30, 30, 30)).astype(np.float32)
    good = write_image(tmp_path / "vol.mha", data, (1.0, 1.0, 1.0)).read_bytes()
    for name, cut, match in [("head.mha", good[:300], "cannot read MHA file"),
                             ("tail.mha", good[:-2000], "cannot read the MHA file's voxels")]:
        (tmp_path / name).write_bytes(cut)
        with pytest.raises(DataError, match=rf"{name}: {match}, it may be") as err:
            read_image(tmp_path / name)
        assert "\n" not in str(err.value) and "No such file" not in str(err.value)
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\nnot a header\n")
    with pytest.raises(DataError, match=r"bad\.nrrd: cannot read NRRD file.*\(\[nrrd\]") as err:
        read_image(bad)
    assert "sitk" not in str(err.value).lower() and ".cxx" not in str(err.value)
    assert capfd.readouterr().err == ""  # ITK's own stderr prints are silenced: the DataError is the message


def test_cli_predict_reads_mha_and_nrrd_and_keeps_their_geometry(tmp_path, capsys):
    import torch

    from napari_dmd.checkpoint import save_checkpoint
    from napari_dmd.cli.main import main
    from napari_dmd.models.unet import UNet

    torch.manual_seed(0)
    model = UNet(3, 1, 3, (4, 8))
    ckpt = save_checkpoint(tmp_path / "t3.pt", {"kind": "teacher", "model": model.config(),
                                                "state_dict": model.state_dict(), "normalization": "zscore",
                                                "patch_size": [16] * 3, "class_names": None})
    vol = np.random.default_rng(3).random((8, 16, 16)).astype(np.float32)
    for suffix in (".mha", ".nrrd"):
        src = write_image(tmp_path / f"in{suffix}", vol, None, AFFINE)
        dst = tmp_path / f"out{suffix}"
        assert main(["predict", "--model", str(ckpt), "--input", str(src), "--output", str(dst), "--quiet"]) == 0
        out = read_image(dst)
        assert out.array.shape == vol.shape
        np.testing.assert_allclose(out.affine, AFFINE, atol=1e-9)
    assert main(["predict", "--model", str(ckpt), "--input", str(tmp_path / "in.mha"), "--output",
                 str(tmp_path / "out.mhd"), "--quiet"]) == 2
    assert "out.mhd: cannot write labels as '.mhd'" in capsys.readouterr().err


def _dicom_series(folder, vol: np.ndarray, affine: np.ndarray) -> None:
    """Write ``vol`` ((z, y, x), int16) as a DICOM series with the world geometry of the RAS ``affine``."""
    folder.mkdir()
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    uid = "1.2.826.0.1.3680043.2.1125.1.99"
    for k in range(vol.shape[0]):
        img = sitk.GetImageFromArray(vol[k : k + 1])
        img.SetSpacing(tuple(spacing))
        img.SetDirection(tuple(direction.ravel()))
        origin = np.diag([-1.0, -1.0, 1.0]) @ (affine @ np.array([0.0, 0.0, k, 1.0]))[:3]
        img.SetOrigin(tuple(origin))
        for tag, value in [("0020|000e", uid), ("0020|0013", str(k + 1)), ("0008|0060", "CT"),
                           ("0020|0037", "\\".join(f"{v:.10f}" for v in direction[:, :2].T.ravel())),
                           ("0020|0032", "\\".join(f"{v:.10f}" for v in origin)),
                           ("0018|0050", f"{spacing[2]:.10f}")]:
            img.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{(vol.shape[0] - k):03d}.dcm"))  # names in reverse order
        writer.Execute(img)


def test_dicom_series_folder_reads_with_the_nifti_geometry(tmp_path):
    vol = np.random.default_rng(4).integers(0, 1000, (6, 8, 10)).astype(np.int16)
    affine = np.eye(4)
    affine[:3, :3] = ROT @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = (20.0, -30.0, 5.0)
    _dicom_series(tmp_path / "series", vol, affine)
    data = read_image(tmp_path / "series")
    assert np.array_equal(data.array, vol)
    np.testing.assert_allclose(data.affine, affine, atol=1e-4)
    assert get_reader(str(tmp_path / "series")) is read_layers
    ((_, kw, kind),) = read_layers(str(tmp_path / "series"))
    assert kind == "image" and kw["name"] == "series"
    (tmp_path / "empty").mkdir()
    assert get_reader(str(tmp_path / "empty")) is None
    with pytest.raises(DataError, match=r"empty: is a folder, not an image file"):
        read_image(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.dcm").write_bytes(b"not dicom")
    with pytest.raises(DataError, match=r"junk: no readable DICOM series"):
        read_image(tmp_path / "junk")


def test_napari_writer_saves_labels_of_a_nifti_scan_as_mha_in_the_same_place(tmp_path):
    from napari_dmd._writer import write_labels

    nii = _nifti(tmp_path / "scan.nii.gz")
    ((image, kw, _),) = read_layers(str(nii))
    labels = (np.asarray(image) > 100).astype(np.uint8)
    out = tmp_path / "seg.mha"
    assert write_labels(str(out), labels, {"scale": kw["scale"], "metadata": kw["metadata"]}) == [str(out)]
    back = read_image(out)
    np.testing.assert_allclose(back.affine, read_image(nii).affine, atol=1e-9)
    assert np.array_equal(back.array, labels)
