"""Segment shows an empty, locked labels layer while it predicts and writes the result into that same layer;
a cancelled or failed run leaves no layer behind."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from napari_dmd.models.presets import build_model
from napari_dmd.registry import REGISTRY, ModelEntry
from napari_dmd.segment import Segmenter

NAME = "student: gated"


@dataclass
class _Gated(Segmenter):
    """A real segmenter that waits for ``gate`` before predicting (so a test sees the run in flight)."""

    gate: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    fail: bool = False

    def __call__(self, image: np.ndarray, **kw) -> np.ndarray:
        assert self.gate.wait(30)
        if self.fail:
            raise RuntimeError("the model broke")
        return super().__call__(image, **kw)


@pytest.fixture
def gated():
    seg = _Gated(build_model((2, 4), 2, 3).eval(), num_classes=3, spatial_dims=2, patch_size=[32, 32],
                 class_names=["background", "a", "b"], name=NAME)
    REGISTRY.clear()
    REGISTRY.add(ModelEntry(name=NAME, role="student", segmenter=seg))
    yield seg
    seg.gate.set()
    REGISTRY.clear()


def _start(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((40, 48), dtype=np.float32), name="img",
                             scale=(0.5, 2.0))
    _, w = viewer.window.add_plugin_dock_widget("napari-dmd", "Segment")
    w.model_box.setCurrentText(NAME)
    w.image_box.set_layer(image)
    assert w.segment() is not None
    qtbot.waitUntil(lambda: "img (segmenting …)" in viewer.layers, timeout=10_000)
    return viewer, w


@pytest.mark.gui
def test_the_placeholder_becomes_the_result(make_napari_viewer, qtbot, gated):
    viewer, w = _start(make_napari_viewer, qtbot)
    placeholder = viewer.layers["img (segmenting …)"]
    assert not placeholder.editable and not placeholder.data.any()
    assert tuple(placeholder.scale) == (0.5, 2.0) and placeholder.data.shape == (40, 48)
    gated.gate.set()
    qtbot.waitUntil(lambda: w.worker is None, timeout=30_000)
    out = viewer.layers[-1]
    assert out is placeholder and out.name == f"img segmentation ({NAME})" and out.editable
    np.testing.assert_array_equal(out.data, Segmenter.__call__(gated, viewer.layers["img"].data))
    assert list(out.features["class"]) == ["background", "a", "b"]
    assert out.metadata["napari_dmd"]["model"] == NAME
    assert [lay.name for lay in viewer.layers] == ["img", out.name]


@pytest.mark.gui
@pytest.mark.parametrize("how", ["cancel", "fail"])
def test_a_cancelled_or_failed_run_leaves_no_layer(make_napari_viewer, qtbot, gated, how):
    viewer, w = _start(make_napari_viewer, qtbot)
    if how == "cancel":
        w.cancel()
    else:
        gated.fail = True
    gated.gate.set()
    qtbot.waitUntil(lambda: w.worker is None, timeout=30_000)
    assert [lay.name for lay in viewer.layers] == ["img"]
