"""npe2 reader and writer: NIfTI/TIFF images and label maps, spacing as layer scale, exact affine round trip."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_dmd._reader import get_reader, is_label_path, read_layers
from napari_dmd._writer import write_labels
from napari_dmd.data.io import DataError, write_image


def _nifti(path: Path, array_xyz: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(array_xyz, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


OBLIQUE = np.array([[0.0, 0.0, -2.5, 40.25], [0.8, 0.1, 0.0, -12.5], [0.0, 0.8, 0.0, 7.0], [0, 0, 0, 1]])


@pytest.fixture
def oblique_case(tmp_path) -> tuple[Path, Path]:
    """An image with a rotated, anisotropic affine and its label map (in a labelsTr/ folder)."""
    rng = np.random.default_rng(0)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    img = _nifti(tmp_path / "imagesTr" / "case.nii.gz", rng.normal(size=(20, 16, 6)).astype(np.float32), OBLIQUE)
    lab = _nifti(tmp_path / "labelsTr" / "case.nii.gz", rng.integers(0, 3, (20, 16, 6)).astype(np.uint8), OBLIQUE)
    return img, lab


def test_get_reader_accepts_only_nifti_and_tiff(tmp_path):
    for name in ("a.nii", "a.nii.gz", "a.NII.GZ", "a.tif", "a.tiff", "a.png"):  # PNG: HC18 pixel-size CSVs
        assert get_reader(str(tmp_path / name)) is read_layers, name
    for name in ("a.npy", "a.gz", "a.txt", "a"):
        assert get_reader(str(tmp_path / name)) is None, name
    (tmp_path / "folder.nii").mkdir()
    assert get_reader(str(tmp_path / "folder.nii")) is None
    assert get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.tif")]) is read_layers
    assert get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.npy")]) is None


def test_label_names():
    for p in ("x/labelsTr/case.nii.gz", "liver_seg.nii.gz", "case-label.tif", "mask_001.tiff", "ct_labels.nii"):
        assert is_label_path(p), p
    for p in ("x/imagesTr/case_0000.nii.gz", "segmental.nii.gz", "hippocampus_001.nii.gz", "masked_ct.tif"):
        assert not is_label_path(p), p


def test_image_and_labels_layers_keep_spacing_and_affine(oblique_case):
    img_path, lab_path = oblique_case
    ((data, kw, kind),) = get_reader(str(img_path))(str(img_path))
    assert kind == "image"
    # the file's (z, y, x) = (6, 16, 20) voxel axes run along world x, z, y: shown in world axis order
    assert data.shape == (16, 20, 6)
    # spacing = column norms of the affine, in the layer's array order
    np.testing.assert_allclose(kw["scale"], (np.hypot(0.1, 0.8), 0.8, 2.5), rtol=1e-6)
    meta = kw["metadata"]["napari_dmd"]
    assert meta["file_axes"] == [1, 2, 0]
    assert np.array_equal(np.array(meta["file_affine"]), nib.load(str(img_path)).affine)
    np.testing.assert_array_equal(np.transpose(np.asarray(nib.load(str(img_path)).dataobj), (1, 0, 2)), data)
    assert meta["path"] == str(img_path) and list(meta["spacing"]) == list(kw["scale"])
    ((ldata, lkw, lkind),) = read_layers(str(lab_path))
    assert lkind == "labels" and ldata.dtype.kind in "iu" and set(np.unique(ldata)) <= {0, 1, 2}
    assert lkw["name"] == "case labels" and lkw["scale"] == kw["scale"]


def test_float_label_file_with_integer_values_opens_as_labels(tmp_path):
    arr = np.zeros((8, 8, 4), np.float32)
    arr[2:5, 2:5] = 2.0
    path = _nifti(tmp_path / "organ_seg.nii.gz", arr, np.eye(4))
    ((data, kw, kind),) = read_layers(str(path))
    assert kind == "labels" and data.dtype == np.uint8 and data.max() == 2
    arr[0, 0, 0] = 0.5  # not a label map after all
    path = _nifti(tmp_path / "organ_seg.nii.gz", arr, np.eye(4))
    assert read_layers(str(path))[0][2] == "image"


def test_nifti_round_trip_keeps_affine_exactly(oblique_case, tmp_path):
    img_path, lab_path = oblique_case
    (_, kw, _), = read_layers(str(img_path))
    (labels, _, _), = read_layers(str(lab_path))
    out = tmp_path / "out" / "pred.nii.gz"
    assert write_labels(str(out), labels, {"scale": kw["scale"], "metadata": kw["metadata"]}) == [str(out)]
    written, source = nib.load(str(out)), nib.load(str(img_path))
    assert np.array_equal(written.affine, source.affine)
    assert np.array_equal(np.asarray(written.dataobj), np.asarray(nib.load(str(lab_path)).dataobj))
    (back, bkw, _), = read_layers(str(out))
    assert np.array_equal(back, labels) and bkw["scale"] == kw["scale"]


def test_real_hippocampus_round_trip(hippocampus_dir, tmp_path):
    img_path = sorted((hippocampus_dir / "imagesTr").glob("*.nii.gz"))[0]
    lab_path = hippocampus_dir / "labelsTr" / img_path.name
    (image, kw, kind), = read_layers(str(img_path))
    (labels, lkw, lkind), = read_layers(str(lab_path))
    assert (kind, lkind) == ("image", "labels") and image.shape == labels.shape
    out = tmp_path / f"{img_path.name.split('.')[0]}_pred.nii.gz"
    write_labels(str(out), labels, {"scale": kw["scale"], "metadata": kw["metadata"]})
    src, dst = nib.load(str(img_path)), nib.load(str(out))
    assert np.array_equal(dst.affine, src.affine)
    assert np.array_equal(dst.header.get_zooms(), src.header.get_zooms())
    assert np.array_equal(np.asarray(dst.dataobj), np.asarray(nib.load(str(lab_path)).dataobj))


def test_tiff_round_trip_keeps_spacing(tmp_path):
    labels = np.random.default_rng(1).integers(0, 4, (5, 12, 10)).astype(np.uint8)
    out = tmp_path / "seg.tif"
    write_labels(str(out), labels, {"scale": (2.0, 0.5, 0.25), "metadata": {}})
    (back, kw, kind), = read_layers(str(out))
    assert kind == "labels" and np.array_equal(back, labels)
    np.testing.assert_allclose(kw["scale"], (2.0, 0.5, 0.25), rtol=1e-6)


def test_writer_without_metadata_uses_scale_affine(tmp_path):
    out = tmp_path / "pred.nii"
    write_labels(str(out), np.ones((4, 6), np.uint8), {"scale": (0.5, 2.0)})
    assert np.array_equal(nib.load(str(out)).affine, np.diag([2.0, 0.5, 1.0, 1.0]))


def test_writer_refuses_other_extensions_and_writes_nothing(tmp_path):
    for name in ("pred.png", "pred.npy", "pred"):
        with pytest.raises(DataError, match=r"\.nii\.gz"):
            write_labels(str(tmp_path / name), np.ones((4, 4), np.uint8), {})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="2D or 3D"):
        write_labels(str(tmp_path / "x.tif"), np.ones((2, 3, 4, 4), np.uint8), {})


def test_writer_overwrites_only_after_the_dialog(tmp_path):
    """napari's save dialog asks before replacing a file; the writer itself then replaces it atomically."""
    out = tmp_path / "pred.nii.gz"
    write_image(out, np.zeros((4, 4), np.uint8))
    write_labels(str(out), np.full((4, 4), 3, np.uint8), {"scale": (1.0, 1.0)})
    assert np.asarray(nib.load(str(out)).dataobj).max() == 3
    assert [p.name for p in tmp_path.iterdir()] == ["pred.nii.gz"]  # no temp file left


