"""DICOM series folders in predict and the case loaders; NRRD/MHA/DICOM geometry checked like NIfTI's."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from napari_dmd.data.cases import load_case, load_folder_pairs
from napari_dmd.data.io import DataError, read_image, write_image

sitk = pytest.importorskip("SimpleITK")
from test_itk_io import AFFINE, ROT, _dicom_series  # noqa: E402  (SimpleITK-written DICOM series)

DICOM_AFFINE = np.eye(4)
DICOM_AFFINE[:3, :3] = ROT @ np.diag([0.7, 0.8, 2.5])
DICOM_AFFINE[:3, 3] = (20.0, -30.0, 5.0)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    import torch

    from napari_dmd.checkpoint import save_checkpoint
    from napari_dmd.models.unet import UNet

    torch.manual_seed(0)
    model = UNet(3, 1, 3, (4, 8))
    return save_checkpoint(tmp_path_factory.mktemp("m") / "t3.pt",
                           {"kind": "teacher", "model": model.config(), "state_dict": model.state_dict(),
                            "normalization": "zscore", "patch_size": [16] * 3, "class_names": None})


def test_predict_takes_a_dicom_series_folder_as_one_volume(tmp_path, ckpt, capsys):
    from napari_dmd.cli.main import main

    vol = np.random.default_rng(4).integers(0, 1000, (6, 16, 16)).astype(np.int16)
    _dicom_series(tmp_path / "series", vol, DICOM_AFFINE)
    dst = tmp_path / "seg.nii.gz"
    assert main(["predict", "--model", str(ckpt), "--input", str(tmp_path / "series"), "--output", str(dst),
                 "--quiet"]) == 0
    out = read_image(dst)
    assert out.array.shape == vol.shape
    np.testing.assert_allclose(out.affine, DICOM_AFFINE, atol=1e-4)
    (tmp_path / "out").mkdir()  # into a folder: <series folder>.nii.gz
    assert main(["predict", "--model", str(ckpt), "--input", str(tmp_path / "series"), "--output",
                 str(tmp_path / "out"), "--quiet"]) == 0
    assert (tmp_path / "out" / "series.nii.gz").is_file()
    # a folder of series: one volume each
    (tmp_path / "study").mkdir()
    _dicom_series(tmp_path / "study" / "a", vol, DICOM_AFFINE)
    _dicom_series(tmp_path / "study" / "b", vol[::-1].copy(), DICOM_AFFINE)
    assert main(["predict", "--model", str(ckpt), "--input", str(tmp_path / "study"), "--output",
                 str(tmp_path / "out2"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert "series -> " in capsys.readouterr().out


def test_cli_data_flags_take_a_dicom_folder_and_a_folder_of_series(tmp_path):
    from napari_dmd.cli.cases import _load_cases

    vol = np.random.default_rng(5).integers(0, 1000, (5, 8, 10)).astype(np.int16)
    _dicom_series(tmp_path / "s1", vol, DICOM_AFFINE)
    args = argparse.Namespace(data=None, images=[str(tmp_path / "s1")], labels=None, spacing_csv=None,
                              max_cases=None, labelled_cases=None)
    (case,), _ = _load_cases(args)
    assert case.name == "s1" and case.image.shape == vol.shape
    np.testing.assert_allclose(case.affine, DICOM_AFFINE, atol=1e-4)
    (tmp_path / "study").mkdir()
    (tmp_path / "s1").rename(tmp_path / "study" / "s1")
    (case,) = load_folder_pairs(tmp_path / "study")
    assert case.name == "s1"


def test_itk_label_geometry_is_checked_like_nifti(tmp_path):
    vol = np.random.default_rng(6).random((7, 6, 5)).astype(np.float32)
    lab = (vol > 0.5).astype(np.uint8)
    img = write_image(tmp_path / "img.mha", vol, None, AFFINE)
    good = write_image(tmp_path / "good.nrrd", lab, None, AFFINE)
    assert load_case(img, good).label is not None
    flipped = AFFINE.copy()
    flipped[:3, 0] *= -1
    bad = write_image(tmp_path / "flip.mha", lab, None, flipped)
    with pytest.raises(DataError, match=r"flip\.mha: label geometry differs from its image .*img\.mha: flipped "
                                        r"along x \(file axes x, y, z\)"):
        load_case(img, bad)
    shifted = AFFINE.copy()
    shifted[:3, 3] += (5.0, 0.0, 0.0)
    bad = write_image(tmp_path / "shift.nrrd", lab, None, shifted)
    with pytest.raises(DataError, match=r"shift\.nrrd: label geometry differs .*: origin shifted by 5 mm"):
        load_case(img, bad)
    small = write_image(tmp_path / "small.mha", lab[:, :, :4], None, AFFINE)
    with pytest.raises(DataError, match=r"small\.mha: label shape \(4, 6, 7\) does not match image .*img\.mha "
                                        r"shape \(5, 6, 7\)"):  # ITK's own (x, y, z) order, as for NIfTI
        load_case(img, small)


def test_spacing_override_keeps_an_oblique_mha_affine(tmp_path):
    vol = np.random.default_rng(7).random((7, 6, 5)).astype(np.float32)
    img = write_image(tmp_path / "img.mha", vol, None, AFFINE)
    case = load_case(img, spacing=(3.0, 1.0, 1.0))
    assert case.spacing == (3.0, 1.0, 1.0)
    np.testing.assert_allclose(case.affine, AFFINE, atol=1e-9)  # as for NIfTI: labels written with it overlay
