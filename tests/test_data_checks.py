"""Resource limits and data checks: forged headers, YAML bombs, label geometry, class counts, dataset.json,
outliers, complex data, unpaired images and absurd settings. Every payload is written by the test itself."""

from __future__ import annotations

import gzip
import json
import re
import resource
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_dmd.cli import main
from napari_dmd.config import ConfigError, TrainConfig
from napari_dmd.data.cases import (
    Case,
    load_case,
    load_folder_pairs,
    load_msd_folder,
    validate_cases,
)
from napari_dmd.data.checks import DataWarning, resolve_class_names
from napari_dmd.data.io import DataError, read_image, write_image
from napari_dmd.data.limits import DEFAULT_MAX_VOXELS, MAX_VOXELS_ENV
from napari_dmd.data.transforms import normalize

RNG = np.random.default_rng(0)
IMAGE = RNG.random((6, 16, 16)).astype(np.float32)
LABEL = np.zeros((6, 16, 16), np.uint8)
LABEL[2:4, 4:10, 4:10] = 1
LABEL[3, 12:14, 12:14] = 2


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    """A NIfTI of ``array`` given in (z, y, x) order, with ``affine`` (default identity)."""
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), np.eye(4) if affine is None else affine), str(path))
    return str(path)


def _header_only_nifti(path: Path, shape: tuple[int, ...], body: int = 4096) -> str:
    """A NIfTI whose header declares ``shape`` (uint8) but holds only ``body`` bytes of zeros (gzipped if .gz)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.uint8)
    blob = hdr.binaryblock + b"\0" * 4 + b"\0" * body
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return str(path)


def _one_line_error(argv: list[str], capsys) -> str:
    """Run the CLI; it must exit 2 with one line on stderr and no traceback. Returns that line."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1, err
    return err.strip()


# -------------------------------------------------------------------------------------- size limits


def test_small_gz_declaring_1200_cubed_is_refused_fast_without_allocating(tmp_path):
    path = _header_only_nifti(tmp_path / "bomb.nii.gz", (1200, 1200, 1200))
    assert Path(path).stat().st_size < 20_000
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="implausible size") as info:
        read_image(path)
    elapsed = time.perf_counter() - t0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    message = str(info.value)
    assert path in message and "1,728,000,000 voxels" in message and MAX_VOXELS_ENV in message
    assert elapsed < 5.0 and grown_mb < 200, (elapsed, grown_mb)  # reading it would take minutes and GBs


def test_32767_cubed_header_says_implausible_size_not_memory(tmp_path):
    path = _header_only_nifti(tmp_path / "h.nii", (32767, 32767, 32767))
    with pytest.raises(DataError) as info:
        read_image(path)
    message = str(info.value)
    assert "implausible size" in message and "(32767, 32767, 32767)" in message
    assert "not enough memory" not in message


def test_voxel_limit_is_configurable(tmp_path, monkeypatch):
    path = write_image(tmp_path / "a.nii.gz", IMAGE)
    assert read_image(path).array.shape == IMAGE.shape  # default: far below DEFAULT_MAX_VOXELS
    assert DEFAULT_MAX_VOXELS == 512 * 512 * 1024
    monkeypatch.setenv(MAX_VOXELS_ENV, "1000")
    with pytest.raises(DataError, match="over the limit of 1,000 voxels"):
        read_image(path)
    monkeypatch.setenv(MAX_VOXELS_ENV, "lots")
    with pytest.raises(DataError, match=f"{MAX_VOXELS_ENV}='lots' is not a positive number"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".png"])
def test_tiff_npy_png_sizes_are_checked_from_the_header_before_decoding(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"big{suffix}"
    if suffix == ".png":
        Image.fromarray((RNG.random((40, 50)) * 255).astype(np.uint8)).save(path)
    else:
        write_image(path, RNG.random((4, 40, 50)).astype(np.float32))

    def no_decoding(*a, **k):
        raise AssertionError("pixel data was read before the size check")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_decoding)
    monkeypatch.setattr(np, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setenv(MAX_VOXELS_ENV, "1000")
    with pytest.raises(DataError, match="implausible size") as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_complex_tiff_and_numpy_are_refused(tmp_path, suffix):
    data = (RNG.random((16, 16)) + 1j * RNG.random((16, 16))).astype(np.complex64)
    path = tmp_path / f"c{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, data)
    else:
        np.save(path, data)
    with pytest.raises(DataError, match="complex-valued") as info:
        read_image(path)
    assert str(path) in str(info.value) and "magnitudes" in str(info.value)


# ----------------------------------------------------------------------------------------------- YAML


def test_yaml_aliases_are_refused(tmp_path):
    bomb = "extra:\n  a: &a [x, x, x, x, x, x, x, x, x]\n  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
           "  c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"alias \*a refused") as info:
        TrainConfig.load_yaml(path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)
    assert time.perf_counter() - t0 < 5.0  # refused at once, not expanded


def test_yaml_python_tag_is_refused_for_safety(tmp_path, capsys):
    path = tmp_path / "evil.yaml"
    path.write_text("iterations: !!python/object/apply:os.system ['echo hi']\n")
    message = _one_line_error(["train-teacher", "--config", str(path), "--images", str(tmp_path / "x.nii.gz"),
                               "--out", str(tmp_path / "run")], capsys)
    assert str(path) in message and "python tag" in message and "refused for safety" in message
    assert "not valid YAML" not in message


def test_oversized_config_file_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * 1_100_000 + "\n")
    with pytest.raises(ConfigError, match="implausibly large"):
        TrainConfig.load_yaml(path)


