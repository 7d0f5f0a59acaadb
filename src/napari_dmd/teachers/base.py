"""The teacher protocol and the adapter for the project's own checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..checkpoint import load_checkpoint, model_from_checkpoint


@runtime_checkable
class Teacher(Protocol):
    """Maps (N, 1, *spatial) normalized images to (N, num_classes, *spatial) logits."""

    num_classes: int
    spatial_dims: int
    class_names: list[str] | None
    normalization: str
    patch_size: list[int] | None
    source: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device | str) -> Teacher: ...


class ModelTeacher:
    """A teacher backed by an in-memory torch module (our U-Net or any logits-returning network)."""

    def __init__(self, model: nn.Module, num_classes: int, spatial_dims: int, *,
                 class_names: list[str] | None = None, normalization: str = "zscore",
                 patch_size: list[int] | None = None, source: str = "in-memory model") -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.num_classes = int(num_classes)
        self.spatial_dims = int(spatial_dims)
        self.class_names = class_names
        self.normalization = normalization
        self.patch_size = list(patch_size) if patch_size else None
        self.source = source

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def to(self, device: torch.device | str) -> ModelTeacher:
        self.model.to(device)
        return self

    def parameters(self):
        return self.model.parameters()


def load_teacher(path: str | Path) -> ModelTeacher:
    """Load a teacher from a napari-dmd checkpoint (weights-only, never executes code)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    return ModelTeacher(model, model.num_classes, model.spatial_dims,
                        class_names=ckpt.get("class_names"),
                        normalization=ckpt.get("normalization", "zscore"),
                        patch_size=ckpt.get("patch_size"), source=str(path))
