"""OME-Zarr images (OME-NGFF 0.4 on Zarr v2, 0.5 on Zarr v3): reader, read_image and the CLI, written with zarr."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_dmd._reader import get_reader, read_layers
from napari_dmd.data.io import DataError, read_image

zarr = pytest.importorskip("zarr")


def _ome_zarr(path, levels, axes, scales, translation=None, version="0.4", whole=None):
    """Write an OME-Zarr image: ``levels`` (full resolution first), ``axes`` as OME-NGFF dicts, one scale
    per level, an optional level-0 translation and an optional image-wide transformation list."""
    fmt = 2 if version == "0.4" else 3
    g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    datasets = []
    for i, (data, scale) in enumerate(zip(levels, scales)):
        g.create_array(str(i), data=data, chunks=data.shape)
        ct = [{"type": "scale", "scale": scale}]
        if translation is not None:
            ct.append({"type": "translation", "translation": translation})
        datasets.append({"path": str(i), "coordinateTransformations": ct})
    ms = {"version": version, "name": "img", "axes": axes, "datasets": datasets}
    if whole is not None:
        ms["coordinateTransformations"] = whole
    if version == "0.4":
        g.attrs["multiscales"] = [ms]
    else:
        del ms["version"]
        g.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    return path


CZYX = [{"name": "c", "type": "channel"}, {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]


def test_ome_zarr_04_level0_spacing_origin_in_mm_and_axis_names(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.random((1, 6, 8, 10)).astype(np.float32)
    low = vol[:, :, ::2, ::2].copy()
    path = _ome_zarr(tmp_path / "cells.ome.zarr", [vol, low], CZYX,
                     [[1, 2.0, 0.5, 0.25], [1, 2.0, 1.0, 0.5]], translation=[0, 10.0, 20.0, 30.0])
    data = read_image(path)
    assert np.array_equal(data.array, vol[0])  # level 0, channel axis of length 1 dropped
    assert data.spacing == pytest.approx((2e-3, 0.5e-3, 0.25e-3))  # micrometer -> mm, array order
    np.testing.assert_allclose(data.affine[:3, :3], np.diag([0.25e-3, 0.5e-3, 2e-3]))  # NIfTI (x, y, z)
    np.testing.assert_allclose(data.affine[:3, 3], [0.030, 0.020, 0.010])
    assert data.axes == ("z", "y", "x")
    assert get_reader(str(path)) is read_layers
    ((array, kw, kind),) = read_layers(str(path))
    assert kind == "image" and kw["name"] == "cells" and np.array_equal(array, vol[0])
    assert kw["scale"] == pytest.approx((2e-3, 0.5e-3, 0.25e-3))
    np.testing.assert_allclose(np.asarray(kw["affine"])[:3, 3], [0.010, 0.020, 0.030])  # world (z, y, x) origin
    assert tuple(kw["axis_labels"]) == ("z", "y", "x")


def test_ome_zarr_05_2d_with_image_wide_scale_and_labels_group(tmp_path):
    img = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16)
    yx = [{"name": "y", "type": "space", "unit": "millimeter"}, {"name": "x", "type": "space", "unit": "millimeter"}]
    path = _ome_zarr(tmp_path / "us.zarr", [img], yx, [[0.5, 0.5]], version="0.5",
                     whole=[{"type": "scale", "scale": [2.0, 3.0]}])
    data = read_image(path)
    assert data.array.shape == (12, 16) and data.spacing == pytest.approx((1.0, 1.5))
    seg = (img % 3).astype(np.uint8)
    lab = _ome_zarr(path / "labels" / "seg", [seg], yx, [[1.0, 1.5]], version="0.5")
    ((array, kw, kind),) = read_layers(str(lab))
    assert kind == "labels" and np.array_equal(array, seg)


def test_bad_ome_zarr_gives_one_line(tmp_path, monkeypatch):
    two = _ome_zarr(tmp_path / "two.zarr", [np.ones((2, 4, 5, 6), np.float32)], CZYX, [[1, 1, 1, 1]])
    with pytest.raises(DataError, match=r"two\.zarr: OME-Zarr image with 2 channel points along axis 'c'"):
        read_image(two)
    axes = [dict(a) for a in CZYX]
    axes[1]["unit"] = "second"
    sec = _ome_zarr(tmp_path / "sec.zarr", [np.ones((1, 4, 5, 6), np.float32)], axes, [[1, 1, 1, 1]])
    with pytest.raises(DataError, match=r"sec\.zarr: OME-Zarr axis 'z' has unit 'second', not a length"):
        read_image(sec)
    ok = _ome_zarr(tmp_path / "ok.zarr", [np.ones((1, 4, 5, 6), np.float32)], CZYX, [[1, 1, 1, 1]])
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(DataError, match=r"ok\.zarr: reading OME-Zarr needs the zarr package; install it with "
                                        r"pip install 'napari-dmd\[zarr\]'"):
        read_image(ok)


def test_cli_predict_and_cases_read_ome_zarr(tmp_path, capsys):
    import torch

    from napari_dmd.checkpoint import save_checkpoint
    from napari_dmd.cli.main import main
    from napari_dmd.data.cases import load_folder_pairs, load_pair_lists
    from napari_dmd.models.unet import UNet

    torch.manual_seed(0)
    model = UNet(3, 1, 3, (4, 8))
    ckpt = save_checkpoint(tmp_path / "t3.pt", {"kind": "teacher", "model": model.config(),
                                                "state_dict": model.state_dict(), "normalization": "zscore",
                                                "patch_size": [16] * 3, "class_names": None})
    vol = np.random.default_rng(3).random((1, 8, 16, 16)).astype(np.float32)
    (tmp_path / "imgs").mkdir()
    src = _ome_zarr(tmp_path / "imgs" / "vol.ome.zarr", [vol], CZYX, [[1, 2.0, 0.5, 0.5]],
                    translation=[0, 4.0, 8.0, 12.0])
    out = tmp_path / "out"
    out.mkdir()
    assert main(["predict", "--model", str(ckpt), "--input", str(src), "--output", str(out), "--quiet"]) == 0
    written = read_image(out / "vol.nii.gz")
    assert written.array.shape == (8, 16, 16)
    np.testing.assert_allclose(written.affine, read_image(src).affine, atol=1e-6)
    assert main(["predict", "--model", str(ckpt), "--input", str(tmp_path / "imgs"), "--output",
                 str(tmp_path / "out2"), "--quiet"]) == 0  # a folder of OME-Zarr images
    assert (tmp_path / "out2" / "vol.nii.gz").is_file()
    (case,) = load_pair_lists([src])
    assert case.name == "vol" and case.spacing == pytest.approx((2e-3, 0.5e-3, 0.5e-3))
    (case,) = load_folder_pairs(tmp_path / "imgs")
    assert case.name == "vol"
