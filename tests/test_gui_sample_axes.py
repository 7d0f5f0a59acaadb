"""The sample data's slider reads z (and the layers' axes y, x), not -3/-2/-1."""

from __future__ import annotations


def test_sample_phantom_3d_axes_are_named(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-dmd", "phantom-3d")
    assert [tuple(layer.axis_labels) for layer in layers] == [("z", "y", "x")] * 2
    assert tuple(viewer.dims.axis_labels) == ("z", "y", "x")


def test_sample_phantom_2d_axes_are_named(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dmd", "phantom-2d")
    assert tuple(viewer.dims.axis_labels) == ("y", "x")
