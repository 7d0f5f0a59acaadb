"""Sample data for File > Open Sample > napari-dmd: the project's own synthetic phantom."""

from __future__ import annotations

from .phantom import PHANTOM_CLASS_NAMES, make_phantom


def _layers(shape: tuple[int, ...], name: str) -> list[tuple]:
    image, label = make_phantom(shape, seed=0)
    meta = {"napari_dmd": {"class_names": list(PHANTOM_CLASS_NAMES), "spacing": [1.0] * len(shape)}}
    axes = ("z", "y", "x")[-len(shape):]  # the slider reads z, not -3
    return [
        (image, {"name": f"{name}", "metadata": meta, "colormap": "gray", "axis_labels": axes}, "image"),
        (label, {"name": f"{name} labels", "metadata": meta, "opacity": 0.4, "axis_labels": axes}, "labels"),
    ]


def phantom_3d() -> list[tuple]:
    """A 48 x 96 x 96 multi-class phantom volume with its labels."""
    return _layers((48, 96, 96), "phantom 3D")


def phantom_2d() -> list[tuple]:
    """A 192 x 192 multi-class phantom image with its labels."""
    return _layers((192, 192), "phantom 2D")
