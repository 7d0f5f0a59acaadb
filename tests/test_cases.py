"""Tests for napari_dmd.data.cases: loading pairs and folders, validation messages."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_dmd.data.cases import (
    Case,
    infer_num_classes,
    load_case,
    load_folder_pairs,
    load_msd_folder,
    load_pair_lists,
    read_class_names,
    validate_case,
    validate_cases,
)
from napari_dmd.data.io import DataError, write_image

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_DMD_DATA", REPO.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared data folder {DATA} not found (set NAPARI_DMD_DATA to its location)"
)

RNG = np.random.default_rng(0)


def _image(shape=(4, 6, 5)) -> np.ndarray:
    return RNG.random(shape).astype(np.float32)


def _label(shape=(4, 6, 5), top=2) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[1:3, 2:4, 1:4] = 1
    lab[2, 3, 3] = top
    return lab


def _case(image=None, label=None, name="c", path=None, label_path=None) -> Case:
    image = _image() if image is None else image
    return Case(
        image=image,
        label=label,
        spacing=(1.0,) * image.ndim,
        affine=np.eye(4),
        name=name,
        image_path=path,
        label_path=label_path,
    )


def _expect(match: str, *names: str):
    """Context manager: DataError whose message contains ``match`` and every name in ``names``."""

    class _Check:
        def __enter__(self):
            self._ctx = pytest.raises(DataError)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self._ctx.__exit__(*exc)
            msg = str(self.info.value)
            assert match.lower() in msg.lower(), msg
            for name in names:
                assert str(name) in msg, msg
            assert "\n" not in msg
            return suppressed

    return _Check()


# ------------------------------------------------------------------------------------------- load_case


def test_load_case_casts_integral_float_labels(tmp_path):
    img = write_image(tmp_path / "a.nii.gz", _image(), (3.0, 1.0, 0.5))
    lab = write_image(tmp_path / "a_lab.nii.gz", _label().astype(np.float32), (3.0, 1.0, 0.5))
    case = load_case(img, lab)
    assert case.label is not None and case.label.dtype == np.uint8
    np.testing.assert_array_equal(case.label, _label())
    assert case.spacing == (3.0, 1.0, 0.5)
    assert case.ndim == 3 and case.has_label
    assert case.name == "a"
    assert case.image_path == str(img) and case.label_path == str(lab)
    assert not load_case(img).has_label


def test_load_case_negative_labels_stay_signed(tmp_path):
    img = write_image(tmp_path / "a.nii.gz", _image())
    lab = _label().astype(np.float32)
    lab[0, 0, 0] = -1
    case = load_case(img, write_image(tmp_path / "l.nii.gz", lab))
    assert case.label.dtype == np.int16 and case.label.min() == -1


def test_load_case_fractional_labels(tmp_path):
    img = write_image(tmp_path / "a.nii.gz", _image())
    lab = _label().astype(np.float32)
    lab[0, 0, 0] = 0.5
    lab_path = write_image(tmp_path / "soft.nii.gz", lab)
    with _expect("non-integer", lab_path):
        load_case(img, lab_path)


def test_load_case_shape_mismatch_names_both_files(tmp_path):
    img = write_image(tmp_path / "img.nii.gz", _image((4, 6, 5)))
    lab = write_image(tmp_path / "lab.nii.gz", _label((4, 6, 6)))
    with _expect("does not match", img, lab, "(6, 6, 4)", "(5, 6, 4)"):  # NIfTI shapes as stored: x, y, z
        load_case(img, lab)


def test_load_case_spacing_override_rebuilds_affine_for_png(tmp_path):
    Image.fromarray((RNG.random((6, 8)) * 255).astype(np.uint8)).save(tmp_path / "u.png")
    case = load_case(tmp_path / "u.png", spacing=(0.2, 0.1), name="us")
    assert case.spacing == (0.2, 0.1) and case.name == "us" and case.ndim == 2
    np.testing.assert_allclose(case.affine, np.diag([0.1, 0.2, 1.0, 1.0]))
    with _expect("spacing", "u.png"):
        load_case(tmp_path / "u.png", spacing=(1.0, 1.0, 1.0))


# ------------------------------------------------------------------------------------------- folders


def _msd(root: Path, dataset: dict | None = None) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for name, lab_name in [("b_0000.nii.gz", "b.nii.gz"), ("a.nii.gz", "a.nii.gz"), ("c.nii.gz", None)]:
        write_image(root / "imagesTr" / name, _image())
        if lab_name:
            write_image(root / "labelsTr" / lab_name, _label())
    (root / "imagesTr" / "._a.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "imagesTr" / ".DS_Store").write_bytes(b"junk")
    (root / "imagesTr" / "notes.txt").write_text("ignore me")
    if dataset is not None:
        (root / "dataset.json").write_text(json.dumps(dataset))
    return root


def test_load_msd_folder_pairs_and_names(tmp_path):
    root = _msd(tmp_path / "Task", {"labels": {"0": "background", "1": "head", "2": "tail"}})
    cases, names = load_msd_folder(root)
    assert [c.name for c in cases] == ["a", "b", "c"]
    assert [c.has_label for c in cases] == [True, True, False]
    assert cases[1].label_path == str(root / "labelsTr" / "b.nii.gz")
    assert names == ["background", "head", "tail"]
    assert validate_cases(cases) == 3

    with _expect("no label file", "c.nii.gz"):
        load_msd_folder(root, require_labels=True)


def test_load_msd_folder_imagests_without_labels(tmp_path):
    root = tmp_path / "Task"
    (root / "imagesTs").mkdir(parents=True)
    write_image(root / "imagesTs" / "t.nii.gz", _image())
    cases, names = load_msd_folder(root)
    assert len(cases) == 1 and not cases[0].has_label and names is None
    with _expect("no images found", root):
        load_msd_folder(root, require_labels=True)


def test_load_msd_folder_errors(tmp_path):
    with _expect("not found", tmp_path / "missing"):
        load_msd_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with _expect("no imagesTr/", tmp_path / "empty"):
        load_msd_folder(tmp_path / "empty")
    root = tmp_path / "multi"
    (root / "imagesTr").mkdir(parents=True)
    for ch in ("0000", "0001"):
        write_image(root / "imagesTr" / f"x_{ch}.nii.gz", _image())
    with _expect("multi-channel", "x_0001"):
        load_msd_folder(root)


def test_read_class_names_formats(tmp_path):
    msd = tmp_path / "msd.json"
    msd.write_text(json.dumps({"labels": {"0": "background", "2": "spleen"}}))
    assert read_class_names(msd) == ["background", "class 1", "spleen"]
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    assert read_class_names(v2) == ["background", "liver"]
    assert read_class_names(tmp_path / "none.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with _expect("cannot read dataset.json", bad):
        read_class_names(bad)


def _png_pairs(tmp_path: Path) -> tuple[Path, Path]:
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labs.mkdir()
    for name in ("001_HC.png", "002_HC.png"):
        Image.fromarray((RNG.random((10, 12)) * 255).astype(np.uint8)).save(imgs / name)
        lab = np.zeros((10, 12), np.uint8)
        lab[3:7, 4:9] = 1
        Image.fromarray(lab).save(labs / name)
    return imgs, labs


def _csv(
    path: Path, rows: list[tuple[str, str]], header=("filename", "pixel size(mm)", "head circumference (mm)")
):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([*row, "60.0"][: len(header)])
    return path


def test_load_folder_pairs_with_spacing_csv(tmp_path):
    imgs, labs = _png_pairs(tmp_path)
    table = _csv(tmp_path / "px.csv", [("001_HC.png", "0.1"), ("002_HC.png", "0.25")])
    cases = load_folder_pairs(imgs, labs, spacing_csv=table)
    assert [c.name for c in cases] == ["001_HC", "002_HC"]
    assert [c.spacing for c in cases] == [(0.1, 0.1), (0.25, 0.25)]
    np.testing.assert_allclose(cases[1].affine, np.diag([0.25, 0.25, 1.0, 1.0]))
    assert all(c.ndim == 2 and c.has_label for c in cases)
    assert validate_cases(cases) == 2
    assert [c.spacing for c in load_folder_pairs(imgs, labs)] == [(1.0, 1.0), (1.0, 1.0)]


def test_load_folder_pairs_csv_errors(tmp_path):
    imgs, labs = _png_pairs(tmp_path)
    partial = _csv(tmp_path / "partial.csv", [("001_HC.png", "0.1")])
    with _expect("not listed in spacing CSV", "002_HC.png", partial):
        load_folder_pairs(imgs, labs, spacing_csv=partial)
    nocol = _csv(tmp_path / "nocol.csv", [("001_HC.png", "0.1")], header=("filename", "size"))
    with _expect("no 'pixel size' column", nocol):
        load_folder_pairs(imgs, labs, spacing_csv=nocol)
    with _expect("labels folder not found", tmp_path / "nolabels"):
        load_folder_pairs(imgs, tmp_path / "nolabels")


def test_load_pair_lists(tmp_path):
    a = write_image(tmp_path / "a.nii.gz", _image())
    b = write_image(tmp_path / "b.nii.gz", _image())
    la = write_image(tmp_path / "la.nii.gz", _label())
    cases = load_pair_lists([a, b], [la, None])
    assert [c.has_label for c in cases] == [True, False]
    assert [c.name for c in cases] == ["a", "b"]
    assert len(load_pair_lists([a])) == 1
    with _expect("must pair up"):
        load_pair_lists([a, b], [la])


# ------------------------------------------------------------------------------------------- validation


def test_validate_case_accepts_good_case():
    validate_case(_case(label=_label()), num_classes=3)
    validate_case(_case())  # unlabelled is fine


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label": _label(top=5)}, "labels out of range"),
        ({"label": _label().astype(np.int16) - 1}, "negative label"),
        ({"label": _label() + np.float32(0.25)}, "non-integer"),
        ({"label": _label((4, 6, 6))}, "does not match"),
        ({"image": np.full((4, 6, 5), 3.0, np.float32)}, "constant image"),
        ({"image": np.ones((4, 1, 5), np.float32)}, "too small"),
        ({"image": np.arange(5.0)}, "spatial dims"),
    ],
)
def test_validate_case_errors_name_the_file(kwargs, match):
    case = _case(path="/data/scan_007.nii.gz", label_path="/data/scan_007_seg.nii.gz", **kwargs)
    named = "scan_007_seg" if "label" in kwargs else "scan_007.nii.gz"
    with _expect(match, named):
        validate_case(case, num_classes=3)


def test_validate_case_nan_and_inf():
    for bad in (np.nan, np.inf):
        image = _image()
        image[1, 1, 1] = bad
        with _expect("1 NaN/Inf voxels", "/x/nan_case.nii"):
            validate_case(_case(image=image, path="/x/nan_case.nii"))


def test_validate_case_uses_name_without_path():
    with _expect("constant image", "layer 'CT'"):
        validate_case(_case(image=np.zeros((3, 3)), name="layer 'CT'"))


def test_validate_case_ignore_index_allowed():
    lab = _label()
    lab[0] = 255
    validate_case(_case(label=lab), num_classes=3)
    with _expect("labels out of range"):
        validate_case(_case(label=lab), num_classes=3, ignore_index=None)


def test_validate_cases_all_background():
    cases = [
        _case(label=np.zeros((4, 6, 5), np.uint8), name=f"c{i}", label_path=f"/l/c{i}.png") for i in range(2)
    ]
    with _expect("all labels are background", "/l/c0.png"):
        validate_cases(cases)
    mask = np.zeros((4, 6, 5), np.uint8)
    mask[1:3, 1:3, 1:3] = 255  # a 0/255 mask
    with _expect("converted to 0/1"):
        validate_cases([_case(label=mask)])


def test_validate_cases_counts_and_set_checks():
    labelled = [_case(label=_label(top=1)), _case(label=_label(top=4)), _case(label=_label(top=3)),
                _case(label=_label(top=2)), _case()]
    assert validate_cases(labelled) == 5
    assert infer_num_classes(labelled) == 5
    labelled = labelled[:2] + labelled[4:]  # values {0, 1, 4}: a gap, refused when the count is inferred
    assert validate_cases(labelled, num_classes=7) == 7
    with _expect("labels out of range"):
        validate_cases(labelled, num_classes=3)
    with _expect("same number of spatial dims", "flat.png"):
        validate_cases([_case(label=_label()), _case(image=_image((5, 5)), path="flat.png")])
    with _expect("give the number of classes"):
        validate_cases([_case()])
    assert validate_cases([_case()], num_classes=4) == 4
    with _expect("no cases"):
        validate_cases([])
    with _expect("no labelled case"):
        infer_num_classes([_case()])


# ------------------------------------------------------------------------------------------- real data


@needs_data
def test_real_chaos_folder():
    cases, names = load_msd_folder(DATA / "chaos_mr_t2", require_labels=True)
    assert len(cases) == 11 and names is None
    assert all(c.spacing == (7.7, 1.25, 1.25) for c in cases)
    assert all(c.label.dtype == np.uint8 and c.label.shape == c.image.shape for c in cases)
    assert validate_cases(cases) == 5


@needs_data
def test_real_msd_hippocampus_subset():
    root = DATA / "msd_hippocampus"
    images = sorted((root / "imagesTr").glob("*.nii.gz"))[:5]
    cases = load_pair_lists(images, [root / "labelsTr" / p.name for p in images])
    assert all(c.image.shape == c.label.shape and c.ndim == 3 for c in cases)
    assert validate_cases(cases) == 3


@needs_data
def test_real_hc18_pairs_with_csv_spacing():
    root = DATA / "hc18_fetal_head"
    table = root / "pixel_size_and_HC.csv"
    with open(table, newline="") as fh:
        sizes = {row["filename"]: float(row["pixel size(mm)"]) for row in csv.DictReader(fh)}
    cases = load_folder_pairs(root / "images", root / "labels", spacing_csv=table)
    assert len(cases) == len(sizes) == 150
    first = cases[0]
    assert first.ndim == 2 and first.image.shape == (540, 800)
    assert first.spacing == (sizes[Path(first.image_path).name],) * 2
    assert validate_cases(cases[:10]) == 2
