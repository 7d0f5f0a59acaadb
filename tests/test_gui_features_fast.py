"""Features' one-click path in a real napari viewer (pytest-qt, Xvfb): a small job (one slice through a small
student) is computed in the main thread, so its layers are in place when the click returns; a repeated click
writes into the same layers; a large image or a big slice still goes to a worker thread. Every layer's data is
checked against :func:`napari_dmd.features.compute_features` called here, never a timing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qtpy.QtCore import Qt

from napari_dmd.features import compute_features
from napari_dmd.models.heads import ScaleHeads
from napari_dmd.models.presets import build_model
from napari_dmd.phantom import PHANTOM_CLASS_NAMES, make_phantom
from napari_dmd.registry import REGISTRY, ModelEntry
from napari_dmd.segment import Segmenter

pytestmark = pytest.mark.gui

NAME = "student: features fast"


@pytest.fixture
def student():
    """A freshly built tiny 2D student (channels 4,8,16: decoder strides 2 and 1) with a head at stride 2."""
    torch.manual_seed(0)
    n = len(PHANTOM_CLASS_NAMES)
    model = build_model((4, 8, 16), 2, n).eval()
    heads = ScaleHeads(2, [8], n).eval()
    seg = Segmenter(model, n, 2, [32, 32], "zscore", list(PHANTOM_CLASS_NAMES), "cpu", name=NAME)
    entry = ModelEntry(NAME, "student", seg, model, heads=heads, feature_scales=[0])
    REGISTRY.add(entry)
    yield entry
    REGISTRY.remove(NAME)


def _widget(viewer, image):
    _, fw = viewer.window.add_plugin_dock_widget("napari-dmd", "Features")
    fw.set_model(NAME)
    fw.image_chooser.set_layer(image)
    return fw


def _headless(entry, image, stages, slice_index):
    data = np.asarray(image.data)
    return compute_features(entry.model, data, heads=entry.heads, head_stages=entry.feature_scales,
                            feature_scales=stages, normalization="zscore", spacing=tuple(image.scale),
                            origin=tuple(image.translate), slice_index=slice_index)


def _assert_maps(viewer, names, ref):
    """The four layers (PCA, energy, channel 1, head) hold ``ref``'s maps; the energy's contrast limits its range."""
    pca, energy, channel, head = (viewer.layers[n] for n in names)
    np.testing.assert_allclose(pca.data, ref.pca_rgb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(energy.data, ref.energy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(energy.contrast_limits, (ref.energy.min(), ref.energy.max()), rtol=1e-6)
    np.testing.assert_allclose(channel.data, ref.channel(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(head.data, ref.head_labels)


def test_small_show_features_runs_in_the_click_and_equals_compute_features(make_napari_viewer, qtbot, student):
    viewer = make_napari_viewer()
    vol, _ = make_phantom((6, 48, 48), seed=0)
    image = viewer.add_image(vol, name="vol", scale=(2.0, 1.0, 1.0))
    viewer.dims.set_point(0, 2 * 2.0)  # slice 2
    fw = _widget(viewer, image)
    for box in fw.kind_boxes.values():  # every kind: three images and the head's labels
        box.setChecked(True)
    fw.channel_spin.setValue(1)
    assert fw.scale_strides() == [2, 1]
    updated: list[list[str]] = []
    fw.layers_updated.connect(updated.append)
    qtbot.mouseClick(fw.show_button, Qt.MouseButton.LeftButton)
    # no event loop has run: the layers are there when the click returns
    assert fw.ran_inline and fw.worker is None and not fw._busy and fw.computations == 1 and len(updated) == 1
    names = ["vol features s2 PCA", "vol features s2 energy", "vol features s2 channel 1", "vol features head s2"]
    assert updated[0] == names
    [ref] = _headless(student, image, [0], 2)
    _assert_maps(viewer, names, ref)
    pca = viewer.layers[names[0]]
    assert tuple(pca.contrast_limits) == (0.0, 1.0)  # a PCA map is in [0, 1]: given, not computed by napari
    assert pca.metadata["napari_dmd"]["slice"] == 2

    # another slice, clicked again: the same layer objects, now holding that slice's maps
    layers = [id(viewer.layers[n]) for n in names]
    viewer.dims.set_point(0, 4 * 2.0)
    qtbot.mouseClick(fw.show_button, Qt.MouseButton.LeftButton)
    assert fw.ran_inline and fw.computations == 2
    assert [id(viewer.layers[n]) for n in names] == layers
    [ref4] = _headless(student, image, [0], 4)
    assert not np.allclose(ref4.energy, ref.energy)  # a different slice: different maps
    _assert_maps(viewer, names, ref4)
    assert viewer.layers[names[0]].metadata["napari_dmd"]["slice"] == 4

    # the same slice again, of changed data: the new maps are written into the layers' own arrays
    arrays = [viewer.layers[n].data for n in names[:3]]
    rng = np.random.default_rng(1)
    image.data = (vol + rng.normal(0, 0.5, vol.shape)).astype(vol.dtype)
    qtbot.mouseClick(fw.show_button, Qt.MouseButton.LeftButton)
    assert fw.ran_inline and fw.computations == 3
    assert all(viewer.layers[n].data is a for n, a in zip(names, arrays))
    [ref5] = _headless(student, image, [0], 4)
    assert not np.allclose(ref5.pca_rgb, ref4.pca_rgb)
    _assert_maps(viewer, names, ref5)

    # a bad image fails in the click with one message, and adds nothing
    bad = viewer.add_image(np.full((16, 16), np.nan, np.float32), name="broken")
    fw.image_chooser.set_layer(bad)
    fw.show_features()
    assert "NaN" in fw.last_error and not fw._busy and fw.computations == 3
    assert not [lay for lay in viewer.layers if lay.name.startswith("broken features")]


@pytest.mark.parametrize("shape", [(400, 400), (72, 128, 128)], ids=["big slice", "big volume"])
def test_a_large_input_still_goes_to_the_worker(make_napari_viewer, qtbot, student, shape):
    """400x400 through this student is past the main-thread limit on its own; 72x128x128 is one small slice
    of a volume too large to normalise in the main thread."""
    viewer = make_napari_viewer()
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    image = viewer.add_image(data, name="big")
    fw = _widget(viewer, image)
    with qtbot.waitSignal(fw.layers_updated, timeout=60_000):
        qtbot.mouseClick(fw.show_button, Qt.MouseButton.LeftButton)
        assert not fw.ran_inline and fw.worker is not None and fw._busy  # the click returned before the result
    pca = viewer.layers["big features s2 PCA"]
    slice_index = pca.metadata["napari_dmd"]["slice"]  # the slice the viewer showed (a volume), else None
    assert (slice_index is None) == (len(shape) == 2)
    [ref] = _headless(student, image, [0], slice_index)
    np.testing.assert_allclose(pca.data, ref.pca_rgb, rtol=1e-5, atol=1e-6)