# ------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("setting,value,problem", [
    ("lr_warmup", float("nan"), "lr_warmup must be a finite number"),
    ("distill_warmup", float("inf"), "distill_warmup must be a finite number"),
    ("grad_clip", float("nan"), "grad_clip must be a finite number"),
    ("lr", float("inf"), "lr must be a finite number"),
    ("kd_weight", float("nan"), "kd_weight must be a finite number"),
    ("scale_weights", [1.0, float("nan")], "scale_weights must be a finite number"),
    ("temperature", 1e-30, "temperature must be > 0, within [0.1, 100]"),
    ("temperature", 1e6, "temperature must be > 0, within [0.1, 100]"),
    ("distill_warmup", 2.0, "distill_warmup must be in [0, 1]"),
    ("grad_clip", -1.0, "grad_clip must be >= 0"),
])
def test_non_finite_and_absurd_settings_are_refused(setting, value, problem):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{setting: value}).validate()
    assert str(info.value).startswith(problem) and len(str(info.value).splitlines()) == 1


def test_grad_clip_none_means_off_and_class_names_must_fit():
    assert TrainConfig(grad_clip=None).validate().grad_clip == 0.0
    with pytest.raises(ConfigError, match="class_names lists 2 names but num_classes is 3"):
        TrainConfig(num_classes=3, class_names=["bg", "a"]).validate()


def test_lr_warmup_nan_from_the_command_line(tmp_path, capsys):
    img = _nifti(tmp_path / "i.nii.gz", IMAGE)
    lab = _nifti(tmp_path / "l.nii.gz", LABEL)
    message = _one_line_error(["train-teacher", "--images", img, "--labels", lab, "--out", str(tmp_path / "run"),
                               "--lr-warmup", "nan"], capsys)
    assert message.endswith("lr_warmup must be a finite number, got nan")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------- label geometry


def _geometry_pair(tmp_path: Path, label_affine: np.ndarray) -> tuple[str, str]:
    image_affine = np.diag([0.8, 0.8, 2.0, 1.0])
    return _nifti(tmp_path / "img.nii.gz", IMAGE, image_affine), _nifti(tmp_path / "lab.nii.gz", LABEL, label_affine)


@pytest.mark.parametrize("label_affine,problem", [
    (np.diag([-0.8, 0.8, 2.0, 1.0]), "flipped along x"),
    (np.diag([0.8, 0.8, 3.0, 1.0]), "voxel size 0.8 x 0.8 x 3 mm (x, y, z) vs 0.8 x 0.8 x 2 mm (x, y, z)"),
    (np.array([[0.8, 0, 0, 10.0], [0, 0.8, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]]), "origin shifted by 10 mm"),
])
def test_label_geometry_must_match_its_image(tmp_path, label_affine, problem):
    img, lab = _geometry_pair(tmp_path, label_affine)
    with pytest.raises(DataError, match="label geometry differs") as info:
        load_case(img, lab)
    message = str(info.value)
    assert message.startswith(lab) and img in message and problem in message, message


def test_label_geometry_tolerates_float32_noise_and_masks_without_metadata(tmp_path):
    img, lab = _geometry_pair(tmp_path, np.diag([0.8000001, 0.8, 2.0, 1.0]))
    assert load_case(img, lab).has_label
    tif = write_image(tmp_path / "img.tif", IMAGE, (2.0, 0.5, 0.5))
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, LABEL)  # no resolution metadata: spacing 1, takes the image's
    assert load_case(tif, mask).spacing == (2.0, 0.5, 0.5)


# --------------------------------------------------------------------------------------- class counts


def _case(label: np.ndarray, name: str) -> Case:
    return Case(IMAGE, label, (1.0, 1.0, 1.0), np.eye(4), name, f"{name}.nii.gz", f"{name}_seg.nii.gz")


@pytest.mark.parametrize("top", [5, 300])
def test_label_values_with_gaps_are_refused_when_the_count_is_inferred(top):
    odd = LABEL.astype(np.int16)
    odd[0, 0, 0] = top
    cases = [_case(LABEL, "a"), _case(odd, "b")]
    with pytest.raises(DataError) as info:
        validate_cases(cases)
    message = str(info.value)
    assert message.startswith("b_seg.nii.gz: holds label") and str(top) in message and "--num-classes" in message
    assert validate_cases(cases, num_classes=top + 1) == top + 1  # said explicitly: accepted
    with pytest.raises(DataError, match=re.escape(f"b_seg.nii.gz: labels out of range: values {{{top}}}")):
        validate_cases(cases, num_classes=3)


