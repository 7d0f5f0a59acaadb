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
    heads = heads_from_checkpoint(ckpt, model, path)
    if heads is not None:
        heads.to(next(model.parameters()).device)
    role = role or ("teacher" if ckpt.get("kind") == "teacher" else "student")
    return ModelEntry(name or f"{role}: {Path(path).parent.name}/{Path(path).name}", role, seg, model, heads,
                      (ckpt.get("heads") or {}).get("feature_scales"), str(path),
                      {"best_dice": ckpt.get("best_dice"), "iteration": ckpt.get("iteration"),
                       "spacing": ckpt.get("spacing"), "train_data": ckpt.get("train_data")})


def entry_from_teacher_file(path: str | Path, *, trust: bool = False, device: str = "auto") -> ModelEntry:
    """A registry entry (role teacher) for any teacher file or folder ``load_teacher`` reads.

    napari-dmd checkpoints keep their U-Net (feature inspection works); other formats are wrapped as a
    :class:`~napari_dmd.segment.Segmenter` around the adapter's network.
    """
    from .runtime import resolve_device
    from .teachers import detect_kind, load_teacher

    p = Path(path).expanduser()
    kind = detect_kind(p, trust=trust)
    name = f"teacher: {p.parent.name}/{p.name}" if p.is_file() else f"teacher: {p.name}"
    if kind == "checkpoint":
        return entry_from_checkpoint(p, role="teacher", device=device, name=name)
    teacher = load_teacher(p, kind=kind, trust=trust)
    dev = str(resolve_device(device))
    teacher.to(dev)
    patch = teacher.patch_size or [64 if teacher.spatial_dims == 2 else 32] * teacher.spatial_dims
    seg = Segmenter(teacher.model, teacher.num_classes, teacher.spatial_dims, list(patch), teacher.normalization,
                    teacher.class_names, dev, name=p.name)
    return ModelEntry(name, "teacher", seg, checkpoint=str(p),
                      info={"kind": kind, "trusted": trust, "spacing": getattr(teacher, "spacing", None)})


def teacher_from_entry(entry: ModelEntry) -> Any:
    """A private copy of a registry model as a Teacher (for distillation; the engine moves it to its device),
    with the spacing it was trained at where its file recorded one (checked against the data before a run)."""
    import copy

    from .teachers import ModelTeacher, load_teacher

    seg = entry.segmenter
    try:
        model = copy.deepcopy(seg.model)
    except Exception:  # noqa: BLE001 - not copyable in memory: reload from its file
        if entry.checkpoint is None:
            raise
        return load_teacher(entry.checkpoint, kind=entry.info.get("kind", "auto"),
                            trust=bool(entry.info.get("trusted", False)))
    return ModelTeacher(model, seg.num_classes, seg.spatial_dims, class_names=seg.class_names,
                        normalization=seg.normalization, patch_size=seg.patch_size,
                        spacing=entry.info.get("spacing"), source=entry.name)


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
