"""Per-scale 1x1-conv class heads used by MFD/DMD (training and feature inspection only)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ScaleHeads(nn.Module):
    """One 1x1 conv per chosen decoder scale: features (N, c_k, *s_k) -> logits (N, C, *s_k)."""

    def __init__(self, spatial_dims: int, in_channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.in_channels = [int(c) for c in in_channels]
        self.heads = nn.ModuleList([conv(c, num_classes, 1) for c in self.in_channels])

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.heads):
            raise ValueError(f"expected {len(self.heads)} feature maps, got {len(features)}")
        return [head(f) for head, f in zip(self.heads, features)]
