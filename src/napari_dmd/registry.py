"""The models open in this session (teachers and students), shared by the plugin's widgets.

Qt-free: an evented list built on psygnal (which napari already depends on). Widgets listen to
``REGISTRY.changed`` and offer ``REGISTRY.names(role)`` in their model choosers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psygnal import Signal

from .checkpoint import heads_from_checkpoint, load_checkpoint, model_from_checkpoint
from .models.heads import ScaleHeads
from .models.unet import UNet
from .segment import Segmenter


@dataclass
class ModelEntry:
    """A usable model: its segmenter, and the raw U-Net (+ scale heads) for feature inspection."""

    name: str
    role: str  # "teacher" | "student"
    segmenter: Segmenter
    model: UNet | None = None
    heads: ScaleHeads | None = None
    feature_scales: list[int] | None = None
    checkpoint: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def entry_from_checkpoint(path: str | Path, role: str | None = None, device: str = "auto",
                          name: str | None = None) -> ModelEntry:
    """Load a napari-dmd checkpoint (weights only) as a registry entry."""
    ckpt = load_checkpoint(path)
    seg = Segmenter.from_checkpoint(path, device=device)
    model = seg.model if isinstance(seg.model, UNet) else model_from_checkpoint(ckpt, path)
    heads = heads_from_checkpoint(ckpt, model)
    if heads is not None:
        heads.to(next(model.parameters()).device)
    role = role or ("teacher" if ckpt.get("kind") == "teacher" else "student")
    return ModelEntry(name or f"{role}: {Path(path).parent.name}/{Path(path).name}", role, seg, model, heads,
                      (ckpt.get("heads") or {}).get("feature_scales"), str(path),
                      {"best_dice": ckpt.get("best_dice"), "iteration": ckpt.get("iteration")})


class ModelRegistry:
    """Name -> ModelEntry, with a ``changed`` signal. Adding an existing name replaces it."""

    changed = Signal()

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}

    def add(self, entry: ModelEntry) -> ModelEntry:
        self._entries[entry.name] = entry
        self.changed.emit()
        return entry

    def remove(self, name: str) -> None:
        if self._entries.pop(name, None) is not None:
            self.changed.emit()

    def get(self, name: str) -> ModelEntry:
        if name not in self._entries:
            raise KeyError(f"no model named {name!r} is loaded")
        return self._entries[name]

    def names(self, role: str | None = None) -> list[str]:
        return [n for n, e in self._entries.items() if role is None or e.role == role]

    def latest(self, role: str) -> ModelEntry | None:
        names = self.names(role)
        return self._entries[names[-1]] if names else None

    def clear(self) -> None:
        self._entries.clear()
        self.changed.emit()


REGISTRY = ModelRegistry()
