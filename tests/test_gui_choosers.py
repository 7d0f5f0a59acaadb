"""The layer chooser (a magicgui ComboBox behind a Qt facade) follows the viewer's layer list."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels

from napari_dmd._widgets._choosers import NONE_TEXT, LayerChooser


def _items(chooser: LayerChooser) -> list[str]:
    native = chooser.combo.native
    return [native.itemText(i) for i in range(native.count())]


def test_layer_chooser_lists_its_type_in_order_and_keeps_the_chosen_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    images = LayerChooser(viewer, Image)
    truth = LayerChooser(viewer, Labels, optional=True)
    assert _items(images) == [] and images.layer() is None
    assert _items(truth) == [NONE_TEXT] and truth.layer() is None and truth.currentText() == NONE_TEXT

    a = viewer.add_image(np.zeros((8, 8)), name="a")
    b = viewer.add_image(np.zeros((8, 8)), name="b")
    lab = viewer.add_labels(np.zeros((8, 8), dtype=np.uint8), name="lab")
    assert _items(images) == ["a", "b"] and _items(truth) == [NONE_TEXT, "lab"]
    assert images.layer() is a and truth.layer() is None  # the optional chooser stays on "(none)"

    images.set_layer("b")
    truth.set_layer(lab)
    assert images.layer() is b and images.currentText() == "b" and truth.layer() is lab
    seen: list = []
    images.combo.changed.connect(seen.append)  # re-listing alone signals nothing
    viewer.add_image(np.zeros((8, 8)), name="c")
    viewer.layers.remove("c")
    assert seen == []

    b.name = "b renamed"  # the chosen layer stays chosen under its new name
    assert _items(images) == ["a", "b renamed"] and images.layer() is b and images.currentText() == "b renamed"

    viewer.layers.move(viewer.layers.index(b), 0)  # re-listed in layer-list order, choice kept
    assert _items(images) == ["b renamed", "a"] and images.layer() is b

    viewer.layers.remove(a)
    assert images.layer() is b and seen == []
    viewer.layers.remove(b)
    assert _items(images) == [] and images.layer() is None and seen == [None]
    images.set_layer("gone")  # a name not listed is ignored
    assert images.layer() is None
    viewer.layers.remove(lab)
    assert _items(truth) == [NONE_TEXT] and truth.layer() is None


def test_layer_chooser_deleted_with_its_widget_stops_listening(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    chooser = LayerChooser(viewer, Image)
    chooser.deleteLater()
    qtbot.wait(50)
    listeners = len(viewer.layers.events.inserted.callbacks)
    viewer.add_image(np.zeros((8, 8)), name="after")  # no error from the deleted chooser, which disconnects
    assert "after" in viewer.layers
    assert len(viewer.layers.events.inserted.callbacks) == listeners - 1