def test_bad_file_raises_clear_error(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti header" * 3))
    with pytest.raises(DataError, match="broken.nii.gz"):
        read_layers(str(bad))
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_layers(str(empty))


@pytest.mark.gui
def test_viewer_open_and_save_through_npe2(make_napari_viewer, oblique_case, tmp_path):
    """File > Open / Save path: napari picks our reader and writer from the manifest."""
    img_path, lab_path = oblique_case
    viewer = make_napari_viewer()
    [image] = viewer.open(str(img_path), plugin="napari-dmd")
    [labels] = viewer.open(str(lab_path), plugin="napari-dmd")
    assert image._type_string == "image" and labels._type_string == "labels"
    np.testing.assert_allclose(image.scale, (np.hypot(0.1, 0.8), 0.8, 2.5), rtol=1e-6)
    out = tmp_path / "saved.nii.gz"
    saved = labels.save(str(out), plugin="napari-dmd")
    assert saved == [str(out)]
    assert np.array_equal(nib.load(str(out)).affine, nib.load(str(img_path)).affine)


@pytest.mark.gui
def test_reader_preference_makes_plain_viewer_open_use_the_plugin(make_napari_viewer, oblique_case, monkeypatch):
    """napari's own reader also claims *.nii.gz / *.tif (and viewer.open defaults to plugin='napari'); the user
    guide's reader preference makes File > Open, drag and drop and viewer.open(path, plugin=None) pick
    napari-dmd, with the world geometry."""
    import napari.settings
    from napari.settings import NapariSettings, get_settings

    monkeypatch.setattr(napari.settings, "_SETTINGS", NapariSettings(config_path=None))  # never saved
    img_path, _ = oblique_case
    viewer = make_napari_viewer()
    prefs = get_settings().plugins
    prefs.extension2reader = {**prefs.extension2reader, "*.nii.gz": "napari-dmd", "*.nii": "napari-dmd",
                              "*.tif": "napari-dmd", "*.tiff": "napari-dmd"}
    [image] = viewer.open(str(img_path), plugin=None)
    assert image.metadata["napari_dmd"]["file_axes"] == [1, 2, 0]
    world = (OBLIQUE @ np.array([3.0, 4.0, 5.0, 1.0]))[:3][::-1]
    np.testing.assert_allclose(image.world_to_data(world), (4.0, 3.0, 5.0), atol=1e-6)
    assert [str(u) for u in image.units] == ["millimeter"] * 3
