"""Exactly which voxels of a labels layer the user painted since the last round of corrections.

:class:`PaintTracker` follows one napari Labels layer. Every edit napari records in the layer's undo history
(brush, eraser, fill, polygon, ``data_setitem``) arrives as a ``layer.events.paint`` event carrying the history
item (its atoms: the voxels changed, their values before and after); the tracker keeps those items in the same
order as napari's undo stack, and a count of how many of them are applied. napari emits no event on undo or
redo, so the tracker wraps the layer's ``undo`` / ``redo`` methods (the ones napari's Ctrl+Z / Ctrl+Shift+Z key
bindings call): after napari has replayed its history item the tracker checks, voxel by voxel, that the top
item is now undone (or the next one redone) and moves its count. The painted set is the union of the applied
items' voxels: a stroke undone leaves it, a stroke redone comes back, a new stroke after an undo drops the redo
items as napari does. Nothing is guessed from the layer's values: painting a voxel back to the student's label
still counts it as corrected.

napari records only voxels an edit changes, so a stroke over voxels that already hold the brush's label
changes (and counts) nothing. Replacing the layer's data (``layer.data = ...``, e.g. Compare run again) drops
the painted set: the corrections are gone from the layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Edit", "PaintTracker", "edit_from_item"]


@dataclass
class Edit:
    """One undoable edit (a napari history item): flat indices of the voxels it changed (unique), their values
    before the edit (the first atom's) and after it (the last atom's)."""

    index: np.ndarray
    before: np.ndarray
    after: np.ndarray

    def holds(self, data: np.ndarray, values: np.ndarray) -> bool:
        """Whether every voxel of the edit holds ``values`` in ``data``."""
        return bool(self.index.size) and np.array_equal(data.flat[self.index], values)


def _atom_arrays(atom: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat indices, old values, new values) of one napari history atom.

    napari 0.9 stores brush, fill and polygon edits as a bounding box (``slice_key``) with a mask of the changed
    voxels (None: all of them) and the old values under it; ``data_setitem`` (and napari < 0.9) stores a
    ``(indices, old_values, new_values)`` tuple of fancy indices.
    """
    if hasattr(atom, "slice_key"):
        ranges = [s.indices(n) for s, n in zip(atom.slice_key, shape)]
        box = tuple(len(range(*r)) for r in ranges)
        starts = np.array([r[0] for r in ranges])
        if atom.mask is None:
            local = np.indices(box).reshape(len(box), -1)
            old = np.asarray(atom.old_values).reshape(-1)
        else:
            local = np.array(np.nonzero(np.asarray(atom.mask).reshape(box)))
            old = np.asarray(atom.old_values).reshape(-1)
        coords = tuple(local + starts[:, None])
        new = np.broadcast_to(np.asarray(atom.new_value), old.shape)
    else:
        indices, old, new = atom
        coords = tuple(np.asarray(i).reshape(-1) for i in indices)
        old = np.asarray(old).reshape(-1)
        new = np.broadcast_to(np.asarray(new), old.shape).reshape(-1)
    flat = np.ravel_multi_index(coords, shape) if coords and coords[0].size else np.zeros(0, np.int64)
    return np.asarray(flat, np.int64), old, np.asarray(new)


def edit_from_item(item: Sequence[Any], shape: tuple[int, ...]) -> Edit:
    """An :class:`Edit` from a napari history item (a list of atoms applied together, in order)."""
    parts = [_atom_arrays(atom, shape) for atom in item]
    if not parts:
        return Edit(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    index = np.concatenate([p[0] for p in parts])
    old = np.concatenate([p[1] for p in parts])
    new = np.concatenate([p[2] for p in parts])
    uniq, first = np.unique(index, return_index=True)
    _, last_rev = np.unique(index[::-1], return_index=True)
    last = index.size - 1 - last_rev
    return Edit(uniq, old[first], new[last])


class PaintTracker:
    """The voxels of ``layer`` painted since :meth:`reset` (or since the tracker was made), following undo/redo.

    ``on_change()`` is called after every change of the painted set. :meth:`detach` stops following the layer
    and gives it back its own ``undo`` / ``redo``.
    """

    def __init__(self, layer: Any, on_change: Callable[[], Any] | None = None) -> None:
        self.layer = layer
        self.on_change = on_change
        self.edits: list[Edit] = []
        self.applied = 0  # edits[:applied] are in the layer; the rest were undone (napari's redo stack)
        self._union: np.ndarray | None = None
        self._undo, self._redo = self._wrap("undo", -1), self._wrap("redo", +1)
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_data)

    # ------------------------------------------------------------------------------------------ events
    def _wrap(self, name: str, step: int) -> Callable[[], None]:
        original = getattr(self.layer, name)

        def wrapped() -> None:
            original()
            self._moved(step)

        wrapped.__doc__ = getattr(original, "__doc__", None)
        setattr(self.layer, name, wrapped)  # an instance attribute: napari's key bindings call layer.undo()
        return wrapped

    def _data(self) -> np.ndarray:
        return np.asarray(self.layer.data)

    def _moved(self, step: int) -> None:
        """After napari's undo (step -1) or redo (+1): move the applied count if napari moved our top edit."""
        data, k = self._data(), self.applied
        if step < 0 and k > 0 and self.edits[k - 1].holds(data, self.edits[k - 1].before):
            self.applied -= 1
        elif step > 0 and k < len(self.edits) and self.edits[k].holds(data, self.edits[k].after):
            self.applied += 1
        else:
            return  # napari's history reached past this round's edits (or held nothing to replay)
        self._changed()

    def _on_paint(self, event: Any) -> None:
        """A new edit entered napari's undo history: the redo items are gone, this one is applied."""
        edit = edit_from_item(list(getattr(event, "value", None) or []), tuple(self.layer.data.shape))
        del self.edits[self.applied:]
        if edit.index.size:
            self.edits.append(edit)
        self.applied = len(self.edits)
        self._changed()

    def _on_data(self, _event: Any = None) -> None:
        """The layer's data was replaced: what was painted is no longer in it."""
        if self.edits:
            self.reset()

    def _changed(self) -> None:
        self._union = None
        if self.on_change is not None:
            self.on_change()

    # -------------------------------------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget what was painted (a new round starts from here)."""
        self.edits = []
        self.applied = 0
        self._changed()

    def detach(self) -> None:
        """Stop following the layer; it gets its own undo / redo back."""
        for name, ours in (("undo", self._undo), ("redo", self._redo)):
            if self.layer.__dict__.get(name) is ours:
                delattr(self.layer, name)
        for emitter, slot in ((self.layer.events.paint, self._on_paint), (self.layer.events.data, self._on_data)):
            emitter.disconnect(slot)
        self.on_change = None

    def indices(self) -> np.ndarray:
        """Flat indices (sorted, unique) of the painted voxels."""
        if self._union is None:
            parts = [e.index for e in self.edits[:self.applied]]
            self._union = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        return self._union

    @property
    def count(self) -> int:
        """Number of painted voxels."""
        return int(self.indices().size)

    def slices(self, axis: int = 0) -> int:
        """Number of slices along ``axis`` holding painted voxels (a 2D layer: 1 when any is painted)."""
        idx = self.indices()
        shape = tuple(self.layer.data.shape)
        if not idx.size:
            return 0
        if len(shape) < 3:
            return 1
        return int(np.unique(np.unravel_index(idx, shape)[axis]).size)

    def mask(self) -> np.ndarray:
        """Boolean array of the layer's shape: True where painted."""
        out = np.zeros(tuple(self.layer.data.shape), bool)
        out.flat[self.indices()] = True
        return out