def test_label_255_is_named_as_ignored():
    lab = LABEL.copy()
    lab[0, :2, :2] = 255
    with pytest.warns(DataWarning, match="x_seg.nii.gz: label 255 marks voxels to ignore"):
        assert validate_cases([_case(lab, "x")]) == 3


def test_class_names_fix_the_class_count():
    assert resolve_class_names(None, (None, None), ("d/dataset.json", ["bg", "a", "b", "c", "d"])) == \
        (5, ["bg", "a", "b", "c", "d"])
    with pytest.raises(DataError, match="d/dataset.json: lists 2 class names .* but there are 3 classes"):
        resolve_class_names(3, (None, None), ("d/dataset.json", ["bg", "a"]))


# ------------------------------------------------------------------------------------------ dataset.json


def _msd(root: Path, n: int = 3, meta: dict | None = None, unlabelled: int = 0) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        _nifti(root / "imagesTr" / f"c{i}_0000.nii.gz", IMAGE + i)
        if i < n - unlabelled:
            _nifti(root / "labelsTr" / f"c{i}.nii.gz", LABEL)
    if meta is not None:
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_dataset_json_listing_missing_files_is_an_error(tmp_path):
    training = [{"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"} for i in range(5)]
    root = _msd(tmp_path / "T", meta={"labels": {"0": "bg", "1": "a", "2": "b"}, "numTraining": 5,
                                      "training": training})
    with pytest.raises(DataError, match="lists 4 files that are missing: ./imagesTr/c3.nii.gz") as info:
        load_msd_folder(root)
    assert str(root / "dataset.json") in str(info.value)


def test_dataset_json_num_training_mismatch_is_a_warning(tmp_path):
    root = _msd(tmp_path / "T", meta={"labels": {"0": "bg", "1": "a", "2": "b"}, "numTraining": 7})
    with pytest.warns(DataWarning, match="numTraining is 7 but imagesTr/ holds 3 images"):
        cases, names = load_msd_folder(root)
    assert len(cases) == 3 and names == ["bg", "a", "b"]


def test_dataset_json_with_too_few_classes_names_the_label_file(tmp_path):
    root = _msd(tmp_path / "T", meta={"labels": {"background": 0, "a": 1}})
    with pytest.raises(DataError, match="holds label 2 but .*dataset.json lists 2 classes") as info:
        load_msd_folder(root)
    assert str(root / "labelsTr" / "c0.nii.gz") in str(info.value)


def test_num_classes_flag_disagreeing_with_dataset_json_is_refused(tmp_path, capsys):
    root = _msd(tmp_path / "T", meta={"labels": {"0": "bg", "1": "a", "2": "b", "3": "c", "4": "d"}})
    message = _one_line_error(["train-teacher", "--data", str(root), "--num-classes", "3", "--out",
                               str(tmp_path / "run"), "--iterations", "1", "--quiet"], capsys)
    assert "dataset.json: lists 5 class names" in message and "3 classes" in message


# ------------------------------------------------------------------------------------- images and pairs


@pytest.mark.parametrize("value", [np.nan, 7.0])
def test_nan_or_constant_image_is_refused_without_a_label(tmp_path, value):
    bad = np.full(IMAGE.shape, value, np.float32) if value == 7.0 else np.where(LABEL > 0, np.nan, IMAGE)
    path = _nifti(tmp_path / "u.nii.gz", bad)
    with pytest.raises(DataError, match="NaN/Inf|constant image") as info:
        load_case(path)
    assert str(info.value).startswith(path)


def test_outlier_voxel_does_not_flatten_normalization():
    image = RNG.random((32, 32)).astype(np.float32)
    spiked = image.copy()
    spiked[5, 7] = 3e38
    others = np.ones(image.shape, bool)
    others[5, 7] = False
    for scheme in ("zscore", "zscore-fg"):
        plain, hit = normalize(image, scheme), normalize(spiked, scheme)
        assert np.isfinite(hit).all()
        assert np.abs(plain - hit)[others].max() < 0.01, scheme


def test_unpaired_images_are_named(tmp_path):
    root = _msd(tmp_path / "T", n=4, unlabelled=1)
    with pytest.warns(DataWarning, match=r"1 of 4 images have no label .*\(c3_0000.nii.gz\)"):
        cases, _ = load_msd_folder(root)
    assert sum(c.has_label for c in cases) == 3
    (tmp_path / "imgs").mkdir()
    (tmp_path / "labs").mkdir()
    _nifti(tmp_path / "imgs" / "a.nii.gz", IMAGE)
    _nifti(tmp_path / "labs" / "other.nii.gz", LABEL)
    with pytest.raises(DataError, match="no label file matches any image name"):
        load_folder_pairs(tmp_path / "imgs", tmp_path / "labs")


def test_one_slice_nifti_shape_is_printed_as_stored(tmp_path, capsys):
    """A NIfTI stored as (1, 48, 48) (x, y, z) was reported as (48, 48, 1)."""
    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(RNG.random((1, 48, 48)).astype(np.float32), np.eye(4)), str(path))
    with pytest.raises(DataError, match=r"image too small \(shape \(1, 48, 48\)\)"):
        load_case(path, path)
