"""HC18-style PNG images open in napari with the pixel size (mm) of a CSV beside them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_dmd._reader import get_reader, read_layers
from napari_dmd.data.cases import find_pixel_size
from napari_dmd.data.io import DataError

CSV = "filename,pixel size(mm),head circumference (mm)\n000_HC.png,0.0691,44.3\n001_HC.png,0.12,50.1\n"


def _png(path, value: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (np.arange(20 * 30).reshape(20, 30) % 200 + value).astype(np.uint8)
    Image.fromarray(array).save(path)
    return str(path)


def test_png_takes_the_pixel_size_of_a_csv_in_its_folder_or_the_one_above(tmp_path):
    # HC18 as published: training_set/ beside training_set_pixel_size_and_HC.csv
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")  # another CSV is passed over
    (tmp_path / "training_set_pixel_size_and_HC.csv").write_text(CSV)
    img = _png(tmp_path / "training_set" / "000_HC.png")
    ann = _png(tmp_path / "training_set" / "000_HC_Annotation.png")
    assert get_reader(img) is read_layers
    ((array, kw, kind),) = read_layers(img)
    assert kind == "image" and array.shape == (20, 30)
    assert kw["scale"] == pytest.approx((0.0691, 0.0691))
    assert kw["metadata"]["napari_dmd"]["spacing_csv"].endswith("training_set_pixel_size_and_HC.csv")
    assert kw["metadata"]["napari_dmd"]["spacing"] == pytest.approx([0.0691, 0.0691])
    ((_, kw, _),) = read_layers(ann)  # the annotation is looked up under its image's name
    assert kw["scale"] == pytest.approx((0.0691, 0.0691))
    # this repository's layout: images/ and labels/ with the CSV in the folder above; labels open as labels
    (tmp_path / "hc" / "pixel_size_and_HC.csv").parent.mkdir()
    (tmp_path / "hc" / "pixel_size_and_HC.csv").write_text(CSV)
    lab = tmp_path / "hc" / "labels" / "001_HC.png"
    lab.parent.mkdir()
    Image.fromarray((np.arange(600).reshape(20, 30) % 2).astype(np.uint8)).save(lab)
    ((_, kw, kind),) = read_layers(str(lab))
    assert kind == "labels" and kw["scale"] == pytest.approx((0.12, 0.12))
    # a PNG that no CSV lists opens with scale 1
    other = _png(tmp_path / "hc" / "images" / "999_HC.png")
    assert find_pixel_size(other) is None
    ((_, kw, _),) = read_layers(other)
    assert kw["scale"] == pytest.approx((1.0, 1.0)) and "spacing_csv" not in kw["metadata"]["napari_dmd"]


def test_bad_pixel_size_in_the_csv_gives_one_line(tmp_path):
    (tmp_path / "sizes.csv").write_text("filename,pixel size(mm)\n000_HC.png,-1\n")
    img = _png(tmp_path / "000_HC.png")
    with pytest.raises(DataError, match=r"sizes\.csv: line 2: pixel size -1.0 must be positive"):
        read_layers(img)
